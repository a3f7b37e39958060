"""Latent families of the RPM, in natural parameters.

A family describes the prior ``p(Z)``, the recognition factors ``f_j(Z|x_j)`` and the
posterior ``q(Z|X)``, all members of one exponential family. Factors are written
*relative to the prior*: a factor network's ``n_raw`` outputs become an ``increment``
``g`` of natural parameters whose precision part is positive semi-definite, and the
factor is ``η₀ + g``. Sums such as ``η₀ + Σⱼ gⱼ`` then stay valid distributions.

Base measures are folded into the log-partition ``Φ`` (the Gaussian's ``(d/2) log 2π``),
so every ``log_density`` is a normalised log-density and objectives are log-likelihoods.

Each family is a frozen dataclass of sizes with pure, jittable methods over arrays whose
leading axes are batch axes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks

SOFTPLUS_INVERSE_OF_1 = math.log(math.e - 1.0)


class GaussianNatural(NamedTuple):
    """Natural parameters of a Gaussian ``∝ exp(hᵀz − ½ zᵀPz)``: ``h`` float(..., d) and the precision
    ``P``, float(..., d, d) (full) or float(..., d) (diagonal)."""

    h: jax.Array
    precision: jax.Array


def cholesky(matrix: jax.Array) -> jax.Array:
    """Lower Cholesky factor of float(..., d, d), unrolled over the ``d`` (small) rows as elementwise
    operations on the batch axes: XLA:CPU's batched LAPACK Cholesky crawls on millions of tiny matrices."""
    d = matrix.shape[-1]
    columns: list[list[jax.Array]] = [[None] * d for _ in range(d)]
    for i in range(d):
        for k in range(i + 1):
            partial = matrix[..., i, k] - sum(columns[i][m] * columns[k][m] for m in range(k))
            columns[i][k] = jnp.sqrt(partial) if i == k else partial / columns[k][k]
    zero = jnp.zeros(matrix.shape[:-2], matrix.dtype)
    return jnp.stack([jnp.stack([columns[i][k] if k <= i else zero for k in range(d)], -1) for i in range(d)], -2)


def solve_lower(lower: jax.Array, b: jax.Array) -> jax.Array:
    """``L⁻¹ b`` for lower-triangular float(..., d, d) and float(..., d), by unrolled forward substitution."""
    d = lower.shape[-1]
    x: list[jax.Array] = []
    for i in range(d):
        x.append((b[..., i] - sum(lower[..., i, k] * x[k] for k in range(i))) / lower[..., i, i])
    return jnp.stack(x, -1)


def inverse_lower(lower: jax.Array) -> jax.Array:
    """``L⁻¹`` of lower-triangular float(..., d, d), one unrolled substitution per column."""
    d = lower.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(d, dtype=lower.dtype), lower.shape)
    return jnp.stack([solve_lower(lower, eye[..., i]) for i in range(d)], -1)


def dot_mean(g: GaussianNatural, mean: jax.Array, cov: jax.Array) -> jax.Array:
    """``gᵀ E[t(z)] = hᵀm − ½ tr(P (S + mmᵀ))`` for ``z ~ N(m, S)``, float(...); ``P`` full or diagonal."""
    second = cov + mean[..., :, None] * mean[..., None, :]
    if g.precision.ndim == g.h.ndim:  # a diagonal precision
        second = jnp.diagonal(second, axis1=-2, axis2=-1)
        return jnp.sum(g.h * mean, -1) - 0.5 * jnp.sum(g.precision * second, -1)
    return jnp.sum(g.h * mean, -1) - 0.5 * jnp.sum(g.precision * second, (-2, -1))


def add(eta: Any, increment: Any) -> Any:
    """``η + g`` leaf by leaf, broadcasting leading axes."""
    return jax.tree.map(jnp.add, eta, increment)


@dataclasses.dataclass(frozen=True)
class Categorical:
    """A categorical latent over ``K`` classes; natural parameters are logits float(..., K)."""

    K: int
    discrete = True

    def __post_init__(self):
        _checks.positive_int("K", self.K)
        if self.K < 2:
            raise ValueError(f"`K` (={self.K}) should be at least 2 classes")

    @property
    def n_raw(self) -> int:
        return self.K

    @property
    def dim(self) -> int:
        return 1

    def increment(self, raw: jax.Array) -> jax.Array:
        return raw

    def init_prior(self) -> jax.Array:
        return jnp.zeros(self.K)

    def prior_natural(self, params: jax.Array) -> jax.Array:
        return jax.nn.log_softmax(params)

    def fixed_prior(self, prior: Any) -> jax.Array:
        """Logits of the class probabilities ``prior`` float(K) (positive, summing to 1)."""
        probs = np.asarray(prior, dtype=np.float64)
        if probs.shape != (self.K,) or not np.all(probs > 0) or abs(probs.sum() - 1) > 1e-6:
            raise ValueError(f"`prior` should be {self.K} positive class probabilities summing to 1, but is {prior!r}")
        return jnp.log(jnp.asarray(probs, jnp.float32))

    def log_partition(self, eta: jax.Array) -> jax.Array:
        return jax.nn.logsumexp(eta, axis=-1)

    def log_probs(self, eta: jax.Array) -> jax.Array:
        """float(..., K): log-probabilities of each class."""
        return jax.nn.log_softmax(eta, axis=-1)

    def moments(self, eta: jax.Array) -> jax.Array:
        """The class probabilities float(..., K)."""
        return jax.nn.softmax(eta, axis=-1)

    def describe(self) -> dict[str, Any]:
        return {"family": "Categorical", "size": self.K}


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """A ``d``-dimensional Gaussian latent with full covariance.

    A factor network's raw outputs float(d + d(d+1)/2) are the increment of ``h`` and the
    lower triangle of ``L`` (diagonal through a softplus), the precision increment being ``LLᵀ``.
    """

    d: int
    discrete = False
    diagonal = False

    def __post_init__(self):
        _checks.positive_int("d", self.d)

    @property
    def n_raw(self) -> int:
        return self.d + (self.d if self.diagonal else self.d * (self.d + 1) // 2)

    @property
    def dim(self) -> int:
        return self.d

    def _square(self, raw: jax.Array) -> jax.Array:
        """``LLᵀ`` from the lower triangle ``raw`` float(d(d+1)/2) (a diagonal: ``softplus(raw)`` float(d))."""
        if self.diagonal:
            return jax.nn.softplus(raw)
        rows, cols = np.tril_indices(self.d)
        values = jnp.where(rows == cols, jax.nn.softplus(raw), raw)
        lower = jnp.zeros((*raw.shape[:-1], self.d, self.d), raw.dtype).at[..., rows, cols].set(values)
        return lower @ jnp.swapaxes(lower, -1, -2)

    def increment(self, raw: jax.Array) -> GaussianNatural:
        return GaussianNatural(raw[..., : self.d], self._square(raw[..., self.d :]))

    def relative(self, base: GaussianNatural, raw: jax.Array) -> GaussianNatural:
        """A Gaussian free to move away from ``base`` (``base`` itself at ``raw = 0``), for a ``q``
        optimised per item: ``h = h_b + raw[:d]``, ``P = L_b M Mᵀ L_bᵀ`` with ``L_b`` the Cholesky
        factor of ``P_b`` and ``M`` lower triangular of diagonal ``exp(·)`` (a diagonal: ``P_b e^{2r}``)."""
        h, triangle = base.h + raw[..., : self.d], raw[..., self.d :]
        if self.diagonal:
            return GaussianNatural(h, base.precision * jnp.exp(2 * triangle))
        rows, cols = np.tril_indices(self.d)
        values = jnp.where(rows == cols, jnp.exp(triangle), triangle)
        middle = jnp.zeros((*raw.shape[:-1], self.d, self.d), raw.dtype).at[..., rows, cols].set(values)
        lower = cholesky(base.precision) @ middle
        return GaussianNatural(h, lower @ jnp.swapaxes(lower, -1, -2))

    def init_prior(self) -> jax.Array:
        """Raw prior parameters, as for a factor: ``h = 0`` and unit precision."""
        triangle = np.zeros(self.n_raw - self.d, np.float32)
        diagonal = np.arange(self.d) if self.diagonal else [r == c for r, c in zip(*np.tril_indices(self.d))]
        triangle[diagonal] = SOFTPLUS_INVERSE_OF_1
        return jnp.concatenate([jnp.zeros(self.d), jnp.asarray(triangle)])

    def prior_natural(self, params: jax.Array) -> GaussianNatural:
        return self.increment(params)

    def fixed_prior(self, prior: Any) -> GaussianNatural:
        """Natural parameters of ``prior = (mean float(d), cov float(d, d))`` (diagonal: ``var`` float(d))."""
        if not (isinstance(prior, (tuple, list)) and len(prior) == 2):
            raise TypeError(f"`prior` should be (mean, cov) for a {type(self).__name__} latent, but is {prior!r}")
        mean, cov = (np.asarray(a, np.float64) for a in prior)
        cov_shape = (self.d,) if self.diagonal else (self.d, self.d)
        if mean.shape != (self.d,) or cov.shape != cov_shape:
            raise ValueError(f"`prior` should be (mean {(self.d,)}, cov {cov_shape}), but has shapes "
                             f"{mean.shape} and {cov.shape}")  # fmt: skip
        full = np.diag(cov) if self.diagonal else cov
        if not (np.allclose(full, full.T) and np.all(np.linalg.eigvalsh(full) > 0)):
            raise ValueError("`prior`'s covariance should be symmetric positive-definite")
        precision = np.linalg.inv(full)
        h = precision @ mean
        kept = np.diag(precision) if self.diagonal else precision
        return GaussianNatural(jnp.asarray(h, jnp.float32), jnp.asarray(kept, jnp.float32))

    def log_partition(self, eta: GaussianNatural) -> jax.Array:
        """``Φ(η) = ½ hᵀP⁻¹h − ½ log|P| + (d/2) log 2π``, float(...)."""
        constant = 0.5 * self.d * math.log(2 * math.pi)
        if self.diagonal:
            return 0.5 * jnp.sum(eta.h**2 / eta.precision - jnp.log(eta.precision), -1) + constant
        lower = cholesky(eta.precision)
        whitened = solve_lower(lower, eta.h)
        log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(lower, axis1=-2, axis2=-1)), -1)
        return 0.5 * jnp.sum(whitened**2, -1) - 0.5 * log_det + constant

    def log_density(self, eta: GaussianNatural, z: jax.Array) -> jax.Array:
        """``log N(z)`` for ``z`` float(..., d), broadcasting against ``η``'s leading axes."""
        if self.diagonal:
            quadratic = jnp.sum(eta.precision * z**2, -1)
        else:
            quadratic = jnp.einsum("...i,...ij,...j->...", z, eta.precision, z)
        return jnp.sum(eta.h * z, -1) - 0.5 * quadratic - self.log_partition(eta)

    def moments(self, eta: GaussianNatural) -> tuple[jax.Array, jax.Array]:
        """``(mean float(..., d), cov float(..., d, d))``."""
        if self.diagonal:
            variance = 1.0 / eta.precision
            return eta.h * variance, variance[..., None] * jnp.eye(self.d)
        inverse = inverse_lower(cholesky(eta.precision))
        cov = jnp.swapaxes(inverse, -1, -2) @ inverse
        return jnp.einsum("...ij,...j->...i", cov, eta.h), cov

    def describe(self) -> dict[str, Any]:
        return {"family": type(self).__name__, "size": self.d}


@dataclasses.dataclass(frozen=True)
class DiagGaussian(Gaussian):
    """A ``d``-dimensional Gaussian latent with diagonal covariance (raw outputs float(2d): the
    increment of ``h``, and of the precision through a softplus)."""

    diagonal = True


FAMILIES = {"Categorical": Categorical, "Gaussian": Gaussian, "DiagGaussian": DiagGaussian}


def from_description(description: dict[str, Any]) -> Any:
    """The family a :meth:`describe` mapping names (for loading)."""
    name = description.get("family")
    if name == "GaussMarkov":
        from .markov import GaussMarkov

        return GaussMarkov(int(description["T"]), int(description["size"]))
    if name not in FAMILIES:
        raise ValueError(f"unknown latent family {name!r} in the file; known: {(*FAMILIES, 'GaussMarkov')}")
    return FAMILIES[name](int(description["size"]))
