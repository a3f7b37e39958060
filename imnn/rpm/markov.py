"""Time-series latents: a stationary linear-Gaussian (Gauss–Markov) chain over ``T`` steps.

``z₁ ~ N(0, I)``, ``zₜ = A zₜ₋₁ + wₜ`` with ``wₜ ~ N(0, I − AAᵀ)``, so every marginal is ``N(0, I)``
(which fixes the latent's scale). Factors act on single steps: ``fⱼ(Z|xⱼ) = Πₜ fⱼ(zₜ|xⱼₜ)``, each a
Gaussian with natural parameters ``η₀ + gⱼₜ`` relative to the marginal ``η₀ = N(0, I)``.

The posterior ``q ∝ p(Z) Πⱼₜ exp(gⱼₜᵀ t(zₜ))`` is found by a block-tridiagonal Cholesky
factorisation of its precision in one forward and one backward ``lax.scan`` (O(T) in the
number of steps; no dense ``T·d × T·d`` factorisation), which gives its log-partition, marginal
means and the marginal and lag-one covariances.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .families import Gaussian, GaussianNatural, add, cholesky, dot_mean, inverse_lower, solve_lower


class Smoothed(NamedTuple):
    """The chain posterior of one item: ``mean`` float(T, d), marginal ``cov`` float(T, d, d), and
    of the whole chain its ``log_partition`` and the log-determinant of its precision."""

    mean: jax.Array
    cov: jax.Array
    log_partition: jax.Array
    log_det_precision: jax.Array


def smooth(transition: jax.Array, h: jax.Array, precision: jax.Array) -> Smoothed:
    """The Gaussian ``∝ p(Z) exp(Σₜ hₜᵀzₜ − ½ zₜᵀPₜzₜ)`` for the chain prior of ``transition`` A
    float(d, d): ``h`` float(T, d), ``precision`` float(T, d, d) (per-step information)."""
    T, d = h.shape
    eye = jnp.eye(d, dtype=h.dtype)
    noise_precision = jnp.linalg.inv(eye - transition @ transition.T)
    coupling = transition.T @ noise_precision @ transition  # what zₜ gets from its successor's term
    diagonal = jnp.broadcast_to(noise_precision + coupling, (T, d, d))
    diagonal = diagonal.at[0].set(eye + coupling).at[T - 1].add(-coupling)
    if T == 1:
        diagonal = eye[None]
    diagonal = diagonal + precision
    off = -noise_precision @ transition  # J[t, t-1]

    def forward(carry, inputs):
        lower_previous, y_previous = carry
        block, h_t = inputs
        sub = off @ inverse_lower(lower_previous).T  # L[t, t-1] = J[t, t-1] L[t-1, t-1]⁻ᵀ
        lower = cholesky(block - sub @ sub.T)
        y = solve_lower(lower, h_t - sub @ y_previous)
        return (lower, y), (lower, sub, y)

    first_lower = cholesky(diagonal[0])
    first_y = solve_lower(first_lower, h[0])
    _, (lowers, subs, ys) = jax.lax.scan(forward, (first_lower, first_y), (diagonal[1:], h[1:]))
    lowers = jnp.concatenate([first_lower[None], lowers])
    ys = jnp.concatenate([first_y[None], ys])
    subs = jnp.concatenate([jnp.zeros((1, d, d), h.dtype), subs])  # subs[t] = L[t, t-1]
    inverses = inverse_lower(lowers)  # L[t, t]⁻¹

    def backward(carry, inputs):
        mean_next, cov_next, sub_next = carry
        inverse, y, sub = inputs
        mean = inverse.T @ (y - sub_next.T @ mean_next)
        cross = -inverse.T @ sub_next.T @ cov_next  # Σ[t, t+1]
        cov = inverse.T @ (inverse - sub_next.T @ cross.T)
        return (mean, cov, sub), (mean, cov)

    last_mean = inverses[-1].T @ ys[-1]
    last_cov = inverses[-1].T @ inverses[-1]
    start = (last_mean, last_cov, subs[-1])
    _, (means, covs) = jax.lax.scan(backward, start, (inverses[:-1], ys[:-1], subs[:-1]), reverse=True)
    means = jnp.concatenate([means, last_mean[None]])
    covs = jnp.concatenate([covs, last_cov[None]])
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(lowers, axis1=-2, axis2=-1)))
    log_partition = 0.5 * jnp.sum(ys**2) - 0.5 * log_det + 0.5 * T * d * math.log(2 * math.pi)
    return Smoothed(means, 0.5 * (covs + jnp.swapaxes(covs, -1, -2)), log_partition, log_det)


def prior_log_partition(transition: jax.Array, T: int) -> jax.Array:
    """``Φ`` of the chain prior: ``½ log|Σ_p| + (Td/2) log 2π`` with ``|Σ_p| = |I − AAᵀ|^{T−1}``."""
    d = transition.shape[0]
    _, log_det_noise = jnp.linalg.slogdet(jnp.eye(d) - transition @ transition.T)
    return 0.5 * (T - 1) * log_det_noise + 0.5 * T * d * math.log(2 * math.pi)


@dataclasses.dataclass(frozen=True)
class GaussMarkov:
    """A stationary Gauss–Markov chain of ``T`` steps of a ``d``-dimensional latent (see the module).

    Each view has shape ``(N, T, ...)``; its factor network maps one step's item to
    ``d + d(d+1)/2`` raw numbers (as :class:`~imnn.rpm.Gaussian`). The learnt prior parameter is
    the transition matrix ``A`` (spectral norm < 1, started at ``½ I``)."""

    T: int
    d: int = 1
    discrete = False
    chain = True

    def __post_init__(self):
        _checks.positive_int("T", self.T)
        _checks.positive_int("d", self.d)

    @property
    def step(self) -> Gaussian:
        return Gaussian(self.d)

    @property
    def n_raw(self) -> int:
        return self.step.n_raw

    @property
    def dim(self) -> int:
        return self.T * self.d

    def increment(self, raw: jax.Array) -> GaussianNatural:
        return self.step.increment(raw)

    def init_prior(self) -> jax.Array:
        return math.atanh(0.5) * jnp.eye(self.d)  # A = ½ I

    def prior_natural(self, params: jax.Array) -> jax.Array:
        """The transition matrix ``A = tanh(s) M / s`` float(d, d), ``s = ‖M‖₂`` (so ``‖A‖₂ < 1``)."""
        norm = jnp.linalg.norm(params, 2)
        safe = jnp.maximum(norm, 1e-6)
        return params * jnp.where(norm > 1e-6, jnp.tanh(safe) / safe, 1.0)

    def fixed_prior(self, prior: Any) -> jax.Array:
        """A fixed transition matrix float(d, d) of spectral norm < 1."""
        transition = np.asarray(prior, np.float64).reshape(self.d, self.d) if np.size(prior) == self.d**2 else None
        if transition is None or np.linalg.norm(transition, 2) >= 1:
            raise ValueError(
                f"`prior` should be a ({self.d}, {self.d}) transition matrix of norm < 1, but is {prior!r}"
            )
        return jnp.asarray(transition, jnp.float32)

    def marginal(self) -> GaussianNatural:
        return GaussianNatural(jnp.zeros(self.d), jnp.eye(self.d))

    def describe(self) -> dict[str, Any]:
        return {"family": "GaussMarkov", "size": self.d, "T": self.T}


def chain_posterior(family: GaussMarkov, transition: jax.Array, batch: GaussianNatural) -> Smoothed:
    """``q`` of each batch item: leaves of ``batch`` float(J, B, T, ...) -> Smoothed with a leading B axis."""
    total = jax.tree.map(lambda g: jnp.sum(g, 0), batch)
    return jax.vmap(smooth, (None, 0, 0))(transition, total.h, total.precision)


def chain_bound(family: GaussMarkov, transition: jax.Array, batch: GaussianNatural, bank: GaussianNatural) -> jax.Array:
    """The inner variational bound on ``log w`` for a chain latent, float(B).

    The normalisers are per step, ``Fⱼₜ(zₜ) = (1/M) Σₘ fⱼ(zₜ|xⱼₜᵐ)`` (as torchRPM's ``RPMtemp`` and
    RP-GSSM), so ``w(X) = ∫ p(Z) Πⱼₜ fⱼ(zₜ|xⱼₜ)/Fⱼₜ(zₜ) dZ``. With ``q`` the posterior above, its
    marginals ``η_qₜ`` and the auxiliary factors ``q_t/p₀`` (tight when every ``Fⱼₜ = p₀``):

    ``−KL(q‖p) + Σⱼₜ [Φ(η_qₜ) + gⱼₜᵀμ_qₜ − Φ(η₀ + gⱼₜ)
    − log (1/M) Σₘ exp(Φ(η_qₜ + gⱼₜₘ) − Φ(η₀ + gⱼₜₘ))]``.

    At ``T = 1`` it is :func:`~imnn.rpm.objectives.use_theta_bound` of a ``Gaussian(d)`` latent.
    """
    step, n_views = family.step, batch.h.shape[0]
    q = chain_posterior(family, transition, batch)
    marginal_q = GaussianNatural(*_natural(q.mean, q.cov))  # (B, T, ...)
    eta0 = family.marginal()
    total = jax.tree.map(lambda g: jnp.sum(g, 0), batch)
    kl = jnp.sum(dot_mean(total, q.mean, q.cov), -1) - q.log_partition + prior_log_partition(transition, family.T)
    own = dot_mean(batch, q.mean[None], q.cov[None]) - step.log_partition(add(eta0, batch))  # (J, B, T)
    pairs = jax.tree.map(lambda a, b: a[None, :, None] + b[:, None], marginal_q, bank)  # (J, B, M, T, ...)
    log_ratio = step.log_partition(pairs) - step.log_partition(add(eta0, bank))[:, None]
    inner = jax.nn.logsumexp(log_ratio, 2) - math.log(bank.h.shape[1])  # (J, B, T)
    return -kl + n_views * jnp.sum(step.log_partition(marginal_q), -1) + jnp.sum(own - inner, (0, 2))


def _natural(mean: jax.Array, cov: jax.Array) -> tuple[jax.Array, jax.Array]:
    lower = cholesky(cov)
    inverse = inverse_lower(lower)
    precision = jnp.swapaxes(inverse, -1, -2) @ inverse
    return jnp.einsum("...ij,...j->...i", precision, mean), precision
