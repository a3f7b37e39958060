"""The aggregated IMNN classes: the in-memory classes' sources, evaluated in batches across devices.

Use them when the simulations (or the network's activations for all of them)
do not fit on one device at once. They compute the same loss, gradients and
weights as their in-memory counterparts — see :mod:`imnn.aggregation`.

Arguments shared by all three (besides those of the in-memory classes):
    host: the device the reference IMNN ran its small loss computation on; accepted
        for compatibility. Here that computation is tiny and runs replicated on
        ``devices`` (no transfers), so ``host`` only has to be a ``jax.Device``.
    devices: list of ``jax.Device`` — the devices to batch over, e.g. ``jax.devices()``
        (with ``jax.distributed.initialize()`` first, the devices of every host).
    n_per_device: simulations per device per batch; memory scales with it, not with
        ``n_s``. ``n_s`` and ``n_d`` need not be multiples of
        ``len(devices) × n_per_device``: the last batch is padded and masked.
    prefetch, cache: accepted for compatibility with the reference's tf.data
        pipelines; stored simulations are laid out on the devices once, so there is
        nothing to prefetch or cache.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax

from . import _checks, _compat, aggregation, finite_differences
from ._core import IMNNBase, accepts_ascii_aliases
from .imnns import gradient_source, numerical_source, simulator_source


def batching(host: Any, devices: Any, n_per_device: Any) -> tuple[tuple[jax.Device, ...], int]:
    """Check ``host``, ``devices`` and ``n_per_device``; return the devices and the batch per device."""
    if not isinstance(host, jax.Device):
        raise TypeError(f"`host` should be a jax.Device, e.g. jax.devices('cpu')[0], but is {type(host).__name__}")
    if (
        not isinstance(devices, Sequence)
        or isinstance(devices, str)
        or not devices
        or not all(isinstance(d, jax.Device) for d in devices)
    ):
        raise TypeError(f"`devices` should be a non-empty list of jax.Device, e.g. jax.devices(), but is {devices!r}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"`devices` lists a device more than once: {list(devices)}")
    return tuple(devices), _checks.positive_int("n_per_device", n_per_device)


def aggregated_executor(host: Any, devices: Any, n_per_device: Any, n_s: Any, n_d: Any) -> Callable:
    """Check the aggregation arguments and return the executor factory for :class:`IMNNBase`."""
    devices, n_per_device = batching(host, devices, n_per_device)
    n_s = _checks.positive_int("n_s", n_s)
    return functools.partial(
        aggregation.aggregated,
        devices=devices,
        n_per_device=_checks.n_per_device(n_per_device, n_s, len(devices)),
        n_s=n_s,
        n_d=_checks.positive_int("n_d", n_d),
    )


def check_compatibility_flags(prefetch: Any, cache: Any) -> None:
    """Check the reference's tf.data flags: ``prefetch`` None or an integer, ``cache`` a bool."""
    if prefetch is not None and (isinstance(prefetch, bool) or not isinstance(prefetch, numbers.Integral)):
        raise TypeError(f"`prefetch` should be None or an integer, e.g. 2, but is {prefetch!r}")
    _checks.boolean("cache", cache)


class AggregatedSimulatorIMNN(IMNNBase):
    """:class:`imnn.SimulatorIMNN` evaluated in batches of ``n_per_device`` on each of ``devices``.

    Pass 2 regenerates each batch's simulations from the same keys instead of
    storing them. See the module docstring for ``host``, ``devices`` and ``n_per_device``.
    """

    n_devices = _compat.n_devices

    @accepts_ascii_aliases
    def __init__(
        self,
        n_s: int,
        n_d: int,
        n_params: int,
        n_summaries: int,
        input_shape: tuple[int, ...],
        θ_fid: Any,
        model: Any,
        optimiser: Any,
        key_or_state: Any,
        simulator: Callable[[jax.Array, jax.Array], jax.Array],
        host: jax.Device,
        devices: Sequence[jax.Device],
        n_per_device: int,
        derivative_mode: str = "auto",
        verbose: bool = True,
    ):
        executor = aggregated_executor(host, devices, n_per_device, n_s, n_d)
        super().__init__(
            n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model, optimiser, key_or_state,
            **simulator_source(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, simulator, derivative_mode),
            executor=executor, verbose=verbose,
        )  # fmt: skip
        self.simulator, self.host, self.devices, self.n_per_device = simulator, host, list(devices), n_per_device


class AggregatedGradientIMNN(IMNNBase):
    """:class:`imnn.GradientIMNN` evaluated in batches of ``n_per_device`` on each of ``devices``.

    ``fiducial``: float(n_s, *input_shape); ``derivative``: float(n_d, *input_shape, n_params), or
    the mean's float(*input_shape, n_params) (held once, replicated); validation arrays of the same
    shapes. See the module docstring for the rest.
    """

    n_devices = _compat.n_devices

    @accepts_ascii_aliases
    def __init__(
        self,
        n_s: int,
        n_d: int,
        n_params: int,
        n_summaries: int,
        input_shape: tuple[int, ...],
        θ_fid: Any,
        model: Any,
        optimiser: Any,
        key_or_state: Any,
        fiducial: Any,
        derivative: Any,
        host: jax.Device,
        devices: Sequence[jax.Device],
        n_per_device: int,
        validation_fiducial: Any = None,
        validation_derivative: Any = None,
        prefetch: int | None = None,
        cache: bool = False,
        verbose: bool = True,
    ):
        executor = aggregated_executor(host, devices, n_per_device, n_s, n_d)
        check_compatibility_flags(prefetch, cache)
        super().__init__(
            n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model, optimiser, key_or_state,
            **gradient_source(n_s, n_d, n_params, input_shape, fiducial, derivative,
                              validation_fiducial, validation_derivative),
            executor=executor, verbose=verbose,
        )  # fmt: skip
        self.host, self.devices, self.n_per_device = host, list(devices), n_per_device
        self.fiducial, self.derivative = fiducial, derivative  # as given (0.3.2 names)
        self.validation_fiducial, self.validation_derivative = validation_fiducial, validation_derivative


class AggregatedNumericalGradientIMNN(IMNNBase):
    """:class:`imnn.NumericalGradientIMNN` evaluated in batches of ``n_per_device`` on each of ``devices``.

    ``fiducial``: float(n_s, *input_shape); ``derivative``: float(n_d, 2, n_params, *input_shape), or
    the mean's float(2, n_params, *input_shape); ``δθ``: float(n_params). See the module docstring for the rest.
    """

    n_devices = _compat.n_devices
    finite_difference_bias = finite_differences.finite_difference_bias

    @accepts_ascii_aliases
    def __init__(
        self,
        n_s: int,
        n_d: int,
        n_params: int,
        n_summaries: int,
        input_shape: tuple[int, ...],
        θ_fid: Any,
        model: Any,
        optimiser: Any,
        key_or_state: Any,
        fiducial: Any,
        derivative: Any,
        δθ: Any,
        host: jax.Device,
        devices: Sequence[jax.Device],
        n_per_device: int,
        validation_fiducial: Any = None,
        validation_derivative: Any = None,
        prefetch: int | None = None,
        cache: bool = False,
        verbose: bool = True,
    ):
        executor = aggregated_executor(host, devices, n_per_device, n_s, n_d)
        check_compatibility_flags(prefetch, cache)
        parts = numerical_source(
            n_s, n_d, n_params, input_shape, fiducial, derivative, δθ, validation_fiducial, validation_derivative
        )
        self.δθ = parts.pop("δθ")
        super().__init__(
            n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model, optimiser, key_or_state,
            **parts, executor=executor, verbose=verbose,
        )  # fmt: skip
        self.host, self.devices, self.n_per_device = host, list(devices), n_per_device
        self.fiducial, self.derivative = fiducial, derivative  # as given (0.3.2 names)
        self.validation_fiducial, self.validation_derivative = validation_fiducial, validation_derivative
