"""Summary sources: how summaries and their θ-derivatives are produced from weights.

Every source is a pure function

    summarise(apply, w, data, key) -> (x: float(n_s, n_summaries),
                                       dx_dθ: float(n_d, n_summaries, n_params))

where ``apply(w, d)`` is the network on ONE simulation, ``data`` the arrays the
source reads (``None`` for a simulator) and ``key`` a PRNG key (ignored by the
array-based sources). Only the first ``n_d`` simulations carry derivatives.
Executors decide where and in what pieces a source is evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

from .utils import value_and_jacrev, value_and_jvps

Summarise = Callable[[Callable, Any, Any, jax.Array], tuple[jax.Array, jax.Array]]
DerivativeMode = Literal["auto", "forward", "reverse"]


SMALL_INPUT = 100  # below this many numbers per simulation, reverse mode wins ties (CPU timings)


def simulator_mode(mode: DerivativeMode, n_params: int, n_summaries: int, input_size: int) -> str:
    """Resolve ``"auto"`` to the mode that is faster for these shapes.

    Forward mode costs one network pass per parameter, reverse mode one per
    summary, so the smaller count wins. At a tie the cost is about the same:
    measured on CPU, reverse is 5–30 % faster for tiny simulations and forward
    up to 2× faster for large ones, so ties go by ``input_size``
    (``benchmarks/fit_speed.py`` times both modes).
    """
    if mode != "auto":
        return mode
    if n_params != n_summaries:
        return "forward" if n_params < n_summaries else "reverse"
    return "reverse" if input_size < SMALL_INPUT else "forward"


def simulator(
    simulator_fn: Callable[[jax.Array, jax.Array], jax.Array],
    θ_fid: jax.Array,
    n_s: int,
    n_d: int,
    mode: str = "forward",
) -> Summarise:
    """Summaries of ``n_s`` fresh simulations, derivatives of ``model∘simulator`` for the first ``n_d``.

    ``key`` is split into ``n_s`` simulation keys; the same key always gives the
    same simulations, which is what lets a second pass regenerate them.
    """

    def summary_and_derivative(apply, w, key):
        def summary_at(θ):
            return apply(w, simulator_fn(key, θ))

        if mode == "reverse":
            return value_and_jacrev(summary_at)(θ_fid)
        return value_and_jvps(summary_at, θ_fid, jnp.eye(θ_fid.shape[0], dtype=θ_fid.dtype))

    def summarise(apply, w, data, key):
        keys = jax.random.split(key, n_s)
        x_d, dx_dθ = jax.vmap(summary_and_derivative, (None, None, 0))(apply, w, keys[:n_d])
        x_rest = jax.vmap(lambda k: apply(w, simulator_fn(k, θ_fid)))(keys[n_d:])
        return jnp.concatenate([x_d, x_rest]), dx_dθ

    return summarise


def gradient(n_d: int) -> Summarise:
    """Summaries of stored simulations; derivatives by the chain rule through stored ``dd/dθ``.

    ``data = (fiducial: float(n_s, *input_shape), derivative: float(n_d, *input_shape, n_params))``.
    ``dx/dθ = (∂x/∂d) · (dd/dθ)`` is one JVP of the network per parameter column,
    so the ``n_summaries × input_size`` Jacobian is never formed.
    """

    def summarise(apply, w, data, key):
        fiducial, derivative = data

        def summary_and_derivative(d, dd_dθ):
            return value_and_jvps(lambda d: apply(w, d), d, dd_dθ)

        x_d, dx_dθ = jax.vmap(summary_and_derivative)(fiducial[:n_d], derivative)
        x_rest = jax.vmap(apply, (None, 0))(w, fiducial[n_d:])
        return jnp.concatenate([x_d, x_rest]), dx_dθ

    return summarise


def numerical(δθ: jax.Array) -> Summarise:
    """Summaries of stored simulations; derivatives by finite differences of seed-matched ones.

    ``data = (fiducial: float(n_s, *input_shape),
    derivative: float(n_d, 2, n_params, *input_shape))`` where ``[:, 0]`` is
    simulated at ``θ_fid − δθ/2`` and ``[:, 1]`` at ``θ_fid + δθ/2`` in one
    parameter at a time, with the seed of the matching fiducial simulation.
    """

    def summarise(apply, w, data, key):
        fiducial, derivative = data
        n_d, _, n_params = derivative.shape[:3]
        x = jax.vmap(apply, (None, 0))(w, fiducial)
        flat = derivative.reshape((-1, *derivative.shape[3:]))
        x_pm = jax.vmap(apply, (None, 0))(w, flat).reshape(n_d, 2, n_params, -1)
        dx_dθ = jnp.swapaxes(x_pm[:, 1] - x_pm[:, 0], 1, 2) / δθ
        return x, dx_dθ

    return summarise
