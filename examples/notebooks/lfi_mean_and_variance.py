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
# # Likelihood-free inference of a Gaussian's mean and variance
#
# Ten draws from N(μ, Σ) at three target parameter values. We fit an IMNN at the fiducial point
# (0, 1), compress each target to its quasi-maximum-likelihood estimate, and infer (μ, Σ) under a
# uniform prior with every method of `imnn.lfi`: the Gaussian approximation N(θ̂, F⁻¹), rejection ABC,
# population Monte Carlo and a normalising flow (neural posterior estimation). With a uniform prior the
# exact posterior is a grid computation, so each method is compared with it, on one corner plot.
#
# Small simulation budgets by default (about a minute); `IMNN_NOTEBOOK_FULL=1` for the full run (a few
# minutes). Also runs as a script: `python examples/notebooks/lfi_mean_and_variance.py`.

# %%
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

import imnn
from imnn.lfi import marginals
from imnn.problems import GaussianMeanVariance

FULL = os.environ.get("IMNN_NOTEBOOK_FULL") == "1"
LOW, HIGH = np.array([-2.0, 0.2]), np.array([2.0, 4.0])
TARGET_θ = np.array([[0.0, 1.0], [0.8, 2.0], [-0.6, 0.6]])


# %% [markdown]
# ## Fit the compressor
#
# The network sees each datum and its square, which is enough to find the sufficient statistics
# (sample mean and variance); it reaches nearly all of the analytic |F| = 50 in a second or two.


# %%
class QuadraticFeatures(nn.Module):
    @nn.compact
    def __call__(self, d):
        return nn.Dense(2)(jnp.concatenate([d, d**2]))


problem = GaussianMeanVariance(n_data=10, θ_fid=(0.0, 1.0))
n_s = 5000 if FULL else 2000
sims = problem.simulations(jax.random.key(0), n_s, n_s)
model = imnn.GradientIMNN(
    n_s=n_s, n_d=n_s, n_params=2, n_summaries=2, input_shape=problem.input_shape, θ_fid=jnp.array(problem.θ_fid),
    model=QuadraticFeatures(), optimiser=optax.adam(0.1), key_or_state=jax.random.key(1),
    fiducial=sims.fiducial, derivative=sims.derivative,
)
model.fit(λ=10.0, ϵ=0.1, patience=100, max_iterations=1500)
detF = float(np.linalg.det(problem.measured_fisher(model, jax.random.key(2))))
print(f"|F| of the IMNN summaries: {detF:.1f}   analytic |F|: {np.linalg.det(problem.fisher()):.1f}")

# %% [markdown]
# ## Targets, prior and the exact posterior
#
# `LikelihoodFreeInference` holds any density on the prior's grid; here the exact posterior.


# %%
def exact_posterior(data, ranges):
    θ = jnp.stack(jnp.meshgrid(*ranges, indexing="ij"), -1)
    log_p = problem.log_likelihood(θ, data)
    return np.asarray(jnp.exp(log_p - log_p.max()))


keys = jax.random.split(jax.random.key(3), len(TARGET_θ))
targets = jnp.stack([problem.simulator(k, jnp.asarray(θ)) for k, θ in zip(keys, TARGET_θ)])
prior = dist.Uniform(jnp.asarray(LOW), jnp.asarray(HIGH)).to_event(1)
lfi = dict(prior=prior, simulator=problem.simulate_batch, compressor=model.get_estimate, gridsize=150)
exact = imnn.lfi.LikelihoodFreeInference(prior, gridsize=150)
exact.put_marginals(np.stack([exact_posterior(d, exact.ranges) for d in targets]))

# %% [markdown]
# ## Every method

# %%
gaussian = imnn.lfi.GaussianApproximation(model.get_estimate(targets), model.invF, prior, gridsize=150)
abc = imnn.lfi.ApproximateBayesianComputation(targets, F=model.F, **lfi)
abc(ϵ=0.5, rng=jax.random.key(4), n_samples=200_000 if FULL else 30_000)
pmc = imnn.lfi.PopulationMonteCarlo(targets, F=model.F, **lfi)
pmc(jax.random.key(5), n_points=2000 if FULL else 500, n_initial_points=10_000 if FULL else 2500,
    acceptance_ratio=0.05, max_iteration=30)
npe = imnn.lfi.NeuralPosteriorEstimation(targets, **lfi)
npe(jax.random.key(6), n_simulations=20_000 if FULL else 5000, n_samples=5000, max_epochs=200 if FULL else 20,
    show_progress=False)
print(f"ABC accepted {abc.parameters.n_accepted} of {abc.parameters.size} simulations")
print(f"PMC: acceptance {np.round(pmc.acceptance_reached, 3).tolist()} after {pmc.iterations.tolist()} iterations")

# %% [markdown]
# ## Comparison with the exact posterior

# %%
grid = np.stack(np.meshgrid(*exact.ranges, indexing="ij"), -1).reshape(-1, 2)
print("posterior mean ± std of (μ, Σ) per target")
for i, θ in enumerate(TARGET_θ):
    rows = {
        "exact": marginals.moments(grid, exact_posterior(targets[i], exact.ranges).ravel()),
        "ABC": marginals.moments(abc.parameters.accepted[i]),
        "PMC": marginals.moments(pmc.parameters.accepted[i], pmc.parameters.weights[i]),
        "flow": marginals.moments(npe.parameters.accepted[i]),
    }
    print(f"target {i + 1} (simulated at θ = {θ.tolist()}):")
    for name, (mean, std) in rows.items():
        print(f"  {name:>5}: μ = {mean[0]:+.3f} ± {std[0]:.3f}   Σ = {mean[1]:.3f} ± {std[1]:.3f}")

ax = exact.marginal_plot(label="exact", colours="black", axis_labels=["μ", "Σ"])
for method, label, style in ((gaussian, "Gaussian N(θ̂, F⁻¹)", "dotted"), (abc, "ABC", "dashed"),
                             (pmc, "PMC", "dashdot"), (npe, "flow (NPE)", "solid")):
    method.marginal_plot(ax=ax, label=label, linestyle=style)

# %% [markdown]
# ## Are the posteriors calibrated?
#
# Three targets say little about whether a method's error bars can be trusted. Draw many parameter
# points from the prior, simulate a target at each, and run every method on all of them: for a
# calibrated posterior the rank of the true value among the posterior samples is uniform, and the
# true value falls inside the α-credible region (central interval per parameter, highest-density
# region jointly, TARP's random balls) for a fraction α of the targets. The grey bands are where a
# calibrated posterior's curves stay 99 % of the time (see `imnn.lfi.calibrate`).

# %%
n_calibration = 300 if FULL else 150
θ_true, calibration_targets = imnn.lfi.draw_targets(prior, problem.simulate_batch, n_calibration, jax.random.key(7))
summaries = model.get_estimate(calibration_targets)
many = dict(lfi, gridsize=20)
posteriors = {
    "Gaussian": imnn.lfi.GaussianApproximation(summaries, model.invF, prior, gridsize=20),
    "ABC": imnn.lfi.ApproximateBayesianComputation(calibration_targets, F=model.F, **many),
    "PMC": imnn.lfi.PopulationMonteCarlo(calibration_targets[: n_calibration // 3], F=model.F, **many),
}
posteriors["ABC"](ϵ=0.5, rng=jax.random.key(8), n_samples=200_000 if FULL else 50_000)
posteriors["PMC"](jax.random.key(9), n_points=500 if FULL else 200, n_initial_points=2500 if FULL else 1000,
                  acceptance_ratio=0.05, max_iteration=30)
flow_samples = np.asarray(npe.sample(jax.random.key(10), summaries, 1000))  # the flow is amortised
results = {name: imnn.lfi.calibrate(posterior, θ_true[: posterior.n_targets], key=jax.random.key(11),
                                    parameter_names=["μ", "Σ"], progress=False)
           for name, posterior in posteriors.items()}  # fmt: skip
results["flow"] = imnn.lfi.calibrate(None, θ_true, samples=flow_samples, prior=prior, parameter_names=["μ", "Σ"],
                                     progress=False)  # fmt: skip
for name, result in results.items():
    print(f"calibration of {name} over {result.n_targets} targets: {result.diagnosis}")
    axes = imnn.lfi.plot_calibration(result)
    axes[0, 0].figure.suptitle(name, y=1.02)

# %% [markdown]
# The Gaussian approximation uses the Fisher matrix at the fiducial Σ = 1, but F⁻¹ grows as Σ², so
# over a prior reaching Σ = 4 its error bars are mostly too narrow: it is flagged over-confident,
# as it should be. ABC, PMC and the flow use simulations across the prior and are not.
