"""Write simulations to TFRecord shards and parse them back, as the reference ``imnn.TFRecords`` did.

TensorFlow is imported only when a method runs (``pip install "imnn[tf]"``).
Files are ``<directory>/<filename>_<00000>.tfrecords``, each about
``record_size`` MB; every example holds one float32 simulation as raw bytes
(``"data"``) and its ``"seed"`` (and, for numerical-derivative records,
``"derivative"``: 0 below / 1 above θ_fid, and ``"parameter"``).

Reading them for a dataset IMNN, one iterator per device (device ``i`` of
``n_devices`` takes its contiguous share)::

    main = [
        tf.data.Dataset.zip((
            tf.data.TFRecordDataset(fiducial_files).map(writer.parser)
                .skip(i * n_d // n_devices).take(n_d // n_devices),
            tf.data.TFRecordDataset(derivative_files)
                .map(functools.partial(writer.derivative_parser, n_params=n_params))
                .skip(i * n_d // n_devices).take(n_d // n_devices)))
        .batch(n_per_device).repeat().as_numpy_iterator()
        for i in range(n_devices)]
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import numpy as np

FRAMING_BYTES = 16  # a TFRecord stores each example with a length, and two CRCs


def tensorflow() -> Any:
    """Import TensorFlow for data pipelines, hiding any GPU from it (JAX uses the GPUs)."""
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError(
            'imnn.TFRecords needs TensorFlow: install it with `pip install "imnn[tf]"`, or read '
            "simulations without it through imnn.loaders (numpy memory maps)"
        ) from None
    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # TensorFlow's devices are already initialised
        pass
    return tf


class TFRecords:
    """Writer and parsers for simulations stored as TFRecords.

    Args:
        record_size: approximate size of each shard in MB.
        padding: digits of the shard number in file names.
        input_shape: shape of one simulation; if ``None`` it is taken from the first
            simulation written. The parsers need it.
    """

    def __init__(self, record_size: float = 150.0, padding: int = 5, input_shape: tuple[int, ...] | None = None):
        if isinstance(record_size, bool) or not isinstance(record_size, (int, float)) or not record_size > 0:
            raise ValueError(f"`record_size` (={record_size!r}) must be a positive number of MB")
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 1:
            raise ValueError(f"`padding` (={padding!r}) must be a positive integer")
        self.record_size = float(record_size)
        self.padding = padding
        self.input_shape = None if input_shape is None else tuple(int(n) for n in input_shape)

    def write_record(
        self,
        n_sims: int,
        get_simulation: Callable[..., Any],
        fiducial: bool = True,
        n_params: int | None = None,
        validation: bool = False,
        directory: str | os.PathLike | None = None,
        filename: str | None = None,
        start: int = 0,
    ) -> list[str]:
        """Write the simulations of seeds ``start, …, n_sims − 1`` to shards.

        Args:
            n_sims: one past the last seed.
            get_simulation: ``get_simulation(seed)`` returning one simulation (or, for a
                gradient IMNN's derivative records, one ``dd/dθ`` of shape
                ``input_shape + (n_params,)``) when ``fiducial``; otherwise
                ``get_simulation(seed, derivative, parameter)`` returning the simulation at
                ``θ_fid ∓ δθ/2`` (``derivative`` 0 below, 1 above) in ``parameter``. Records
                are written seed by seed, then derivative, then parameter.
            fiducial: which of those two forms to write.
            n_params: number of parameters (needed when not ``fiducial``).
            validation: prefix the default file name with ``validation_``.
            directory: where to write (created if missing; default: the current directory).
            filename: base file name (default ``fiducial`` or ``derivative``).
            start: first seed.

        Returns:
            The paths of the shards written, in order.
        """
        tf = tensorflow()
        n_arguments = 1 if fiducial else 3
        try:
            given = len(inspect.signature(get_simulation).parameters)
        except (TypeError, ValueError):
            given = n_arguments
        if not callable(get_simulation) or given != n_arguments:
            form = "get_simulation(seed)" if fiducial else "get_simulation(seed, derivative, parameter)"
            raise TypeError(f"`get_simulation` should be a function {form} with fiducial={fiducial}")
        if not fiducial:
            n_params = _n_params(n_params)
        name = filename or ("fiducial" if fiducial else "derivative")
        if validation and filename is None:
            name = f"validation_{name}"
        directory = os.fspath(directory) if directory is not None else "."
        os.makedirs(directory, exist_ok=True)
        indices = (
            [(seed,) for seed in range(start, n_sims)]
            if fiducial
            else [(s, d, p) for s in range(start, n_sims) for d in range(2) for p in range(n_params)]
        )
        limit = self.record_size * 1e6
        paths: list[str] = []
        writer, written, shape = None, 0.0, None
        try:
            for index in indices:
                if writer is None:
                    paths.append(os.path.join(directory, f"{name}_{str(len(paths)).zfill(self.padding)}.tfrecords"))
                    writer, written = tf.io.TFRecordWriter(paths[-1]), 0.0
                data = np.asarray(get_simulation(*index), dtype=np.float32)
                if shape is None:
                    shape = data.shape
                    self.input_shape = self.input_shape or shape
                elif data.shape != shape:
                    raise ValueError(f"`get_simulation{index}` returned shape {data.shape}, the first gave {shape}")
                example = _example(tf, data, index).SerializeToString()
                writer.write(example)
                written += len(example) + FRAMING_BYTES
                if written > limit:
                    writer.close()
                    writer = None
        finally:
            if writer is not None:
                writer.close()
        return paths

    def _decode(self, example: Any, shape: tuple[int, ...]) -> Any:
        tf = tensorflow()
        parsed = tf.io.parse_single_example(example, {"data": tf.io.FixedLenFeature([], tf.string)})
        return tf.reshape(tf.io.decode_raw(parsed["data"], tf.float32), shape)

    def _shape(self) -> tuple[int, ...]:
        if self.input_shape is None:
            raise ValueError("set `input_shape` (TFRecords(input_shape=...)) before parsing records")
        return self.input_shape

    def parser(self, example: Any) -> Any:
        """One simulation, float32 ``input_shape``, from a serialised example (use in ``Dataset.map``)."""
        return self._decode(example, self._shape())

    def derivative_parser(self, example: Any, n_params: int | None = None) -> Any:
        """One ``dd/dθ``, float32 ``input_shape + (n_params,)``, from a serialised example."""
        return self._decode(example, (*self._shape(), _n_params(n_params)))

    def numerical_derivative_parser(self, example: Any, n_params: int | None = None) -> Any:
        """One seed's ``(2, n_params) + input_shape`` simulations, from an example that holds them all."""
        return self._decode(example, (2, _n_params(n_params), *self._shape()))


def _n_params(n_params: Any) -> int:
    if isinstance(n_params, bool) or not isinstance(n_params, int) or n_params < 1:
        raise ValueError(f"`n_params` (={n_params!r}) must be a positive integer")
    return n_params


def _example(tf: Any, data: np.ndarray, index: tuple[int, ...]) -> Any:
    def integer(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    feature = {"data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data.tobytes()]))}
    feature.update(zip(("seed", "derivative", "parameter"), map(integer, index)))
    return tf.train.Example(features=tf.train.Features(feature=feature))
