"""The dataset IMNN classes: stored simulations streamed from iterators, e.g. files on disk.

Use them when the simulations do not fit in host memory. They compute the same
loss, gradients and weights as :class:`imnn.GradientIMNN` and
:class:`imnn.NumericalGradientIMNN` (see :mod:`imnn.streaming`), reading every
simulation twice per iteration.

Iterators are given as a list with one per device (in the order of
``devices``; with several processes, either one per device of ``devices`` or one
per device of this process). Any Python iterator of numpy or jax arrays works:
``tf.data.Dataset.as_numpy_iterator()``, a ``grain`` loader, or a generator
reading ``.npy`` files with ``np.load(..., mmap_mode="r")``. Each must yield,
every pass, the same batches in the same order and then start again
(``.take(n).batch(n_per_device).repeat()`` in tf.data): device ``i``'s iterator
holds its ``1 / n_devices`` share of the simulations in batches of
``n_per_device``, the last batch holding the rest if it does not divide evenly.

Arguments shared by both classes (besides those of :class:`imnn.SimulatorIMNN`):
    host: a ``jax.Device``, accepted for compatibility (see :mod:`imnn.aggregated`).
    devices: list of ``jax.Device`` to spread each batch over.
    n_per_device: simulations per batch per device.
    prefetch: batches read ahead of use and placed on the devices (default 2).
    cache: keep the batches on the devices after the first pass, so the iterators
        are read once only (needs device memory for all the simulations).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from . import _checks, _compat, finite_differences, sources, streaming
from ._core import IMNNBase, accepts_ascii_aliases
from .aggregated import batching, check_compatibility_flags

DEFAULT_PREFETCH = 2


def _feeds(
    kinds: list[tuple[str, Any, int, list[tuple[int, ...]], str]],
    devices: tuple[jax.Device, ...],
    n_per_device: int,
    prefetch: int | None,
    cache: bool,
) -> tuple[streaming.Feed | None, ...]:
    """One :class:`~imnn.streaming.Feed` per ``(name, iterators, count, item_shapes, what)``;
    ``None`` for a kind with no simulations."""
    feeds = []
    for name, iterators, count, shapes, what in kinds:
        if count == 0:
            feeds.append(None)
            continue
        if iterators is None:
            raise ValueError(f"`{name}` is required: it holds the {what} = {count} simulations of each pass")
        if not isinstance(iterators, (list, tuple)):
            kind = type(iterators).__name__
            raise TypeError(f"`{name}` should be a list of iterators, one per device, but is {kind}")
        feeds.append(
            streaming.Feed(
                name, iterators, devices, n_per_device, count, shapes, what,
                DEFAULT_PREFETCH if prefetch is None else prefetch, cache,
            )
        )  # fmt: skip
    return tuple(feeds)


def _validation_feeds(kinds: list[tuple], *args: Any) -> tuple[streaming.Feed | None, ...] | None:
    given = [name for name, iterators, *_ in kinds if iterators is not None]
    if not given:
        return None
    if kinds[0][0] not in given:
        raise ValueError(f"`{kinds[0][0]}` is required with `{given[0]}`")
    return _feeds(kinds, *args)


def _streams(per_simulation: list[Any], feeds: tuple, n_devices: int) -> tuple:
    return tuple(
        None if feed is None else streaming.Stream(fn, streaming.pass_order(feed, n_devices))
        for fn, feed in zip(per_simulation, feeds)
    )


def _check_prefetch_cache(prefetch: Any, cache: Any) -> None:
    check_compatibility_flags(prefetch, cache)
    if prefetch is not None and prefetch < 0:
        raise ValueError(f"`prefetch` (={prefetch}) must be a non-negative number of batches")


class DatasetGradientIMNN(IMNNBase):
    """:class:`imnn.GradientIMNN` streaming its simulations from per-device iterators.

    Args:
        n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model, optimiser, key_or_state:
            as for :class:`imnn.SimulatorIMNN`.
        main: list (one per device) of iterators yielding ``(fiducial, derivative)``
            batches of shapes ``(n_per_device, *input_shape)`` and
            ``(n_per_device, *input_shape, n_params)``: each device's share of the ``n_d``
            simulations that have derivatives.
        remaining: list of iterators yielding ``(n_per_device, *input_shape)`` batches:
            each device's share of the other ``n_s − n_d`` simulations (``None`` or
            ``[]`` when ``n_s == n_d``).
        host, devices, n_per_device, prefetch, cache: see :mod:`imnn.datasets`.
        validation_main, validation_remaining: a second set of the same shapes.
        verbose: print a one-line summary after each fit.
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
        main: Any,
        remaining: Any,
        host: jax.Device,
        devices: Any,
        n_per_device: int,
        validation_main: Any = None,
        validation_remaining: Any = None,
        prefetch: int | None = None,
        cache: bool = False,
        verbose: bool = True,
    ):
        devices, n_per_device = batching(host, devices, n_per_device)
        _check_prefetch_cache(prefetch, cache)
        (n_s, n_d), shape = _counts(n_s, n_d), _checks.input_shape(input_shape)
        n_per_device = _checks.n_per_device(n_per_device, n_s, len(devices))
        shapes = [shape, (*shape, _checks.positive_int("n_params", n_params))]

        def kinds(prefix, main, remaining):
            return [
                (f"{prefix}main", main, n_d, shapes, "n_d"),
                (f"{prefix}remaining", remaining, n_s - n_d, [shape], "n_s − n_d"),
            ]

        args = (devices, n_per_device, prefetch, cache)
        data = _feeds(kinds("", main, remaining), *args)
        validation = _validation_feeds(kinds("validation_", validation_main, validation_remaining), *args)
        source = sources.gradient(n_d)
        streams = _streams([source.with_derivative, source.without_derivative], data, len(devices))
        super().__init__(
            n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model, optimiser, key_or_state,
            source=source, data=data, validation_data=validation, verbose=verbose,
            executor=lambda source, apply: streaming.streamed(streams, _gradient_summaries, apply, devices),
        )  # fmt: skip
        self.host, self.devices, self.n_per_device = host, list(devices), n_per_device
        self.main, self.remaining = main, remaining  # the iterators as given (0.3.2 names)
        self.validation_main, self.validation_remaining = validation_main, validation_remaining


def _counts(n_s: Any, n_d: Any) -> tuple[int, int]:
    n_s, n_d = _checks.positive_int("n_s", n_s), _checks.positive_int("n_d", n_d)
    if n_d > n_s:
        raise ValueError(f"`n_d` (={n_d}) must not exceed `n_s` (={n_s})")
    return n_s, n_d


def _gradient_summaries(main: tuple[jax.Array, jax.Array], remaining: jax.Array | None):
    x_d, dx_dθ = main
    return (x_d if remaining is None else jnp.concatenate([x_d, remaining])), dx_dθ


class DatasetNumericalGradientIMNN(IMNNBase):
    """:class:`imnn.NumericalGradientIMNN` streaming its simulations from per-device iterators.

    Args:
        n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model, optimiser, key_or_state:
            as for :class:`imnn.SimulatorIMNN`.
        fiducial: list (one per device) of iterators yielding ``(n_per_device, *input_shape)``
            batches: each device's share of the ``n_s`` fiducial simulations.
        derivative: list of iterators yielding ``(n_per_device, *input_shape)`` batches of
            single simulations from the flattened ``(n_d, 2, n_params, *input_shape)``
            ordering (seed, then below/above ``θ_fid`` by ``δθ/2``, then parameter), each
            device holding a contiguous ``1 / n_devices`` of the ``n_d × 2 × n_params``.
        δθ: float(n_params) — the finite-difference steps (> 0).
        host, devices, n_per_device, prefetch, cache: see :mod:`imnn.datasets`.
        validation_fiducial, validation_derivative: a second set of the same shapes.
        verbose: print a one-line summary after each fit.
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
        devices: Any,
        n_per_device: int,
        validation_fiducial: Any = None,
        validation_derivative: Any = None,
        prefetch: int | None = None,
        cache: bool = False,
        verbose: bool = True,
    ):
        devices, n_per_device = batching(host, devices, n_per_device)
        _check_prefetch_cache(prefetch, cache)
        (n_s, n_d), shape = _counts(n_s, n_d), _checks.input_shape(input_shape)
        n_per_device = _checks.n_per_device(n_per_device, n_s, len(devices))
        n_params = _checks.positive_int("n_params", n_params)
        self.δθ = _checks.positive_vector("δθ", δθ, n_params)

        def kinds(prefix, fiducial, derivative):
            return [
                (f"{prefix}fiducial", fiducial, n_s, [shape], "n_s"),
                (f"{prefix}derivative", derivative, n_d * 2 * n_params, [shape], "n_d × 2 × n_params"),
            ]

        args = (devices, n_per_device, prefetch, cache)
        data = _feeds(kinds("", fiducial, derivative), *args)
        validation = _validation_feeds(kinds("validation_", validation_fiducial, validation_derivative), *args)
        source = sources.numerical(self.δθ, n_d)
        streams = _streams([source.without_derivative] * 2, data, len(devices))
        δθ_ = self.δθ

        def summaries(x, x_derivative):
            x_pm = x_derivative.reshape((n_d, 2, n_params, -1))
            return x, jax.vmap(sources.finite_difference, (0, None))(x_pm, δθ_)

        super().__init__(
            n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model, optimiser, key_or_state,
            source=source, data=data, validation_data=validation, verbose=verbose,
            executor=lambda source, apply: streaming.streamed(streams, summaries, apply, devices),
        )  # fmt: skip
        self.host, self.devices, self.n_per_device = host, list(devices), n_per_device
        self.fiducial, self.derivative = fiducial, derivative  # the iterators as given (0.3.2 names)
        self.validation_fiducial, self.validation_derivative = validation_fiducial, validation_derivative
