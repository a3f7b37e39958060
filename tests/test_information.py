"""Error bars on the information: the bootstrap interval of |F| and the Hartlap correction, against exact values.

The Gaussian problem (n = 10 draws of N(μ, Σ) at μ = 0, Σ = 1) has the sufficient statistics
t = (mean d, mean d²), whose mean is (μ, μ² + Σ) and covariance diag(Σ/n, 2Σ²/n) at μ = 0: the
exact-MLE summaries keep all of the analytic F = diag(10, 5), |F| = 50.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import imnn
from imnn.problems import GaussianMeanVariance

PROBLEM = GaussianMeanVariance(n_data=10)
F_ANALYTIC = np.diag([10.0, 5.0])


@functools.partial(jax.jit, static_argnums=(1, 2))
def sufficient_summaries(key, n_s, n_d):
    """``t = (mean d, mean d²)`` float(n_s, 2) and their θ-derivatives float(n_d, 2, 2)."""
    sims = PROBLEM.simulations(key, n_s, n_d)
    d, dd_dθ = sims.fiducial, sims.derivative
    x = jnp.stack([d.mean(1), (d**2).mean(1)], -1)
    dx_dθ = jnp.stack([dd_dθ.mean(1), (2 * d[:n_d, :, None] * dd_dθ).mean(1)], 1)
    return x, dx_dθ


def test_the_interval_covers_the_analytic_information_at_the_stated_rate():
    covered, repetitions = 0, 200
    for key in jax.random.split(jax.random.key(0), repetitions):
        simulations, resampling = jax.random.split(key)
        info = imnn.fisher.information(*sufficient_summaries(simulations, 1000, 1000), confidence=0.9, key=resampling)
        low, high = np.asarray(info.detF_interval)
        assert low < float(info.detF) < high
        covered += low <= 50.0 <= high
    assert 0.80 * repetitions <= covered <= 0.97 * repetitions, covered


def test_a_wider_confidence_gives_a_wider_interval_around_the_same_estimate():
    x, dx_dθ = sufficient_summaries(jax.random.key(1), 500, 250)
    narrow = imnn.fisher.information(x, dx_dθ, confidence=0.5, key=jax.random.key(2))
    wide = imnn.fisher.information(x, dx_dθ, confidence=0.99, key=jax.random.key(2))
    np.testing.assert_allclose(narrow.F, imnn.fisher.statistics(x, dx_dθ).F, rtol=1e-6)
    assert wide.detF_interval[0] < narrow.detF_interval[0] < narrow.detF_interval[1] < wide.detF_interval[1]
    assert narrow.detF_bootstrap.shape == (1000,)


def test_the_hartlap_corrected_fisher_matrix_is_unbiased_and_the_uncorrected_one_is_not():
    """Gaussian summaries with C = diag(1/10, 1/5) and the exact mean derivative I: F̂ = Ĉ⁻¹, E[factor · Ĉ⁻¹] = C⁻¹."""
    n_s, repetitions = 20, 1000
    dμ_dθ = jnp.broadcast_to(jnp.eye(2), (1, 2, 2))
    summaries = jax.random.normal(jax.random.key(3), (repetitions, n_s, 2)) / np.sqrt(np.diag(F_ANALYTIC))
    corrected, plain = [], []
    for x in summaries:
        corrected.append(imnn.fisher.information(x, dμ_dθ, hartlap=True, n_bootstrap=1, key=jax.random.key(0)).F)
        plain.append(imnn.fisher.information(x, dμ_dθ, n_bootstrap=1, key=jax.random.key(0)).F)
    for estimates, expected in ((np.array(corrected), F_ANALYTIC),
                                (np.array(plain), F_ANALYTIC * (n_s - 1) / (n_s - 4))):  # fmt: skip
        mean, error = estimates.mean(0), estimates.std(0) / np.sqrt(repetitions)
        assert np.all(np.abs(mean - expected) < 4 * error + 1e-9), (mean, expected, error)
    assert np.all(np.diag(np.mean(plain, 0)) > 1.1 * np.diag(F_ANALYTIC))


@pytest.mark.parametrize(
    "arguments, match",
    [
        (dict(x=np.zeros(5)), r"`x` should be float\(n_s, n_summaries\)"),
        (dict(dx_dθ=np.zeros((5, 3, 2))), r"`dx_dθ` should be float\(n_d, n_summaries=2, n_params\)"),
        (dict(dx_dθ=np.zeros((30, 2, 2))), "n_d ≤ n_s = 20"),
        (dict(confidence=1.0), r"`confidence` should be in \(0, 1\) but is 1.0"),
        (dict(n_bootstrap=0), "`n_bootstrap`"),
        (dict(x=np.ones((4, 2)), dx_dθ=np.ones((4, 2, 2)), hartlap=True), "needs n_s > n_summaries \\+ 2 = 4"),
    ],
)
def test_bad_arguments_are_named(arguments, match):
    given = dict(x=np.random.default_rng(0).normal(size=(20, 2)), dx_dθ=np.ones((10, 2, 2)), key=jax.random.key(0))
    given |= arguments
    with pytest.raises((ValueError, TypeError), match=match):
        imnn.fisher.information(given.pop("x"), given.pop("dx_dθ"), **given)


def test_a_model_reports_the_information_of_its_own_summaries_and_plots_the_interval():
    import matplotlib

    matplotlib.use("Agg")
    from helpers import FIT, common, source_kwargs

    sims, validation = PROBLEM.simulations(jax.random.key(4), 100, 50), PROBLEM.simulations(jax.random.key(5), 100, 50)
    model = imnn.IMNN(**common(), **source_kwargs("gradient", sims, validation))
    model.fit(**FIT, max_iterations=5)
    info = model.information(confidence=0.8, n_bootstrap=200)
    model.set_F_statistics()  # the validation set, like `information`
    np.testing.assert_allclose(info.F, model.F, rtol=1e-5)
    assert info.detF_interval[0] < info.detF < info.detF_interval[1]
    assert [iteration for iteration, _ in model.information_history] == [4]
    ax = model.plot()
    assert len(ax[0].containers) == 1  # the error bar
    with pytest.raises(ValueError, match="`key` must be a PRNG key"):
        imnn.IMNN(**common(), **source_kwargs("simulator", None)).information()
