"""The Recurrent Inference Machine against exact answers.

The linear-Gaussian problem x ~ N(0, Σ), y = A x + σ ε with A and σ drawn per
instance has an exact posterior: its mean is the best any estimator can do in
mean squared error, and that error (the Bayes MSE) is the trace of the posterior
covariance. A RIM trained on fresh draws must come close to it; without the
score it cannot.
"""

import signal
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import compilations

from imnn.rim import MLP, RIM, core

N, M = 16, 8
INDEX = jnp.arange(N)
PRIOR_COV = jnp.exp(-0.5 * (INDEX[:, None] - INDEX[None]) ** 2 / 3.0**2) + 1e-4 * jnp.eye(N)
PRIOR_CHOL = jnp.linalg.cholesky(PRIOR_COV)


def simulator(key):
    """One instance ``(y, x, A, σ)`` of the linear-Gaussian problem."""
    kx, kA, kσ, kε = jax.random.split(key, 4)
    x = PRIOR_CHOL @ jax.random.normal(kx, (N,))
    A = jax.random.normal(kA, (M, N)) / jnp.sqrt(N)
    σ = jax.random.uniform(kσ, (), minval=0.2, maxval=0.5)
    return A @ x + σ * jax.random.normal(kε, (M,)), x, A, σ


def score_fn(x, y, A, σ):
    return A.T @ (y - A @ x) / σ**2


def energy_fn(x, y, A, σ):
    return -0.5 * jnp.sum((y - A @ x) ** 2) / σ**2


def zero_score(x, y, A, σ):
    return jnp.zeros_like(x)


class ShortUpdate(MLP):
    """An MLP whose update lacks its last entry."""

    def __call__(self, x, y, score, h):
        dx, h = super().__call__(x, y, score, h)
        return dx[:-1], h


def squared_error(estimate, x):
    return float(jnp.mean(jnp.sum((estimate - x) ** 2, axis=-1)))


@pytest.fixture(scope="module")
def test_set():
    y, x, A, σ = jax.vmap(simulator)(jax.random.split(jax.random.key(99), 2000))
    posterior_cov = jax.vmap(lambda A, σ: jnp.linalg.inv(jnp.linalg.inv(PRIOR_COV) + A.T @ A / σ**2))(A, σ)
    bayes = float(jnp.mean(jnp.trace(posterior_cov, axis1=1, axis2=2)))
    return (y, x, A, σ), bayes


def train(score, steps):
    rim = RIM((), MLP(N, hidden_units=128), score_fn=score, T=10, key=jax.random.key(1))
    rim.fit(simulator=simulator, epochs=steps // 100, batch_size=128, learning_rate=3e-3, progress=False,
            key=jax.random.key(2))  # fmt: skip
    return rim


@pytest.fixture(scope="module")
def trained():
    return train(score_fn, 1500)


def test_rim_reaches_the_bayes_error_and_uses_the_score(trained, test_set):
    (y, x, A, σ), bayes = test_set
    posterior_mean = jax.vmap(lambda y, A, σ: jnp.linalg.solve(jnp.linalg.inv(PRIOR_COV) * σ**2 + A.T @ A, A.T @ y))(
        y, A, σ
    )
    assert squared_error(posterior_mean, x) == pytest.approx(bayes, rel=0.1)  # the problem is what we think
    ratio = squared_error(trained.predict(y, A, σ), x) / bayes
    assert ratio <= 1.15, ratio
    least_squares = jax.vmap(lambda y, A: jnp.linalg.pinv(A) @ y)(y, A)
    assert squared_error(least_squares, x) / bayes > 2
    blind = train(zero_score, 300)  # the best it can learn is the prior mean
    assert squared_error(blind.predict(y, A, σ), x) / bayes > 2 * ratio


def test_energy_and_score_give_the_same_score_and_predictions(test_set):
    (y, x, A, σ), _ = test_set
    by_score = RIM((), MLP(N, hidden_units=8), score_fn=score_fn, key=jax.random.key(3))
    by_energy = RIM((), MLP(N, hidden_units=8), energy_fn=energy_fn, key=jax.random.key(3))
    np.testing.assert_allclose(by_energy.score_fn(x[0], y[0], A[0], σ[0]), score_fn(x[0], y[0], A[0], σ[0]), rtol=1e-5)
    np.testing.assert_allclose(by_energy.predict(y[:5], A[:5], σ[:5]), by_score.predict(y[:5], A[:5], σ[:5]),
                               rtol=1e-4, atol=1e-5)  # fmt: skip


def test_link_function_chain_rule_is_exact():
    """With x = exp(z) the model-space score is exp(z) · ∇ₓ log p(y|x) (J_ψ = diag(eˣ))."""
    physical = lambda x, y: y - x**2
    score = core.model_space_score(physical, jnp.exp)
    z, y = jnp.array([-1.0, 0.0, 0.5]), jnp.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(score(z, y), jnp.exp(z) * (y - jnp.exp(2 * z)), rtol=1e-6)
    rim = RIM((), MLP(3, hidden_units=4), score_fn=physical, link_function=jnp.exp, inverse_link_function=jnp.log)
    zs = rim.forward(y[None])
    np.testing.assert_allclose(rim.predict(y[None]), jnp.exp(zs[-1]), rtol=1e-6)  # predictions are ψ(z_T)


@pytest.mark.parametrize("initialization, length", [("zeros", 10), ("model", 11), ("approximate_inverse", 10)])
def test_forward_has_one_iterate_per_step(initialization, length, test_set):
    (y, _, A, σ), _ = test_set
    inverse = lambda y, A, σ: jnp.linalg.pinv(A) @ y
    rim = RIM((), MLP(N, hidden_units=8), score_fn=score_fn, T=10, initialization_method=initialization,
              approximate_inverse_fn=inverse)  # fmt: skip
    zs = rim.forward(y[:3], A[:3], σ[:3])
    assert zs.shape == (length, 3, N)
    np.testing.assert_allclose(rim.predict(y[:3], A[:3], σ[:3]), zs[-1], rtol=1e-6)


@pytest.mark.parametrize("weights", [None, "uniform", "linear", "quadratic", np.linspace(0.0, 1.0, 10)])
def test_loss_is_the_weighted_sum_over_steps_of_squared_errors(weights, test_set):
    (y, x, A, σ), _ = test_set
    rim = RIM((), MLP(N, hidden_units=8), score_fn=score_fn, T=10)
    zs = np.asarray(rim.forward(y[:4], A[:4], σ[:4]))
    t, T = np.arange(1, 11), 10
    w = {None: np.ones(T), "uniform": np.full(T, 0.1), "linear": 2 * t / (T * (T + 1)),
         "quadratic": 6 * t**2 / (T * (T + 1) * (2 * T + 1))}.get(weights if isinstance(weights, (str, type(None)))
                                                                  else "", weights)  # fmt: skip
    expected = sum(w[i] * np.sum((zs[i] - np.asarray(x[:4])) ** 2) for i in range(T)) / 4
    assert float(rim.loss_fn(y[:4], x[:4], A[:4], σ[:4], time_weights=weights)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("method", ["adam", "rmsprop", "ADAM", "arcsinh", "Identity"])
def test_score_preprocessing_equals_a_hand_written_loop(method):
    config = core.Config(T=5, preprocessing=method.lower(), initialization="zeros", epsilon=1e-7, beta_1=0.9,
                         beta_2=0.999)  # fmt: skip
    scores = np.random.default_rng(0).normal(size=(5, 3)) * np.array([1e-3, 1.0, 1e3])
    m = v = np.zeros(3)
    moments = core.Moments(jnp.zeros(3), jnp.zeros(3))
    for t, s in enumerate(scores):
        m, v = 0.9 * m + 0.1 * s, 0.999 * v + 0.001 * s**2
        scale = np.sqrt(v / (1 - 0.999 ** (t + 1))) + 1e-7
        expected = {"adam": m / (1 - 0.9 ** (t + 1)) / scale, "rmsprop": s / scale, "arcsinh": np.arcsinh(s),
                    "identity": s}[method.lower()]  # fmt: skip
        got, moments = core.preprocess(config, jnp.asarray(s, jnp.float32), jnp.int32(t), moments)
        np.testing.assert_allclose(got, expected, rtol=2e-4)
    assert method.lower() != "rmsprop" or np.all(np.abs(got) < 10)  # torch_rim's returns s/ε


def test_a_second_fit_and_prediction_compile_nothing(test_set):
    (y, x, A, σ), _ = test_set
    rim = RIM((), MLP(N, hidden_units=8), score_fn=score_fn, T=3)
    data, validation = (y[:64], x[:64], A[:64], σ[:64]), (y[64:96], x[64:96], A[64:96], σ[64:96])
    first = rim.fit(data, epochs=2, batch_size=16, validation=validation, progress=False)
    rim.predict(y[:8], A[:8], σ[:8])
    with compilations() as compiled:
        second = rim.fit(data, epochs=2, batch_size=16, validation=validation, progress=False)
        rim.predict(y[8:16], A[8:16], σ[8:16])
    assert compiled == []
    assert len(first) == len(second) == 2 and len(rim.history["loss"]) == len(rim.history["val_loss"]) == 4
    assert int(rim._state.count) == 2 * 2 * 4  # the second fit continued the first's optimiser


def test_early_stopping_keeps_the_weights_of_the_best_validation_loss(test_set):
    (y, x, A, σ), _ = test_set
    rim = RIM((), MLP(N, hidden_units=8), score_fn=score_fn, T=3)
    validation = (y[:64], x[:64], A[:64], σ[:64])
    rim.fit(simulator=simulator, epochs=40, n_iterations_in_epoch=5, batch_size=16, learning_rate=0.05,
            validation=validation, patience=2, progress=False)  # fmt: skip
    per_step = rim._state  # the engine's own record: the best score is minus the lowest validation loss
    assert float(rim.loss_fn(*validation)) == pytest.approx(-float(per_step.best_score), rel=1e-5)
    assert len(rim.history["val_loss"]) < 40  # a learning rate this large stops improving early


def test_a_nan_from_the_simulator_stops_the_fit_and_keeps_the_last_good_weights():
    def sometimes_nan(key):
        y, x, A, σ = simulator(key)
        return y, jnp.where(jax.random.uniform(jax.random.fold_in(key, 7)) < 0.002, jnp.nan, x), A, σ

    rim = RIM((), MLP(N, hidden_units=8), score_fn=score_fn, T=3)
    with pytest.warns(UserWarning, match="non-finite at iteration"):
        losses = rim.fit(simulator=sometimes_nan, epochs=50, batch_size=16, progress=False)
    assert 0 < len(losses) < 50 and np.all(np.isfinite(losses[:-1]))
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(rim.params))


def test_ctrl_c_keeps_the_progress_and_the_fit_continues():
    calls = [0]

    def interrupt_on_the_30th_step(_):
        calls[0] += 1
        if calls[0] == 30:
            signal.raise_signal(signal.SIGINT)

    def watched(key):
        jax.debug.callback(interrupt_on_the_30th_step, jax.random.key_data(key))
        return simulator(key)

    rim = RIM((), MLP(N, hidden_units=8), score_fn=score_fn, T=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = rim.fit(simulator=watched, epochs=10, n_iterations_in_epoch=10, batch_size=1, progress=False)
    assert any("interrupted" in str(w.message) for w in caught)
    assert 0 < len(losses) < 10 and np.all(np.isfinite(losses))
    assert rim.fit(simulator=watched, epochs=1, n_iterations_in_epoch=10, batch_size=1, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of `score_fn`"),
        ({"score_fn": score_fn, "energy_fn": energy_fn}, "exactly one of `score_fn`"),
        ({"score_fn": score_fn, "link_function": jnp.exp}, "needs `inverse_link_function`"),
        ({"score_fn": score_fn, "inverse_link_function": jnp.log}, "without `link_function`"),
        ({"score_fn": score_fn, "score_preprocessing_method": "momentum"}, "`score_preprocessing_method`"),
        ({"score_fn": score_fn, "initialization_method": "ones"}, "`initialization_method`"),
        ({"score_fn": score_fn, "initialization_method": "approximate_inverse"}, "needs `approximate_inverse_fn`"),
        ({"score_fn": score_fn, "T": 0}, "`T`"),
    ],
)
def test_bad_construction_names_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        RIM((), MLP(N, hidden_units=4), **kwargs)


def test_bad_data_names_the_argument(test_set):
    (y, x, A, σ), _ = test_set
    rim = RIM((), MLP(N, hidden_units=4), score_fn=score_fn)
    with pytest.raises(ValueError, match="`dimensions`"):
        rim.fit((y[:8], x[:8, :10], A[:8], σ[:8]), epochs=1, progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        rim.fit((y[:8], x[:8].at[0, 0].set(jnp.nan), A[:8], σ[:8]), epochs=1, progress=False)
    with pytest.raises(ValueError, match="`score_fn` should return shape"):
        RIM((), MLP(N, hidden_units=4), score_fn=lambda x, y, A, σ: y).predict(y[:2], A[:2], σ[:2])
    with pytest.raises(ValueError, match="`model` should return shape"):
        RIM((), ShortUpdate(N, hidden_units=4), score_fn=score_fn).fit((y[:8], x[:8], A[:8], σ[:8]), progress=False)
    with pytest.raises(ValueError, match="`batch_size`"):
        rim.fit((y[:8], x[:8], A[:8], σ[:8]), batch_size=9, progress=False)
    with pytest.raises(ValueError, match="`patience` needs `validation`"):
        rim.fit((y[:8], x[:8], A[:8], σ[:8]), patience=3, progress=False)
