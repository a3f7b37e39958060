# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Inferring the power spectrum of a 2-D Gaussian random field
#
# Fields on an N×N periodic grid with power spectrum P(k) = A k^−B; the parameters are θ = (A, B)
# at the fiducial point (1, 0.5). A Gaussian field's Fisher information is exact:
#
# $$F_{ij} = \tfrac12 \sum_{\mathbf k \ne 0} \frac{\partial \ln P(k)}{\partial \theta_i}\,
# \frac{\partial \ln P(k)}{\partial \theta_j},\qquad
# \frac{\partial \ln P}{\partial A} = \frac1A,\quad \frac{\partial \ln P}{\partial B} = -\ln k,$$
#
# summed over every non-zero mode of the grid (a mode and its mirror −k together make one complex
# degree of freedom; the Nyquist modes are real and count half). We fit a convolutional SimulatorIMNN,
# measure the fraction of the analytic |F| its two summaries keep, and infer (A, B) for a target field
# with ABC and PMC.
#
# Small and quick by default (16×16, 400 iterations); `IMNN_NOTEBOOK_FULL=1` fits 32×32 fields for
# 1 200 iterations.

# %%
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro.distributions as dist
import optax

import imnn

FULL = os.environ.get("IMNN_NOTEBOOK_FULL") == "1"
N = 32 if FULL else 16
ITERATIONS = 1200 if FULL else 400

# %% [markdown]
# ## Simulator and analytic Fisher matrix
#
# White noise, Fourier transformed, scaled by √P(k) and transformed back gives a real field whose
# Fourier modes have variance ∝ P(k); the k = 0 mode is removed. The amplitude is written as
# √A k^(−B/2) so that its derivatives stay finite.

# %%
wavenumbers = jnp.fft.fftfreq(N) * N
k = jnp.sqrt(wavenumbers[:, None] ** 2 + wavenumbers[None, :] ** 2)
nonzero = k > 0
safe_k = jnp.where(nonzero, k, 1.0)
θ_fid = jnp.array([1.0, 0.5])


def simulator(key, θ):
    """One field float(N, N, 1) with P(k) = A k^-B."""
    amplitude = jnp.where(nonzero, jnp.sqrt(θ[0]) * safe_k ** (-θ[1] / 2), 0.0)
    white = jax.random.normal(key, (N, N))
    return jnp.fft.ifft2(jnp.fft.fft2(white) * amplitude).real[..., None]


def analytic_fisher(θ):
    dlnP_dθ = jnp.stack([jnp.full_like(k, 1 / θ[0]), -jnp.log(safe_k)])[:, nonzero]  # (2, N² − 1)
    return 0.5 * dlnP_dθ @ dlnP_dθ.T


F_analytic = analytic_fisher(θ_fid)
print(f"analytic |F| = {float(jnp.linalg.det(F_analytic)):.1f} on a {N}×{N} grid")

fig, ax = plt.subplots(1, 3, figsize=(12, 4))
for axis, key, θ in zip(ax, jax.random.split(jax.random.key(0), 3), ([1.0, 0.5], [1.0, 1.5], [0.3, 0.5])):
    axis.imshow(simulator(key, jnp.array(θ))[..., 0], cmap="RdBu_r")
    axis.set_title(f"A = {θ[0]}, B = {θ[1]}")
    axis.axis("off")

# %% [markdown]
# ## The network
#
# The information is in the power at each scale, so the network measures it: at each of four scales
# a 3×3 convolution (8 filters) whose squared output is averaged over the field (a band power, on a log
# scale), then the field is averaged down 2×2; a small dense network turns the 32 log band powers into
# two summaries. The convolutions are plain `flax.linen.Conv` layers: on a CPU the fit engine measures
# its two ways of running iterations on the first few and keeps the faster (one program per iteration
# here, since XLA:CPU compiles a convolution's kernel gradient poorly inside loops).


# %%
class BandPowers(nn.Module):
    @nn.compact
    def __call__(self, x):
        log_powers = []
        for _ in range(4):
            x = nn.Conv(8, (3, 3))(x)
            log_powers.append(jnp.log(jnp.mean(x**2, axis=(0, 1)) + 1e-6))
            x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2, -1).mean((1, 3))
        h = nn.leaky_relu(nn.Dense(32)(jnp.concatenate(log_powers)))
        return nn.Dense(2)(h)


# %% [markdown]
# ## Fit
#
# 500 new simulations every iteration (and their derivatives with respect to θ, by differentiating
# through the simulator). Adam's learning rate warms up over 50 iterations to 3 × 10⁻² and then decays
# on a cosine to 1.5 × 10⁻³: the large rate finds the band powers quickly, the small one settles them.

# %%
schedule = optax.warmup_cosine_decay_schedule(3e-3, 3e-2, warmup_steps=50, decay_steps=ITERATIONS, end_value=1.5e-3)
settings = dict(
    n_s=500, n_d=500, n_params=2, n_summaries=2, input_shape=(N, N, 1), θ_fid=θ_fid,
    model=BandPowers(), optimiser=optax.adam(schedule),
)
model = imnn.SimulatorIMNN(**settings, key_or_state=jax.random.key(1), simulator=simulator)
model.fit(λ=10.0, ϵ=0.1, rng=jax.random.key(2), patience=ITERATIONS, max_iterations=ITERATIONS)
model.information(key=jax.random.key(12))  # |F| at the best weights on 500 new fields, with its 90 % interval
ax = model.plot(expected_detF=float(jnp.linalg.det(F_analytic)))

# %% [markdown]
# ## Fraction of the analytic information
#
# Measured on 5 000 new simulations at the best weights, with a 90 % bootstrap interval: the |F| in
# the fit's history is the largest of many noisy estimates from 500 fields and can sit above the truth.

# %%
check = imnn.SimulatorIMNN(
    **{**settings, "n_s": 5000, "n_d": 5000}, key_or_state=model.state, simulator=simulator, verbose=False
)
check.set_F_statistics(model.w, key=jax.random.key(3))
fraction = float(jnp.linalg.det(check.F) / jnp.linalg.det(F_analytic))
print(f"|F| of the summaries: {float(jnp.linalg.det(check.F)):.1f} = {fraction:.1%} of the analytic |F|")
low, high = np.asarray(check.information(model.w, key=jax.random.key(13)).detF_interval) / jnp.linalg.det(F_analytic)
print(f"90 % interval: {low:.1%} – {high:.1%} of the analytic |F|")

# %% [markdown]
# ## Information across the prior
#
# The network was fitted at (A, B) = (1, 0.5). How much of the analytic information do its summaries
# keep elsewhere? `model.information_map` measures their Fisher matrix at each point of a grid (500 new
# fields at each) and the plot divides it by the analytic |F(A, B)|.

# %%
points = imnn.information_map.grid(θ_fid, {0: np.linspace(0.2, 1.6, 6), 1: np.linspace(0.1, 1.6, 6)})
information = model.information_map(points, simulator=simulator, key=jax.random.key(14), n_s=500,
                                     reference=analytic_fisher, progress=False)  # fmt: skip
map_ax = imnn.plotting.plot_information_map(information, parameter_names=["A", "B"])
print(f"fraction of the analytic |F| across the grid: {information.ratio.min():.0%} – {information.ratio.max():.0%}")

# %% [markdown]
# ## What the network adds to a power spectrum
#
# A power spectrum in a few wide bins is the statistic many analyses start from. `imnn.hybrid.Hybrid`
# fits a network *on top of it*: the summaries are `[power spectrum, network]`, the power spectrum is
# never trained, so the network learns only what the bins miss. The statistic is whitened on fiducial
# fields first (a linear map, so no |F| changes) for the regulariser's sake. What three wide bins miss
# is how the power varies within each bin, so the network here weights the power of every Fourier
# mode by a small MLP of ln|k|. (The band-power CNN above, whose four dyadic scales are bins of their
# own, finds nothing to add on top of this statistic.)

# %%
shell = jnp.clip(jnp.round(k).astype(int) // (N // 4), 0, 2).ravel()  # three wide bins of |k|
averaging = jax.nn.one_hot(shell, 3).T * nonzero.ravel()
averaging = averaging / averaging.sum(axis=1, keepdims=True)


def power_spectrum(d):
    return averaging @ (jnp.abs(jnp.fft.fft2(d[..., 0])) ** 2).ravel() / N**2


class ModeWeighting(nn.Module):
    """Two summaries: the power of each mode, weighted by an MLP of ln|k|."""

    @nn.compact
    def __call__(self, d):
        weights = nn.Dense(2)(nn.tanh(nn.Dense(16)(jnp.log(safe_k).reshape(-1, 1))))  # (N², 2)
        mode_power = (jnp.abs(jnp.fft.fft2(d[..., 0])) ** 2 * nonzero).reshape(-1, 1) / N**2
        return jnp.mean(weights * mode_power, axis=0)


fiducial_fields = jax.vmap(simulator, (0, None))(jax.random.split(jax.random.key(15), 2000), θ_fid)
hybrid_settings = {**settings, "n_summaries": 5, "optimiser": optax.adam(1e-2),
                   "model": imnn.hybrid.Hybrid(imnn.hybrid.whiten(power_spectrum, fiducial_fields), ModeWeighting())}
hybrid_model = imnn.SimulatorIMNN(**hybrid_settings, key_or_state=jax.random.key(1), simulator=simulator, verbose=False)
hybrid_model.fit(λ=10.0, ϵ=0.1, rng=jax.random.key(2), patience=ITERATIONS, max_iterations=ITERATIONS)
hybrid_check = imnn.SimulatorIMNN(**{**hybrid_settings, "n_s": 5000, "n_d": 5000}, key_or_state=hybrid_model.state,
                                  simulator=simulator, verbose=False)  # fmt: skip
parts = hybrid_check.hybrid_information(key=jax.random.key(16), n_bootstrap=200)
detF_analytic = float(jnp.linalg.det(F_analytic))
for part in parts._fields:
    print(f"{part}: {float(getattr(parts, part).detF) / detF_analytic:.1%} of the analytic |F|")
hybrid_ax = imnn.plotting.plot_hybrid_information({"3-bin power spectrum": parts}, expected_detF=detF_analytic)

# %% [markdown]
# ## Inference for a target field
#
# A target simulated at θ = (0.8, 0.8), a uniform prior on [0.1, 1.6]², and the IMNN's
# quasi-maximum-likelihood estimates as summaries; distances are weighted by the Fisher matrix.

# %%
θ_target = jnp.array([0.8, 0.8])
target = simulator(jax.random.key(4), θ_target)
prior = dist.Uniform(jnp.array([0.1, 0.1]), jnp.array([1.6, 1.6])).to_event(1)


def simulate_batch(key, θ):
    return jax.vmap(simulator)(jax.random.split(key, θ.shape[0]), θ)


lfi = dict(prior=prior, simulator=simulate_batch, compressor=model.get_estimate)
estimate = model.get_estimate(target)
print("estimate:", np.round(estimate, 3), "±", np.round(np.sqrt(np.diag(check.invF)), 3))

gaussian = imnn.lfi.GaussianApproximation(estimate, check.invF, prior)
abc = imnn.lfi.ApproximateBayesianComputation(target, F=check.F, batch_size=2000, **lfi)
abc(ϵ=1.0, rng=jax.random.key(5), n_samples=100_000 if FULL else 20_000)
pmc = imnn.lfi.PopulationMonteCarlo(target, F=check.F, batch_size=2000, **lfi)
pmc(jax.random.key(6), n_points=1000 if FULL else 300, n_initial_points=5000 if FULL else 1500,
    acceptance_ratio=0.1, max_iteration=20)

for name, samples, weights in (("ABC", abc.parameters.accepted[0], None),
                               ("PMC", pmc.parameters.accepted[0], pmc.parameters.weights[0])):
    mean, std = imnn.lfi.marginals.moments(samples, weights)
    print(f"{name}: A = {mean[0]:.3f} ± {std[0]:.3f}, B = {mean[1]:.3f} ± {std[1]:.3f}")

ax = gaussian.marginal_plot(known=θ_target, label="Gaussian N(θ̂, F⁻¹)", axis_labels=["A", "B"])
abc.marginal_plot(ax=ax, label="ABC", linestyle="dashed")
ax = pmc.marginal_plot(ax=ax, label="PMC", linestyle="dotted")
