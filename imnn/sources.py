"""Summary sources: how summaries and their θ-derivatives are produced from weights.

A :class:`Source` describes one simulation at a time:

- ``split(data, key) -> (with_items, without_items)``: the per-simulation inputs
  (pytrees with leading axes ``n_d`` and ``n_s − n_d``) of the simulations that
  carry derivatives and of those that do not;
- ``with_derivative(apply, w, item) -> (x: float(n_summaries), dx_dθ: float(n_summaries, n_params))``;
- ``without_derivative(apply, w, item) -> x: float(n_summaries)``;
- ``with_axes``: how the items with derivatives are mapped over (``jax.vmap``'s
  ``in_axes``, a prefix of their pytree): ``0`` for a leaf per simulation,
  ``None`` for one leaf shared by all (a derivative of the mean).

``apply(w, d)`` is the network on ONE simulation. Executors decide how the
items are grouped: all at once (:func:`summarise`), or in batches across devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from .utils import value_and_jacrev, value_and_jvps

DerivativeMode = Literal["auto", "forward", "reverse"]


class Source(NamedTuple):
    """Per-simulation description of where summaries and their derivatives come from."""

    split: Callable[[Any, jax.Array], tuple[Any, Any]]
    with_derivative: Callable[[Callable, Any, Any], tuple[jax.Array, jax.Array]]
    without_derivative: Callable[[Callable, Any, Any], jax.Array]
    with_axes: Any = 0


def summarise(source: Source, apply: Callable, w: Any, data: Any, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """All summaries at once: ``(x: float(n_s, n_summaries), dx_dθ: float(n_d, n_summaries, n_params))``."""
    with_items, without_items = source.split(data, key)
    x_d, dx_dθ = jax.vmap(source.with_derivative, (None, None, source.with_axes))(apply, w, with_items)
    x_rest = jax.vmap(source.without_derivative, (None, None, 0))(apply, w, without_items)
    return jnp.concatenate([x_d, x_rest]), dx_dθ


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
) -> Source:
    """Fresh simulations: ``key`` is split into ``n_s`` simulation keys (the items).

    ``dx/dθ`` differentiates ``model∘simulator`` at ``θ_fid``. The same key gives
    the same simulations, so a second pass can regenerate them instead of storing them.
    """

    def split(data, key):
        keys = jax.random.split(key, n_s)
        return keys[:n_d], keys[n_d:]

    def with_derivative(apply, w, key):
        def summary_at(θ):
            return apply(w, simulator_fn(key, θ))

        if mode == "reverse":
            return value_and_jacrev(summary_at)(θ_fid)
        return value_and_jvps(summary_at, θ_fid, jnp.eye(θ_fid.shape[0], dtype=θ_fid.dtype))

    def without_derivative(apply, w, key):
        return apply(w, simulator_fn(key, θ_fid))

    return Source(split, with_derivative, without_derivative)


def _stored_split(n_d: int) -> Callable[[Any, jax.Array], tuple[Any, Any]]:
    def split(data, key):
        fiducial, derivative = data
        return (fiducial[:n_d], derivative), fiducial[n_d:]

    return split


def _apply_to_item(apply, w, d):
    return apply(w, d)


MEAN_AXES = (0, None)  # the items with derivatives: (a fiducial simulation each, one shared derivative)


def gradient(n_d: int, mean: bool = False) -> Source:
    """Stored simulations; derivatives by the chain rule through stored ``dd/dθ``.

    ``data = (fiducial: float(n_s, *input_shape), derivative: float(n_d, *input_shape, n_params))``,
    or with ``mean`` a single ``derivative: float(*input_shape, n_params)`` — ``dμ/dθ`` of the
    data's mean — used for each of the first ``n_d`` simulations (exact for additive noise).
    ``dx/dθ = (∂x/∂d) · (dd/dθ)`` is one JVP of the network per parameter column,
    so the ``n_summaries × input_size`` Jacobian is never formed.
    """

    def with_derivative(apply, w, item):
        d, dd_dθ = item
        return value_and_jvps(lambda d: apply(w, d), d, dd_dθ)

    return Source(_stored_split(n_d), with_derivative, _apply_to_item, MEAN_AXES if mean else 0)


def numerical(δθ: jax.Array, n_d: int, mean: bool = False) -> Source:
    """Stored simulations; derivatives by finite differences of seed-matched ones.

    ``data = (fiducial: float(n_s, *input_shape),
    derivative: float(n_d, 2, n_params, *input_shape))`` where ``[:, 0]`` is
    simulated at ``θ_fid − δθ/2`` and ``[:, 1]`` at ``θ_fid + δθ/2`` in one
    parameter at a time, with the seed of the matching fiducial simulation.

    With ``mean``, ``derivative: float(2, n_params, *input_shape)`` holds the data's
    mean ``m⁻, m⁺`` at ``θ_fid ∓ δθ/2`` instead, and simulation ``d`` stands in for its
    own seed-matched pair as ``d ∓ (m⁺ − m⁻)/2`` (exact for additive noise).
    """

    def with_derivative(apply, w, item):
        d, below_above = item  # below_above: float(2, n_params, *input_shape)
        if mean:
            below_above = d + (below_above - below_above.mean(axis=0))
        n_params = below_above.shape[1]
        flat = below_above.reshape((2 * n_params, *below_above.shape[2:]))
        x_pm = jax.vmap(apply, (None, 0))(w, flat).reshape(2, n_params, -1)
        return apply(w, d), finite_difference(x_pm, δθ)

    return Source(_stored_split(n_d), with_derivative, _apply_to_item, MEAN_AXES if mean else 0)


def finite_difference(x_pm: jax.Array, δθ: jax.Array) -> jax.Array:
    """``dx/dθ: float(n_summaries, n_params)`` from summaries ``x_pm: float(2, n_params, n_summaries)``
    of one seed's simulations below (``[0]``) and above (``[1]``) ``θ_fid`` by ``δθ/2``."""
    return (x_pm[1] - x_pm[0]).T / δθ
