"""``imnn.IMNN``: which class each combination of arguments builds, and which it refuses.

Also the ASCII aliases, the accepted PRNG keys and previous states, and every
supported kind of network and optimiser.
"""

from __future__ import annotations

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import FIT, INPUT_SHAPE, N_D, N_PARAMS, N_S, N_SUMMARIES, PROBLEM, common, source_kwargs, stax_model, θ_FID
from jax.example_libraries import optimizers

import imnn


@pytest.fixture(scope="module")
def sims():
    return PROBLEM.simulations(jax.random.key(1), N_S, N_D)


@pytest.fixture(scope="module")
def validation_sims():
    return PROBLEM.simulations(jax.random.key(2), N_S, N_D)


def leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


# ---------------------------------------------------------------- the chosen class

CLASSES = {
    "simulator": imnn.SimulatorIMNN,
    "gradient": imnn.GradientIMNN,
    "numerical": imnn.NumericalGradientIMNN,
}


@pytest.mark.parametrize("kind", ["simulator", "gradient", "numerical"])
def test_factory_returns_class(kind, sims):
    model = imnn.IMNN(**common(), **source_kwargs(kind, sims))
    assert type(model) is CLASSES[kind]
    assert set(model.history) == {"detF", "detC", "detinvC", "Λ2", "r", "max_detF"}
    assert model.n_s == N_S and model.n_d == N_D
    assert model.n_params == N_PARAMS and model.n_summaries == N_SUMMARIES
    assert model.input_shape == INPUT_SHAPE
    np.testing.assert_array_equal(model.θ_fid, θ_FID)
    assert model.verbose is False


@pytest.mark.parametrize("kind", ["gradient", "numerical"])
def test_factory_returns_class_with_validation(kind, sims, validation_sims):
    model = imnn.IMNN(**common(), **source_kwargs(kind, sims, validation_sims))
    assert type(model) is CLASSES[kind]
    # The validation set reached the model: its history records validation metrics.
    assert {"val_detF", "val_detC", "val_detinvC", "val_Λ2", "val_r"} <= set(model.history)
    # ... and statistics with validate=True use it, validate=False the training set.
    x_train, _ = model.get_summaries(validate=False)
    x_val, _ = model.get_summaries(validate=True)
    assert not np.allclose(x_train, x_val)


def test_factory_numerical_keeps_δθ(sims):
    model = imnn.IMNN(**common(), **source_kwargs("numerical", sims))
    np.testing.assert_allclose(model.δθ, sims.δθ)


@pytest.mark.parametrize("kind", ["simulator", "gradient", "numerical"])
def test_class_constructed_directly_matches_factory(kind, sims):
    direct = CLASSES[kind](**common(), **source_kwargs(kind, sims))
    via_factory = imnn.IMNN(**common(), **source_kwargs(kind, sims))
    assert type(direct) is type(via_factory)
    assert leaves_equal(direct.initial_w, via_factory.initial_w)


def test_factory_passes_verbose(sims):
    assert imnn.IMNN(**common(verbose=True), **source_kwargs("gradient", sims)).verbose is True


# ---------------------------------------------------------------- ASCII aliases


def test_ascii_theta_fid(sims):
    kwargs = common()
    kwargs["theta_fid"] = kwargs.pop("θ_fid")
    model = imnn.IMNN(**kwargs, **source_kwargs("gradient", sims))
    assert type(model) is imnn.GradientIMNN
    np.testing.assert_array_equal(model.theta_fid, θ_FID)


def test_ascii_delta_theta(sims):
    kwargs = common()
    kwargs["theta_fid"] = kwargs.pop("θ_fid")
    data = source_kwargs("numerical", sims)
    data["delta_theta"] = data.pop("δθ")
    model = imnn.IMNN(**kwargs, **data)
    assert type(model) is imnn.NumericalGradientIMNN
    np.testing.assert_allclose(model.delta_theta, sims.δθ)


def test_ascii_delta_theta_on_class(sims):
    data = source_kwargs("numerical", sims)
    data["delta_theta"] = data.pop("δθ")
    model = imnn.NumericalGradientIMNN(**common(), **data)
    np.testing.assert_allclose(model.δθ, sims.δθ)


def test_ascii_delta_theta_with_simulator_rejected():
    with pytest.raises(ValueError, match="`δθ`"):
        imnn.IMNN(**common(), simulator=PROBLEM.simulator, delta_theta=jnp.array([0.1, 0.1]))


def test_greek_and_ascii_name_together_rejected(sims):
    with pytest.raises(TypeError, match="theta_fid"):
        imnn.IMNN(**common(), theta_fid=θ_FID, **source_kwargs("gradient", sims))


def test_fit_ascii_lam_epsilon(sims):
    """``lam``/``epsilon`` reach the regulariser: ``r = λ Λ2 / (Λ2 + exp(−α(λ, ϵ) Λ2))``."""
    model = imnn.IMNN(**common(), **source_kwargs("gradient", sims))
    model.fit(lam=7.0, epsilon=0.2, min_iterations=0, max_iterations=2)
    assert len(model.history["detF"]) == 2
    Λ2 = model.history["Λ2"]
    expected = imnn.fisher.regularisation_strength(Λ2, 7.0, imnn.fisher.alpha(7.0, 0.2))
    np.testing.assert_allclose(model.history["r"], expected, rtol=1e-4)
    # a second call with the Greek names (ϵ as U+03F5, not NFKC-normalised) continues the history
    model.fit(**{"λ": 3.0, "ϵ": 0.05, "min_iterations": 0, "max_iterations": 2})
    expected = imnn.fisher.regularisation_strength(model.history["Λ2"][2:], 3.0, imnn.fisher.alpha(3.0, 0.05))
    np.testing.assert_allclose(model.history["r"][2:], expected, rtol=1e-4)


# ---------------------------------------------------------------- inconsistent combinations


@pytest.mark.parametrize("other", ["fiducial", "derivative", "main", "validation_fiducial", "validation_derivative"])
def test_simulator_with_stored_simulations(other, sims):
    values = {
        "fiducial": sims.fiducial, "derivative": sims.derivative, "main": [iter([])],
        "validation_fiducial": sims.fiducial, "validation_derivative": sims.derivative,
    }  # fmt: skip
    with pytest.raises(ValueError, match=rf"`simulator`.*{other}"):
        imnn.IMNN(**common(), simulator=PROBLEM.simulator, **{other: values[other]})


def test_simulator_with_fiducial_and_derivative(sims):
    with pytest.raises(ValueError, match=r"`simulator`.*fiducial.*derivative"):
        imnn.IMNN(**common(), simulator=PROBLEM.simulator, fiducial=sims.fiducial, derivative=sims.derivative)


def test_δθ_with_simulator():
    with pytest.raises(ValueError, match="`δθ`.*`simulator`"):
        imnn.IMNN(**common(), simulator=PROBLEM.simulator, δθ=jnp.array([0.1, 0.1]))


@pytest.mark.parametrize("given", ["fiducial", "derivative"])
def test_fiducial_and_derivative_not_together(given, sims):
    value = sims.fiducial if given == "fiducial" else sims.derivative
    with pytest.raises(ValueError, match="`fiducial` and `derivative`"):
        imnn.IMNN(**common(), **{given: value})


@pytest.mark.parametrize("kind", ["gradient", "numerical"])
@pytest.mark.parametrize("given", ["validation_fiducial", "validation_derivative"])
def test_validation_fiducial_and_derivative_not_together(kind, given, sims, validation_sims):
    data = source_kwargs(kind, sims, validation_sims)
    missing = "validation_derivative" if given == "validation_fiducial" else "validation_fiducial"
    del data[missing]
    with pytest.raises(ValueError, match=f"`{missing}`"):
        imnn.IMNN(**common(), **data)


@pytest.mark.parametrize("kind", ["simulator", "gradient"])
@pytest.mark.parametrize(
    "given", [("n_per_device",), ("host",), ("devices",), ("host", "devices"), ("host", "n_per_device"),
              ("devices", "n_per_device")],
)  # fmt: skip
def test_partial_aggregation(kind, given, sims):
    values = {"host": jax.devices()[0], "devices": jax.devices(), "n_per_device": 10}
    with pytest.raises(ValueError, match="`n_per_device`") as error:
        imnn.IMNN(**common(), **source_kwargs(kind, sims), **{name: values[name] for name in given})
    message = str(error.value)
    for name in set(values) - set(given):
        assert name in message.split("missing", 1)[-1], message


@pytest.mark.parametrize("option", ["cache", "prefetch"])
def test_cache_prefetch_without_aggregation(option, sims):
    with pytest.raises(ValueError, match=f"`{option}`"):
        imnn.IMNN(**common(), **source_kwargs("gradient", sims), **{option: True})


def test_nothing_given():
    with pytest.raises(ValueError, match="`simulator`.*`fiducial`.*`derivative`"):
        imnn.IMNN(**common())


@pytest.mark.parametrize("stored", ["fiducial", "derivative", "validation_fiducial"])
def test_main_with_fiducial(stored, sims):
    values = {"fiducial": sims.fiducial, "derivative": sims.derivative, "validation_fiducial": sims.fiducial}
    aggregation = dict(host=jax.devices()[0], devices=jax.devices(), n_per_device=10)
    with pytest.raises(ValueError, match="`main`.*`fiducial`"):
        imnn.IMNN(**common(), main=[iter([])], **{stored: values[stored]}, **aggregation)


def test_remaining_without_main():
    with pytest.raises(ValueError, match="`main`"):
        imnn.IMNN(**common(), remaining=[iter([])])


def test_main_with_δθ():
    aggregation = dict(host=jax.devices()[0], devices=jax.devices(), n_per_device=10)
    with pytest.raises(ValueError, match="`δθ`"):
        imnn.IMNN(**common(), main=[iter([])], δθ=jnp.array([0.1, 0.1]), **aggregation)


@pytest.mark.parametrize("kind", ["gradient", "numerical"])
def test_validation_main_with_fiducial(kind, sims):
    with pytest.raises(ValueError, match="`validation_main`"):
        imnn.IMNN(**common(), **source_kwargs(kind, sims), validation_main=[iter([])])


def test_iterators_without_aggregation():
    with pytest.raises(ValueError, match="`n_per_device`"):
        imnn.IMNN(**common(), main=[iter([])], remaining=[iter([])])


# ---------------------------------------------------------------- aggregated and dataset classes


@pytest.mark.parametrize(
    "kind, cls",
    [("simulator", imnn.AggregatedSimulatorIMNN), ("gradient", imnn.AggregatedGradientIMNN),
     ("numerical", imnn.AggregatedNumericalGradientIMNN)],
)  # fmt: skip
def test_factory_returns_aggregated_class(kind, cls, sims):
    aggregation = dict(host=jax.devices()[0], devices=jax.devices(), n_per_device=10)
    model = imnn.IMNN(**common(), **source_kwargs(kind, sims), **aggregation)
    assert type(model) is cls
    assert model.devices == jax.devices() and model.n_per_device == 10


def _device_iterators(sims, kind, n_devices=2):
    if kind == "gradient":
        return imnn.loaders.gradient_dataset(np.asarray(sims.fiducial), np.asarray(sims.derivative), n_devices, 10)
    return imnn.loaders.numerical_dataset(np.asarray(sims.fiducial), np.asarray(sims.numerical_derivative),
                                          n_devices, 10) | dict(δθ=sims.δθ)  # fmt: skip


@pytest.mark.parametrize(
    "kind, cls", [("gradient", imnn.DatasetGradientIMNN), ("numerical", imnn.DatasetNumericalGradientIMNN)]
)
def test_factory_returns_dataset_class(kind, cls, sims, validation_sims):
    aggregation = dict(host=jax.devices()[0], devices=jax.devices()[:2], n_per_device=10)
    validation = _device_iterators(validation_sims, kind)
    validation = {f"validation_{name}": its for name, its in validation.items() if name != "δθ"}
    model = imnn.IMNN(**common(), **_device_iterators(sims, kind), **validation, **aggregation, prefetch=1)
    assert type(model) is cls
    assert model.devices == jax.devices()[:2] and model.n_per_device == 10
    model.fit(**FIT, max_iterations=2)
    assert len(model.history["val_detF"]) == 2


@pytest.mark.parametrize(
    "data, match",
    [
        (lambda s: dict(main=_device_iterators(s, "gradient")["main"], fiducial=s.fiducial, derivative=s.derivative),
         "either `main`/`remaining` iterators or `fiducial`/`derivative`"),
        (lambda s: _device_iterators(s, "numerical") | dict(derivative=s.numerical_derivative),
         "`fiducial` is a list of iterators but `derivative` is not"),
        (lambda s: {k: v for k, v in _device_iterators(s, "numerical").items() if k != "δθ"},
         "iterators are for numerical derivatives"),
        (lambda s: _device_iterators(s, "gradient") | dict(δθ=s.δθ), "`δθ` is not used with `main`"),
        (lambda s: dict(remaining=_device_iterators(s, "gradient")["remaining"]), "`main`"),
    ],
)  # fmt: skip
def test_factory_rejects_mixed_dataset_inputs(data, match, sims):
    aggregation = dict(host=jax.devices()[0], devices=jax.devices()[:2], n_per_device=10)
    with pytest.raises(ValueError, match=match):
        imnn.IMNN(**common(), **data(sims), **aggregation)


# ---------------------------------------------------------------- keys and states


@pytest.mark.parametrize("kind", ["simulator", "gradient", "numerical"])
def test_old_and_new_style_keys(kind, sims):
    new = imnn.IMNN(**common(key_or_state=jax.random.key(3)), **source_kwargs(kind, sims))
    old = imnn.IMNN(**common(key_or_state=jax.random.PRNGKey(3)), **source_kwargs(kind, sims))
    other = imnn.IMNN(**common(key_or_state=jax.random.key(4)), **source_kwargs(kind, sims))
    assert leaves_equal(new.initial_w, old.initial_w)
    assert not leaves_equal(new.initial_w, other.initial_w)


def test_key_decides_stax_weights(sims):
    _, params = stax_model()[0](jax.random.key(5), INPUT_SHAPE)
    model = imnn.IMNN(**common(key_or_state=jax.random.key(5)), **source_kwargs("gradient", sims))
    assert leaves_equal(model.initial_w, params)


@pytest.mark.parametrize("kind", ["simulator"])  # gradient: test_previous_state_resumes_optimiser
def test_previous_state_gives_same_weights(kind, sims):
    first = imnn.IMNN(**common(), **source_kwargs(kind, sims))
    rng = jax.random.key(7) if kind == "simulator" else None
    first.fit(**FIT, max_iterations=3, rng=rng)
    assert not leaves_equal(first.state.params, first.initial_w)
    second = imnn.IMNN(**common(key_or_state=first.state), **source_kwargs(kind, sims))
    assert leaves_equal(second.initial_w, first.state.params)
    assert int(second.state.count) == int(first.state.count) == 3


@pytest.mark.parametrize(
    "optimiser", [lambda: optax.adam(1e-2), lambda: optimizers.adam(1e-2)], ids=["optax", "example_libraries"]
)
def test_previous_state_resumes_optimiser(optimiser, sims):
    """Continuing from ``state`` in a new model follows exactly the same path as fitting on."""
    first = imnn.IMNN(**common(optimiser=optimiser()), **source_kwargs("gradient", sims))
    first.fit(**FIT, max_iterations=3)
    second = imnn.IMNN(**common(optimiser=optimiser(), key_or_state=first.state), **source_kwargs("gradient", sims))
    first.fit(**FIT, max_iterations=3)
    second.fit(**FIT, max_iterations=3)
    assert len(first.history["detF"]) == 6 and len(second.history["detF"]) == 3
    np.testing.assert_allclose(second.history["detF"], first.history["detF"][3:], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(first.final_w), jax.tree.leaves(second.final_w)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_example_libraries_optimizer_state_as_key_or_state(sims):
    init, _, get_params = triple = optimizers.sgd(1e-3)
    _, params = stax_model()[0](jax.random.key(11), INPUT_SHAPE)
    model = imnn.IMNN(**common(optimiser=triple, key_or_state=init(params)), **source_kwargs("gradient", sims))
    assert leaves_equal(model.initial_w, get_params(init(params)))


# ---------------------------------------------------------------- networks


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, d):
        return nn.Dense(N_SUMMARIES)(nn.leaky_relu(nn.Dense(8)(d)))


class NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(INPUT_SHAPE[0], 8, rngs=rngs)
        self.out = nnx.Linear(8, N_SUMMARIES, rngs=rngs)

    def __call__(self, d):
        return self.out(nnx.leaky_relu(self.hidden(d)))


def network(name):
    """``(model, apply(w, d))``: the model as given to the IMNN and how to apply it directly."""
    if name == "stax":
        init, apply = stax_model()
        return (init, apply), apply
    if name == "linen":
        module = LinenMLP()
        return module, module.apply
    if name == "nnx":
        module = NnxMLP(nnx.Rngs(0))
        graphdef, _, rest = nnx.split(module, nnx.Param, ...)
        return module, lambda w, d: nnx.merge(graphdef, w, rest)(d)
    if name == "equinox":
        module = eqx.nn.MLP(INPUT_SHAPE[0], N_SUMMARIES, width_size=8, depth=1, key=jax.random.key(0))
        _, static = eqx.partition(module, eqx.is_inexact_array)
        return module, lambda w, d: eqx.combine(w, static)(d)
    raise ValueError(name)


@pytest.mark.parametrize("name", ["stax", "linen", "nnx", "equinox"])
@pytest.mark.parametrize("kind", ["simulator", "gradient", "numerical"])
def test_networks_give_summaries(name, kind, sims):
    model_in, apply = network(name)
    model = imnn.IMNN(**common(model=model_in), **source_kwargs(kind, sims))
    key = jax.random.key(9) if kind == "simulator" else None
    x, dx = model.get_summaries(key=key)
    assert x.shape == (N_S, N_SUMMARIES)
    assert np.all(np.isfinite(x))
    if kind != "numerical":
        assert dx.shape == (N_D, N_SUMMARIES, N_PARAMS)
    if kind != "simulator":
        np.testing.assert_allclose(x, jax.vmap(apply, (None, 0))(model.w, sims.fiducial), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["linen", "nnx", "equinox"])
def test_networks_fit(name, sims):
    model_in, _ = network(name)
    model = imnn.IMNN(**common(model=model_in), **source_kwargs("gradient", sims))
    model.fit(**FIT, max_iterations=3)
    assert len(model.history["detF"]) == 3
    assert not leaves_equal(model.final_w, model.initial_w)
    assert model.F.shape == (N_PARAMS, N_PARAMS)


def test_gradient_summaries_chain_rule(sims):
    """``dx/dθ`` of a GradientIMNN is the model's Jacobian applied to the stored ``dd/dθ``."""
    model = imnn.IMNN(**common(), **source_kwargs("gradient", sims))
    apply = stax_model()[1]
    _, dx = model.get_summaries()
    jacobian = jax.vmap(jax.jacfwd(apply, argnums=1), (None, 0))(model.w, sims.fiducial[:N_D])
    expected = jnp.einsum("nsi,nip->nsp", jacobian, sims.derivative)
    np.testing.assert_allclose(dx, expected, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- optimisers


@pytest.mark.parametrize(
    "optimiser",
    [lambda: optax.sgd(1e-3), lambda: optimizers.sgd(1e-3)],  # the Adams: test_previous_state_resumes_optimiser
    ids=["optax.sgd", "example_libraries.sgd"],
)
def test_optimisers_fit(optimiser, sims):
    model = imnn.IMNN(**common(optimiser=optimiser()), **source_kwargs("gradient", sims))
    model.fit(**FIT, max_iterations=3)
    assert len(model.history["detF"]) == 3
    assert int(model.state.count) == 3
    assert not leaves_equal(model.final_w, model.initial_w)
