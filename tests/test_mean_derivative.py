"""IMNNs fitted from the derivative of the mean alone (additive noise), against the analytic Fisher matrix.

The data are ``d = μ(θ) + n`` with a nonlinear mean ``μ(θ) = θ₀ exp(−θ₁ x)`` on 8 points and
Gaussian noise of fixed, unequal variances ``σ²``, so every simulation's derivative is ``dμ/dθ``
and ``F = dμᵀ C⁻¹ dμ`` exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.example_libraries import stax

import imnn
from imnn import fisher, sources

X = jnp.linspace(0.0, 1.0, 8)
σ = 0.1 + 0.2 * X
θ_FID = jnp.array([1.0, 1.0])
δθ = jnp.array([0.1, 0.1])
N_S, N_D = 500, 250


def mean(θ):
    return θ[0] * jnp.exp(-θ[1] * X)


def simulator(key, θ):
    return mean(θ) + σ * jax.random.normal(key, X.shape)


DERIVATIVE = jax.jacfwd(mean)(θ_FID)  # float(8, 2)
EXACT_F = DERIVATIVE.T @ (DERIVATIVE / σ[:, None] ** 2)
# the means at θ_fid ∓ δθ/2 in one parameter at a time: float(2, n_params, 8)
MEAN_PAIR = jnp.stack([jax.vmap(lambda e, s=s: mean(θ_FID + s * δθ / 2 * e))(jnp.eye(2)) for s in (-1, 1)])


def simulations(seed, n=N_S):
    return jax.vmap(simulator, (0, None))(jax.random.split(jax.random.key(seed), n), θ_FID)


def make(kind, derivative, validation=True, cls=None, **extra):
    cls = cls or (imnn.GradientIMNN if kind == "gradient" else imnn.NumericalGradientIMNN)
    kwargs = dict(
        n_s=N_S, n_d=N_D, n_params=2, n_summaries=2, input_shape=(8,), θ_fid=θ_FID,
        model=stax.serial(stax.Dense(16), stax.LeakyRelu, stax.Dense(2)), optimiser=optax.adam(1e-2),
        key_or_state=jax.random.key(0), fiducial=simulations(1), derivative=derivative, verbose=False, **extra,
    )  # fmt: skip
    if validation:
        kwargs.update(validation_fiducial=simulations(2), validation_derivative=derivative)
    if kind == "numerical":
        kwargs["δθ"] = δθ
    return cls(**kwargs)


def mean_derivative(kind):
    return DERIVATIVE if kind == "gradient" else MEAN_PAIR


def fresh_detF(model, n=20_000):
    """|F| of the model's summaries on fresh simulations, with their exact derivatives."""
    source = sources.simulator(simulator, θ_FID, n, n)
    summaries = sources.summarise(source, model.model, model.w, None, jax.random.key(5))
    return float(np.linalg.det(fisher.statistics(*summaries).F))


@pytest.fixture(scope="module", params=["gradient", "numerical"])
def fitted(request):
    model = make(request.param, mean_derivative(request.param))
    model.fit(10.0, 0.1, patience=50, max_iterations=3000)
    return request.param, model


def test_the_fit_from_the_mean_derivative_reaches_the_analytic_information(fitted):
    kind, model = fitted
    ratio = fresh_detF(model) / float(np.linalg.det(EXACT_F))
    assert 0.9 < ratio < 1.05, f"{kind}: |F| on fresh simulations is {ratio:.3f} of dμᵀC⁻¹dμ"
    assert model.history["val_detF"][-1] > 0.8 * float(np.linalg.det(EXACT_F))


def per_simulation(kind, fiducial):
    """The per-simulation derivatives the mean derivative stands for."""
    if kind == "gradient":
        return np.broadcast_to(DERIVATIVE, (N_D, *DERIVATIVE.shape)).copy()
    half_difference = (MEAN_PAIR[1] - MEAN_PAIR[0]) / 2  # float(n_params, 8)
    return np.asarray(fiducial[:N_D, None, None] + jnp.stack([-half_difference, half_difference]))


@pytest.mark.parametrize("kind", ["gradient", "numerical"])
def test_a_mean_derivative_fits_exactly_like_the_per_simulation_derivatives_it_stands_for(kind):
    from_mean = make(kind, mean_derivative(kind), validation=False)
    from_each = make(kind, per_simulation(kind, simulations(1)), validation=False)
    for model in (from_mean, from_each):
        model.fit(10.0, 0.1, min_iterations=20, max_iterations=20)
    for name, values in from_each.history.items():
        np.testing.assert_allclose(from_mean.history[name], values, rtol=2e-5, err_msg=name)


@pytest.mark.parametrize("kind", ["gradient", "numerical"])
def test_aggregated_fits_from_the_mean_derivative_match_in_memory_and_hold_it_once(kind):
    cls = imnn.AggregatedGradientIMNN if kind == "gradient" else imnn.AggregatedNumericalGradientIMNN
    devices = jax.devices()[:4]
    aggregated = make(kind, mean_derivative(kind), cls=cls, host=devices[0], devices=devices, n_per_device=30)
    in_memory = make(kind, mean_derivative(kind))
    for model in (in_memory, aggregated):
        model.fit(10.0, 0.1, min_iterations=8, max_iterations=8)
    for name, values in in_memory.history.items():
        np.testing.assert_allclose(aggregated.history[name], values, rtol=1e-4, err_msg=name)
    # two sets of fiducial simulations (the 250 with and 250 without derivatives each padded to
    # 3 batches of 120) and one derivative each; per-simulation derivatives would add 2 × 360 × 16 floats
    held = sum(leaf.nbytes for leaf in jax.tree.leaves((aggregated._data, aggregated._validation_data)))
    padded_fiducial = 2 * 2 * 3 * 120 * 8 * 4
    assert held <= padded_fiducial + 2 * mean_derivative(kind).nbytes


@pytest.mark.parametrize("kind", ["gradient", "numerical"])
def test_the_validation_derivative_must_take_the_training_derivatives_form(kind):
    with pytest.raises(ValueError, match="`validation_derivative` should have shape"):
        make(kind, mean_derivative(kind), validation=False, validation_fiducial=simulations(2),
             validation_derivative=per_simulation(kind, simulations(2)))  # fmt: skip


def test_a_mean_derivative_of_the_wrong_shape_is_named():
    with pytest.raises(ValueError, match=r"`derivative` should have .* or \(\*input_shape, n_params\) = \(8, 2\)"):
        make("gradient", DERIVATIVE[:, :1], validation=False)
    with pytest.raises(ValueError, match=r"\(2, n_params, \*input_shape\) = \(2, 2, 8\)"):
        make("numerical", MEAN_PAIR[:, :, :4], validation=False)
