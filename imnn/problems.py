"""Built-in problems with analytic Fisher information, for examples, tests and benchmarks."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class StoredSimulations(NamedTuple):
    """Simulations at the fiducial point with exact and finite-difference derivatives.

    Attributes:
        fiducial: float(n_s, *input_shape).
        derivative: float(n_d, *input_shape, n_params) — exact ``dd/dθ`` of the first ``n_d``.
        numerical_derivative: float(n_d, 2, n_params, *input_shape) — seed-matched
            simulations at ``θ_fid ∓ δθ/2``.
        δθ: float(n_params).
    """

    fiducial: jax.Array
    derivative: jax.Array
    numerical_derivative: jax.Array
    δθ: jax.Array


class GaussianMeanVariance(NamedTuple):
    """``n_data`` draws from a normal distribution with unknown mean and variance ``θ = (μ, Σ)``.

    Its Fisher matrix is ``diag(n/Σ, n/(2Σ²))``: ``|F| = 50`` for ``n = 10`` at ``θ = (0, 1)``.
    """

    n_data: int = 10
    θ_fid: tuple[float, float] = (0.0, 1.0)

    @property
    def input_shape(self) -> tuple[int]:
        return (self.n_data,)

    def simulator(self, key: jax.Array, θ: jax.Array) -> jax.Array:
        """One simulation, float(n_data), differentiable in ``θ``."""
        μ, Σ = θ[0], θ[1]
        return μ + jnp.sqrt(Σ) * jax.random.normal(key, (self.n_data,))

    def simulate_batch(self, key: jax.Array, θ: jax.Array) -> jax.Array:
        """Simulations float(n, n_data), one at each row of ``θ`` float(n, 2) (the LFI simulator signature)."""
        return jax.vmap(self.simulator)(jax.random.split(key, θ.shape[0]), θ)

    def log_likelihood(self, θ: jax.Array, data: jax.Array) -> jax.Array:
        """Exact ``ln p(data | θ)`` float(...) for θ float(..., 2) and data float(n_data)."""
        μ, Σ = θ[..., 0:1], θ[..., 1:2]
        return jnp.sum(-0.5 * jnp.log(2 * jnp.pi * Σ) - (data - μ) ** 2 / (2 * Σ), axis=-1)

    def fisher(self, θ: tuple[float, float] | None = None) -> jax.Array:
        """The analytic Fisher matrix, float(2, 2)."""
        Σ = (self.θ_fid if θ is None else θ)[1]
        return jnp.diag(jnp.array([self.n_data / Σ, self.n_data / (2 * Σ**2)]))

    def simulations(
        self, key: jax.Array, n_s: int, n_d: int, δθ: tuple[float, float] = (0.1, 0.1)
    ) -> StoredSimulations:
        """``n_s`` fiducial simulations with exact and numerical derivatives for the first ``n_d``.

        Returns:
            :class:`StoredSimulations`.
        """
        θ_fid, δθ = jnp.asarray(self.θ_fid), jnp.asarray(δθ)
        keys = jax.random.split(key, n_s)
        fiducial = jax.vmap(self.simulator, (0, None))(keys, θ_fid)
        derivative = jax.vmap(jax.jacfwd(self.simulator, argnums=1), (0, None))(keys[:n_d], θ_fid)
        steps = jnp.eye(2) * δθ / 2  # row p moves parameter p only
        below_above = jnp.stack([θ_fid - steps, θ_fid + steps])  # (2, n_params, n_params)
        numerical = jax.vmap(lambda k: jax.vmap(jax.vmap(self.simulator, (None, 0)), (None, 0))(k, below_above))(
            keys[:n_d]
        )
        return StoredSimulations(fiducial, derivative, numerical, δθ)

    def measured_fisher(self, model: Any, key: jax.Array, n: int = 10_000) -> jax.Array:
        """The Fisher matrix, float(2, 2), of a fitted IMNN's summaries (at ``model.w``) on ``n`` new simulations.

        The |F| of the ~1 000 simulations an IMNN trains on fluctuates by tens of percent;
        compare this one with :meth:`fisher`.
        """
        from . import executors, fisher, sources  # the problems module stays importable on its own

        sims = self.simulations(key, n, n)
        summaries = executors.in_memory(sources.gradient(n), model._network.apply).summaries
        return fisher.statistics(*summaries(model.w, (sims.fiducial, sims.derivative), key)).F


class GaussianRandomField(NamedTuple):
    """A periodic ``size × size`` Gaussian random field with power spectrum ``P(k) = A k^−B``, ``θ = (A, B)``.

    White noise is Fourier transformed, scaled by ``√P(k)`` (the ``k = 0`` mode removed) and
    transformed back. Its Fisher matrix is exact:
    ``F_ij = ½ Σ_{k≠0} ∂_i ln P(k) ∂_j ln P(k)`` over every non-zero mode of the grid.
    """

    size: int = 32
    θ_fid: tuple[float, float] = (1.0, 0.5)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, 1)

    def _wavenumbers(self) -> tuple[jax.Array, jax.Array]:
        frequencies = jnp.fft.fftfreq(self.size) * self.size
        k = jnp.sqrt(frequencies[:, None] ** 2 + frequencies[None, :] ** 2)
        return k > 0, jnp.where(k > 0, k, 1.0)

    def simulator(self, key: jax.Array, θ: jax.Array) -> jax.Array:
        """One field, float(size, size, 1), differentiable in ``θ``."""
        nonzero, k = self._wavenumbers()
        amplitude = jnp.where(nonzero, jnp.sqrt(θ[0]) * k ** (-θ[1] / 2), 0.0)
        white = jax.random.normal(key, (self.size, self.size))
        return jnp.fft.ifft2(jnp.fft.fft2(white) * amplitude).real[..., None]

    def simulate_batch(self, key: jax.Array, θ: jax.Array) -> jax.Array:
        """Fields float(n, size, size, 1), one at each row of ``θ`` float(n, 2)."""
        return jax.vmap(self.simulator)(jax.random.split(key, θ.shape[0]), θ)

    def fisher(self, θ: tuple[float, float] | None = None) -> jax.Array:
        """The analytic Fisher matrix, float(2, 2)."""
        A = (self.θ_fid if θ is None else θ)[0]
        nonzero, k = self._wavenumbers()
        dlnP_dθ = jnp.stack([jnp.full_like(k, 1 / A), -jnp.log(k)])[:, nonzero]  # (2, size² − 1)
        return 0.5 * dlnP_dθ @ dlnP_dθ.T
