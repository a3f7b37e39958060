"""Calibration diagnostics against posteriors whose calibration is known exactly.

The exact posterior of the Gaussian mean/variance problem on a grid is calibrated by
construction (targets drawn from the prior); shrinking its samples towards their mean by 2
(covariance / 4) makes it over-confident and stretching them by 2 under-confident. A
Gaussian approximation N(θ̂, F⁻¹) with θ̂ ~ N(θ_true, F⁻¹) under a flat prior is exact too.
"""

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro.distributions as dist
import pytest

import imnn
from imnn.lfi import calibration, marginals
from imnn.problems import GaussianMeanVariance

PROBLEM = GaussianMeanVariance(n_data=10)
LOW, HIGH = np.array([-2.0, 0.3]), np.array([2.0, 3.0])
N_TARGETS, N_SAMPLES = 300, 500


def prior():
    return dist.Uniform(jnp.asarray(LOW), jnp.asarray(HIGH)).to_event(1)


def grid_posterior_samples(data, key, gridsize=200):
    """Samples float(N_SAMPLES, 2) from the exact posterior on a grid (uniform within each cell)."""
    ranges = marginals.grid(LOW, HIGH, [gridsize, gridsize])
    θ = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 2)
    log_p = np.asarray(PROBLEM.log_likelihood(jnp.asarray(θ), data))
    p = np.exp(log_p - log_p.max())
    cell_key, jitter_key = jax.random.split(key)
    cells = np.asarray(jax.random.choice(cell_key, len(θ), (N_SAMPLES,), p=jnp.asarray(p / p.sum())))
    width = (HIGH - LOW) / (gridsize - 1)
    return θ[cells] + width * (np.asarray(jax.random.uniform(jitter_key, (N_SAMPLES, 2))) - 0.5)


@pytest.fixture(scope="module")
def exact():
    θ_true, data = calibration.draw_targets(prior(), PROBLEM.simulate_batch, N_TARGETS, jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), N_TARGETS)
    samples = np.stack([grid_posterior_samples(d, k) for d, k in zip(data, keys)])
    return np.asarray(θ_true), samples


def scaled(samples, factor):
    mean = samples.mean(1, keepdims=True)
    return mean + factor * (samples - mean)


def diagnose(θ_true, samples, **kwargs):
    return calibration.calibrate(None, θ_true, samples=samples, prior=prior(), parameter_names=["μ", "Σ"],
                                 progress=False, **kwargs)  # fmt: skip


def test_the_exact_posterior_is_calibrated(exact):
    result = diagnose(*exact)
    assert set(result.diagnosis.values()) == {"calibrated"}, result.diagnosis
    assert result.ranks.shape == (N_TARGETS, 2) and np.all((0 <= result.ranks) & (result.ranks <= 1))
    assert np.max(np.abs(result.hpd - result.levels)) <= result.band


@pytest.mark.parametrize("factor, verdict", [(0.5, "over-confident"), (2.0, "under-confident")])
def test_shrunk_and_stretched_posteriors_are_flagged_in_the_right_direction(exact, factor, verdict):
    θ_true, samples = exact
    result = diagnose(θ_true, scaled(samples, factor))
    assert set(result.diagnosis.values()) == {verdict}, result.diagnosis


def test_weights_count_as_posterior_mass(exact):
    """Duplicating the first half of each target's samples equals weighting it twice."""
    θ_true, samples = exact
    half = N_SAMPLES // 2
    duplicated = np.concatenate([samples, samples[:, :half]], axis=1)
    weights = np.concatenate([2 * np.ones(half), np.ones(N_SAMPLES - half)])
    a = diagnose(θ_true, duplicated, key=jax.random.key(3))
    b = diagnose(θ_true, samples, weights=[weights] * N_TARGETS, key=jax.random.key(3))
    np.testing.assert_allclose(a.ranks, b.ranks, atol=1e-6)
    np.testing.assert_allclose(a.tarp_credibility, b.tarp_credibility, atol=1e-6)


@pytest.mark.parametrize("scale, verdict", [(1.0, "calibrated"), (0.25, "over-confident"), (4.0, "under-confident")])
def test_the_gaussian_approximation_with_exact_errors_is_calibrated(scale, verdict):
    invF = np.linalg.inv(np.asarray(PROBLEM.fisher()))
    θ_key, noise_key, sample_key = jax.random.split(jax.random.key(4), 3)
    wide = dist.Uniform(jnp.array([-10.0, -10.0]), jnp.array([10.0, 10.0])).to_event(1)
    θ_true = np.asarray(jax.random.uniform(θ_key, (N_TARGETS, 2), minval=-1, maxval=1))
    estimates = θ_true + np.asarray(jax.random.normal(noise_key, (N_TARGETS, 2))) @ np.linalg.cholesky(invF).T
    posterior = imnn.lfi.GaussianApproximation(estimates, scale * invF, wide, gridsize=20)
    result = calibration.calibrate(posterior, θ_true, key=sample_key, n_samples=400, progress=False)
    assert set(result.diagnosis.values()) == {verdict}, result.diagnosis


def test_plot_draws_ranks_coverage_and_tarp(exact):
    matplotlib.use("Agg")
    result = diagnose(*exact)
    ax = calibration.plot_calibration(result)
    assert ax.shape == (2, 2)
    assert ax[0, 0].get_xlabel() == "rank of μ"
    assert [line.get_label() for line in ax[1, 0].lines[1:]] == ["central μ", "central Σ", "HPD"]
    np.testing.assert_allclose(ax[1, 1].lines[1].get_ydata(), result.tarp)


def test_bad_input_is_named(exact):
    θ_true, samples = exact
    with pytest.raises(ValueError, match="`θ_true`"):
        diagnose(θ_true[:10], samples)
    with pytest.raises(ValueError, match="`prior`"):
        calibration.calibrate(None, θ_true, samples=samples)
    with pytest.raises(ValueError, match="`parameter_names`"):
        calibration.calibrate(None, θ_true, samples=samples, prior=prior(), parameter_names=["μ"], progress=False)
    with pytest.raises(ValueError, match="`samples`"):
        calibration.calibrate(None, θ_true)
    with pytest.raises(ValueError, match="no posterior samples yet"):
        calibration.posterior_samples(imnn.lfi.LikelihoodFreeInference(prior()))
    posterior = imnn.lfi.GaussianApproximation(θ_true[:2], np.eye(2), prior(), gridsize=10)
    with pytest.raises(ValueError, match="`key`"):
        calibration.posterior_samples(posterior)
