"""Dataset IMNNs: fits streamed from per-device iterators equal the in-memory fits on the same sims."""

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import FIT, PROBLEM, STORED, NoOutputBias, common, compilations, dataset_pair, source_kwargs

import imnn

HOST = jax.devices()[0]


def assert_same_fit(in_memory, dataset):
    for name in ("detF", "detC", "Λ2", "val_detF"):
        np.testing.assert_allclose(dataset.history[name], in_memory.history[name], rtol=1e-4, err_msg=name)
    for a, b in zip(jax.tree.leaves(dataset.final_w), jax.tree.leaves(in_memory.final_w)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dataset.F, in_memory.F, rtol=1e-4)


@pytest.mark.parametrize("n_devices", [4, 1])
@pytest.mark.parametrize("kind", STORED)
def test_dataset_fit_matches_in_memory_fit(kind, n_devices):
    in_memory, dataset = dataset_pair(kind, n_devices)
    assert type(dataset).__name__ == {"gradient": "DatasetGradientIMNN", "numerical": "DatasetNumericalGradientIMNN"}[
        kind
    ]
    for model in (in_memory, dataset):
        model.fit(**FIT, max_iterations=8, patience=100)
    assert len(dataset.history["detF"]) == 8
    assert_same_fit(in_memory, dataset)
    x, dx_dθ = dataset.get_summaries()
    x_ref, dx_ref = in_memory.get_summaries()
    np.testing.assert_allclose(x, x_ref, rtol=1e-4, atol=1e-6)  # same order: device 0's share first
    np.testing.assert_allclose(dx_dθ, dx_ref, rtol=1e-4, atol=1e-6)


def test_every_simulation_with_derivatives_needs_no_remaining():
    sims = PROBLEM.simulations(jax.random.key(1), 100, 100)
    kwargs = common(n_s=100, n_d=100, model=NoOutputBias(), optimiser=optax.adam(1e-2))
    in_memory = imnn.GradientIMNN(**kwargs, **source_kwargs("gradient", sims))
    main = imnn.loaders.batches((np.asarray(sims.fiducial), np.asarray(sims.derivative)), 2, 16)
    dataset = imnn.DatasetGradientIMNN(
        **kwargs, main=main, remaining=None, host=HOST, devices=jax.devices()[:2], n_per_device=16
    )
    for model in (in_memory, dataset):
        model.fit(**FIT, max_iterations=5)
    np.testing.assert_allclose(dataset.history["detF"], in_memory.history["detF"], rtol=1e-4)


def test_cached_dataset_reads_each_batch_once_and_fits_the_same():
    sims = PROBLEM.simulations(jax.random.key(1), 100, 50)
    reads = []

    def counted(iterator):
        for batch in iterator:
            reads.append(1)
            yield batch

    arrays = imnn.loaders.gradient_dataset(np.asarray(sims.fiducial), np.asarray(sims.derivative), 2, 10)
    iterators = {name: [counted(it) for it in its] for name, its in arrays.items()}
    kwargs = common(model=NoOutputBias(), optimiser=optax.adam(1e-2))
    dataset = imnn.IMNN(**kwargs, **iterators, host=HOST, devices=jax.devices()[:2], n_per_device=10, cache=True)
    in_memory = imnn.IMNN(**kwargs, **source_kwargs("gradient", sims))
    for model in (in_memory, dataset):
        model.fit(**FIT, max_iterations=6)
    np.testing.assert_allclose(dataset.history["detF"], in_memory.history["detF"], rtol=1e-4)
    batches_per_pass = 2 * (3 + 3)  # 2 devices × (25 in 10, 10, 5) for main and for remaining
    assert len(reads) <= batches_per_pass + 2 * 2 * 3  # one pass, plus what prefetch read ahead


def test_second_fit_does_not_recompile():
    _, dataset = dataset_pair("gradient", 2)
    dataset.fit(**FIT, max_iterations=2)
    with compilations() as compiled:
        dataset.fit(10.0, 0.2, min_iterations=0, max_iterations=3, patience=7)
    assert compiled == []


def test_an_interrupted_pass_is_finished_before_the_next_fit():
    in_memory, dataset = dataset_pair("numerical", 2, validation=False)
    fiducial_feed = dataset._data[0]
    next(fiducial_feed.one_pass())  # as if Ctrl-C arrived after one batch of a pass
    for model in (in_memory, dataset):
        model.fit(**FIT, max_iterations=4)
    np.testing.assert_allclose(dataset.history["detF"], in_memory.history["detF"], rtol=1e-4)


def test_ctrl_c_while_reading_keeps_the_progress_and_the_next_fit_stays_aligned():
    in_memory, dataset = dataset_pair("gradient", 2, validation=False)
    interrupt_at = [40]

    class Interrupting:
        def __init__(self, iterator):
            self.iterator = iterator

        def __iter__(self):
            return self

        def __next__(self):
            interrupt_at[0] -= 1
            if interrupt_at[0] == 0:
                raise KeyboardInterrupt
            return next(self.iterator)

    feed = dataset._data[0]
    feed.slots = [(i, d, Interrupting(it)) for i, d, it in feed.slots]
    with pytest.warns(UserWarning, match="interrupted"):
        dataset.fit(**FIT, max_iterations=10)
    done = len(dataset.history["detF"])
    assert 0 < done < 10
    dataset.fit(**FIT, max_iterations=10 - done)
    in_memory.fit(**FIT, max_iterations=10)
    np.testing.assert_allclose(dataset.history["detF"], in_memory.history["detF"], rtol=1e-4)


def _gradient_iterators(sims, n_devices, n_per_device):
    return imnn.loaders.gradient_dataset(np.asarray(sims.fiducial), np.asarray(sims.derivative), n_devices, 10)


@pytest.fixture(scope="module")
def sims():
    return PROBLEM.simulations(jax.random.key(1), 100, 50)


def build(sims, n_devices=2, **overrides):
    arguments = dict(**common(), **_gradient_iterators(sims, n_devices, 10), host=HOST,
                     devices=jax.devices()[:n_devices], n_per_device=10) | overrides  # fmt: skip
    return imnn.DatasetGradientIMNN(**arguments)


def test_wrong_number_of_device_iterators_is_an_error(sims):
    iterators = _gradient_iterators(sims, 2, 10)
    with pytest.raises(ValueError, match=r"`main` should be a list of one iterator per device \(4 devices\)"):
        build(sims, devices=jax.devices(), **iterators)


@pytest.mark.parametrize(
    "name, bad, match",
    [
        ("main", lambda sims: [iter([]), iter([])], r"`main\[0\]` ran dry after 0 batches"),
        ("main", lambda sims: [iter([np.zeros((10, 10))] * 9)] * 2, r"pair of arrays"),
        ("main", lambda sims: [itertools.repeat((np.zeros((10, 10)), np.zeros((10, 10, 3))))] * 2,
         r"`main\[0\]` batch 0 of its pass should have shape \(10, 10, 2\) but has \(10, 10, 3\)"),
        ("remaining", lambda sims: [itertools.repeat(np.zeros((10, 9)))] * 2,
         r"`remaining\[0\]` batch 0 .* \(10, 10\) but has \(10, 9\)"),
        ("remaining", lambda sims: [itertools.repeat(np.zeros((10, 10), int))] * 2, "floats"),
        ("remaining", lambda sims: [itertools.repeat(np.full((10, 10), np.nan))] * 2, "non-finite"),
        ("remaining", lambda sims: np.zeros((50, 10)), "`remaining` should be a list of iterators"),
        ("remaining", lambda sims: [[np.zeros((10, 10))]] * 2, r"`remaining\[0\]` should be an iterator"),
        ("remaining", lambda sims: None, r"`remaining` is required: it holds the n_s − n_d = 50"),
    ],
)  # fmt: skip
def test_bad_iterators_are_caught_when_the_model_is_built(sims, name, bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        build(sims, **{name: bad(sims)})


def _fit_fails_without_changing_weights(model, match, first_fit=2):
    model.fit(**FIT, max_iterations=first_fit)
    weights, history = model.final_w, dict(model.history)
    with pytest.raises(ValueError, match=match):
        model.fit(**FIT, max_iterations=5)
    assert len(model.history["detF"]) == len(history["detF"])
    for a, b in zip(jax.tree.leaves(model.final_w), jax.tree.leaves(weights)):
        np.testing.assert_array_equal(a, b)


def test_an_iterator_that_runs_dry_mid_fit_stops_before_the_weights_change(sims):
    main = _gradient_iterators(sims, 2, 10)["main"]
    five_passes = [iter(list(itertools.islice(it, 5 * 3))) for it in main]  # 2 iterations and the statistics
    _fit_fails_without_changing_weights(build(sims, main=five_passes, prefetch=0), r"`main\[0\]` ran dry after 15")


def test_a_wrong_shape_later_in_the_pass_is_an_error(sims):
    main = _gradient_iterators(sims, 2, 10)["main"]

    def full_last_batch_after_two_passes(iterator):
        one_pass = list(itertools.islice(iterator, 3))  # batches of 10, 10 and 5
        yield from one_pass * 2
        yield from itertools.repeat(one_pass[0])

    model = build(sims, main=[full_last_batch_after_two_passes(it) for it in main], prefetch=0)
    _fit_fails_without_changing_weights(model, r"batch 2 of its pass should have shape \(5, 10\)", first_fit=0)


def test_iterators_that_do_not_repeat_the_same_sims_are_an_error(sims):
    rng = np.random.default_rng(0)

    def fresh_simulations():  # right shapes, but new simulations every pass
        while True:
            for size in (10, 10, 5):
                yield rng.normal(size=(size, 10)).astype(np.float32)

    model = build(sims, remaining=[fresh_simulations(), fresh_simulations()])
    _fit_fails_without_changing_weights(model, "`remaining` gave different simulations in the second pass", 0)


@pytest.mark.parametrize(
    "overrides, match",
    [(dict(prefetch=-1), "`prefetch`"), (dict(prefetch=1.5), "`prefetch`"), (dict(cache=1), "`cache`"),
     (dict(host="cpu"), "`host`"), (dict(n_per_device=0), "`n_per_device`"),
     (dict(n_per_device=10**6), r"`n_per_device` \(=1000000\).*at most ceil\(n_s / n_devices\) = 50")],
)  # fmt: skip
def test_bad_dataset_arguments_name_the_argument(sims, overrides, match):
    with pytest.raises((TypeError, ValueError), match=match):
        build(sims, **overrides)


def test_numerical_dataset_checks_δθ_and_the_derivative_count(sims):
    iterators = imnn.loaders.numerical_dataset(
        np.asarray(sims.fiducial), np.asarray(sims.numerical_derivative), 2, 10
    )
    arguments = dict(**common(), **iterators, host=HOST, devices=jax.devices()[:2], n_per_device=10)
    with pytest.raises(ValueError, match="`δθ`"):
        imnn.DatasetNumericalGradientIMNN(**arguments, δθ=[0.1, -0.1])
    three = dict(
        n_s=99, devices=jax.devices()[:3],
        fiducial=imnn.loaders.batches(np.asarray(sims.fiducial[:99]), 3, 10),
        derivative=[itertools.repeat(np.zeros((10, 10), np.float32))] * 3,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"n_d × 2 × n_params = 200 simulations cannot be shared evenly by 3"):
        imnn.DatasetNumericalGradientIMNN(**arguments | three, δθ=sims.δθ)


def test_dataset_checkpoint_loads_into_the_in_memory_class(tmp_path, sims):
    _, dataset = dataset_pair("gradient", 2, validation=False)
    dataset.fit(**FIT, max_iterations=3)
    dataset.save(tmp_path / "model.imnn")
    in_memory, _ = dataset_pair("gradient", 2, validation=False)
    in_memory.load(tmp_path / "model.imnn")
    np.testing.assert_allclose(in_memory.get_estimate(sims.fiducial[:5]), dataset.get_estimate(sims.fiducial[:5]))


def test_plain_generators_fit_without_importing_tensorflow():
    script = textwrap.dedent(
        """
        import sys
        import jax, numpy as np, optax
        import imnn
        from helpers import FIT, PROBLEM, NoOutputBias, common, source_kwargs

        sims = PROBLEM.simulations(jax.random.key(1), 100, 50)
        fiducial, derivative = np.asarray(sims.fiducial), np.asarray(sims.derivative)

        def device_share(i):  # a plain generator: device i's 50 simulations, 25 with derivatives
            while True:
                for start in range(25 * i, 25 * i + 25, 10):
                    stop = min(start + 10, 25 * i + 25)
                    yield fiducial[start:stop], derivative[start:stop]

        def remaining(i):
            while True:
                for start in range(50 + 25 * i, 75 + 25 * i, 10):
                    yield fiducial[start:min(start + 10, 75 + 25 * i)]

        kwargs = common(model=NoOutputBias(), optimiser=optax.adam(1e-2))
        dataset = imnn.DatasetGradientIMNN(
            **kwargs, main=[device_share(0), device_share(1)], remaining=[remaining(0), remaining(1)],
            host=jax.devices()[0], devices=jax.devices()[:2], n_per_device=10)
        in_memory = imnn.GradientIMNN(**kwargs, **source_kwargs("gradient", sims))
        for model in (dataset, in_memory):
            model.fit(**FIT, max_iterations=5)
        np.testing.assert_allclose(dataset.history["detF"], in_memory.history["detF"], rtol=1e-4)
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        print("ok")
        """
    )
    tests = Path(__file__).parent
    env = {"PYTHONPATH": str(tests), "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "PATH": ""}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_missing_tensorflow_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now fails
    with pytest.raises(ImportError, match=r'pip install "imnn\[tf\]"'):
        imnn.TFRecords().write_record(2, lambda seed: jnp.zeros(3))
