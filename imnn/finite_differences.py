"""How much the finite-difference step biases a numerical-gradient IMNN's Fisher matrix.

A central difference with step ``δθ`` estimates ``dμ/dθ`` with an error of order
``δθ²``; the Fisher matrix inherits it. Comparing ``F`` from steps ``δθ`` and
``δθ/2`` on the SAME seeds (so that the noise cancels in the comparison) shows the
bias, and Richardson extrapolation ``(4·dμ(δθ/2) − dμ(δθ))/3`` removes its leading
term. :func:`finite_difference_bias` is also the ``finite_difference_bias`` method
of every numerical-gradient IMNN class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks, fisher, sources

CHUNK = 512  # simulations summarised per network call (bounds memory, not results)


class FiniteDifferenceBias(NamedTuple):
    """``F`` from the finite-difference step and from half of it, side by side.

    Attributes:
        δθ: float(2, n_params) — the steps: ``[0]`` the model's ``δθ``, ``[1]`` half of it.
        F: float(2, n_params, n_params) — the Fisher matrix with each step (same seeds, same covariance).
        detF: float(2) — their determinants.
        F_extrapolated: float(n_params, n_params) — with the Richardson-extrapolated ``dμ/dθ``
            (the ``δθ²`` term removed); ``detF_extrapolated`` its determinant.
        relative_change: ``detF[1] / detF[0] − 1``; a few per cent or more means ``δθ`` is too coarse.
    """

    δθ: jax.Array
    F: jax.Array
    detF: jax.Array
    F_extrapolated: jax.Array
    detF_extrapolated: jax.Array
    relative_change: float


def bias(
    apply: Callable, w: Any, fiducial: Any, steps: Any, half_steps: Any, δθ: jax.Array
) -> FiniteDifferenceBias:
    """Compare ``F`` from seed-matched simulations at ``θ_fid ± δθ/2`` and at ``θ_fid ± δθ/4``.

    Args:
        apply, w: the network ``apply(w, d)`` on ONE simulation float(*input_shape) → float(n_summaries).
        fiducial: float(n_s, *input_shape) — for the covariance.
        steps: float(m, 2, n_params, *input_shape) — ``[:, 0, p]`` at ``θ_fid − δθ_p/2``, ``[:, 1, p]`` above.
        half_steps: the same at ``θ_fid ∓ δθ_p/4``, each with the seed of the matching ``steps`` row.
        δθ: float(n_params).
    """
    summarise = jax.jit(jax.vmap(apply, (None, 0)))
    x = jnp.concatenate([summarise(w, jnp.asarray(fiducial[i : i + CHUNK])) for i in range(0, len(fiducial), CHUNK)])
    derivatives = [_derivatives(apply, w, fiducial, pairs, step) for pairs, step in ((steps, δθ), (half_steps, δθ / 2))]
    statistics = [fisher.statistics(x, dx_dθ) for dx_dθ in derivatives]
    extrapolated = fisher.statistics(x, (4 * derivatives[1] - derivatives[0]) / 3)
    detF = jnp.stack([jnp.linalg.det(s.F) for s in statistics])
    return FiniteDifferenceBias(
        δθ=jnp.stack([δθ, δθ / 2]),
        F=jnp.stack([s.F for s in statistics]),
        detF=detF,
        F_extrapolated=extrapolated.F,
        detF_extrapolated=jnp.linalg.det(extrapolated.F),
        relative_change=float(detF[1] / detF[0] - 1),
    )


def simulate_steps(
    simulator: Callable[[jax.Array, jax.Array], jax.Array], key: jax.Array, θ_fid: jax.Array, δθ: jax.Array,
    n_s: int, n_d: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:  # fmt: skip
    """``(fiducial, steps, half_steps)`` for :func:`bias` from ``simulator(key, θ)``, seed-matched."""
    keys = jax.random.split(key, n_s)
    offsets = jnp.stack([-jnp.diag(δθ), jnp.diag(δθ)]) / 2  # float(2, n_params, n_params)

    def around(key, fraction):
        return jax.vmap(jax.vmap(lambda offset: simulator(key, θ_fid + fraction * offset)))(offsets)

    fiducial = jax.vmap(lambda key: simulator(key, θ_fid))(keys)
    steps = jax.vmap(around, (0, None))(keys[:n_d], 1.0)
    half_steps = jax.vmap(around, (0, None))(keys[:n_d], 0.5)
    return fiducial, steps, half_steps


def finite_difference_bias(
    model: Any,
    half_steps: Any = None,
    *,
    simulator: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    key: jax.Array | None = None,
    fiducial: Any = None,
    steps: Any = None,
    w: Any = None,
) -> FiniteDifferenceBias:
    """``F`` of a numerical-gradient IMNN with its step ``δθ`` and with ``δθ/2``, at weights ``w``.

    Either give ``half_steps``, float(m, 2, n_params, *input_shape): simulations at
    ``θ_fid ∓ δθ/4`` with the seeds of the first ``m`` rows of the model's ``derivative``
    (``fiducial`` and ``steps`` default to the model's stored ``fiducial`` and
    ``derivative[:m]``; the dataset classes hold iterators, so give them); or give a
    ``simulator(key, θ)`` and ``key`` to simulate all three afresh (``n_s`` fiducial and
    ``n_d`` seed-matched pairs at each step).
    """
    if not hasattr(model, "δθ"):
        raise TypeError(f"`finite_difference_bias` needs a numerical-gradient IMNN; {type(model).__name__} has no δθ")
    w = model.w if w is None else w
    θ_fid = jnp.asarray(model.θ_fid)
    if simulator is not None:
        if half_steps is not None or steps is not None or fiducial is not None:
            raise ValueError("give either `simulator` (and `key`) or stored simulations (`half_steps`), not both")
        if key is None:
            raise ValueError("`key` must be a PRNG key when `simulator` is given")
        fiducial, steps, half_steps = simulate_steps(
            simulator, _checks.key("key", key), θ_fid, model.δθ, model.n_s, model.n_d
        )
    elif half_steps is None:
        raise ValueError("give `half_steps` (simulations at θ_fid ∓ δθ/4) or a `simulator` and `key`")
    else:
        fiducial = _stored("fiducial", model, fiducial)
        steps = _stored("derivative", model, steps)
        layout = (2, model.n_params, *model.input_shape)
        m = int(np.shape(half_steps)[0]) if np.ndim(half_steps) == len(layout) + 1 else 0
        if not 0 < m <= len(steps):
            raise ValueError(
                f"`half_steps` should have shape (m, 2, n_params, *input_shape) = (m, {', '.join(map(str, layout))}) "
                f"with 1 ≤ m ≤ {len(steps)} (the rows of `steps`) but has shape {np.shape(half_steps)}"
            )
        half_steps = _checks.array("half_steps", half_steps, (m, *layout), "(m, 2, n_params, *input_shape)")
        steps = _checks.array("steps", steps[:m], (m, *layout), "(m, 2, n_params, *input_shape)")
    return bias(model._network.apply, w, fiducial, steps, half_steps, jnp.asarray(model.δθ))


def _stored(name: str, model: Any, given: Any) -> Any:
    if given is not None:
        return given
    stored = getattr(model, name, None)
    if stored is None or not hasattr(stored, "shape"):
        raise ValueError(f"`{name}` must be given: this model does not hold its {name} simulations as an array")
    return stored


def _derivatives(apply: Callable, w: Any, fiducial: Any, pairs: Any, δθ: jax.Array) -> jax.Array:
    """float(m, n_summaries, n_params) from pairs float(m, 2, n_params, *input_shape), by the
    numerical-gradient source's own per-simulation rule, ``CHUNK`` simulations per call."""
    with_derivative = _numerical_derivatives(sources.numerical(δθ, len(pairs)).with_derivative, apply)
    return jnp.concatenate([
        with_derivative(w, jnp.asarray(fiducial[i : min(i + CHUNK, len(pairs))]), jnp.asarray(pairs[i : i + CHUNK]))
        for i in range(0, len(pairs), CHUNK)
    ])  # fmt: skip


def _numerical_derivatives(with_derivative: Callable, apply: Callable) -> Callable:
    return jax.jit(lambda w, d, pairs: jax.vmap(with_derivative, (None, None, 0))(apply, w, (d, pairs))[1])
