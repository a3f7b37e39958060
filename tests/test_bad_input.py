"""Bad input at every public entry point raises an error that names the argument.

And non-finite values, in the data or appearing during a fit, never corrupt the
model: construction fails before anything is built, and a fit stops with a
warning keeping the best weights and a finite history.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    FIT,
    INPUT_SHAPE,
    KINDS,
    N_D,
    N_PARAMS,
    N_S,
    N_SUMMARIES,
    PROBLEM,
    STORED,
    common,
    source_kwargs,
    stax_model,
)
from jax.example_libraries import optimizers, stax

import imnn


@pytest.fixture(scope="module")
def sims():
    return PROBLEM.simulations(jax.random.key(1), N_S, N_D)


def data(kind, sims, validation=False, **overrides):
    return source_kwargs(kind, sims, sims if validation else None, **overrides)


def build(kind, sims, validation=False, common_overrides=None, **overrides):
    return imnn.IMNN(**common(**(common_overrides or {})), **data(kind, sims, validation, **overrides))


def all_finite(tree):
    return all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in jax.tree.leaves(tree))


def with_value(array, index, value):
    array = np.array(array)
    array[index] = value
    return array


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("kind", STORED)
def test_fiducial_one_simulation_short(kind, sims):
    with pytest.raises(ValueError, match=r"`fiducial`.*\(100, 10\).*\(99, 10\)"):
        build(kind, sims, fiducial=sims.fiducial[:-1])


@pytest.mark.parametrize("kind", STORED)
def test_fiducial_wrong_simulation_shape(kind, sims):
    with pytest.raises(ValueError, match=r"`fiducial`.*\(100, 10\).*\(100, 9\)"):
        build(kind, sims, fiducial=sims.fiducial[:, :-1])


def test_numerical_layout_given_to_gradient(sims):
    with pytest.raises(ValueError, match=r"`derivative`.*\(50, 10, 2\).*\(50, 2, 2, 10\)"):
        build("gradient", sims, derivative=sims.numerical_derivative)


def test_gradient_layout_given_to_numerical(sims):
    with pytest.raises(ValueError, match=r"`derivative`.*\(50, 2, 2, 10\).*\(50, 10, 2\)"):
        build("numerical", sims, derivative=sims.derivative)


@pytest.mark.parametrize("kind", STORED)
def test_derivative_wrong_n_d(kind, sims):
    derivative = data(kind, sims)["derivative"]
    with pytest.raises(ValueError, match="`derivative`"):
        build(kind, sims, derivative=derivative[:-1])


@pytest.mark.parametrize("kind", STORED)
@pytest.mark.parametrize("name", ["validation_fiducial", "validation_derivative"])
def test_validation_wrong_shape(kind, name, sims):
    value = data(kind, sims, validation=True)[name]
    with pytest.raises(ValueError, match=f"`{name}`"):
        build(kind, sims, validation=True, **{name: value[:-1]})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("θ_fid", [[0.0, 1.0, 2.0], [0.0], 0.0, [[0.0, 1.0]]], ids=["3", "1", "scalar", "2d"])
def test_θ_fid_wrong_length(kind, θ_fid, sims):
    with pytest.raises(ValueError, match="`θ_fid`"):
        build(kind, sims, common_overrides=dict(θ_fid=θ_fid))


@pytest.mark.parametrize("δθ", [[0.1], [0.1, 0.1, 0.1], 0.1], ids=["1", "3", "scalar"])
def test_δθ_wrong_length(δθ, sims):
    with pytest.raises(ValueError, match="`δθ`"):
        build("numerical", sims, δθ=jnp.asarray(δθ))


@pytest.mark.parametrize("δθ", [[0.0, 0.1], [0.1, -0.1], [-0.1, -0.1]])
def test_δθ_not_positive(δθ, sims):
    with pytest.raises(ValueError, match="`δθ`"):
        build("numerical", sims, δθ=jnp.asarray(δθ))


# ---------------------------------------------------------------- types


@pytest.mark.parametrize("kind", STORED)
@pytest.mark.parametrize("name", ["fiducial", "derivative"])
@pytest.mark.parametrize("as_", ["list", "string"])
def test_arrays_of_wrong_type(kind, name, as_, sims):
    value = data(kind, sims)[name]
    value = np.asarray(value).tolist() if as_ == "list" else f"{name}.npy"
    with pytest.raises(TypeError, match=f"`{name}`"):
        build(kind, sims, **{name: value})


@pytest.mark.parametrize("kind", STORED)
def test_arrays_of_wrong_type_on_class(kind, sims):
    cls = imnn.GradientIMNN if kind == "gradient" else imnn.NumericalGradientIMNN
    kwargs = data(kind, sims)
    kwargs["fiducial"] = np.asarray(kwargs["fiducial"]).tolist()
    with pytest.raises(TypeError, match="`fiducial`"):
        cls(**common(), **kwargs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "model",
    [lambda: "mlp", lambda: 3, lambda: stax_model()[1], lambda: (*stax_model(), None), lambda: (1, 2)],
    ids=["string", "int", "apply-only", "triple", "non-callables"],
)
def test_model_not_a_model(kind, model, sims):
    with pytest.raises(TypeError, match="`model`"):
        build(kind, sims, common_overrides=dict(model=model()))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "optimiser",
    [lambda: optax.adam, lambda: "adam", lambda: None, lambda: optimizers.adam(1e-3)[:2]],
    ids=["uncalled-optax", "string", "None", "pair"],
)
def test_optimiser_not_an_optimiser(kind, optimiser, sims):
    with pytest.raises(TypeError, match="`optimiser`"):
        build(kind, sims, common_overrides=dict(optimiser=optimiser()))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "key_or_state",
    [
        lambda: 0,
        lambda: 1.5,
        lambda: "key",
        lambda: None,
        lambda: jnp.zeros(3, jnp.uint32),
        lambda: jnp.zeros(2),
        lambda: jax.random.split(jax.random.key(0)),
        lambda: jax.random.split(jax.random.PRNGKey(0)),
    ],
    ids=["int", "float", "string", "None", "uint32[3]", "float[2]", "split-keys", "split-old-keys"],
)
def test_key_or_state_not_a_key(kind, key_or_state, sims):
    with pytest.raises(TypeError, match="`key_or_state`"):
        build(kind, sims, common_overrides=dict(key_or_state=key_or_state()))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("input_shape", [10, (10.0,), (0,), "10"], ids=["int", "float", "zero", "string"])
def test_input_shape_wrong(kind, input_shape, sims):
    with pytest.raises((TypeError, ValueError), match="`input_shape`"):
        build(kind, sims, common_overrides=dict(input_shape=input_shape))


def test_simulator_not_callable():
    with pytest.raises(TypeError, match="`simulator`"):
        imnn.IMNN(**common(), simulator=np.zeros(10))


def test_derivative_mode_wrong():
    with pytest.raises(ValueError, match="`derivative_mode`"):
        imnn.SimulatorIMNN(**common(), simulator=PROBLEM.simulator, derivative_mode="backward")


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["n_s", "n_d", "n_params", "n_summaries"])
@pytest.mark.parametrize("value", [0, -3, 2.5, 10.0, "10", None, True], ids=str)
def test_sizes_must_be_positive_integers(kind, name, value, sims):
    with pytest.raises((TypeError, ValueError), match=f"`{name}`"):
        build(kind, sims, common_overrides={name: value})


@pytest.mark.parametrize("kind", KINDS)
def test_numpy_integer_sizes_accepted(kind, sims):
    sizes = dict(n_s=np.int64(N_S), n_d=np.int32(N_D), n_params=np.int64(N_PARAMS), n_summaries=np.int64(N_SUMMARIES))
    model = build(kind, sims, common_overrides=sizes)
    assert (model.n_s, model.n_d, model.n_params, model.n_summaries) == (N_S, N_D, N_PARAMS, N_SUMMARIES)


def test_n_d_greater_than_n_s_simulator():
    with pytest.raises(ValueError, match="`n_d`"):
        imnn.IMNN(**common(n_d=N_S + 1), simulator=PROBLEM.simulator)


@pytest.mark.parametrize("kind", STORED)
def test_n_d_greater_than_n_s_stored(kind, sims):
    shape = (N_S + 1, *INPUT_SHAPE, N_PARAMS) if kind == "gradient" else (N_S + 1, 2, N_PARAMS, *INPUT_SHAPE)
    with pytest.raises(ValueError, match="`n_d`"):
        build(kind, sims, common_overrides=dict(n_d=N_S + 1), derivative=jnp.zeros(shape))


def test_n_s_not_above_n_summaries():
    with pytest.raises(ValueError, match="`n_s`"):
        imnn.IMNN(**common(n_s=2, n_d=1, model=stax_model(2)), simulator=PROBLEM.simulator)


# ---------------------------------------------------------------- functions returning the wrong shape


class LinenThree(nn.Module):
    @nn.compact
    def __call__(self, d):
        return nn.Dense(3)(d)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "model",
    [lambda: stax_model(3), lambda: LinenThree(), lambda: stax.serial(stax.Dense(N_SUMMARIES), stax.Flatten)],
    ids=["stax-3", "linen-3", "stax-flatten"],
)
def test_model_output_not_n_summaries(kind, model, sims):
    with pytest.raises(ValueError, match=r"`model`.*\(2,\).*`n_summaries` \(=2\)"):
        build(kind, sims, common_overrides=dict(model=model()))


@pytest.mark.parametrize(
    "simulator",
    [
        lambda key, θ: jax.random.normal(key, (11,)),
        lambda key, θ: jax.random.normal(key, (10, 1)),
        lambda key, θ: θ[0],
        lambda key: jax.random.normal(key, (10,)),
    ],
    ids=["length-11", "column", "scalar", "one-argument"],
)
def test_simulator_output_not_input_shape(simulator):
    with pytest.raises(ValueError, match="`simulator`"):
        imnn.IMNN(**common(), simulator=simulator)


# ---------------------------------------------------------------- fit arguments


@pytest.fixture
def gradient_model(sims):
    return build("gradient", sims)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("name, pattern", [("λ", "`(λ|lam)`"), ("ϵ", "`(ϵ|ε|epsilon)`")])
def test_fit_λ_ϵ_not_positive(name, pattern, value, gradient_model):
    settings = {"λ": 10.0, "ϵ": 0.1}  # string keys: "ϵ" stays U+03F5 (keywords are NFKC-normalised)
    settings[name] = value
    with pytest.raises(ValueError, match=pattern):
        gradient_model.fit(**settings, max_iterations=2)
    # nothing happened to the model
    assert len(gradient_model.history["detF"]) == 0 and int(gradient_model.state.count) == 0
    assert gradient_model.F is None


@pytest.mark.parametrize("name, pattern", [("lam", "`(λ|lam)`"), ("epsilon", "`(ϵ|ε|epsilon)`")])
def test_fit_ascii_λ_ϵ_not_positive(name, pattern, gradient_model):
    settings = dict(lam=10.0, epsilon=0.1)
    settings[name] = -1.0
    with pytest.raises(ValueError, match=pattern):
        gradient_model.fit(**settings, max_iterations=2)


@pytest.mark.parametrize("name, pattern", [("λ", "`(λ|lam)`"), ("ϵ", "`(ϵ|ε|epsilon)`")])
@pytest.mark.parametrize("value", ["10", None, [1.0]], ids=["string", "None", "list"])
def test_fit_λ_ϵ_wrong_type(name, pattern, value, gradient_model):
    settings = {"λ": 10.0, "ϵ": 0.1}  # string keys: "ϵ" stays U+03F5 (keywords are NFKC-normalised)
    settings[name] = value
    with pytest.raises(TypeError, match=pattern):
        gradient_model.fit(**settings, max_iterations=2)


@pytest.mark.parametrize(
    "name, value",
    [("patience", -1), ("min_iterations", -1), ("max_iterations", -1), ("max_iterations", 2.5),
     ("patience", "10"), ("print_rate", 0)],
)  # fmt: skip
def test_fit_counts_wrong(name, value, gradient_model):
    with pytest.raises((TypeError, ValueError), match=f"`{name}`"):
        gradient_model.fit(**{**FIT, name: value})


def test_simulator_fit_without_rng():
    model = imnn.IMNN(**common(), simulator=PROBLEM.simulator)
    with pytest.raises(ValueError, match="`rng`"):
        model.fit(**FIT, max_iterations=2)
    assert len(model.history["detF"]) == 0


@pytest.mark.parametrize("rng", [0, jnp.zeros(3, jnp.uint32), "key"], ids=["int", "uint32[3]", "string"])
def test_fit_rng_not_a_key(rng):
    model = imnn.IMNN(**common(), simulator=PROBLEM.simulator)
    with pytest.raises(TypeError, match="`rng`"):
        model.fit(**FIT, max_iterations=2, rng=rng)


def test_simulator_statistics_without_key():
    model = imnn.IMNN(**common(), simulator=PROBLEM.simulator)
    with pytest.raises(ValueError, match="`key`"):
        model.get_summaries()
    with pytest.raises(ValueError, match="`key`"):
        model.set_F_statistics()
    with pytest.raises(TypeError, match="`key`"):
        model.set_F_statistics(key=0)


# ---------------------------------------------------------------- get_estimate


@pytest.mark.parametrize("kind", KINDS)
def test_get_estimate_before_fit(kind, sims):
    model = build(kind, sims)
    with pytest.raises(RuntimeError, match="`fit`"):
        model.get_estimate(sims.fiducial[0])


@pytest.fixture(scope="module")
def fitted(sims):
    return build("gradient", sims).set_F_statistics()


@pytest.mark.parametrize("shape", [(11,), (3, 11), (3, 2, 10), (), (10, 1), (1, 10, 1)], ids=str)
def test_get_estimate_wrong_shape(shape, fitted):
    with pytest.raises(ValueError, match=r"`d`.*\(10,\)"):
        fitted.get_estimate(jnp.zeros(shape))


def test_get_estimate_right_shapes(fitted, sims):
    assert fitted.get_estimate(sims.fiducial[0]).shape == (N_PARAMS,)
    assert fitted.get_estimate(sims.fiducial[:5]).shape == (5, N_PARAMS)
    np.testing.assert_allclose(fitted.get_estimate(sims.fiducial[3]), fitted.get_estimate(sims.fiducial[:5])[3],
                               rtol=1e-5, atol=1e-6)  # fmt: skip


# ---------------------------------------------------------------- non-finite data


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("kind", STORED)
@pytest.mark.parametrize("name", ["fiducial", "derivative", "validation_fiducial", "validation_derivative"])
def test_non_finite_arrays(name, kind, bad, sims):
    value = data(kind, sims, validation=True)[name]
    index = (3,) + (0,) * (np.ndim(value) - 1)
    with pytest.raises(ValueError, match=f"`{name}`"):
        build(kind, sims, validation=True, **{name: with_value(value, index, bad)})


@pytest.mark.parametrize("kind", KINDS)
def test_non_finite_θ_fid(kind, sims):
    with pytest.raises(ValueError, match="`θ_fid`"):
        build(kind, sims, common_overrides=dict(θ_fid=jnp.array([0.0, jnp.nan])))


def test_non_finite_δθ(sims):
    with pytest.raises(ValueError, match="`δθ`"):
        build("numerical", sims, δθ=jnp.array([0.1, jnp.inf]))


@pytest.mark.parametrize("kind", STORED)
@pytest.mark.parametrize("name", ["fiducial", "derivative", "validation_fiducial", "validation_derivative"])
def test_nothing_created_after_nan(name, kind, sims):
    """The NaN is found before the network is initialised or anything else is built."""
    init_calls = []
    init_fn, apply_fn = stax_model()

    def counting_init(key, input_shape):
        init_calls.append(key)
        return init_fn(key, input_shape)

    value = data(kind, sims, validation=True)[name]
    bad = with_value(value, (0,) * np.ndim(value), np.nan)
    bad_copy = bad.copy()
    result = None
    with pytest.raises(ValueError, match=f"`{name}`"):
        result = build(kind, sims, validation=True, common_overrides=dict(model=(counting_init, apply_fn)),
                       **{name: bad})  # fmt: skip
    assert result is None
    assert init_calls == []
    np.testing.assert_array_equal(bad, bad_copy)  # the user's array is left as it was


# ---------------------------------------------------------------- a loss that turns NaN during fit


def blow_up_at(step, factor):
    """SGD whose update number ``step`` (counting from 0) multiplies the weights by ``factor``."""

    def init(params):
        return jnp.zeros((), jnp.int32)

    def update(grads, count, params=None):
        sgd = jax.tree.map(lambda g: -1e-3 * g, grads)
        blown = jax.tree.map(lambda p: p * (factor - 1), params)
        updates = jax.tree.map(lambda a, b: jnp.where(count == step, b, a), sgd, blown)
        return updates, count + 1

    return optax.GradientTransformation(init, update)


def check_after_nan(model, n_good):
    assert len(model.history["detF"]) == n_good
    for name, values in model.history.items():
        if name != "max_detF":
            assert len(values) == n_good, name
            assert np.all(np.isfinite(values)), name
    assert np.isfinite(model.history["max_detF"])
    assert all_finite(model.best_w)
    assert all_finite(model.w)
    assert all_finite(model.F) and all_finite(model.C)


@pytest.mark.parametrize("validation", [False, True], ids=["train", "validation"])
def test_loss_turns_nan_mid_fit(validation, sims):
    """Weights scaled by 1e30 at the 4th update: the 5th loss overflows. 4 good iterations remain."""
    model = build("gradient", sims, validation, common_overrides=dict(optimiser=blow_up_at(3, 1e30)))
    with pytest.warns(UserWarning, match="non-finite"):
        model.fit(**FIT, max_iterations=50)
    check_after_nan(model, 4)
    assert int(model.state.count) == 4
    assert all_finite(model.state.params)


def test_fit_again_after_nan(sims):
    """Calling ``fit`` again after a NaN stop (the next loss is NaN at once) warns again and changes nothing."""
    model = build("gradient", sims, common_overrides=dict(optimiser=blow_up_at(3, 1e30)))
    with pytest.warns(UserWarning, match="non-finite"):
        model.fit(**FIT, max_iterations=50)
    best_w = model.best_w
    with pytest.warns(UserWarning, match="non-finite"):
        model.fit(**FIT, max_iterations=50)
    check_after_nan(model, 4)
    for a, b in zip(jax.tree.leaves(model.best_w), jax.tree.leaves(best_w)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("print_rate", [None, 1])  # 1: the NaN falls on the first iteration of a chunk
def test_huge_learning_rate(print_rate, sims):
    model = build("gradient", sims, common_overrides=dict(optimiser=optax.sgd(1e4)))
    with pytest.warns(UserWarning, match="non-finite"):
        model.fit(**FIT, max_iterations=50, print_rate=print_rate)
    n = len(model.history["detF"])
    assert 1 <= n < 50
    check_after_nan(model, n)
    assert int(model.state.count) == n


def test_simulator_loss_turns_nan_mid_fit():
    model = imnn.IMNN(**common(optimiser=blow_up_at(2, 1e30)), simulator=PROBLEM.simulator)
    with pytest.warns(UserWarning, match="non-finite"):
        model.fit(**FIT, max_iterations=50, rng=jax.random.key(3))
    check_after_nan(model, 3)


def test_nan_weights_mid_fit_keep_last_good_state(sims):
    """An update that makes the weights NaN: the model keeps finite weights to resume from."""
    model = build("gradient", sims, common_overrides=dict(optimiser=blow_up_at(3, jnp.nan)))
    with pytest.warns(UserWarning, match="non-finite"):
        model.fit(**FIT, max_iterations=50)
    n = len(model.history["detF"])
    assert n in (3, 4)  # whether the NaN is caught at the update or at the next loss
    check_after_nan(model, n)
    assert int(model.state.count) == n
    assert all_finite(model.state.params), "the optimiser state to resume from holds NaN weights"
    assert all_finite(model.final_w), "`final_w` holds NaN weights"


def test_loss_nan_from_the_first_iteration(sims):
    """A network that outputs NaN: the fit stops at once, with an empty history and the initial weights."""
    init_fn, apply_fn = stax_model()
    model = build("gradient", sims, common_overrides=dict(model=(init_fn, lambda w, d: apply_fn(w, d) * jnp.nan)))
    with pytest.warns(UserWarning) as record:
        model.fit(**FIT, max_iterations=50)
    assert any("non-finite" in str(warning.message) for warning in record)
    assert int(model.state.count) == 0
    for name in ("detF", "detC", "detinvC", "Λ2", "r"):
        assert len(model.history[name]) == 0
    assert model.history["max_detF"] == -np.inf
    for a, b in zip(jax.tree.leaves(model.w), jax.tree.leaves(model.initial_w)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- dtypes, keys, counts and flags


@pytest.mark.parametrize("kind", STORED)
@pytest.mark.parametrize("low", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
def test_mixed_precision_fiducial_and_derivative(kind, low, sims):
    kwargs = data(kind, sims)
    with pytest.raises(TypeError, match=r"`derivative` has dtype float32 but `fiducial` has dtype (b?float16)"):
        build(kind, sims, fiducial=jnp.asarray(kwargs["fiducial"], low))


@pytest.mark.parametrize("kind", STORED)
def test_mixed_precision_validation_and_training(kind, sims):
    value = jnp.asarray(data(kind, sims, validation=True)["validation_fiducial"], jnp.float16)
    with pytest.raises(TypeError, match=r"`validation_fiducial` has dtype float16 but `fiducial` has dtype float32"):
        build(kind, sims, validation=True, validation_fiducial=value)


def test_mixed_precision_float64_under_x64(sims):
    kwargs = data("gradient", sims)
    with jax.enable_x64(True):
        with pytest.raises(TypeError, match=r"`derivative` has dtype float32 but `fiducial` has dtype float64"):
            build("gradient", sims, fiducial=np.asarray(kwargs["fiducial"], np.float64))


def test_numpy_float64_with_float32_accepted_without_x64(sims):
    """Without x64 JAX holds float64 as float32, so the precisions agree."""
    kwargs = data("gradient", sims)
    build("gradient", sims, fiducial=np.asarray(kwargs["fiducial"], np.float64))


def test_numpy_key_data_accepted(sims):
    model = build("gradient", sims, common_overrides=dict(key_or_state=np.asarray(jax.random.PRNGKey(0))))
    reference = build("gradient", sims, common_overrides=dict(key_or_state=jax.random.key(0)))
    for a, b in zip(jax.tree.leaves(model.initial_w), jax.tree.leaves(reference.initial_w)):
        np.testing.assert_array_equal(a, b)
    model.fit(**FIT, max_iterations=2, rng=np.asarray(jax.random.PRNGKey(3)))
    assert len(model.history["detF"]) == 2
    assert imnn._checks.key("rng", np.asarray(jax.random.PRNGKey(3))) == jax.random.key(3)


def test_rbg_key_data_accepted_under_threefry(sims):
    rbg_data = jax.random.key_data(jax.random.key(0, impl="rbg"))  # uint32[4]
    model = build("gradient", sims, common_overrides=dict(key_or_state=rbg_data))
    assert jax.random.key_impl(imnn._checks.key("rng", np.asarray(rbg_data))) == jax.random.key_impl(
        jax.random.key(0, impl="rbg")
    )
    model.fit(**FIT, max_iterations=1, rng=np.asarray(rbg_data))
    assert len(model.history["detF"]) == 1


RBG_SCRIPT = """
import jax, sys
sys.path.insert(0, "tests")
from helpers import PROBLEM, common, source_kwargs
import imnn
key = jax.random.PRNGKey(0)
assert key.shape == (4,), key.shape
sims = PROBLEM.simulations(jax.random.key(1), 100, 50)
model = imnn.IMNN(**common(key_or_state=key), **source_kwargs("gradient", sims))
rng = imnn._checks.key("rng", jax.random.PRNGKey(1))  # what fit(rng=...) does
assert rng.shape == () and "rbg" in str(jax.random.key_impl(rng)), jax.random.key_impl(rng)
print("built")
"""


def test_legacy_keys_under_rbg_default():
    """``jax.random.PRNGKey(0)`` is uint32[4] when JAX_DEFAULT_PRNG_IMPL=rbg (set before jax is imported)."""
    root = pathlib.Path(__file__).parent.parent
    env = {**os.environ, "JAX_DEFAULT_PRNG_IMPL": "rbg", "XLA_FLAGS": ""}
    result = subprocess.run([sys.executable, "-c", RBG_SCRIPT], cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "built" in result.stdout


@pytest.mark.parametrize("name", ["patience", "min_iterations", "max_iterations"])
def test_fit_counts_beyond_int32(name, gradient_model):
    with pytest.raises(ValueError, match=rf"`{name}` \(=2147483648\).*2\*\*31 - 1"):
        gradient_model.fit(**{**FIT, "max_iterations": 2, name: 2**31})
    assert len(gradient_model.history["detF"]) == 0


def test_fit_min_iterations_above_max_iterations(gradient_model):
    with pytest.raises(ValueError, match=r"`min_iterations` \(=10\).*`max_iterations` \(=5\)"):
        gradient_model.fit(λ=10.0, ϵ=0.1, min_iterations=10, max_iterations=5)
    assert len(gradient_model.history["detF"]) == 0


def test_fit_default_min_iterations_capped_at_max_iterations(gradient_model):
    gradient_model.fit(λ=10.0, ϵ=0.1, max_iterations=3)
    assert len(gradient_model.history["detF"]) == 3


def test_fit_patience_zero(gradient_model):
    with pytest.raises(ValueError, match=r"`patience` \(=0\).*≥ 1"):
        gradient_model.fit(**FIT, patience=0)
    assert len(gradient_model.history["detF"]) == 0


@pytest.mark.parametrize("value", ["False", 0, None], ids=["string", "int", "None"])
def test_fit_best_not_a_bool(value, gradient_model):
    with pytest.raises(TypeError, match="`best`"):
        gradient_model.fit(**FIT, max_iterations=2, best=value)
    assert len(gradient_model.history["detF"]) == 0


def test_fit_best_numpy_bool(gradient_model):
    gradient_model.fit(**FIT, max_iterations=2, best=np.bool_(False))
    assert gradient_model.w is gradient_model.final_w


@pytest.mark.parametrize("kind", KINDS)
def test_verbose_not_a_bool(kind, sims):
    with pytest.raises(TypeError, match="`verbose`.*'no'"):
        build(kind, sims, common_overrides=dict(verbose="no"))


@pytest.mark.parametrize("kind", KINDS)
def test_n_per_device_beyond_the_data(kind, sims):
    devices = jax.devices()
    aggregation = dict(host=devices[0], devices=devices, n_per_device=10**6)
    largest = -(-N_S // len(devices))
    pattern = rf"`n_per_device` \(=1000000\).*`n_s` \(=100\).*{len(devices)} device.*{largest}"
    with pytest.raises(ValueError, match=pattern):
        build(kind, sims, **aggregation)
    build(kind, sims, **{**aggregation, "n_per_device": largest})  # the largest useful value is fine


@pytest.mark.parametrize(
    "simulator",
    [lambda key, θ: jax.random.randint(key, INPUT_SHAPE, 0, 10), lambda key, θ: jnp.zeros(INPUT_SHAPE, bool)],
    ids=["int", "bool"],
)
def test_simulator_returns_integers(simulator):
    with pytest.raises(TypeError, match="`simulator` should return floats.*(int32|bool)"):
        imnn.IMNN(**common(), simulator=simulator)


@pytest.mark.parametrize("name", ["main", "remaining", "validation_main", "fiducial"])
def test_empty_iterator_list(name):
    devices = jax.devices()
    arguments = dict(main=[iter([])], host=devices[0], devices=devices, n_per_device=10) | {name: []}
    with pytest.raises(ValueError, match=rf"`{name}` is an empty list: give a list of iterators, one per device"):
        imnn.IMNN(**common(), **arguments)


def test_main_not_a_list_of_iterators(sims):
    devices = jax.devices()
    with pytest.raises(TypeError, match="`main` should be a list of iterators.*ndarray"):
        imnn.IMNN(**common(), main=np.asarray(sims.fiducial), host=devices[0], devices=devices, n_per_device=10)


# ---------------------------------------------------------------- warnings point at the caller


def test_nan_warning_points_at_the_caller(sims):
    model = build("gradient", sims, common_overrides=dict(optimiser=blow_up_at(3, 1e30)))
    with pytest.warns(UserWarning, match="non-finite") as record:
        model.fit(**FIT, max_iterations=50)
    assert [w.filename for w in record] == [__file__] * len(record)


def test_singular_fisher_warning_points_at_the_caller(sims):
    init_fn, apply_fn = stax_model()
    model = build("gradient", sims, common_overrides=dict(model=(init_fn, lambda w, d: apply_fn(w, d) * 0.0)))
    with pytest.warns(UserWarning, match="singular") as record:
        model.set_F_statistics()
    assert record[0].filename == __file__


# ---------------------------------------------------------------- ABC with failing simulations


def nan_above_half(key, θ):
    """Noisy θ as summaries, NaN where θ₀ > 0.5."""
    x = θ + 0.1 * jax.random.normal(key, θ.shape)
    return jnp.where(θ[:, :1] > 0.5, jnp.nan, x)


def small_abc():
    import numpyro.distributions as dist

    prior = dist.Uniform(jnp.zeros(2), jnp.ones(2)).to_event(1)
    return imnn.lfi.ApproximateBayesianComputation(jnp.array([0.2, 0.5]), prior, nan_above_half, lambda x: x,
                                                   gridsize=10)  # fmt: skip


def test_abc_drops_non_finite_simulations():
    abc = small_abc()
    with pytest.warns(UserWarning, match=r"\d+ of 200 simulations have non-finite summaries.*dropped") as record:
        abc(ϵ=0.3, rng=jax.random.key(0), n_samples=200)
    assert record[0].filename == __file__
    assert 0 < abc.parameters.size < 200
    assert np.all(np.isfinite(abc.summaries.all)) and np.all(abc.parameters.all[:, 0] <= 0.5)
    assert abc.parameters.n_accepted[0] > 0


def test_abc_premade_non_finite_summaries_named():
    abc = small_abc()
    with pytest.raises(ValueError, match="`summaries`"):
        abc(ϵ=0.3, parameters=np.zeros((3, 2)), summaries=np.full((3, 2), np.nan))
