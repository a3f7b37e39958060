"""Likelihood-free inference of a Gaussian's mean and variance from IMNN summaries.

Ten draws from N(μ, Σ) at three target parameter values. We fit an IMNN at the
fiducial point (0, 1), compress each target to its quasi-maximum-likelihood
estimate, and infer (μ, Σ) under a uniform prior with every method of
``imnn.lfi``: the Gaussian approximation N(θ̂, F⁻¹), rejection ABC, population
Monte Carlo and a normalising flow (neural posterior estimation). With uniform
priors the exact posterior is a grid computation, so each method is compared with
it; everything goes on one corner plot, ``lfi_mean_and_variance.png``.

Run: ``python examples/lfi_mean_and_variance.py [output_dir]``
(``IMNN_EXAMPLE_QUICK=1`` uses small simulation budgets, for tests.)
"""

import os
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro.distributions as dist
import optax

import imnn
from imnn.lfi import marginals
from imnn.problems import GaussianMeanVariance

QUICK = os.environ.get("IMNN_EXAMPLE_QUICK") == "1"
OUTPUT = Path(sys.argv[1] if len(sys.argv) > 1 else ".") / "lfi_mean_and_variance.png"
LOW, HIGH = np.array([-2.0, 0.2]), np.array([2.0, 4.0])
TARGET_θ = np.array([[0.0, 1.0], [0.8, 2.0], [-0.6, 0.6]])


class QuadraticFeatures(nn.Module):
    """Two summaries from the features (d, d²): enough to find the sufficient statistics."""

    @nn.compact
    def __call__(self, d):
        return nn.Dense(2)(jnp.concatenate([d, d**2]))


def exact_posterior(problem, data, ranges):
    """The posterior under the uniform prior on the (μ, Σ) grid, float(len(ranges[0]), len(ranges[1]))."""
    θ = jnp.stack(jnp.meshgrid(*ranges, indexing="ij"), -1)
    log_p = problem.log_likelihood(θ, data)
    return np.asarray(jnp.exp(log_p - log_p.max()))


def main():
    problem = GaussianMeanVariance(n_data=10, θ_fid=(0.0, 1.0))
    n_s = 2000 if QUICK else 5000
    sims = problem.simulations(jax.random.key(0), n_s, n_s)
    model = imnn.GradientIMNN(
        n_s=n_s, n_d=n_s, n_params=2, n_summaries=2, input_shape=problem.input_shape, θ_fid=jnp.array(problem.θ_fid),
        model=QuadraticFeatures(), optimiser=optax.adam(0.1), key_or_state=jax.random.key(1),
        fiducial=sims.fiducial, derivative=sims.derivative,
    )  # fmt: skip
    model.fit(λ=10.0, ϵ=0.1, patience=100, max_iterations=1500)
    detF = float(np.linalg.det(problem.measured_fisher(model, jax.random.key(2))))
    print(f"|F| of the IMNN summaries: {detF:.1f}   analytic |F|: {np.linalg.det(problem.fisher()):.1f}")

    keys = jax.random.split(jax.random.key(3), len(TARGET_θ))
    targets = jnp.stack([problem.simulator(k, jnp.asarray(θ)) for k, θ in zip(keys, TARGET_θ)])
    prior = dist.Uniform(jnp.asarray(LOW), jnp.asarray(HIGH)).to_event(1)
    lfi = dict(prior=prior, simulator=problem.simulate_batch, compressor=model.get_estimate)

    exact = imnn.lfi.LikelihoodFreeInference(prior, gridsize=150)
    exact.put_marginals(np.stack([exact_posterior(problem, d, exact.ranges) for d in targets]))
    gaussian = imnn.lfi.GaussianApproximation(model.get_estimate(targets), model.invF, prior, gridsize=150)
    abc = imnn.lfi.ApproximateBayesianComputation(targets, F=model.F, gridsize=150, **lfi)
    abc(ϵ=0.5, rng=jax.random.key(4), n_samples=30_000 if QUICK else 200_000)
    pmc = imnn.lfi.PopulationMonteCarlo(targets, F=model.F, gridsize=150, **lfi)
    pmc(jax.random.key(5), n_points=500 if QUICK else 2000, n_initial_points=2500 if QUICK else 10_000,
        acceptance_ratio=0.05, max_iteration=30)  # fmt: skip
    npe = imnn.lfi.NeuralPosteriorEstimation(targets, gridsize=150, **lfi)
    npe(jax.random.key(6), n_simulations=5000 if QUICK else 20_000, n_samples=5000,
        max_epochs=20 if QUICK else 200, show_progress=False)  # fmt: skip

    print("posterior mean ± std of (μ, Σ) per target")
    grid = np.stack(np.meshgrid(*exact.ranges, indexing="ij"), -1).reshape(-1, 2)
    for i, θ in enumerate(TARGET_θ):
        density = exact_posterior(problem, targets[i], exact.ranges).ravel()
        rows = {
            "exact": marginals.moments(grid, density),
            "ABC": marginals.moments(abc.parameters.accepted[i]),
            "PMC": marginals.moments(pmc.parameters.accepted[i], pmc.parameters.weights[i]),
            "flow": marginals.moments(npe.parameters.accepted[i]),
        }
        print(f"target {i + 1} (simulated at θ = {θ.tolist()}):")
        for name, (mean, std) in rows.items():
            print(f"  {name:>5}: μ = {mean[0]:+.3f} ± {std[0]:.3f}   Σ = {mean[1]:.3f} ± {std[1]:.3f}")
    print(f"ABC accepted {abc.parameters.n_accepted} of {abc.parameters.size} simulations; PMC acceptance "
          f"{np.round(pmc.acceptance_reached, 3).tolist()} after {pmc.iterations.tolist()} iterations")  # fmt: skip

    ax = exact.marginal_plot(label="exact", colours="black", axis_labels=["μ", "Σ"])
    for method, label, style in ((gaussian, "Gaussian N(θ̂, F⁻¹)", "dotted"), (abc, "ABC", "dashed"),
                                 (pmc, "PMC", "dashdot"), (npe, "flow (NPE)", "solid")):  # fmt: skip
        method.marginal_plot(ax=ax, label=label, linestyle=style)
    ax[0, 0].figure.savefig(OUTPUT, dpi=100, bbox_inches="tight")
    plt.close("all")
    print(f"corner plot written to {OUTPUT}")


if __name__ == "__main__":
    main()
