"""Property-based checks of input validation: any wrong array argument gets a clear error.

For every array argument of the factory and every argument of ``fit``, random
wrong shapes, wrong dtypes and non-finite values raise ``TypeError`` or
``ValueError`` naming that argument — and nothing else escapes.
"""

import jax
import numpy as np
import pytest
from helpers import N_D, N_S, PROBLEM, common, source_kwargs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imnn

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SIMS = PROBLEM.simulations(jax.random.key(1), N_S, N_D)
ARRAYS = {  # argument -> (kind of IMNN, correct value)
    "fiducial": ("gradient", SIMS.fiducial),
    "derivative": ("gradient", SIMS.derivative),
    "validation_fiducial": ("gradient", SIMS.fiducial),
    "validation_derivative": ("gradient", SIMS.derivative),
    "numerical derivative": ("numerical", SIMS.numerical_derivative),
    "δθ": ("numerical", SIMS.δθ),
    "θ_fid": ("gradient", np.asarray(PROBLEM.θ_fid)),
}


def arguments(name, value):
    kind, _ = ARRAYS[name]
    kwargs = {**common(), **source_kwargs(kind, SIMS, SIMS)}
    kwargs["derivative" if name == "numerical derivative" else name] = value
    return kwargs


def shapes_other_than(shape):
    return st.lists(st.integers(1, 12), min_size=0, max_size=5).map(tuple).filter(lambda s: s != tuple(shape))


@pytest.mark.parametrize("name", ARRAYS)
@SETTINGS
@given(data=st.data())
def test_wrong_shapes_are_refused_naming_the_argument(name, data):
    shape = np.shape(ARRAYS[name][1])
    value = np.zeros(data.draw(shapes_other_than(shape)), np.float32) + 0.5
    argument = "derivative" if name == "numerical derivative" else name
    with pytest.raises((TypeError, ValueError), match=f"`{argument}`"):
        imnn.IMNN(**arguments(name, value))


@pytest.mark.parametrize("name", [n for n in ARRAYS if n not in ("δθ", "θ_fid")])
@SETTINGS
@given(dtype=st.sampled_from([np.int32, np.int64, np.bool_, np.complex64, np.str_, object]))
def test_wrong_dtypes_are_refused_naming_the_argument(name, dtype):
    value = np.asarray(ARRAYS[name][1]).astype(dtype)
    argument = "derivative" if name == "numerical derivative" else name
    with pytest.raises((TypeError, ValueError), match=f"`{argument}`"):
        imnn.IMNN(**arguments(name, value))


@pytest.mark.parametrize("name", ARRAYS)
@SETTINGS
@given(data=st.data(), bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_values_are_refused_naming_the_argument(name, data, bad):
    value = np.array(ARRAYS[name][1], dtype=np.float32)
    index = tuple(data.draw(st.integers(0, n - 1)) for n in value.shape)
    value[index] = bad
    argument = "derivative" if name == "numerical derivative" else name
    with pytest.raises(ValueError, match=f"`{argument}`"):
        imnn.IMNN(**arguments(name, value))


FIT_ARGUMENTS = {
    "λ": st.one_of(st.floats(max_value=0.0), st.just(float("nan")), st.just(float("inf")), st.text(max_size=3)),
    "ϵ": st.one_of(st.floats(max_value=0.0), st.just(float("nan")), st.just(float("inf")), st.none()),
    "patience": st.one_of(st.integers(max_value=-1), st.floats(allow_nan=True), st.text(max_size=3)),
    "min_iterations": st.one_of(st.integers(max_value=-1), st.floats(), st.none()),
    "max_iterations": st.one_of(st.integers(max_value=-1), st.floats(), st.text(max_size=3)),
    "print_rate": st.one_of(st.integers(max_value=0), st.floats(), st.text(min_size=1, max_size=3)),
    "rng": st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers(0, 5), max_size=3)),
    "checkpoint_every": st.one_of(st.integers(max_value=0), st.floats(), st.text(max_size=3)),
}


@pytest.fixture(scope="module")
def model():
    return imnn.IMNN(**common(), **source_kwargs("gradient", SIMS))


@pytest.mark.parametrize("name", FIT_ARGUMENTS)
@SETTINGS
@given(data=st.data())
def test_bad_fit_arguments_are_refused_naming_the_argument(model, name, data):
    kwargs = {"λ": 10.0, "ϵ": 0.1, "max_iterations": 2, name: data.draw(FIT_ARGUMENTS[name])}
    match = "`ϵ`" if name == "ϵ" else f"`{name}`"
    history = {k: np.copy(v) for k, v in model.history.items()}
    with pytest.raises((TypeError, ValueError), match=match):
        model.fit(**kwargs)
    for key, values in history.items():  # nothing changed
        np.testing.assert_array_equal(model.history[key], values)
