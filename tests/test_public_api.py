"""The public surface: every exported name and public method is documented."""

import inspect

import pytest

import imnn

CLASSES = [
    imnn.SimulatorIMNN, imnn.GradientIMNN, imnn.NumericalGradientIMNN,
    imnn.AggregatedSimulatorIMNN, imnn.AggregatedGradientIMNN, imnn.AggregatedNumericalGradientIMNN,
    imnn.DatasetGradientIMNN, imnn.DatasetNumericalGradientIMNN,
]  # fmt: skip


@pytest.mark.parametrize("name", imnn.__all__)
def test_public_names_have_docstrings(name):
    assert inspect.getdoc(getattr(imnn, name)), name


@pytest.mark.parametrize("cls", CLASSES)
def test_public_methods_have_docstrings(cls):
    for name in ("fit", "plot", "get_estimate", "set_F_statistics", "get_summaries", "save", "load"):
        assert inspect.getdoc(getattr(cls, name)), f"{cls.__name__}.{name}"


@pytest.mark.parametrize("cls", CLASSES)
def test_signatures_follow_the_reference_order(cls):
    names = list(inspect.signature(cls).parameters)
    assert names[:9] == [
        "n_s", "n_d", "n_params", "n_summaries", "input_shape", "θ_fid", "model", "optimiser", "key_or_state",
    ]  # fmt: skip
    fit = list(inspect.signature(cls.fit).parameters)
    reference = ["self", "λ", "ε", "rng", "patience", "min_iterations", "max_iterations", "print_rate", "best"]
    assert fit[: len(reference)] == reference
