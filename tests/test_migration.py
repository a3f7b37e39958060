"""IMNN 0.3.2 notebooks: the names they read and call behave as they did there (docs/migration.md)."""

import inspect
import math

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro.distributions as dist
import pytest
from helpers import N_D, N_S, PROBLEM, common, source_kwargs, stax_model

import imnn

LOW, HIGH = np.array([-2.0, 0.2]), np.array([2.0, 3.0])


@pytest.fixture(scope="module")
def sims():
    return PROBLEM.simulations(jax.random.key(1), N_S, N_D)


@pytest.fixture(scope="module")
def validation_sims():
    return PROBLEM.simulations(jax.random.key(2), N_S, N_D)


def on_devices(n=2):
    devices = jax.devices()[:n]
    return dict(host=devices[0], devices=devices, n_per_device=7)


# ------------------------------------------------------------------ IMNN classes
@pytest.mark.parametrize("kind", ["gradient", "numerical"])
@pytest.mark.parametrize("aggregated", [False, True])
def test_model_gives_the_summaries_of_get_summaries(kind, aggregated, sims):
    model = imnn.IMNN(**common(), **source_kwargs(kind, sims), **(on_devices() if aggregated else {}))
    x, _ = model.get_summaries()
    np.testing.assert_allclose(model.model(model.w, sims.fiducial), x, rtol=1e-5, atol=1e-6)
    one = model.model(model.w, sims.fiducial[3])
    assert one.shape == (2,)
    np.testing.assert_allclose(one, x[3], rtol=1e-5, atol=1e-6)


def test_model_is_the_network_for_one_simulation_or_a_batch():
    model = imnn.IMNN(**common(), simulator=PROBLEM.simulator)
    apply = stax_model()[1]  # stax layers hold no state: the same function as the model's
    d = PROBLEM.simulate_batch(jax.random.key(3), jnp.tile(jnp.array([0.5, 1.5]), (5, 1)))
    np.testing.assert_allclose(model.model(model.w, d), jax.vmap(apply, (None, 0))(model.w, d), rtol=1e-6)
    np.testing.assert_allclose(model.model(model.initial_w, d[0]), apply(model.initial_w, d[0]), rtol=1e-6)
    with pytest.raises(ValueError, match=r"`d` should have shape \(10,\) \(one simulation\) or \(n,\)"):
        model.model(model.w, d[None])


@pytest.mark.parametrize("lam, eps", [(10.0, 0.1), (2.0, 0.5), (1.0, 0.01), (100.0, 1.0)])
def test_get_α_is_the_regularisation_rate(lam, eps, sims):
    model = imnn.IMNN(**common(), **source_kwargs("gradient", sims))
    expected = -math.log(eps * (lam - 1) + eps**2 / (1 + eps)) / eps
    assert model.get_α(lam, eps) == pytest.approx(expected, rel=1e-6)
    assert model.get_alpha(lam=lam, epsilon=eps) == pytest.approx(expected, rel=1e-6)
    assert imnn.GradientIMNN.get_α(λ=lam, ϵ=eps) == pytest.approx(expected, rel=1e-6)


def test_get_α_refuses_what_fit_refuses(sims):
    model = imnn.IMNN(**common(), **source_kwargs("gradient", sims))
    with pytest.raises(ValueError, match="give an undefined α"):
        model.get_α(0.5, 0.001)
    with pytest.raises(ValueError, match="`ϵ` \\(=-1.0\\) must be a finite number > 0"):
        model.get_α(10.0, -1.0)


@pytest.mark.parametrize(
    "kind, validation, simulate, validate",
    [("simulator", False, True, False), ("gradient", False, False, False), ("gradient", True, False, True),
     ("numerical", True, False, True)],
)  # fmt: skip
def test_simulate_and_validate_flags(kind, validation, simulate, validate, sims, validation_sims):
    model = imnn.IMNN(**common(), **source_kwargs(kind, sims, validation_sims if validation else None))
    assert model.simulate is simulate and model.validate is validate


@pytest.mark.parametrize("kind", ["gradient", "numerical"])
@pytest.mark.parametrize("aggregated", [False, True])
def test_stored_simulations_are_the_given_arrays(kind, aggregated, sims, validation_sims):
    given = source_kwargs(kind, sims, validation_sims)
    model = imnn.IMNN(**common(), **given, **(on_devices() if aggregated else {}))
    for name in ("fiducial", "derivative", "validation_fiducial", "validation_derivative"):
        assert getattr(model, name) is given[name], name
    without = imnn.IMNN(**common(), **source_kwargs(kind, sims))
    assert without.validation_fiducial is None and without.validation_derivative is None


@pytest.mark.parametrize("kind", ["simulator", "gradient", "numerical"])
def test_aggregated_devices(kind, sims):
    model = imnn.IMNN(**common(), **source_kwargs(kind, sims), **on_devices(3))
    assert model.n_devices == 3 and model.devices == jax.devices()[:3]
    assert model.host == jax.devices()[0] and model.n_per_device == 7


@pytest.mark.parametrize("kind", ["gradient", "numerical"])
def test_dataset_devices_and_iterators(kind, sims, validation_sims):
    make = imnn.loaders.gradient_dataset if kind == "gradient" else imnn.loaders.numerical_dataset
    pick = (lambda s: s.derivative) if kind == "gradient" else (lambda s: s.numerical_derivative)
    iterators = make(np.asarray(sims.fiducial), np.asarray(pick(sims)), 2, 7)
    iterators |= make(np.asarray(validation_sims.fiducial), np.asarray(pick(validation_sims)), 2, 7, "validation_")
    extra = {"δθ": sims.δθ} if kind == "numerical" else {}
    model = imnn.IMNN(**common(), **iterators, **extra, **on_devices(2))
    assert model.n_devices == 2 and model.n_per_device == 7
    names = ("main", "remaining") if kind == "gradient" else ("fiducial", "derivative")
    assert set(iterators) == {*names, *(f"validation_{name}" for name in names)}
    for name, value in iterators.items():
        assert getattr(model, name) is value, name


IMNN_NAMES = [
    "n_s", "n_d", "n_params", "n_summaries", "input_shape", "θ_fid", "validate", "simulate", "F", "invF", "C",
    "invC", "μ", "dμ_dθ", "model", "state", "initial_w", "final_w", "best_w", "w", "history", "fit", "get_α",
    "set_F_statistics", "get_summaries", "get_estimate", "plot",
]  # fmt: skip
CLASS_NAMES = {
    "simulator": ["simulator"],
    "gradient": ["fiducial", "derivative", "validation_fiducial", "validation_derivative"],
    "numerical": ["fiducial", "derivative", "validation_fiducial", "validation_derivative", "δθ"],
}


@pytest.mark.parametrize("kind", ["simulator", "gradient", "numerical"])
@pytest.mark.parametrize("aggregated", [False, True])
def test_every_0_3_2_public_name_exists(kind, aggregated, sims):
    model = imnn.IMNN(**common(), **source_kwargs(kind, sims), **(on_devices() if aggregated else {}))
    extra = ["host", "devices", "n_devices", "n_per_device"] if aggregated else []
    missing = [name for name in IMNN_NAMES + CLASS_NAMES[kind] + extra if not hasattr(model, name)]
    assert not missing


# ------------------------------------------------------------------------- LFI
def prior():
    return dist.Uniform(jnp.asarray(LOW), jnp.asarray(HIGH)).to_event(1)


def mean_and_variance(d):
    return jnp.stack([d.mean(-1), d.var(-1)], -1)


def three_summaries(d):
    return jnp.stack([d.mean(-1), d.var(-1), d.max(-1)], -1)


@pytest.fixture(scope="module")
def premade():
    """Targets and 3000 prior simulations made beforehand, as a notebook would."""
    targets = PROBLEM.simulate_batch(jax.random.key(10), jnp.array([[0.0, 1.0], [0.5, 1.5]]))
    θ = imnn.lfi.as_prior(prior()).sample(jax.random.key(11), 3000)
    return targets, np.asarray(θ), PROBLEM.simulate_batch(jax.random.key(12), θ)


def fisher_distances(summaries, targets, F):
    difference = np.asarray(summaries)[None] - np.asarray(targets)[:, None]  # (n_targets, n, n_summaries)
    return np.sqrt(np.einsum("tni,ij,tnj->tn", difference, F, difference))


@pytest.mark.parametrize("F", [None, np.array([[10.0, 1.0], [1.0, 5.0]])])
def test_abc_without_simulator_accepts_exactly_the_premade_within_ϵ(F, premade):
    targets, θ, data = premade
    summaries = np.asarray(mean_and_variance(data))
    abc = imnn.lfi.ApproximateBayesianComputation(targets, prior(), None, mean_and_variance, F=F)
    ϵ = [0.3, 0.6] if F is None else 1.0
    parameters, distances, returned = abc(ϵ=ϵ, parameters=θ, summaries=summaries)
    expected = fisher_distances(summaries, mean_and_variance(targets), np.eye(2) if F is None else F)
    np.testing.assert_allclose(distances.all, expected, rtol=1e-4, atol=1e-6)
    for i, limit in enumerate(np.broadcast_to(ϵ, (2,))):
        accept = expected[i] < limit
        assert 0 < accept.sum() < len(θ)
        np.testing.assert_array_equal(parameters.accepted[i], θ[accept])
        np.testing.assert_array_equal(returned.accepted[i], summaries[accept])
        np.testing.assert_array_equal(parameters.rejected[i], θ[~accept])
    assert abc.marginals is not None and parameters.size == len(θ)
    np.testing.assert_array_equal(parameters.ϵ, np.broadcast_to(ϵ, (2,)))


def test_abc_without_simulator_says_it_cannot_simulate(premade):
    targets = premade[0]
    abc = imnn.lfi.ApproximateBayesianComputation(targets, prior(), None, mean_and_variance)
    with pytest.raises(ValueError, match="simulator=None.*pass premade `parameters`"):
        abc(ϵ=0.5, rng=jax.random.key(0), n_samples=10)
    with pytest.raises(ValueError, match="simulator=None.*pass premade `parameters`"):
        abc(ϵ=0.5, rng=jax.random.key(0), n_samples=10, min_accepted=5)
    with pytest.raises(TypeError, match="`simulator` should be a function"):
        imnn.lfi.ApproximateBayesianComputation(targets, prior(), "simulator", mean_and_variance)


def test_pmc_without_simulator_says_why_at_call_time(premade):
    targets, θ, data = premade
    pmc = imnn.lfi.PopulationMonteCarlo(targets, prior(), None, mean_and_variance)
    with pytest.raises(ValueError, match="every PMC iteration simulates .* needs a `simulator`"):
        pmc(jax.random.key(0), 100, proposed=θ, summaries=mean_and_variance(data))


def test_pmc_set_samples_is_refused_with_what_to_do_instead(premade):
    targets, θ, data = premade
    pmc = imnn.lfi.PopulationMonteCarlo(targets, prior(), PROBLEM.simulate_batch, mean_and_variance)
    with pytest.raises(TypeError, match=r"without importance weights.*proposed=parameters, summaries=summaries"):
        pmc.set_samples(θ, mean_and_variance(data))
    assert pmc.parameters.all is None


def test_npe_without_simulator_trains_on_premade_pairs_only(premade):
    targets, θ, data = premade
    npe = imnn.lfi.NeuralPosteriorEstimation(targets[:1], prior(), None, mean_and_variance)
    with pytest.raises(ValueError, match="simulator=None.*pass premade `parameters`"):
        npe(jax.random.key(0), n_simulations=100)
    samples = npe(jax.random.key(1), n_samples=2000, parameters=θ, summaries=mean_and_variance(data),
                  max_epochs=30, show_progress=False)  # fmt: skip
    # the target was drawn at (μ, Σ) = (0, 1) from 10 points: the posterior mean is within its broad width
    mean, std = samples.accepted[0].mean(0), samples.accepted[0].std(0)
    assert np.all(np.abs(mean - np.array([0.0, 1.0])) < 3 * std) and np.all(std < np.array([0.6, 0.8])), (mean, std)


def test_scatter_summaries_draws_the_accepted_summaries(premade):
    targets, θ, data = premade
    abc = imnn.lfi.ApproximateBayesianComputation(targets, prior(), None, three_summaries)
    abc(ϵ=1.0, parameters=θ, summaries=three_summaries(data))
    ax = abc.scatter_summaries(axis_labels=["mean", "variance", "max"], gridsize=[20, 30, 40])
    assert ax.shape == (3, 3) and not ax[0, 2].axison
    for row, column in [(1, 0), (2, 0), (2, 1)]:
        assert len(ax[row, column].collections) == 2  # one scatter per target
        for target, scatter in enumerate(ax[row, column].collections):
            expected = abc.summaries.accepted[target][:, [column, row]]
            np.testing.assert_allclose(scatter.get_offsets(), expected, rtol=1e-6)
    everything = np.concatenate(abc.summaries.accepted)
    assert ax[2, 0].get_ylim() == pytest.approx((everything[:, 2].min(), everything[:, 2].max()), rel=1e-5)
    assert len(ax[1, 1].patches) == 2  # a histogram per target on the diagonal
    one = abc.scatter_summaries(target=1, s=1)
    assert len(one[1, 0].collections) == 1
    assert len(one[1, 0].collections[0].get_offsets()) == abc.summaries.n_accepted[1]
    plt.close("all")
    empty = imnn.lfi.ApproximateBayesianComputation(targets, prior(), None, three_summaries)
    with pytest.raises(ValueError, match="no accepted summaries yet"):
        empty.scatter_summaries()


def histogram(samples, points, weights=None):
    step = points[1] - points[0]
    edges = np.concatenate([points - step / 2, points[-1:] + step / 2])
    return np.histogram(samples, bins=edges, weights=weights, density=True)[0]


def test_abc_get_and_set_marginals(premade):
    targets, θ, data = premade
    abc = imnn.lfi.ApproximateBayesianComputation(targets, prior(), None, mean_and_variance, gridsize=30)
    abc(ϵ=0.5, parameters=θ, summaries=mean_and_variance(data))
    marginals = abc.get_marginals(smoothing=0)
    for i in range(2):
        for p in range(2):
            expected = histogram(abc.parameters.accepted[i][:, p], abc.ranges[p])
            np.testing.assert_allclose(marginals[p][p][i], expected, rtol=1e-5, atol=1e-8)
    assert abc.set_marginals(smoothing=0) is abc.marginals
    np.testing.assert_allclose(abc.marginals[1][0], marginals[1][0])
    coarse = abc.get_marginals(gridsize=[11, 21])
    assert coarse[0][0].shape == (2, 11) and coarse[1][0].shape == (2, 11, 21)
    ranges = [np.linspace(-1, 1, 5), np.linspace(0.5, 2, 7)]
    mine = abc.get_marginals([θ[:100]], ranges=ranges, smoothing=0)
    np.testing.assert_allclose(mine[0][0][0], histogram(θ[:100, 0], ranges[0]), rtol=1e-5)


def test_gaussian_approximation_get_marginals():
    ga = imnn.lfi.GaussianApproximation(np.array([0.0, 1.0]), np.diag([0.1, 0.2]), prior(), gridsize=201)
    np.testing.assert_allclose(ga.get_marginals()[1][0], ga.marginals[1][0])
    moved = ga.get_marginals(parameter_estimates=np.array([[1.0, 2.0]]), invF=np.diag([0.1, 0.2])[None])
    assert ga.ranges[0][np.argmax(moved[0][0][0])] == pytest.approx(1.0, abs=0.03)
    assert ga.get_marginals(gridsize=11)[1][1].shape == (1, 11)


def test_grid_sizes_targets_and_distances(premade):
    targets = premade[0]
    abc = imnn.lfi.ApproximateBayesianComputation(targets, prior(), None, mean_and_variance)
    assert abc.get_gridsize(5, 3) == [5, 5, 5] and abc.get_gridsize([2, 3], 2) == [2, 3]
    with pytest.raises(ValueError, match="`gridsize`"):
        abc.get_gridsize([2, 3], 3)
    assert abc.target_choice(None) == ([0, 1], 2)
    assert abc.target_choice(1) == ([1], 1) and abc.target_choice([1, 0]) == ([1, 0], 2)
    with pytest.raises(ValueError, match="`target` should be"):
        abc.target_choice(2)
    with pytest.raises(ValueError, match="no targets yet"):
        imnn.lfi.LikelihoodFreeInference(prior()).target_choice(None)
    x, y, F = np.array([[1.0, 2.0], [0.0, -1.0]]), np.array([0.5, 0.5]), np.array([[2.0, 0.3], [0.3, 1.0]])
    d = x - y
    np.testing.assert_allclose(abc.F_distance(x, y, F), np.sqrt(np.einsum("ni,ij,nj->n", d, F, d)), rtol=1e-6)
    np.testing.assert_allclose(abc.euclidean_distance(x, y), np.linalg.norm(d, axis=1), rtol=1e-6)
    assert imnn.lfi.PopulationMonteCarlo.F_distance is imnn.lfi.ApproximateBayesianComputation.F_distance


@pytest.fixture(scope="module")
def pmc(premade):
    targets = premade[0]
    pmc = imnn.lfi.PopulationMonteCarlo(targets, prior(), PROBLEM.simulate_batch, mean_and_variance)
    pmc(jax.random.key(4), 200, n_initial_points=1000, max_iteration=2)
    return pmc


def test_pmc_marginals_are_weighted_and_it_scatters_summaries(pmc):
    assert np.all(pmc.iterations >= 1)  # so the importance weights differ and the check below means something
    marginals = pmc.get_marginals(smoothing=0)
    for i in range(2):
        assert np.ptp(pmc.parameters.weights[i]) > 0
        expected = histogram(pmc.parameters.accepted[i][:, 1], pmc.ranges[1], pmc.parameters.weights[i])
        np.testing.assert_allclose(marginals[1][1][i], expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(pmc.parameters.ϵ, pmc.ϵ)
    ax = pmc.scatter_summaries()
    assert ax.shape == (2, 2) and [len(c.get_offsets()) for c in ax[1, 0].collections] == [200, 200]
    plt.close("all")


def test_get_min_accepted_quietly(pmc, premade):
    abc = imnn.lfi.ApproximateBayesianComputation(premade[0], prior(), PROBLEM.simulate_batch, mean_and_variance)
    parameters, _, _ = abc.get_min_accepted(jax.random.key(5), 1.0, 5, n_simulations=500, verbose=False)
    assert min(parameters.n_accepted) >= 5


# ------------------------------------------------------------------------ docs
@pytest.mark.parametrize(
    "owner, names",
    [(imnn.GradientIMNN, ["get_α", "get_alpha", "simulate", "validate"]),
     (imnn.AggregatedGradientIMNN, ["n_devices"]), (imnn.DatasetGradientIMNN, ["n_devices"]),
     (imnn.lfi.ApproximateBayesianComputation,
      ["get_marginals", "set_marginals", "scatter_summaries", "F_distance", "euclidean_distance", "get_gridsize",
       "target_choice"]),
     (imnn.lfi.GaussianApproximation, ["get_marginals"])],
)  # fmt: skip
def test_new_names_are_documented(owner, names):
    for name in names:
        assert inspect.getdoc(getattr(owner, name)), f"{owner.__name__}.{name}"
