"""What to check after an RPM fit: how far each normaliser ``Fⱼ`` is from the prior (the
assumption behind ``q="use_theta"``), the bound's gap where the exact objective can be
integrated, and how much of the latent the data use."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .families import add, cholesky
from .objectives import QUADRATURE_POINTS

MONTE_CARLO_SAMPLES = 2048  # draws from each Fⱼ for a continuous latent's KL(Fⱼ ‖ p)


def prior_mismatch(family, eta0: Any, bank: Any, key: jax.Array) -> np.ndarray:
    """``KL(Fⱼ ‖ p)`` per view, float(J) nats: exact for a categorical latent, a Monte Carlo
    estimate (``MONTE_CARLO_SAMPLES`` draws of the mixture ``Fⱼ``) for a Gaussian one."""
    factors = add(eta0, bank)  # leaves (J, M, ...)
    if family.discrete:
        log_F = jax.nn.logsumexp(family.log_probs(factors), axis=1) - math.log(bank.shape[1])
        return np.asarray(jnp.sum(jnp.exp(log_F) * (log_F - family.log_probs(eta0)), -1))
    mean, cov = family.moments(factors)  # (J, M, d), (J, M, d, d)
    n_views, n_items, d = mean.shape
    pick, noise = jax.random.split(key)
    chosen = jax.random.randint(pick, (n_views, MONTE_CARLO_SAMPLES), 0, n_items)
    lower = cholesky(jnp.take_along_axis(cov, chosen[..., None, None], 1))
    eps = jax.random.normal(noise, (n_views, MONTE_CARLO_SAMPLES, d))
    z = jnp.take_along_axis(mean, chosen[..., None], 1) + jnp.einsum("jsab,jsb->jsa", lower, eps)

    def log_F(z_j, factors_j):  # z_j (S, d), factors_j leaves (M, ...) -> (S,)
        at = jax.vmap(lambda z: family.log_density(factors_j, z[None]))(z_j)  # (S, M)
        return jax.nn.logsumexp(at, -1) - math.log(n_items)

    log_F_z = jax.vmap(log_F)(z, factors)
    return np.asarray(jnp.mean(log_F_z - family.log_density(eta0, z), -1))


def chain_mismatch(family, bank: Any, key: jax.Array) -> np.ndarray:
    """A chain's ``KL(Fⱼₜ ‖ p₀)`` per view averaged over the steps ``t``, float(J) nats: each step's
    normaliser against the chain's stationary marginal ``p₀``."""
    keys = jax.random.split(key, family.T)
    per_step = [
        prior_mismatch(family.step, family.marginal(), jax.tree.map(lambda g: g[:, :, t], bank), keys[t])
        for t in range(family.T)
    ]
    return np.mean(per_step, 0)


def latent_usage(family, posterior: Any) -> dict[str, np.ndarray]:
    """Categorical: ``class_probabilities`` (the aggregate posterior, float(K)) and ``effective_classes``
    (``exp`` of its entropy). Gaussian: ``explained`` per dimension, float(d), the share of the latent's
    variance the posterior means carry (0: a dimension the data do not use)."""
    if family.discrete:
        aggregate = np.asarray(jnp.mean(posterior, 0))
        entropy = -np.sum(aggregate * np.log(np.clip(aggregate, 1e-30, None)))
        return {"class_probabilities": aggregate, "effective_classes": float(np.exp(entropy))}
    mean, cov = (np.asarray(a) for a in posterior)
    mean, cov = mean.reshape(-1, mean.shape[-1]), cov.reshape(-1, *cov.shape[-2:])  # a chain's steps pooled
    between = mean.var(0)
    within = np.diagonal(cov, axis1=-2, axis2=-1).mean(0)
    return {"explained": between / (between + within)}


def report(rpm: Any, views: tuple | None, key: jax.Array) -> dict[str, Any]:
    """``prior_mismatch`` (per view), ``identifiable``, and with ``views``: ``objective``,
    ``latent_usage`` and, for Gaussian latents of dimension ≤ 2, ``exact_objective`` and ``bound_gap``."""
    family = rpm.latent
    eta0 = rpm._model.prior(rpm.params)
    chain = getattr(family, "chain", False)
    mismatch = chain_mismatch(family, rpm._bank, key) if chain else prior_mismatch(family, eta0, rpm._bank, key)
    out: dict[str, Any] = {
        "prior_mismatch": mismatch,
        "identifiable": family.discrete or rpm.n_views > 2,
    }
    if views is None:
        return out
    out["objective"] = rpm.objective(views)
    out["latent_usage"] = latent_usage(family, rpm.posterior(views))
    if not family.discrete and not chain and family.dim in QUADRATURE_POINTS:
        out["exact_objective"] = rpm.exact_objective(views)
        out["bound_gap"] = out["exact_objective"] - out["objective"]
    return out
