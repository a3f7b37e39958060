"""The RPM's objectives and posteriors as pure functions of natural parameters.

Notation (Walker et al. 2023): prior ``p = exp(η₀ᵀt − Φ(η₀))``; factor ``j`` at item ``x``
``fⱼ(Z|x) = exp((η₀ + gⱼ(x))ᵀt − Φ(η₀ + gⱼ(x)))``; normaliser
``Fⱼ(Z) = (1/M) Σₘ fⱼ(Z|xⱼᵐ)`` over the ``M`` items of the normaliser bank; and
``w(X) = ∫ p(Z) Πⱼ fⱼ(Z|xⱼ)/Fⱼ(Z) dZ``, so that ``log p(X) = log w(X) − J log N``.

Arrays of increments ``g`` have leading axes ``(J, items)``: ``batch`` are the items whose
objective is computed, ``bank`` the ``M`` items the normaliser mixes.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from . import markov
from .families import add, dot_mean

QUADRATURE_POINTS = {1: 2001, 2: 161}  # grid points per axis of the exact (quadrature) objective
SATURATION_STEPS = 50  # Adam steps of q="saturated"'s per-item optimisation of held-out items
SATURATION_RATE = 0.05


def _index(tree: Any, i: Any) -> Any:
    return jax.tree.map(lambda leaf: leaf[i], tree)


def _n_items(tree: Any) -> int:
    return jax.tree.leaves(tree)[0].shape[1]


def discrete_log_joint(family, eta0: jax.Array, batch: jax.Array, bank: jax.Array) -> jax.Array:
    """``log p(k) + Σⱼ [log fⱼ(k|xⱼ) − log Fⱼ(k)]``, float(B, K): ``log w`` is its logsumexp over ``k``
    and the exact posterior its softmax. ``batch`` float(J, B, K), ``bank`` float(J, M, K)."""
    log_f = family.log_probs(eta0 + batch)
    log_F = jax.nn.logsumexp(family.log_probs(eta0 + bank), axis=1) - math.log(bank.shape[1])
    return family.log_probs(eta0) + jnp.sum(log_f - log_F[:, None, :], axis=0)


def discrete_log_w(family, eta0, batch, bank) -> jax.Array:
    """The exact ``log w(X)`` of each batch item, float(B)."""
    return jax.nn.logsumexp(discrete_log_joint(family, eta0, batch, bank), axis=-1)


def posterior_natural(eta0: Any, batch: Any) -> Any:
    """``η_q = η₀ + Σⱼ gⱼ``: ``q ∝ p^{1−J} Πⱼ fⱼ``, the posterior when every ``Fⱼ = p`` (``q="use_theta"``)."""
    return add(eta0, jax.tree.map(lambda g: jnp.sum(g, axis=0), batch))


def inner_bound(family, eta0: Any, batch: Any, bank: Any, eta_q: Any) -> jax.Array:
    """The inner variational lower bound on ``log w`` for any Gaussian ``q`` of natural parameters
    ``eta_q`` (leaves (B, ...)), with the auxiliary factors ``νⱼ = η₀ − η_q``, float(B):

    ``(η₀ + Σⱼ gⱼ − η_q)ᵀμ_q − Φ(η₀) − Σⱼ Φ(η₀ + gⱼ) + (1+J) Φ(η_q)
    − Σⱼ log (1/M) Σₘ exp(Φ(η_q + gⱼₘ) − Φ(η₀ + gⱼₘ))``.

    The last term bounds ``−E_q[log Fⱼ]`` by Jensen's inequality; the bound is tight when every
    ``Fⱼ = p`` and ``q`` is the posterior. Costs ``J·B·M`` log-partitions.
    """
    n_views = jax.tree.leaves(batch)[0].shape[0]
    mismatch = jax.tree.map(jnp.subtract, posterior_natural(eta0, batch), eta_q)  # zero for q="use_theta"
    phi_factors = family.log_partition(add(eta0, batch))  # (J, B)
    phi_bank = family.log_partition(add(eta0, bank))  # (J, M)
    pairs = add(_index(eta_q, (None, slice(None), None)), _index(bank, (slice(None), None)))  # (J, B, M, ...)
    log_ratio = family.log_partition(pairs) - phi_bank[:, None, :]
    inner = jax.nn.logsumexp(log_ratio, axis=-1) - math.log(_n_items(bank))  # (J, B)
    return (
        dot_mean(mismatch, *family.moments(eta_q))
        - family.log_partition(eta0)
        - jnp.sum(phi_factors, 0)
        + (1 + n_views) * family.log_partition(eta_q)
        - jnp.sum(inner, 0)
    )


def use_theta_bound(family, eta0: Any, batch: Any, bank: Any) -> jax.Array:
    """:func:`inner_bound` with ``q ∝ p^{1−J} Πⱼ fⱼ`` (``η_q = η₀ + Σⱼ gⱼ``), float(B)."""
    return inner_bound(family, eta0, batch, bank, posterior_natural(eta0, batch))


def saturated_q(family, eta0: Any, batch: Any, bank: Any, steps: int = SATURATION_STEPS) -> Any:
    """Per batch item, the ``q`` maximising :func:`inner_bound` (``q="saturated"``: one ``q`` per item),
    found by ``steps`` Adam steps in :meth:`~imnn.rpm.Gaussian.relative` coordinates from the
    ``"use_theta"`` ``q``; the best iterate is kept, so its bound is never below ``"use_theta"``'s.
    Natural parameters with leaves (B, ...), held constant for differentiation (envelope theorem)."""
    eta0, batch, bank = jax.lax.stop_gradient((eta0, batch, bank))
    base = posterior_natural(eta0, batch)
    bound = lambda raw: inner_bound(family, eta0, batch, bank, family.relative(base, raw))
    value_and_grad = jax.value_and_grad(lambda raw: (jnp.sum(-bound(raw)), -bound(raw)), has_aux=True)
    optimiser = optax.adam(SATURATION_RATE)

    def step(carry, _):
        raw, state, best_raw, best = carry
        (_, negative), grad = value_and_grad(raw)
        better = -negative > best  # the bound at `raw`, before this step's update
        best_raw, best = jnp.where(better[:, None], raw, best_raw), jnp.where(better, -negative, best)
        updates, state = optimiser.update(grad, state)
        return (optax.apply_updates(raw, updates), state, best_raw, best), None

    start = jnp.zeros((_n_items(batch), family.n_raw), jnp.float32)
    best = jnp.full(start.shape[0], -jnp.inf)
    (_, _, best_raw, _), _ = jax.lax.scan(step, (start, optimiser.init(start), start, best), None, length=steps)
    return family.relative(base, best_raw)


def per_item(family, eta0: Any, batch: Any, bank: Any, eta_q: Any = None) -> jax.Array:
    """The objective of each batch item, float(B): exact ``log w`` (discrete) or its lower bound,
    with ``q`` of natural parameters ``eta_q`` (an amortised ``q``) or, when ``None``, the
    ``"use_theta"`` one. For a chain latent ``eta0`` is the prior's transition matrix."""
    if family.discrete:
        return discrete_log_w(family, eta0, batch, bank)
    if getattr(family, "chain", False):
        return markov.chain_bound(family, eta0, batch, bank)
    if eta_q is not None:
        return inner_bound(family, eta0, batch, bank, eta_q)
    return use_theta_bound(family, eta0, batch, bank)


def posterior(family, eta0: Any, batch: Any, bank: Any, eta_q: Any = None) -> Any:
    """Per batch item: exact class probabilities float(B, K); ``q``'s ``(mean (B, d), cov (B, d, d))``
    (of ``eta_q`` when given); or a chain's smoothed marginals ``(mean (B, T, d), cov (B, T, d, d))``."""
    if family.discrete:
        return jax.nn.softmax(discrete_log_joint(family, eta0, batch, bank))
    if getattr(family, "chain", False):
        q = markov.chain_posterior(family, eta0, batch)
        return q.mean, q.cov
    return family.moments(posterior_natural(eta0, batch) if eta_q is None else eta_q)


def quadrature_log_w(family, eta0: Any, batch: Any, bank: Any) -> jax.Array:
    """``log w(X)`` of each batch item by quadrature on a grid, float(B), for Gaussian latents of dimension ≤ 2.

    One grid of ``QUADRATURE_POINTS`` per axis serves every item: it spans the ``q`` posteriors'
    means ± 12 of their largest standard deviation (the integrand is smooth and negligible at
    the edges, so the sum over the grid is accurate to far below the bounds' gaps)."""
    d = family.dim
    mean, cov = family.moments(posterior_natural(eta0, batch))
    sd = jnp.sqrt(jnp.diagonal(cov, axis1=-2, axis2=-1))  # (B, d)
    low, high = jnp.min(mean - 12 * sd.max(0), 0), jnp.max(mean + 12 * sd.max(0), 0)
    n = QUADRATURE_POINTS[d]
    axes = [jnp.linspace(low[i], high[i], n) for i in range(d)]
    grid = jnp.stack(jnp.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d)  # (G, d)
    log_cell = sum(jnp.log(a[1] - a[0]) for a in axes)

    def log_density(g, z):  # log f at every (item of g, grid point): (J, items, G)
        eta = add(eta0, _index(g, (slice(None), slice(None), None)))
        return family.log_density(eta, z)

    log_F = jax.lax.map(lambda z: jax.nn.logsumexp(log_density(bank, z[None]), axis=1)[:, 0], grid)  # (G, J)
    log_F = log_F.T - math.log(_n_items(bank))
    integrand = family.log_density(eta0, grid) + jnp.sum(log_density(batch, grid) - log_F[:, None, :], 0)
    return jax.nn.logsumexp(integrand, axis=-1) + log_cell
