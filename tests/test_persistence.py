"""save/load: round trips, resuming, device layouts, damaged files, checkpoints that do not fit, paths."""

import os
import re
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import serialization
from helpers import KINDS, N_S, PROBLEM, aggregation_pair, common, source_kwargs, stax_model
from jax.example_libraries import optimizers

import imnn
from imnn import persistence


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
    with pytest.raises(OSError, match=r"could not write checkpoint `path` \(.*model\.imnn'\): disk full"):
        second.save(tmp_path / "model.imnn")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.imnn"]  # no temporary file left
    loaded = build("gradient", sims).load(tmp_path / "model.imnn")
    assert len(loaded.history["detF"]) == 3
    jax.tree.map(np.testing.assert_array_equal, loaded.final_w, first.final_w)


@pytest.mark.parametrize("dispatch", ["loop", "step"])
def test_fit_checkpoints_periodically_and_at_the_end(dispatch, sims, tmp_path, monkeypatch):
    saved_lengths = []
    real_save = imnn.persistence.save

    def spy(model, path):
        real_save(model, path)
        saved_lengths.append((len(model.history["detF"]), model.F is not None))

    monkeypatch.setattr(imnn.persistence, "save", spy)
    model = build("gradient", sims)
    path = tmp_path / "fit.imnn"
    model.fit(10.0, 0.1, min_iterations=12, max_iterations=12, print_rate=2, checkpoint=path, checkpoint_every=4,
              dispatch=dispatch)  # fmt: skip
    assert saved_lengths == [(4, False), (8, False), (12, False), (12, True)]
    loaded = build("gradient", sims).load(path)
    np.testing.assert_array_equal(loaded.history["detF"], model.history["detF"])
    jax.tree.map(np.testing.assert_array_equal, loaded.state, model.state)


@pytest.mark.parametrize("dispatch", ["auto", "step"])
def test_an_interrupted_fit_leaves_a_checkpoint_of_its_progress(dispatch, sims, tmp_path):
    import signal
    import threading

    model = build("simulator", sims, n_s=1000, n_d=1000)
    model.fit(10.0, 0.1, rng=jax.random.key(1), max_iterations=5, dispatch=dispatch)  # compile first
    path = tmp_path / "interrupted.imnn"
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.warns(UserWarning, match="interrupted"):
            model.fit(10.0, 0.1, rng=jax.random.key(2), patience=10**6, max_iterations=10**6,
                      checkpoint=path, checkpoint_every=10**6, dispatch=dispatch)  # fmt: skip
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


# ------------------------------------------------------------ integrity and all-or-nothing loading
KEPT = (*persistence.WEIGHTS, "state", *persistence.STATISTICS)


@pytest.fixture(scope="module")
def fitted(sims, tmp_path_factory):
    """The bytes and payload of a fitted model's checkpoint, and a differently fitted model to load into."""
    saved = build("gradient", sims)
    saved.fit(10.0, 0.1, min_iterations=6, max_iterations=6)
    path = tmp_path_factory.mktemp("fitted") / "model.imnn"
    saved.save(path)
    target = build("gradient", sims)
    target.fit(10.0, 0.1, min_iterations=3, max_iterations=3)
    data = path.read_bytes()
    return saved, data, persistence.decode(data), target


def snapshot(model):
    return {name: getattr(model, name) for name in KEPT}, dict(model.history)


def assert_unchanged(model, before):
    attributes, history = before
    for name, value in attributes.items():
        assert getattr(model, name) is value, f"`{name}` was replaced"
    assert model.history.keys() == history.keys()
    for name, values in history.items():
        np.testing.assert_array_equal(model.history[name], values)


def refused(model, path, *match):
    """Load ``path`` into ``model``: a ValueError naming the path (and ``match``), the model unchanged."""
    before = snapshot(model)
    with pytest.raises(ValueError) as error:
        model.load(path)
    message = str(error.value)
    assert f"`path` ({str(path)!r})" in message
    for part in match:
        assert re.search(part, message), f"{part!r} not in {message!r}"
    assert_unchanged(model, before)
    return message


def test_a_flipped_bit_in_a_stored_weight_is_detected(fitted, tmp_path):
    _, data, payload, target = fitted
    weight = payload["trees"]["final_w"]["0"].tobytes()
    at = data.index(weight) + len(weight) // 2
    damaged = bytearray(data)
    damaged[at] ^= 0b100
    path = tmp_path / "bit.imnn"
    path.write_bytes(bytes(damaged))
    refused(target, path, "damaged", "checksum mismatch")


def test_flipped_bits_anywhere_in_the_file_give_clear_errors(fitted, tmp_path):
    _, data, _, target = fitted
    path = tmp_path / "flipped.imnn"
    positions = sorted({*range(0, len(data), len(data) // 20), len(data) - 1, len(persistence.MAGIC)})
    for at, bit in zip(positions, [0, 1, 2, 3, 4, 5, 6, 7] * len(positions)):
        damaged = bytearray(data)
        damaged[at] ^= 1 << bit
        path.write_bytes(bytes(damaged))
        refused(target, path, "damaged")
    path.write_bytes(data[:-1])  # truncated
    refused(target, path, "damaged")


def test_a_checkpoint_of_the_first_format_still_loads(fitted, sims, tmp_path):
    saved, _, payload, _ = fitted
    path = tmp_path / "old.imnn"
    path.write_bytes(serialization.msgpack_serialize({"format": persistence.LEGACY_FORMAT, **payload}))
    loaded = build("gradient", sims).load(path)
    jax.tree.map(np.testing.assert_array_equal, loaded.state, saved.state)
    np.testing.assert_array_equal(loaded.F, saved.F)
    np.testing.assert_array_equal(loaded.history["detF"], saved.history["detF"])
    path.write_bytes(serialization.msgpack_serialize({"format": "imnn-checkpoint-0", **payload}))
    refused(loaded, path, "not an imnn checkpoint")


DELETE = "<delete>"


def damage(payload, keys, replacement=None, delete=False):
    """A deep copy of ``payload`` with the node at ``keys`` replaced (or deleted)."""
    copy = serialization.msgpack_restore(serialization.msgpack_serialize(payload))
    node = copy
    for key in keys[:-1]:
        node = node[key]
    if delete:
        del node[keys[-1]]
    else:
        node[keys[-1]] = replacement
    return copy


@pytest.mark.parametrize(
    "keys, replacement, match",
    [
        (("trees", "best_w"), DELETE, r"missing `trees\.best_w`"),
        (("history", "detF"), "x", r"`history\.detF` is str, expected an array"),
        (("history", "detF"), np.zeros((6, 2), np.float32), r"`history\.detF`.*1-D"),
        (("history", "detF"), np.zeros(2, np.float32), "different lengths"),
        (("history", "max_detF"), "x", r"`history\.max_detF` is str"),
        (("history", "junk"), np.zeros(6, np.float32), "history has"),
        (("trees", "w", "1"), DELETE, "`w` has 3 arrays but the model's has 4"),
        (("trees", "opt_state", "0"), np.zeros(3, np.int8), "`opt_state` array 0"),
        (("trees", "params", "0"), [1, 2], r"`trees\.params\.0` is list, expected an array"),
        (("statistics", "F"), np.zeros((3, 2), np.float32), r"`statistics\.F`.*\[2, 2\]"),
        (("statistics", "μ"), DELETE, r"missing `statistics\.μ`"),
        (("statistics",), "x", r"`statistics` is str, expected a mapping or None"),
        (("count",), "7", r"`count` is str, expected an int"),
        (("count",), -1, r"`count` is -1"),
        (("settings", "n_s"), DELETE, r"missing `settings\.n_s`"),
        (("settings",), np.zeros(2), r"`settings` is an array"),
        (("history",), DELETE, r"missing `history`"),
    ],
)
def test_a_structurally_damaged_checkpoint_is_refused_whole(keys, replacement, match, fitted, tmp_path):
    _, _, payload, target = fitted
    broken = damage(payload, keys, delete=True) if replacement is DELETE else damage(payload, keys, replacement)
    path = tmp_path / "broken.imnn"
    path.write_bytes(persistence.encode(broken))  # a valid checksum: the structure check must fire
    refused(target, path, match)


def nodes(tree, keys=()):
    """Every (keys, value) below ``tree``, descending into mappings and lists."""
    children = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in children:
        yield (*keys, key), value
        yield from nodes(value, (*keys, key))


def test_every_damaged_node_of_a_payload_is_refused_with_a_clear_error(fitted, tmp_path):
    _, _, payload, target = fitted
    path = tmp_path / "fuzzed.imnn"
    replacements = ["x", None, -1, np.zeros((0, 3), np.int8), {"junk": 0}, DELETE]
    tried = 0
    for keys, original in list(nodes(payload)):
        for bad in replacements:
            unchanged_or_valid = bad is None and (original is None or keys == ("statistics",))
            if unchanged_or_valid or (bad is DELETE and not isinstance(keys[-1], str)):
                continue  # the same value, a checkpoint without statistics (valid), or a list item
            broken = damage(payload, keys, delete=True) if bad is DELETE else damage(payload, keys, bad)
            path.write_bytes(persistence.encode(broken))
            refused(target, path)
            tried += 1
    assert tried > 200


# ------------------------------------------------------------ writing: errors name the user's path
def test_a_file_name_of_255_bytes_saves_and_loads(sims, tmp_path):
    model = build("gradient", sims)
    path = tmp_path / ("é" * 125 + ".imnn")
    assert len(path.name.encode()) == 255
    model.save(persistence.check_path(path))
    build("gradient", sims).load(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("where", ["missing/model.imnn", "file/model.imnn", "folder"])
def test_a_save_that_cannot_write_names_the_users_path(where, sims, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    model = build("gradient", sims)
    model.save(tmp_path / "kept.imnn")
    kept = (tmp_path / "kept.imnn").read_bytes()
    path = tmp_path / where
    with pytest.raises(OSError) as error:
        model.save(path)
    assert str(error.value).startswith(f"could not write checkpoint `path` ({str(path)!r}): ")
    assert ".tmp" not in str(error.value)
    assert isinstance(error.value.__cause__, OSError)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["file", "folder", "kept.imnn"]  # no temporary file
    assert (tmp_path / "kept.imnn").read_bytes() == kept


def test_a_save_into_a_read_only_folder_names_the_users_path(sims, tmp_path, monkeypatch):
    """As root a read-only folder still takes files, so the refusal is the operating system's, faked."""
    folder = tmp_path / "read-only"
    folder.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(folder / ".imnn-0000.tmp"))

    monkeypatch.setattr(persistence.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match=re.escape(f"`path` ({str(folder / 'm.imnn')!r})")) as error:
        build("gradient", sims).save(folder / "m.imnn")
    assert ".tmp" not in str(error.value)
    monkeypatch.setattr(persistence.os, "access", lambda *args, **kwargs: False)
    with pytest.raises(ValueError, match="not writable"):
        persistence.check_path(folder / "m.imnn")
    assert list(folder.iterdir()) == []


# ------------------------------------------------------------ check_path
def test_check_path_accepts_a_new_or_existing_file_in_a_writable_folder(tmp_path, monkeypatch):
    assert persistence.check_path(str(tmp_path / "new.imnn")) == tmp_path / "new.imnn"
    (tmp_path / "old.imnn").write_bytes(b"")
    assert persistence.check_path(tmp_path / "old.imnn") == tmp_path / "old.imnn"
    monkeypatch.chdir(tmp_path)
    assert persistence.check_path("here.imnn") == Path("here.imnn")


@pytest.mark.parametrize(
    "where, error, match",
    [
        ("missing/model.imnn", FileNotFoundError, "does not exist"),
        ("file/model.imnn", ValueError, "is not a folder"),
        ("folder", ValueError, "is a folder"),
        ("new-folder/", ValueError, "is a folder"),
        ("é" * 126 + ".imnn", ValueError, "257 bytes long, more than the 255"),
    ],
)
def test_check_path_refuses_a_checkpoint_that_cannot_be_written(where, error, match, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    path = os.path.join(tmp_path, where)
    with pytest.raises(error, match=match) as raised:
        persistence.check_path(path)
    assert f"`checkpoint` ({path!r})" in str(raised.value)


def test_check_path_refuses_a_folder_without_write_permission_and_non_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ValueError, match=re.escape(f"`checkpoint` ({str(tmp_path / 'm.imnn')!r})")):
        persistence.check_path(tmp_path / "m.imnn")
    monkeypatch.undo()
    with pytest.raises(TypeError, match="`checkpoint` must be a file path"):
        persistence.check_path(3)


def test_fit_refuses_a_checkpoint_path_it_cannot_write_before_training(sims, tmp_path):
    model = build("gradient", sims)
    with pytest.raises(FileNotFoundError, match=re.escape(f"`checkpoint` ({str(tmp_path / 'missing' / 'f.imnn')!r})")):
        model.fit(10.0, 0.1, max_iterations=5, checkpoint=tmp_path / "missing" / "f.imnn", checkpoint_every=10**6)
    assert len(model.history["detF"]) == 0  # nothing was trained and then lost
