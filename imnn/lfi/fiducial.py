"""Move the fiducial point to the target's estimate and refit, until the estimate stops moving.

An IMNN's summaries are optimal at its fiducial parameters; far from them the
quasi-maximum-likelihood estimate is biased and the Fisher errors are those of the
wrong point. Refitting at the estimate (warm-starting from the previous weights)
converges to the self-consistent point, where the constraints are tightest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from .. import _checks


class FiducialIteration(NamedTuple):
    """What :func:`iterate_fiducial` found.

    Attributes:
        model: the IMNN fitted at the last fiducial point.
        θ_fid: float(n_iterations, n_params) — the fiducial point of each fit.
        estimates: float(n_iterations, n_params) — the target's estimate after each fit.
        steps: float(n_iterations) — the largest move of the estimate, in Fisher standard errors.
        converged: whether the last step was below ``tolerance``.
    """

    model: Any
    θ_fid: np.ndarray
    estimates: np.ndarray
    steps: np.ndarray
    converged: bool


def iterate_fiducial(
    build: Callable[[np.ndarray, Any], Any],
    target_data: Any,
    θ_fid: Any,
    key_or_state: Any,
    fit_kwargs: dict[str, Any] | None = None,
    rng: jax.Array | None = None,
    tolerance: float = 0.1,
    max_iterations: int = 5,
    bounds: tuple[Any, Any] | None = None,
    verbose: bool = True,
) -> FiducialIteration:
    """Fit at ``θ_fid``, move ``θ_fid`` to the target's estimate, refit, … until it settles.

    Args:
        build: ``build(θ_fid, key_or_state) -> IMNN`` — an unfitted IMNN at that fiducial point
            (fresh simulations there), e.g. ``lambda θ, k: imnn.IMNN(..., θ_fid=θ, key_or_state=k, ...)``.
        target_data: float(*input_shape) — one observation.
        θ_fid: float(n_params) — the first fiducial point.
        key_or_state: PRNG key for the first network; later fits start from the previous
            fit's weights (``model.w``) and optimiser state.
        fit_kwargs: arguments of ``model.fit`` (default ``λ=10, ϵ=0.1``).
        rng: PRNG key for fits that need one (simulator IMNNs); split per fit.
        tolerance: stop once the estimate moves less than this many Fisher standard errors
            ``√diag(F⁻¹)`` in every parameter.
        max_iterations: most fits.
        bounds: ``(low, high)`` float(n_params) — new fiducial points are clipped into them
            (e.g. to keep a variance positive).
        verbose: print each step.

    Returns:
        :class:`FiducialIteration`.
    """
    fit_kwargs = {"λ": 10.0, "ϵ": 0.1} | dict(fit_kwargs or {})
    tolerance = _checks.positive_float("tolerance", tolerance)
    max_iterations = _checks.positive_int("max_iterations", max_iterations)
    θ = np.asarray(θ_fid, dtype=float)
    fiducials, estimates, steps = [], [], []
    model, start = None, key_or_state
    for _ in range(max_iterations):
        model = build(θ, start)
        if rng is not None:
            rng, fit_key = jax.random.split(rng)
            fit_kwargs["rng"] = fit_key
        model.fit(**fit_kwargs)
        estimate = np.asarray(model.get_estimate(target_data), dtype=float)
        if estimate.shape != θ.shape:
            raise ValueError(f"`target_data` should be one observation: its estimate has shape {estimate.shape}")
        step = float(np.max(np.abs(estimate - θ) / np.sqrt(np.diag(np.asarray(model.invF)))))
        fiducials.append(θ)
        estimates.append(estimate)
        steps.append(step)
        if verbose:
            print(f"θ_fid = {np.round(θ, 4).tolist()} → estimate {np.round(estimate, 4).tolist()} ({step:.3g} σ)")
        if step < tolerance:
            break
        θ = estimate if bounds is None else np.clip(estimate, *bounds)
        start = model.state._replace(params=model.w)
    return FiducialIteration(model, np.array(fiducials), np.array(estimates), np.array(steps), steps[-1] < tolerance)
