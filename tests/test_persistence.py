"""save/load: round trips, resuming, other device layouts, and checkpoints that do not fit."""

import os

import jax
import numpy as np
import optax
import pytest
from helpers import KINDS, N_S, PROBLEM, aggregation_pair, common, source_kwargs, stax_model
from jax.example_libraries import optimizers

import imnn


def build(kind, sims, **overrides):
    return imnn.IMNN(**common(**overrides), **source_kwargs(kind, sims, sims if kind != "simulator" else None))


@pytest.fixture(scope="module")
def sims():
    return PROBLEM.simulations(jax.random.key(1), 100, 50)


@pytest.mark.parametrize("optimiser", [optax.adam(1e-3), optimizers.adam(1e-3)], ids=["optax", "example_libraries"])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_gives_identical_estimates_history_and_state(kind, optimiser, sims, tmp_path):
    saved = build(kind, sims, optimiser=optimiser)
    saved.fit(10.0, 0.1, rng=jax.random.key(2), min_iterations=6, max_iterations=6)
    saved.save(tmp_path / "model.imnn")
    loaded = build(kind, sims, optimiser=optimiser, key_or_state=jax.random.key(7)).load(tmp_path / "model.imnn")
    data = PROBLEM.simulations(jax.random.key(3), 4, 1).fiducial
    np.testing.assert_array_equal(loaded.get_estimate(data), saved.get_estimate(data))
    for name in ("F", "invF", "C", "invC", "μ", "dμ_dθ"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(saved, name))
    for name in ("w", "best_w", "final_w", "initial_w"):
        jax.tree.map(np.testing.assert_array_equal, getattr(loaded, name), getattr(saved, name))
    jax.tree.map(np.testing.assert_array_equal, loaded.state, saved.state)
    assert loaded.history.keys() == saved.history.keys()
    for name, values in saved.history.items():
        np.testing.assert_array_equal(loaded.history[name], values)


def test_resuming_from_a_checkpoint_equals_never_stopping(sims, tmp_path):
    uninterrupted = build("gradient", sims)
    uninterrupted.fit(10.0, 0.1, min_iterations=12, max_iterations=12)
    first_half = build("gradient", sims)
    first_half.fit(10.0, 0.1, min_iterations=6, max_iterations=6)
    first_half.save(tmp_path / "half.imnn")
    resumed = build("gradient", sims).load(tmp_path / "half.imnn")
    resumed.fit(10.0, 0.1, min_iterations=6, max_iterations=6)
    jax.tree.map(np.testing.assert_array_equal, resumed.final_w, uninterrupted.final_w)
    np.testing.assert_array_equal(resumed.history["detF"], uninterrupted.history["detF"])
    assert int(resumed.state.count) == 12


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_from_four_devices_loads_on_one(kind, tmp_path):
    one_device, four_devices = aggregation_pair(kind, 4)
    four_devices.fit(10.0, 0.1, rng=jax.random.key(2), min_iterations=4, max_iterations=4)
    four_devices.save(tmp_path / "mesh.imnn")
    one_device.load(tmp_path / "mesh.imnn")
    data = PROBLEM.simulations(jax.random.key(3), 4, 1).fiducial
    np.testing.assert_allclose(one_device.get_estimate(data), four_devices.get_estimate(data), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(one_device.history["detF"], four_devices.history["detF"])


def test_missing_and_corrupt_checkpoints_name_the_path(sims, tmp_path):
    model = build("gradient", sims)
    with pytest.raises(FileNotFoundError, match="`path`"):
        model.load(tmp_path / "nothing.imnn")
    (tmp_path / "junk.imnn").write_bytes(b"\x00not a checkpoint\xff" * 10)
    with pytest.raises(ValueError, match="`path`"):
        model.load(tmp_path / "junk.imnn")
    model.save(tmp_path / "good.imnn")
    (tmp_path / "cut.imnn").write_bytes((tmp_path / "good.imnn").read_bytes()[:200])
    with pytest.raises(ValueError, match="`path`"):
        model.load(tmp_path / "cut.imnn")


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(model=stax_model(3)), "`n_summaries`"),
        (dict(n_s=90), "`n_s`"),
        (dict(θ_fid=np.array([0.5, 1.0])), "`θ_fid`"),
        (dict(optimiser=optax.sgd(1e-3)), "`opt_state`"),
    ],
)
def test_checkpoint_of_a_different_model_says_what_differs(overrides, match, sims, tmp_path):
    build("gradient", sims).save(tmp_path / "model.imnn")
    if "n_summaries" in match:
        overrides = {**overrides, "n_summaries": 3}
    if "n_s" in overrides:
        sims = PROBLEM.simulations(jax.random.key(1), overrides["n_s"], 50)
    other = build("gradient", sims, **overrides)
    with pytest.raises(ValueError, match=match):
        other.load(tmp_path / "model.imnn")


def test_checkpoint_of_a_different_architecture_is_refused(sims, tmp_path):
    from jax.example_libraries import stax

    build("gradient", sims).save(tmp_path / "model.imnn")
    wider = build("gradient", sims, model=stax.serial(stax.Dense(32), stax.LeakyRelu, stax.Dense(2)))
    with pytest.raises(ValueError, match="same network"):
        wider.load(tmp_path / "model.imnn")


def test_a_failed_save_leaves_the_previous_checkpoint_loadable(sims, tmp_path, monkeypatch):
    first = build("gradient", sims)
    first.fit(10.0, 0.1, min_iterations=3, max_iterations=3)
    first.save(tmp_path / "model.imnn")
    second = build("gradient", sims)
    second.fit(10.0, 0.1, min_iterations=8, max_iterations=8)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        second.save(tmp_path / "model.imnn")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.imnn"]  # no temporary file left
    loaded = build("gradient", sims).load(tmp_path / "model.imnn")
    assert len(loaded.history["detF"]) == 3
    jax.tree.map(np.testing.assert_array_equal, loaded.final_w, first.final_w)


def test_fit_checkpoints_periodically_and_at_the_end(sims, tmp_path, monkeypatch):
    saved_lengths = []
    real_save = imnn.persistence.save

    def spy(model, path):
        real_save(model, path)
        saved_lengths.append((len(model.history["detF"]), model.F is not None))

    monkeypatch.setattr(imnn.persistence, "save", spy)
    model = build("gradient", sims)
    path = tmp_path / "fit.imnn"
    model.fit(10.0, 0.1, min_iterations=12, max_iterations=12, print_rate=2, checkpoint=path, checkpoint_every=4)
    assert saved_lengths == [(4, False), (8, False), (12, False), (12, True)]
    loaded = build("gradient", sims).load(path)
    np.testing.assert_array_equal(loaded.history["detF"], model.history["detF"])
    jax.tree.map(np.testing.assert_array_equal, loaded.state, model.state)


def test_an_interrupted_fit_leaves_a_checkpoint_of_its_progress(sims, tmp_path):
    import signal
    import threading

    model = build("simulator", sims, n_s=1000, n_d=1000)
    model.fit(10.0, 0.1, rng=jax.random.key(1), max_iterations=2)  # compile first
    path = tmp_path / "interrupted.imnn"
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.warns(UserWarning, match="interrupted"):
            model.fit(10.0, 0.1, rng=jax.random.key(2), patience=10**6, max_iterations=10**6,
                      checkpoint=path, checkpoint_every=10**6)  # fmt: skip
    finally:
        timer.cancel()
    loaded = build("simulator", sims, n_s=1000, n_d=1000).load(path)
    assert len(loaded.history["detF"]) == len(model.history["detF"]) > 2
    jax.tree.map(np.testing.assert_array_equal, loaded.best_w, model.best_w)


def test_an_exception_in_the_simulator_surfaces_and_keeps_the_progress(tmp_path):
    calls = {"n": 0, "limit": 10**9}

    def check(value):
        calls["n"] += 1
        if calls["n"] > calls["limit"]:
            raise RuntimeError("simulator exploded: negative variance")

    def simulator(key, θ):
        d = PROBLEM.simulator(key, θ)
        jax.debug.callback(check, d[0])
        return d

    model = imnn.IMNN(**common(), simulator=simulator)
    model.fit(10.0, 0.1, rng=jax.random.key(1), min_iterations=4, max_iterations=4, print_rate=2)
    calls["n"], calls["limit"] = 0, 4 * N_S  # fails during the 5th iteration of the next fit
    path = tmp_path / "crash.imnn"
    with pytest.raises(Exception, match="simulator exploded"):
        model.fit(10.0, 0.1, rng=jax.random.key(2), min_iterations=8, max_iterations=8, print_rate=2,
                  checkpoint=path, checkpoint_every=100)  # fmt: skip
    n = len(model.history["detF"])
    assert n == 4 + 4  # the finished chunks of the failed fit are kept
    assert model.F is None  # statistics of the old weights are not passed off as current
    assert build_same(simulator).load(path).history["detF"].shape == (n,)
    calls["limit"] = 10**9
    model.fit(10.0, 0.1, rng=jax.random.key(3), min_iterations=2, max_iterations=2)  # still usable
    assert len(model.history["detF"]) == n + 2 and model.F is not None


def build_same(simulator):
    return imnn.IMNN(**common(), simulator=simulator)


def test_summaries_that_do_not_vary_give_a_clear_warning():
    constant = (lambda key, shape: ((2,), ()), lambda w, d: np.array([1.0, 2.0], np.float32) + 0 * d[:2])
    model = imnn.IMNN(**common(model=constant), simulator=PROBLEM.simulator)
    with pytest.warns(UserWarning) as record:
        model.fit(10.0, 0.1, rng=jax.random.key(1), max_iterations=3)
    messages = [str(warning.message) for warning in record]
    assert any("singular covariance" in m for m in messages)
    assert any("Fisher matrix is singular" in m for m in messages)
    assert len(model.history["detF"]) == 0
