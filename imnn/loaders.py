"""Per-device iterators over arrays — no TensorFlow needed.

The dataset IMNNs read lists of iterators, one per device. These helpers make
them from arrays, and in particular from ``.npy`` files opened with
``np.load(path, mmap_mode="r")``: each batch is read from disk only when it is
needed, so the simulations never have to fit in memory::

    fiducial = np.load("fiducial.npy", mmap_mode="r")      # (n_s, *input_shape)
    derivative = np.load("derivative.npy", mmap_mode="r")  # (n_d, *input_shape, n_params)
    model = imnn.DatasetGradientIMNN(
        ..., **imnn.loaders.gradient_dataset(fiducial, derivative, len(devices), n_per_device),
        host=jax.devices()[0], devices=devices, n_per_device=n_per_device)

Write such files without holding them in memory with
``np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=...)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


class _Repeating:
    """Rows ``start:stop`` of ``arrays`` in batches of ``n_per_device``, over and over.

    An iterator object rather than a generator: the position moves on only once a
    batch has been read whole, so an interrupt or a read error part-way (Ctrl-C
    while the disk is slow) leaves it where it was, and the next ``next`` reads the
    same batch again (a generator would have ended for good).
    """

    def __init__(self, arrays: tuple[Any, ...], start: int, stop: int, n_per_device: int):
        self.arrays, self.start, self.stop, self.n_per_device = arrays, start, stop, n_per_device
        self.position = start

    def __iter__(self) -> _Repeating:
        return self

    def __next__(self) -> Any:
        first = self.position
        last = min(first + self.n_per_device, self.stop)
        batch = tuple(np.array(a[first:last]) for a in self.arrays)
        self.position = self.start if last == self.stop else last
        return batch if len(batch) > 1 else batch[0]


def batches(arrays: Any, n_devices: int, n_per_device: int, start: int = 0, stop: int | None = None) -> list[Iterator]:
    """One endlessly repeating iterator per device over rows ``start:stop`` of ``arrays``.

    Args:
        arrays: an array (numpy, memory-mapped or not) or a tuple of arrays with the same
            number of rows; the iterators yield batches of them (a tuple for a tuple).
        n_devices: how many devices share the rows; device ``i`` reads the ``i``-th
            contiguous ``1 / n_devices`` of them.
        n_per_device: rows per batch (the last batch of a device's share holds the rest).
        start, stop: the rows to share (default: all).

    Returns:
        ``n_devices`` iterators, each yielding the same batches every pass.
    """
    arrays = arrays if isinstance(arrays, tuple) else (arrays,)
    stop = len(arrays[0]) if stop is None else stop
    if any(len(a) < stop for a in arrays):
        raise ValueError(f"`arrays` should all have at least {stop} rows but have {[len(a) for a in arrays]}")
    if (stop - start) % n_devices:
        raise ValueError(f"{stop - start} rows cannot be shared evenly by {n_devices} devices")
    share = (stop - start) // n_devices
    return [_Repeating(arrays, start + i * share, start + (i + 1) * share, n_per_device) for i in range(n_devices)]


def gradient_dataset(
    fiducial: Any, derivative: Any, n_devices: int, n_per_device: int, prefix: str = ""
) -> dict[str, list[Iterator]]:
    """``main`` and ``remaining`` iterators for :class:`imnn.DatasetGradientIMNN`.

    Args:
        fiducial: float(n_s, *input_shape); derivative: float(n_d, *input_shape, n_params).
        prefix: ``"validation_"`` to get ``validation_main`` and ``validation_remaining``.
    """
    n_s, n_d = len(fiducial), len(derivative)
    return {
        f"{prefix}main": batches((fiducial, derivative), n_devices, n_per_device, 0, n_d),
        f"{prefix}remaining": batches(fiducial, n_devices, n_per_device, n_d, n_s) if n_s > n_d else [],
    }


def numerical_dataset(
    fiducial: Any, derivative: Any, n_devices: int, n_per_device: int, prefix: str = ""
) -> dict[str, list[Iterator]]:
    """``fiducial`` and ``derivative`` iterators for :class:`imnn.DatasetNumericalGradientIMNN`.

    Args:
        fiducial: float(n_s, *input_shape).
        derivative: float(n_d, 2, n_params, *input_shape), read as single simulations in
            that (seed, below/above, parameter) order.
        prefix: ``"validation_"`` to get ``validation_fiducial`` and ``validation_derivative``.
    """
    single = derivative.reshape((-1, *derivative.shape[3:]))  # a view, also of a memory map
    return {
        f"{prefix}fiducial": batches(fiducial, n_devices, n_per_device),
        f"{prefix}derivative": batches(single, n_devices, n_per_device),
    }
