"""imnn.lfi against exact posteriors of the Gaussian mean-and-variance problem.

With uniform priors the exact posterior of (μ, Σ) given 10 draws is a 2-D grid
computation. The compressor is an IMNN fitted here; it sees (d, d²), so it can learn
the sufficient statistics and the posterior given its summaries equals the exact one.
"""

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from helpers import Quadratic, fitted_quadratic

import imnn
from imnn.lfi import marginals
from imnn.lfi.pmc import log_importance_weights
from imnn.problems import GaussianMeanVariance

PROBLEM = GaussianMeanVariance()
LOW, HIGH = np.array([-2.0, 0.2]), np.array([2.0, 3.0])
TRUE_θ = np.array([[0.0, 1.0], [0.5, 1.5]])


def prior():
    return dist.Uniform(jnp.asarray(LOW), jnp.asarray(HIGH)).to_event(1)


@pytest.fixture(scope="module")
def compressor():
    return fitted_quadratic(5000, patience=100, max_iterations=1500)


@pytest.fixture(scope="module")
def targets():
    keys = jax.random.split(jax.random.key(10), len(TRUE_θ))
    return jnp.stack([PROBLEM.simulator(k, jnp.asarray(θ)) for k, θ in zip(keys, TRUE_θ)])


def exact_posterior(data, gridsize=200):
    """(mean, std) float(n_params) each, and the density float(gridsize, gridsize), on the prior's grid."""
    ranges = marginals.grid(LOW, HIGH, [gridsize, gridsize])
    θ = np.stack(np.meshgrid(*ranges, indexing="ij"), -1)
    log_p = np.asarray(PROBLEM.log_likelihood(jnp.asarray(θ), data))
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    mean = np.einsum("ij,ijk->k", p, θ)
    return mean, np.sqrt(np.einsum("ij,ijk->k", p, (θ - mean) ** 2)), p


@pytest.fixture(scope="module")
def exact(targets):
    return [exact_posterior(d) for d in targets]


def assert_matches_exact(samples, exact, weights=None):
    """Posterior mean within a third of a posterior σ, posterior σ within ±40 %, per target."""
    for i, (mean, std, _) in enumerate(exact):
        m, s = marginals.moments(samples[i], None if weights is None else weights[i])
        assert np.all(np.abs(m - mean) < std / 3), (i, m, mean, std)
        assert np.all(np.abs(s / std - 1) < 0.4), (i, s, std)


# ------------------------------------------------------------------ priors
def test_prior_bounds_found_through_wrappers():
    for wrapped, low, high in (
        (prior(), LOW, HIGH),
        (dist.Uniform(0.0, 1.0).expand([2]).to_event(1), [0, 0], [1, 1]),
        (dist.Independent(dist.Uniform(jnp.zeros(2), jnp.ones(2) * 3), 1), [0, 0], [3, 3]),
        (dist.TruncatedNormal(jnp.zeros(2), 1.0, low=-1.0, high=2.0).to_event(1), [-1, -1], [2, 2]),
    ):
        lfi = imnn.lfi.LikelihoodFreeInference(wrapped, gridsize=11)
        assert lfi.n_params == 2
        np.testing.assert_allclose([r[0] for r in lfi.ranges], low, rtol=1e-6)
        np.testing.assert_allclose([r[-1] for r in lfi.ranges], high, rtol=1e-6)
    lfi = imnn.lfi.LikelihoodFreeInference(prior(), gridsize=[11, 21])
    assert [len(r) for r in lfi.ranges] == [11, 21]
    np.testing.assert_allclose(lfi.ranges[0], np.linspace(-2, 2, 11), rtol=1e-6)
    with pytest.raises(ValueError, match="`gridsize` should be an integer ≥ 2 or 2 of them"):
        imnn.lfi.LikelihoodFreeInference(prior(), gridsize=[11])


def test_unbounded_prior_needs_ranges():
    normal = dist.Normal(jnp.zeros(2), 1.0).to_event(1)
    with pytest.raises(ValueError, match="ranges="):
        imnn.lfi.LikelihoodFreeInference(normal)
    lfi = imnn.lfi.LikelihoodFreeInference(normal, gridsize=3, ranges=[(-3, 3), (-1, 1)])
    np.testing.assert_allclose(lfi.ranges[1], [-1, 0, 1])
    with pytest.raises(ValueError, match="one \\(low, high\\) pair per parameter"):
        imnn.lfi.LikelihoodFreeInference(normal, ranges=[(-3, 3)] * 3)
    with pytest.raises(ValueError, match="low < high"):
        imnn.lfi.LikelihoodFreeInference(normal, ranges=[(3, -3), (0, 1)])


def test_any_object_with_sample_and_log_prob():
    class TFPStyle:  # sample(sample_shape, seed=key), as TensorFlow Probability
        low, high, event_shape = np.zeros(2), np.ones(2), (2,)

        def sample(self, sample_shape, seed):
            return jax.random.uniform(seed, (*sample_shape, 2))

        def log_prob(self, θ):
            return jnp.where(jnp.all((θ >= 0) & (θ <= 1), -1), 0.0, -jnp.inf)

    wrapped = imnn.lfi.as_prior(TFPStyle())
    θ = wrapped.sample(jax.random.key(0), 7)
    assert θ.shape == (7, 2) and bool(jnp.all((θ >= 0) & (θ <= 1)))
    assert np.isneginf(wrapped.log_prob(jnp.array([[2.0, 0.5]]))[0])
    with pytest.raises(TypeError, match="`prior` should have a `log_prob` method"):
        imnn.lfi.as_prior(type("NoLogProb", (), {"sample": lambda self, k, s: 0})())
    with pytest.raises(ValueError, match="vector event shape"):
        imnn.lfi.as_prior(dist.Uniform(0.0, 1.0))


# ------------------------------------------------------- grid marginals
def test_marginals_of_a_gridded_density_and_credible_levels():
    lfi = imnn.lfi.LikelihoodFreeInference(prior(), gridsize=[200, 200])
    density = exact_posterior(np.linspace(-1, 1, 10))[2]
    lfi.put_marginals(density[None])
    assert lfi.n_targets == 1
    dμ, dΣ = (r[1] - r[0] for r in lfi.ranges)
    assert lfi.marginals[0][0].sum() * dμ == pytest.approx(1, rel=1e-5)
    assert lfi.marginals[1][0].sum() * dμ * dΣ == pytest.approx(1, rel=1e-5)
    np.testing.assert_allclose(lfi.marginals[1][1][0] * dΣ, density.sum(0), rtol=1e-4, atol=1e-9)
    joint = lfi.marginals[1][0][0]
    for fraction, height in zip((0.95, 0.68), marginals.levels(joint, (0.68, 0.95))):
        assert joint[joint >= height].sum() / joint.sum() == pytest.approx(fraction, abs=0.01)


def test_gaussian_approximation_marginals_integrate_to_one_and_peak_at_the_estimate():
    estimates = np.array([[0.1, 1.0], [-0.5, 2.0]])
    invF = np.array([[0.1, 0.02], [0.02, 0.2]])
    ga = imnn.lfi.GaussianApproximation(estimates, invF, prior(), gridsize=[401, 281])
    ranges = ga.ranges
    steps = [r[1] - r[0] for r in ranges]
    for target, estimate in enumerate(estimates):
        for row in range(2):
            diagonal = ga.marginals[row][row][target]
            assert diagonal.sum() * steps[row] == pytest.approx(1, rel=1e-6)
            assert ranges[row][np.argmax(diagonal)] == pytest.approx(estimate[row], abs=steps[row])
            σ = np.sqrt(invF[row, row])  # analytic 1-D marginal N(estimate, invF_ii), truncated to the grid
            analytic = np.exp(-0.5 * ((ranges[row] - estimate[row]) / σ) ** 2)
            np.testing.assert_allclose(diagonal, analytic / (analytic.sum() * steps[row]), rtol=1e-5)
        joint = ga.marginals[1][0][target]
        assert joint.sum() * steps[0] * steps[1] == pytest.approx(1, rel=1e-6)
        peak = np.unravel_index(np.argmax(joint), joint.shape)
        assert [ranges[0][peak[0]], ranges[1][peak[1]]] == pytest.approx(estimate, abs=max(steps))
    single = imnn.lfi.GaussianApproximation(estimates[0], [invF], prior())
    assert single.n_targets == 1 and single.invF.shape == (1, 2, 2)
    with pytest.raises(ValueError, match="`invF` should have shape"):
        imnn.lfi.GaussianApproximation(estimates, np.eye(3), prior())
    with pytest.raises(ValueError, match="positive definite"):
        imnn.lfi.GaussianApproximation(estimates, -np.eye(2), prior())
    with pytest.raises(ValueError, match="`parameter_estimates` should have shape"):
        imnn.lfi.GaussianApproximation(np.zeros(3), invF, prior())


# --------------------------------------------------------------------- ABC
@pytest.fixture(scope="module")
def abc(compressor, targets):
    abc = imnn.lfi.ApproximateBayesianComputation(
        targets, prior(), PROBLEM.simulate_batch, compressor.get_estimate, F=compressor.F
    )
    abc(ϵ=0.5, rng=jax.random.key(2), n_samples=100_000)
    return abc


def test_abc_recovers_the_exact_posterior(abc, exact):
    assert min(abc.parameters.n_accepted) > 300
    assert_matches_exact(abc.parameters.accepted, exact)


def test_abc_containers(abc):
    parameters, distances, summaries = abc.parameters, abc.distances, abc.summaries
    assert parameters.all.shape == (100_000, 2) and summaries.all.shape == (100_000, 2)
    assert distances.all.shape == (2, 100_000)
    for i in range(2):
        assert len(parameters.accepted[i]) + len(parameters.rejected[i]) == 100_000
        assert parameters.n_accepted[i] == len(distances.accepted[i]) == len(summaries.accepted[i])
        assert np.all(distances.accepted[i] < 0.5) and np.all(distances.rejected[i] >= 0.5)
        assert np.all((parameters.all >= LOW) & (parameters.all <= HIGH))
    # Fisher-weighted distance, recomputed by hand for one simulation
    difference = summaries.all[0] - np.asarray(abc.target_summaries[1])
    assert distances.all[1, 0] == pytest.approx(np.sqrt(difference @ np.asarray(abc.F[1]) @ difference), rel=1e-4)


def test_abc_premade_simulations_per_target_ϵ_and_min_accepted(abc, compressor, targets):
    again = imnn.lfi.ApproximateBayesianComputation(
        targets, prior(), PROBLEM.simulate_batch, compressor.get_estimate, F=compressor.F
    )
    again(ϵ=[0.5, 1.0], parameters=abc.parameters.all, summaries=abc.summaries.all)
    np.testing.assert_array_equal(again.parameters.accepted[0], abc.parameters.accepted[0])
    assert again.parameters.n_accepted[1] > abc.parameters.n_accepted[1]
    again(ϵ=0.3, rng=jax.random.key(5), n_samples=20_000, min_accepted=200, max_iterations=20, replace=True)
    assert min(again.parameters.n_accepted) >= 200
    assert again.parameters.size % 20_000 == 0
    with pytest.raises(ValueError, match="`min_accepted` needs `ϵ`"):
        again(rng=jax.random.key(0), n_samples=10, min_accepted=5)
    with pytest.raises(ValueError, match="`ϵ` should be a positive number or 2"):
        again(ϵ=[0.1, 0.2, 0.3])
    fresh = imnn.lfi.ApproximateBayesianComputation(targets, prior(), PROBLEM.simulate_batch, compressor.get_estimate)
    with pytest.raises(ValueError, match="No simulations yet"):
        fresh(ϵ=0.1)
    with pytest.raises(ValueError, match="`F` should have shape"):
        imnn.lfi.ApproximateBayesianComputation(
            targets, prior(), PROBLEM.simulate_batch, compressor.get_estimate, F=np.eye(3)
        )
    with pytest.raises(ValueError, match="compressor returns 3 summaries for 2 parameters"):
        imnn.lfi.ApproximateBayesianComputation(
            targets, prior(), PROBLEM.simulate_batch, lambda d: d[..., :3], F=np.eye(2)
        )
    with pytest.warns(UserWarning, match="only .* accepted"):
        fresh.get_min_accepted(jax.random.key(1), 1e-4, 10, n_simulations=100, max_iterations=2)


# --------------------------------------------------------------------- PMC
def test_importance_weights_are_prior_over_the_kernel_mixture():
    θ = jnp.array([[0.0], [1.0]])
    log_w = jnp.log(jnp.array([0.25, 0.75]))
    chol = jnp.array([[0.5]])
    new = jnp.array([[0.2], [0.9], [3.0]])
    log_prior = lambda x: jnp.where(x[:, 0] < 2.5, 0.0, -jnp.inf)
    q = 0.25 * np.exp(-0.5 * (np.array([0.2, 0.9, 3.0]) / 0.5) ** 2) + 0.75 * np.exp(
        -0.5 * ((np.array([0.2, 0.9, 3.0]) - 1) / 0.5) ** 2
    )
    expected = np.array([1 / q[0], 1 / q[1], 0.0])
    np.testing.assert_allclose(np.exp(log_importance_weights(new, θ, log_w, chol, log_prior)),
                               expected / expected.sum(), rtol=1e-5)  # fmt: skip


@pytest.fixture(scope="module")
def pmc(compressor, targets):
    pmc = imnn.lfi.PopulationMonteCarlo(
        targets, prior(), PROBLEM.simulate_batch, compressor.get_estimate, F=compressor.F
    )
    pmc(jax.random.key(3), 1000, n_initial_points=5000, acceptance_ratio=0.05, max_iteration=30)
    return pmc


def test_pmc_reaches_the_acceptance_ratio_and_the_exact_posterior(pmc, exact):
    assert np.all(pmc.acceptance_reached < 0.05)
    assert np.all(pmc.iterations >= 2) and np.all(pmc.iterations < 30)
    assert_matches_exact(pmc.parameters.accepted, exact, pmc.parameters.weights)
    for i in range(2):
        assert pmc.parameters.accepted[i].shape == (1000, 2)
        assert pmc.parameters.weights[i].sum() == pytest.approx(1, rel=1e-5)
        assert np.all(pmc.distances.accepted[i] < pmc.ϵ[i])
        assert np.all((pmc.parameters.accepted[i] >= LOW) & (pmc.parameters.accepted[i] <= HIGH))
    assert pmc.parameters.all.shape == (2, 1000, 2) and pmc.distances.all.shape == (2, 1000)


def test_pmc_continues_and_checks_its_input(pmc, compressor, targets):
    iterations, ϵ = pmc.iterations.copy(), pmc.ϵ.copy()
    pmc(jax.random.key(4), 1000, acceptance_ratio=0.5, max_iteration=1)
    assert np.all(pmc.iterations <= iterations + 1) and np.all(pmc.ϵ <= ϵ)
    fresh = imnn.lfi.PopulationMonteCarlo(targets, prior(), PROBLEM.simulate_batch, compressor.get_estimate)
    with pytest.raises(ValueError, match="starting population"):
        fresh(jax.random.key(0), 100)
    with pytest.raises(ValueError, match="`n_initial_points` \\(=50\\) must be at least `n_points`"):
        fresh(jax.random.key(0), 100, n_initial_points=50)
    with pytest.raises(ValueError, match="`percentile`"):
        fresh(jax.random.key(0), 100, n_initial_points=500, percentile=0)
    θ, summaries = fresh.get_samples(jax.random.key(1), 400)
    fresh(jax.random.key(2), 100, proposed=θ, summaries=summaries, max_iteration=2)
    assert fresh.parameters.all.shape == (2, 100, 2) and np.all(fresh.iterations <= 2)


# --------------------------------------------------------------------- NPE
@pytest.fixture(scope="module")
def npe(compressor, targets):
    npe = imnn.lfi.NeuralPosteriorEstimation(targets, prior(), PROBLEM.simulate_batch, compressor.get_estimate)
    npe(jax.random.key(5), n_simulations=10_000, n_samples=4000, max_epochs=60, show_progress=False)
    return npe


def test_npe_recovers_the_exact_posterior_within_the_prior(npe, exact):
    assert_matches_exact(npe.parameters.accepted, exact)
    assert npe.parameters.all.shape == (2, 4000, 2)
    assert np.all((npe.parameters.all > LOW) & (npe.parameters.all < HIGH))


@pytest.fixture(scope="module")
def many_targets():
    """300 (θ_true, target data) pairs drawn from the prior, for calibration."""
    return imnn.lfi.draw_targets(prior(), PROBLEM.simulate_batch, 300, jax.random.key(6))


def test_npe_is_calibrated_over_many_targets(npe, compressor, many_targets):
    """The amortised flow, sampled for 300 new targets: ranks, coverage and TARP within their bands."""
    θ, data = many_targets
    samples = np.asarray(npe.sample(jax.random.key(7), compressor.get_estimate(data), 500))
    result = imnn.lfi.calibrate(None, θ, samples=samples, prior=prior(), progress=False)
    assert set(result.diagnosis.values()) == {"calibrated"}, result.diagnosis


@pytest.mark.parametrize("epsilon", [0.3, 3.0])
def test_abc_calibration_widens_with_epsilon(compressor, many_targets, epsilon):
    """ABC accepts within ϵ Fisher errors: small ϵ is calibrated; ϵ = 3 is too wide in μ (jointly
    too), while Σ's posterior, bounded by the prior, stays within its band."""
    θ, data = many_targets
    abc = imnn.lfi.ApproximateBayesianComputation(data, prior(), PROBLEM.simulate_batch, compressor.get_estimate,
                                                  F=compressor.F, gridsize=20)  # fmt: skip
    abc(ϵ=epsilon, rng=jax.random.key(8), n_samples=200_000)
    diagnosis = imnn.lfi.calibrate(abc, θ, key=jax.random.key(9), max_samples=1000, progress=False).diagnosis
    if epsilon < 1:
        assert set(diagnosis.values()) == {"calibrated"}, diagnosis
    else:
        assert diagnosis["central θ_0"] == diagnosis["hpd"] == "under-confident", diagnosis
        assert "over-confident" not in diagnosis.values(), diagnosis


def test_pmc_populations_are_read_with_their_weights(pmc):
    samples, weights = imnn.lfi.posterior_samples(pmc)
    for i in range(pmc.n_targets):
        np.testing.assert_array_equal(samples[i], pmc.parameters.accepted[i])
        np.testing.assert_allclose(weights[i], pmc.parameters.weights[i])
    result = imnn.lfi.calibrate(pmc, TRUE_θ, progress=False)
    assert result.ranks.shape == (2, 2) and np.all((result.ranks >= 0) & (result.ranks <= 1))


def test_npe_leaves_out_failed_simulations_with_a_warning(compressor, targets):
    def failing(key, θ):  # NaN simulations for μ > 1.5
        return jnp.where(θ[:, :1] > 1.5, jnp.nan, PROBLEM.simulate_batch(key, θ))

    npe = imnn.lfi.NeuralPosteriorEstimation(targets, prior(), failing, compressor.get_estimate)
    with pytest.warns(UserWarning, match="simulations have non-finite summaries and are left out"):
        npe(jax.random.key(7), n_simulations=400, n_samples=10, max_epochs=1, show_progress=False)
    assert 0 < npe.training[0].shape[0] < 400 and bool(jnp.all(npe.training[0][:, 0] <= 1.5))
    with pytest.raises(ValueError, match="`summaries` contains .* non-finite"):
        npe(jax.random.key(7), parameters=np.zeros((3, 2)), summaries=np.full((3, 2), np.nan))


# ---------------------------------------------------------------- plotting
def test_corner_plots(abc, pmc, npe, compressor, targets):
    ga = imnn.lfi.GaussianApproximation(compressor.get_estimate(targets), compressor.invF, prior())
    ax = ga.marginal_plot(known=TRUE_θ[0], label="Gaussian", axis_labels=["μ", "Σ"])
    assert ax.shape == (2, 2) and not ax[0, 1].axison
    abc.marginal_plot(ax=ax, label="ABC", linestyle="dashed", colours=["k", "r"])
    pmc.marginal_plot(ax=ax, label="PMC", linestyle="dotted", target=1)
    npe.marginal_plot(ax=ax, label="NPE", linestyle="dashdot", target=[0])
    lines = [line for line in ax[0, 0].lines if np.size(line.get_xdata()) > 2]
    assert len(lines) == 2 + 2 + 1 + 1
    assert len(ax[1, 0].collections) >= 6  # one contour set per target and method
    assert [t.get_text() for t in ax[0, 1].get_legend().get_texts()] == ["Gaussian", "ABC", "PMC", "NPE"]
    assert ax[1, 0].get_xlabel() == "μ" and ax[1, 0].get_ylabel() == "Σ"
    scatter = abc.scatter_plot(target=0, s=1)
    assert len(scatter[1, 0].collections[0].get_offsets()) == abc.parameters.n_accepted[0]
    with pytest.raises(ValueError, match="`target` should be"):
        abc.marginal_plot(target=5)
    with pytest.raises(ValueError, match="has no marginals yet"):
        imnn.lfi.LikelihoodFreeInference(prior()).marginal_plot()
    plt.close("all")


# ------------------------------------------------------ fiducial iteration
def test_iterate_fiducial_converges_to_the_maximum_likelihood():
    data = PROBLEM.simulator(jax.random.key(21), jnp.array([0.8, 2.0]))
    mle = np.array([float(data.mean()), float(data.var())])

    def build(θ_fid, key_or_state):
        problem = GaussianMeanVariance(θ_fid=tuple(float(v) for v in θ_fid))
        sims = problem.simulations(jax.random.key(0), 2000, 2000)
        return imnn.GradientIMNN(
            n_s=2000, n_d=2000, n_params=2, n_summaries=2, input_shape=(10,), θ_fid=θ_fid, model=Quadratic(),
            optimiser=optax.adam(0.1), key_or_state=key_or_state, fiducial=sims.fiducial,
            derivative=sims.derivative, verbose=False,
        )  # fmt: skip

    result = imnn.lfi.iterate_fiducial(
        build, data, θ_fid=[0.0, 1.0], key_or_state=jax.random.key(1), tolerance=0.1, max_iterations=6,
        fit_kwargs={"patience": 50, "max_iterations": 600}, bounds=([-2, 0.2], [2, 10]), verbose=False,
    )  # fmt: skip
    assert result.converged and len(result.steps) >= 2
    σ = np.sqrt(np.diag(np.linalg.inv(PROBLEM.fisher(tuple(mle)))))
    assert np.all(np.abs(result.estimates[-1] - mle) < 0.25 * σ), (result.estimates, mle)
    assert result.steps[0] > result.steps[-1]
    np.testing.assert_allclose(result.θ_fid[-1], result.estimates[-2], rtol=1e-6)
