# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Additive noise: learning to weight noisy data
#
# Ten draws from N(μ, Σ), each measured with additive Gaussian noise of a *known but different*
# variance σᵢ² (from 0.05 to 3): dᵢ ~ N(μ, Σ + σᵢ²). The Fisher information left in the noisy data is
#
# $$F_{\mu\mu} = \sum_i \frac{1}{\Sigma + \sigma_i^2},\qquad
# F_{\Sigma\Sigma} = \frac12 \sum_i \frac{1}{(\Sigma + \sigma_i^2)^2},\qquad F_{\mu\Sigma} = 0 .$$
#
# The naive summaries — sample mean and variance — weight every point equally and lose some of it.
# An IMNN fitted to noisy simulations learns to weight the points (inverse-variance weighting is
# optimal for μ) and recovers nearly all of what the noise left.
#
# Small and quick by default; `IMNN_NOTEBOOK_FULL=1` fits for longer.

# %%
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import imnn

FULL = os.environ.get("IMNN_NOTEBOOK_FULL") == "1"
ITERATIONS = 3000 if FULL else 600
noise_variance = jnp.linspace(0.05, 3.0, 10)
θ_fid = jnp.array([0.0, 1.0])


def simulator(key, θ):
    """Ten noisy draws float(10): N(μ, Σ) plus noise of variance σᵢ²."""
    signal_key, noise_key = jax.random.split(key)
    signal = θ[0] + jnp.sqrt(θ[1]) * jax.random.normal(signal_key, (10,))
    return signal + jnp.sqrt(noise_variance) * jax.random.normal(noise_key, (10,))


total = θ_fid[1] + noise_variance
F_noisy = jnp.diag(jnp.array([jnp.sum(1 / total), 0.5 * jnp.sum(1 / total**2)]))
print(f"analytic |F| without noise = 50.0, with the noise = {float(jnp.linalg.det(F_noisy)):.2f}")

# %% [markdown]
# ## The naive summaries
#
# The Fisher information of (sample mean, sample variance), from 20 000 simulations and their
# derivatives with respect to θ, with `imnn.fisher.statistics` — the same estimate the IMNN maximises.

# %%
keys = jax.random.split(jax.random.key(0), 20_000)
naive = lambda d: jnp.array([d.mean(), d.var()])
x = jax.vmap(lambda key: naive(simulator(key, θ_fid)))(keys)
dx_dθ = jax.vmap(lambda key: jax.jacfwd(lambda θ: naive(simulator(key, θ)))(θ_fid))(keys)
detF_naive = float(jnp.linalg.det(imnn.fisher.statistics(x, dx_dθ).F))
print(f"|F| of the sample mean and variance: {detF_naive:.2f}")


# %% [markdown]
# ## The IMNN
#
# A SimulatorIMNN draws fresh noisy simulations every iteration. The network is a linear map of each
# datum and its square: it can form any weighted mean and weighted variance, and has to learn the
# weights.


# %%
class Weighted(nn.Module):
    @nn.compact
    def __call__(self, d):
        return nn.Dense(2)(jnp.concatenate([d, d**2]))


settings = dict(
    n_s=1000, n_d=1000, n_params=2, n_summaries=2, input_shape=(10,), θ_fid=θ_fid,
    model=Weighted(), optimiser=optax.adam(3e-2),
)
model = imnn.SimulatorIMNN(**settings, key_or_state=jax.random.key(1), simulator=simulator)
model.fit(λ=10.0, ϵ=0.1, rng=jax.random.key(2), patience=ITERATIONS, max_iterations=ITERATIONS)
ax = model.plot(expected_detF=float(jnp.linalg.det(F_noisy)))

# %%
check = imnn.SimulatorIMNN(
    **{**settings, "n_s": 20_000, "n_d": 20_000}, key_or_state=model.state, simulator=simulator, verbose=False
)
check.set_F_statistics(model.w, key=jax.random.key(3))
detF_imnn = float(jnp.linalg.det(check.F))
detF_noisy = float(jnp.linalg.det(F_noisy))
print(
    f"|F| of the IMNN summaries: {detF_imnn:.2f} ({detF_imnn / detF_noisy:.0%} of the analytic {detF_noisy:.2f}; "
    f"the naive summaries keep {detF_naive / detF_noisy:.0%})"
)

# %% [markdown]
# ## When only the mean depends on θ: fitting from dμ/dθ alone
#
# Above, the noise adds to the variance Σ, a parameter, so each simulation's derivative differs.
# Often the noise does not depend on θ at all: a theory code or emulator gives the mean μ(θ) of the
# data, and simulations (or mocks) give only the noise, d = μ(θ) + n. Then every simulation's
# derivative *is* dμ/dθ, and an IMNN needs no derivative simulations: give `GradientIMNN` the single
# array `derivative = dμ/dθ` of shape `(*input_shape, n_params)` (it is used for each of the first
# `n_d` simulations, without copying), or give `NumericalGradientIMNN` the two means at
# θ_fid ∓ δθ/2, shape `(2, n_params, *input_shape)`.
#
# Here the mean is a decaying curve μ(θ) = A exp(−k t) on 20 times, measured with noise whose standard
# deviation grows from 0.05 to 0.4, so the exact Fisher matrix is F = dμᵀ C⁻¹ dμ.

# %%
t = jnp.linspace(0.0, 2.0, 20)
noise_σ = jnp.linspace(0.05, 0.4, 20)
θ_curve = jnp.array([1.0, 1.5])  # amplitude A, decay rate k


def curve(θ):
    return θ[0] * jnp.exp(-θ[1] * t)


def noisy_curve(key, θ):
    return curve(θ) + noise_σ * jax.random.normal(key, t.shape)


dμ_dθ = jax.jacfwd(curve)(θ_curve)  # float(20, 2): all the derivative information there is
F_curve = dμ_dθ.T @ (dμ_dθ / noise_σ[:, None] ** 2)
detF_curve = float(jnp.linalg.det(F_curve))
noise_only = jax.vmap(noisy_curve, (0, None))(jax.random.split(jax.random.key(4), 2000), θ_curve)
fiducial, validation = noise_only[:1000], noise_only[1000:]

curve_model = imnn.GradientIMNN(
    n_s=1000, n_d=1000, n_params=2, n_summaries=2, input_shape=(20,), θ_fid=θ_curve,
    model=nn.Sequential([nn.Dense(32), nn.leaky_relu, nn.Dense(2)]), optimiser=optax.adam(3e-2),
    key_or_state=jax.random.key(5), fiducial=fiducial, derivative=dμ_dθ,
    validation_fiducial=validation, validation_derivative=dμ_dθ,
)  # fmt: skip
curve_model.fit(λ=10.0, ϵ=0.1, patience=100, max_iterations=ITERATIONS)
ax = curve_model.plot(expected_detF=detF_curve)

# %% [markdown]
# The fit only ever saw dμ/dθ. Its summaries on fresh simulations, differentiated exactly through the
# simulator, keep nearly all of dμᵀC⁻¹dμ. With finite differences of the mean instead (each simulation
# d stands for its own pair d ∓ (m⁺ − m⁻)/2), the same holds up to the step's O(δθ²) error.

# %%
δθ_curve = jnp.array([0.05, 0.05])
mean_pair = jnp.stack([jax.vmap(lambda e, s=s: curve(θ_curve + s * δθ_curve / 2 * e))(jnp.eye(2)) for s in (-1, 1)])
numerical_model = imnn.NumericalGradientIMNN(
    n_s=1000, n_d=1000, n_params=2, n_summaries=2, input_shape=(20,), θ_fid=θ_curve,
    model=nn.Sequential([nn.Dense(32), nn.leaky_relu, nn.Dense(2)]), optimiser=optax.adam(3e-2),
    key_or_state=jax.random.key(5), fiducial=fiducial, derivative=mean_pair, δθ=δθ_curve,
    validation_fiducial=validation, validation_derivative=mean_pair, verbose=False,
)  # fmt: skip
numerical_model.fit(λ=10.0, ϵ=0.1, patience=100, max_iterations=ITERATIONS)

for name, fitted in [("dμ/dθ", curve_model), ("the mean at θ ∓ δθ/2", numerical_model)]:
    fresh = imnn.SimulatorIMNN(
        n_s=20_000, n_d=20_000, n_params=2, n_summaries=2, input_shape=(20,), θ_fid=θ_curve,
        model=nn.Sequential([nn.Dense(32), nn.leaky_relu, nn.Dense(2)]), optimiser=optax.adam(3e-2),
        key_or_state=fitted.state, simulator=noisy_curve, verbose=False,
    )  # fmt: skip
    fresh.set_F_statistics(fitted.w, key=jax.random.key(6))
    detF_fresh = float(jnp.linalg.det(fresh.F))
    print(f"fitted from {name}: |F| = {detF_fresh:.0f}, {detF_fresh / detF_curve:.1%} of dμᵀC⁻¹dμ = {detF_curve:.0f}")
