"""Fisher statistics, the regularised IMNN loss and the quasi-maximum-likelihood estimate.

Pure, jittable functions shared by every IMNN variant. Shapes:

- ``x``: float(n_s, n_summaries) — summaries of the fiducial simulations;
- ``dx_dθ``: float(n_d, n_summaries, n_params) — their derivatives w.r.t. the
  physical parameters (only the first ``n_d`` simulations carry derivatives).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import _checks

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


class Information(NamedTuple):
    """The Fisher information of a set of summaries, with a bootstrap interval on ``|F|``.

    Attributes:
        F: float(n_params, n_params) — the estimate from all the simulations (Hartlap-corrected if asked).
        detF: float() — ``|F|``.
        detF_interval: float(2) — ``(low, high)``, the central ``confidence`` interval of ``|F|``
            over bootstrap resamples of the simulations.
        detF_bootstrap: float(n_bootstrap) — ``|F|`` of every resample.
        confidence: the probability the interval is meant to cover.
    """

    F: Array
    detF: Array
    detF_interval: Array
    detF_bootstrap: Array
    confidence: float


def hartlap_factor(n_s: int, n_summaries: int) -> float:
    """``(n_s − n_summaries − 2) / (n_s − 1)``: makes ``factor · Ĉ⁻¹`` an unbiased estimate of ``C⁻¹``.

    The inverse of a sample covariance of Gaussian summaries is biased high (Hartlap et al. 2007).
    """
    return (n_s - n_summaries - 2) / (n_s - 1)


def information(
    x: Array,
    dx_dθ: Array,
    *,
    confidence: float = 0.9,
    n_bootstrap: int = 1000,
    hartlap: bool = False,
    key: jax.Array,
) -> Information:
    """Fisher information of summaries with a bootstrap interval on ``|F|``.

    The simulations are resampled with replacement — the first ``n_d`` (which carry derivatives)
    among themselves, the others among themselves — so each resample keeps ``n_s`` and ``n_d``.
    The interval is the central ``confidence`` range of ``|F|`` over the resamples: it reflects
    how much ``|F|`` would change with another set of ``n_s`` simulations, which is what the
    point estimate ``model.F`` hides.

    Args:
        x: float(n_s, n_summaries) — summaries of the fiducial simulations.
        dx_dθ: float(n_d, n_summaries, n_params) — derivatives of the first ``n_d`` of them.
        confidence: in (0, 1).
        n_bootstrap: number of resamples.
        hartlap: multiply ``C⁻¹`` by :func:`hartlap_factor` (needs ``n_s > n_summaries + 2``).
        key: PRNG key of the resampling.

    Returns:
        :class:`Information`.
    """
    x, dx_dθ = jnp.asarray(x), jnp.asarray(dx_dθ)
    if x.ndim != 2:
        raise ValueError(f"`x` should be float(n_s, n_summaries) but has shape {x.shape}")
    n_s, n_summaries = x.shape
    if dx_dθ.ndim != 3 or dx_dθ.shape[1] != n_summaries or not 0 < dx_dθ.shape[0] <= n_s:
        raise ValueError(
            f"`dx_dθ` should be float(n_d, n_summaries={n_summaries}, n_params) with n_d ≤ n_s = {n_s} "
            f"but has shape {dx_dθ.shape}"
        )
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` should be in (0, 1) but is {confidence}")
    n_bootstrap = _checks.positive_int("n_bootstrap", n_bootstrap)
    hartlap = _checks.boolean("hartlap", hartlap)
    if hartlap and n_s <= n_summaries + 2:
        raise ValueError(f"`hartlap=True` needs n_s > n_summaries + 2 = {n_summaries + 2} but n_s = {n_s}")
    factor = hartlap_factor(n_s, n_summaries) if hartlap else 1.0
    F, detF_bootstrap = _bootstrap(x, dx_dθ, _checks.key("key", key), n_bootstrap, factor)
    tail = (1.0 - confidence) / 2
    interval = jnp.quantile(detF_bootstrap, jnp.array([tail, 1.0 - tail]))
    return Information(F, jnp.linalg.det(F), interval, detF_bootstrap, confidence)


@functools.partial(jax.jit, static_argnames=("n_bootstrap", "factor"))
def _bootstrap(x: Array, dx_dθ: Array, key: jax.Array, n_bootstrap: int, factor: float) -> tuple[Array, Array]:
    n_s, n_d = x.shape[0], dx_dθ.shape[0]

    def detF(key: jax.Array) -> Array:
        with_derivative, without = jax.random.split(key)
        paired = jax.random.randint(with_derivative, (n_d,), 0, n_d)
        rest = jax.random.randint(without, (n_s - n_d,), n_d, n_s)
        resampled = statistics(x[jnp.concatenate([paired, rest])], dx_dθ[paired])
        return jnp.linalg.det(factor * resampled.F)

    detF_bootstrap = jax.lax.map(detF, jax.random.split(key, n_bootstrap), batch_size=min(n_bootstrap, 100))
    return factor * statistics(x, dx_dθ).F, detF_bootstrap
