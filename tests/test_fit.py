"""Fitting recovers the analytic Fisher information; the fit loop keeps its promises."""

import os
import signal
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import compilations
from jax.example_libraries import optimizers, stax

import imnn
from imnn.problems import GaussianMeanVariance

PROBLEM = GaussianMeanVariance()  # |F| = 50 at θ = (0, 1) with 10 draws
ANALYTIC_DETF = float(np.linalg.det(PROBLEM.fisher()))
N_EVALUATION = 20_000  # a 1 000-simulation |F| fluctuates by tens of percent


class MLP(nn.Module):
    @nn.compact
    def __call__(self, d):
        for _ in range(3):
            d = nn.leaky_relu(nn.Dense(128)(d))
        return nn.Dense(2)(d)


def stax_mlp():
    return stax.serial(*[stax.Dense(128), stax.LeakyRelu] * 3, stax.Dense(2))


FRAMEWORKS = {
    "flax+optax": lambda: (MLP(), optax.adam(1e-3)),
    "stax+example_libraries": lambda: (stax_mlp(), optimizers.adam(1e-3)),
}


def detF_on_fresh_simulations(model, network, optimiser):
    """|F| of ``model.w`` measured on many new simulations with exact derivatives."""
    sims = PROBLEM.simulations(jax.random.PRNGKey(12345), N_EVALUATION, N_EVALUATION)
    evaluator = imnn.GradientIMNN(
        N_EVALUATION, N_EVALUATION, 2, 2, PROBLEM.input_shape, PROBLEM.θ_fid, network, optimiser,
        model.state, fiducial=sims.fiducial, derivative=sims.derivative, verbose=False,
    )  # fmt: skip
    evaluator.set_F_statistics(w=model.w, validate=False)
    return float(np.linalg.det(evaluator.F))


def stored_imnn(kind, network, optimiser, n_s=1000, key=1):
    train = PROBLEM.simulations(jax.random.PRNGKey(key), n_s, n_s)
    valid = PROBLEM.simulations(jax.random.PRNGKey(key + 1), n_s, n_s)
    numerical = kind == "numerical"
    pick = (lambda s: s.numerical_derivative) if numerical else (lambda s: s.derivative)
    return imnn.IMNN(
        n_s, n_s, 2, 2, PROBLEM.input_shape, PROBLEM.θ_fid, network, optimiser, jax.random.PRNGKey(0),
        fiducial=train.fiducial, derivative=pick(train), δθ=train.δθ if numerical else None,
        validation_fiducial=valid.fiducial, validation_derivative=pick(valid), verbose=False,
    )  # fmt: skip


def test_simulator_imnn_recovers_85_percent_of_analytic_fisher():
    network, optimiser = FRAMEWORKS["flax+optax"]()
    model = imnn.IMNN(
        1000, 1000, 2, 2, PROBLEM.input_shape, PROBLEM.θ_fid, network, optimiser, jax.random.PRNGKey(0),
        simulator=PROBLEM.simulator, verbose=False,
    )  # fmt: skip
    assert isinstance(model, imnn.SimulatorIMNN)
    model.fit(10.0, 0.1, rng=jax.random.PRNGKey(1), patience=2000, max_iterations=2000)
    fraction = detF_on_fresh_simulations(model, network, optimiser) / ANALYTIC_DETF
    assert 0.85 <= fraction <= 1.1, fraction


# each framework and each derivative kind once (every adapter's summaries are checked in test_factory.py)
@pytest.mark.parametrize("kind, framework", [("gradient", "stax+example_libraries"), ("numerical", "flax+optax")])
def test_stored_simulation_imnns_recover_70_percent_of_analytic_fisher(kind, framework):
    network, optimiser = FRAMEWORKS[framework]()
    model = stored_imnn(kind, network, optimiser)
    model.fit(10.0, 0.1, patience=100, max_iterations=3000)
    assert len(model.history["detF"]) < 3000  # validation early stopping stopped it
    fraction = detF_on_fresh_simulations(model, network, optimiser) / ANALYTIC_DETF
    assert 0.7 <= fraction <= 1.1, fraction


@pytest.mark.parametrize("dispatch", ["loop", "step"])
def test_validation_early_stopping_restores_best_validation_weights(dispatch):
    network, optimiser = stax_mlp(), optax.adam(3e-3)
    model = stored_imnn("gradient", network, optimiser, n_s=100)  # small set: it overfits
    model.fit(10.0, 0.1, patience=50, min_iterations=50, max_iterations=5000, dispatch=dispatch)
    history = model.history
    n = len(history["val_detF"])
    assert n < 5000
    best = int(np.argmax(history["val_detF"]))
    assert n - best == 50 + 1  # stopped `patience` iterations after min_iterations past the best
    assert history["max_detF"] == pytest.approx(history["val_detF"][best])
    assert history["detF"][-1] > history["val_detF"][-1]  # overfitting is what stopped it
    jax.tree.map(np.testing.assert_array_equal, model.w, model.best_w)
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, model.best_w, model.final_w)))
    model.set_F_statistics(w=model.best_w, validate=True)
    assert float(np.linalg.det(model.F)) == pytest.approx(history["max_detF"], rel=1e-4)


def test_best_false_keeps_final_weights_and_second_fit_appends_history():
    network, optimiser = stax_mlp(), optax.adam(1e-3)
    model = stored_imnn("gradient", network, optimiser, n_s=200)
    model.fit(10.0, 0.1, min_iterations=30, max_iterations=30, best=False)
    jax.tree.map(np.testing.assert_array_equal, model.w, model.final_w)
    first = {k: v.copy() for k, v in model.history.items() if k != "max_detF"}
    model.fit(10.0, 0.1, min_iterations=20, max_iterations=20)
    assert int(model.state.count) == 50
    for name, values in first.items():
        assert len(model.history[name]) == 50
        np.testing.assert_array_equal(model.history[name][:30], values)
    np.testing.assert_array_equal(model.history["Lambda2"], model.history["Λ2"])


def test_second_fit_does_not_recompile():
    network, optimiser = stax_mlp(), optax.adam(1e-3)
    model = imnn.IMNN(
        200, 100, 2, 2, PROBLEM.input_shape, PROBLEM.θ_fid, network, optimiser, jax.random.key(0),
        simulator=PROBLEM.simulator, verbose=False,
    )  # fmt: skip
    model.fit(10.0, 0.1, rng=jax.random.key(1), min_iterations=5, max_iterations=20, print_rate=7)
    with compilations() as compiled:
        # other settings, and an old-style key after a new-style one
        model.fit(2.0, 0.3, rng=jax.random.PRNGKey(2), patience=3, min_iterations=3, max_iterations=50)
    assert compiled == []
    assert len(model.history["detF"]) > 20


@pytest.mark.parametrize("dispatch", ["auto", "step"])
def test_ctrl_c_keeps_history_and_best_weights(dispatch):
    network, optimiser = stax_mlp(), optax.adam(1e-3)
    model = imnn.IMNN(
        1000, 1000, 2, 2, PROBLEM.input_shape, PROBLEM.θ_fid, network, optimiser, jax.random.key(0),
        simulator=PROBLEM.simulator, verbose=False,
    )  # fmt: skip
    # compile outside the timed window (the first 4 iterations compile and time both dispatch modes)
    model.fit(10.0, 0.1, rng=jax.random.key(1), max_iterations=5)
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.warns(UserWarning, match="interrupted"):
            model.fit(10.0, 0.1, rng=jax.random.key(2), patience=10**6, max_iterations=10**6)
    finally:
        timer.cancel()
    n = len(model.history["detF"])
    assert 2 < n < 10**6
    assert all(len(v) == n for k, v in model.history.items() if k != "max_detF")
    assert np.all(np.isfinite(model.history["detF"]))
    assert model.history["max_detF"] == pytest.approx(model.history["detF"].max())
    assert model.get_estimate(jnp.zeros(PROBLEM.input_shape)).shape == (2,)


def test_estimates_for_single_and_batched_multidimensional_inputs():
    shape, n_s = (2, 5), 300
    θ_fid = jnp.array([0.0, 1.0])

    def simulator(key, θ):
        return θ[0] + jnp.sqrt(θ[1]) * jax.random.normal(key, shape)

    class Flat(nn.Module):
        @nn.compact
        def __call__(self, d):
            return nn.Dense(2)(nn.tanh(nn.Dense(32)(d.reshape(-1))))

    model = imnn.SimulatorIMNN(
        n_s, n_s, 2, 2, shape, θ_fid, Flat(), optax.adam(1e-3), jax.random.key(0),
        simulator=simulator, verbose=False,
    )  # fmt: skip
    model.fit(10.0, 0.1, rng=jax.random.key(1), min_iterations=20, max_iterations=20)
    batch = jax.vmap(simulator, (0, None))(jax.random.split(jax.random.key(2), 4), jnp.array([0.3, 1.5]))
    batched = model.get_estimate(batch)
    assert batched.shape == (4, 2)
    np.testing.assert_allclose(model.get_estimate(batch[1]), batched[1], rtol=1e-5, atol=1e-6)


def test_single_parameter_single_summary_fit_reaches_analytic_fisher():
    # Mean of 10 unit-variance draws: F = 10, and the sample mean is sufficient.
    def simulator(key, θ):
        return θ[0] + jax.random.normal(key, (10,))

    network = stax.serial(stax.Dense(32), stax.Tanh, stax.Dense(1))
    common = dict(n_params=1, n_summaries=1, input_shape=(10,), θ_fid=jnp.array([0.0]), model=network)
    model = imnn.SimulatorIMNN(
        n_s=200, n_d=200, **common, optimiser=optax.adam(1e-3), key_or_state=jax.random.key(0),
        simulator=simulator, verbose=False,
    )  # fmt: skip
    model.fit(1.0, 0.1, rng=jax.random.key(1), min_iterations=300, max_iterations=300)
    check = imnn.SimulatorIMNN(
        n_s=N_EVALUATION, n_d=N_EVALUATION, **common, optimiser=optax.adam(1e-3), key_or_state=model.state,
        simulator=simulator, verbose=False,
    )  # fmt: skip
    check.set_F_statistics(model.w, key=jax.random.key(2))
    assert check.F.shape == (1, 1) and check.C.shape == (1, 1)
    assert 0.9 * 10 <= float(check.F[0, 0]) <= 1.05 * 10
