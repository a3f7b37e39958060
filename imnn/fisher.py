"""Fisher statistics, the regularised IMNN loss and the quasi-maximum-likelihood estimate.

Pure, jittable functions shared by every IMNN variant. Shapes:

- ``x``: float(n_s, n_summaries) — summaries of the fiducial simulations;
- ``dx_dθ``: float(n_d, n_summaries, n_params) — their derivatives w.r.t. the
  physical parameters (only the first ``n_d`` simulations carry derivatives).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class FisherStatistics(NamedTuple):
    """Gaussian statistics of the summaries at the fiducial parameters.

    Attributes:
        F: float(n_params, n_params) — Fisher information matrix.
        C: float(n_summaries, n_summaries) — covariance of the summaries.
        invC: float(n_summaries, n_summaries) — its inverse.
        dμ_dθ: float(n_summaries, n_params) — derivative of the mean summary.
        μ: float(n_summaries) — mean summary.
    """

    F: Array
    C: Array
    invC: Array
    dμ_dθ: Array
    μ: Array


class Metrics(NamedTuple):
    """Scalars recorded in the fit history for one evaluation of the loss."""

    detF: Array
    detC: Array
    detinvC: Array
    Λ2: Array
    r: Array


def statistics(x: Array, dx_dθ: Array) -> FisherStatistics:
    """Fisher statistics from summaries and their parameter derivatives.

    Args:
        x: float(n_s, n_summaries) — summaries of the fiducial simulations.
        dx_dθ: float(n_d, n_summaries, n_params) — their θ-derivatives.

    Returns:
        ``FisherStatistics(F, C, invC, dμ_dθ, μ)``; ``C`` is the unbiased
        (``n_s − 1``) covariance and ``F = dμ_dθᵀ C⁻¹ dμ_dθ``.
    """
    μ = jnp.mean(x, axis=0)
    centred = x - μ
    C = centred.T @ centred / (x.shape[0] - 1)
    invC = jnp.linalg.inv(C)
    dμ_dθ = jnp.mean(dx_dθ, axis=0)
    F = dμ_dθ.T @ invC @ dμ_dθ
    return FisherStatistics(F=symmetrise(F), C=C, invC=symmetrise(invC), dμ_dθ=dμ_dθ, μ=μ)


def symmetrise(matrix: Array) -> Array:
    """``(M + Mᵀ) / 2``: removes the rounding asymmetry of products like ``AᵀBA``."""
    return (matrix + matrix.T) / 2


def log_det(matrix: Array) -> Array:
    """``ln|M|`` for a matrix that should be positive definite; ``−∞`` if it is not."""
    sign, log_abs_det = jnp.linalg.slogdet(matrix)
    return jnp.where(sign > 0, log_abs_det, -jnp.inf)


def frobenius_norm(matrix: Array) -> Array:
    """``‖M‖_F`` with a finite gradient at ``M = 0``."""
    squared = jnp.sum(matrix**2)
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def regulariser(C: Array, invC: Array) -> Array:
    """``Λ2 = ‖C − I‖_F + ‖C⁻¹ − I‖_F``: zero when the covariance is the identity."""
    identity = jnp.eye(C.shape[0], dtype=C.dtype)
    return frobenius_norm(C - identity) + frobenius_norm(invC - identity)


def alpha(λ: float, ϵ: float) -> Array:
    """``α = −ln(ϵ(λ − 1) + ϵ²/(1 + ϵ)) / ϵ``, the sharpness of the regularisation switch.

    ``ϵ`` is the size of ``Λ2`` below which the regulariser switches off
    (Charnock et al. 2018); the argument of the logarithm must be positive.
    """
    return -jnp.log(ϵ * (λ - 1.0) + ϵ**2 / (1.0 + ϵ)) / ϵ


def regularisation_strength(Λ2: Array, λ: float, α: float) -> Array:
    """``r = λ Λ2 / (Λ2 + exp(−α Λ2))``: close to ``λ`` far from the identity, to 0 at it."""
    return λ * Λ2 / (Λ2 + jnp.exp(-α * Λ2))


def loss(x: Array, dx_dθ: Array, λ: float, α: float) -> tuple[Array, Metrics]:
    """The IMNN loss ``−ln|F| + r Λ2`` and the metrics recorded in the history.

    Args:
        x: float(n_s, n_summaries).
        dx_dθ: float(n_d, n_summaries, n_params).
        λ: regularisation coupling.
        α: switch sharpness, from :func:`alpha`.

    Returns:
        ``(loss, Metrics(detF, detC, detinvC, Λ2, r))``.
    """
    stats = statistics(x, dx_dθ)
    return loss_from_statistics(stats, λ, α)


def loss_from_statistics(stats: FisherStatistics, λ: float, α: float) -> tuple[Array, Metrics]:
    """:func:`loss` for already computed statistics."""
    Λ2 = regulariser(stats.C, stats.invC)
    r = regularisation_strength(Λ2, λ, α)
    value = -log_det(stats.F) + r * Λ2
    metrics = Metrics(
        detF=jnp.linalg.det(stats.F),
        detC=jnp.linalg.det(stats.C),
        detinvC=jnp.linalg.det(stats.invC),
        Λ2=Λ2,
        r=r,
    )
    return value, metrics


def estimate(x: Array, stats: FisherStatistics, θ_fid: Array) -> Array:
    """Quasi-maximum-likelihood estimate ``θ_fid + F⁻¹ dμ_dθᵀ C⁻¹ (x − μ)``.

    Args:
        x: float(..., n_summaries) — summaries of the data (any leading batch axes).
        stats: the Fisher statistics at ``θ_fid``.
        θ_fid: float(n_params).

    Returns:
        float(..., n_params).
    """
    invF = jnp.linalg.inv(stats.F)
    projection = stats.invC @ stats.dμ_dθ @ invF  # (n_summaries, n_params)
    return θ_fid + (x - stats.μ) @ projection
