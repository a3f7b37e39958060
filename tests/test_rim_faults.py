"""Faults at every point of a RIM fit's loop: in the simulator, while a batch is pulled from an
iterable, and while a checkpoint is written. Ctrl-C stops the fit with its progress; an error is
raised after the progress is kept. Either way the weights are those of a clean fit of the steps
that finished, and every checkpoint left on disk loads."""

import signal
import warnings

import jax
import numpy as np
import pytest
from test_rim_fitting import assert_same_tree, small_rim

from imnn import persistence
from imnn.rim import RIM

BATCH = 8


def ctrl_c():
    signal.raise_signal(signal.SIGINT)  # a real Ctrl-C: a signal, delivered between bytecodes


def fail():
    raise RuntimeError("the disk is full")


class Faulty:
    """Re-iterable batches whose ``at``-th pull (counted over all passes) fires ``action``."""

    def __init__(self, batches, at, action):
        self.batches, self.at, self.action, self.pulls = batches, at, action, 0

    def __iter__(self):
        for batch in self.batches:
            self.pulls += 1
            if self.pulls == self.at:
                self.action()
            yield batch

    def __len__(self):
        return len(self.batches)


@pytest.fixture(scope="module")
def batches():
    from test_rim import simulator

    y, x, A, σ = jax.vmap(simulator)(jax.random.split(jax.random.key(11), 4 * BATCH))
    return [tuple(a[i : i + BATCH] for a in (y, x, A, σ)) for i in range(0, 4 * BATCH, BATCH)]


def clean_params(batches, steps):
    """The weights after ``steps`` undisturbed steps on the same batches."""
    rim = small_rim()
    rim.fit(batches, epochs=1, n_iterations_in_epoch=steps, learning_rate=1e-3, progress=False)
    return rim.params


def fit_until_the_fault(rim, dataset, action, **kwargs):
    """Run the fit; return whether it stopped with a warning (Ctrl-C) after raising nothing."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if action is fail:
            with pytest.raises(RuntimeError, match="the disk is full"):
                rim.fit(dataset, learning_rate=1e-3, progress=False, **kwargs)
        else:
            rim.fit(dataset, learning_rate=1e-3, progress=False, **kwargs)
            assert any("interrupted" in str(w.message) for w in caught)


@pytest.mark.parametrize("action", [ctrl_c, fail], ids=["ctrl-c", "error"])
@pytest.mark.parametrize("at", [2, 5, 7])
def test_a_fault_while_pulling_a_batch_keeps_the_steps_that_finished(batches, at, action):
    rim = small_rim()
    fit_until_the_fault(rim, Faulty(batches, at, action), action, epochs=2)
    # pull k serves step k, so steps 1 … at − 1 finished; the history has their (partial) epochs
    assert int(rim._state.count) == at - 1
    assert len(rim.history["loss"]) == -(-(at - 1) // len(batches))
    assert_same_tree(rim.params, clean_params(batches, at - 1), rtol=1e-5, atol=1e-7)
    assert rim.fit(batches, epochs=1, learning_rate=1e-3, progress=False)  # and it trains on


def test_a_fault_on_the_first_pull_changes_nothing(batches):
    rim = small_rim()
    with pytest.raises(RuntimeError, match="the disk is full"):
        rim.fit(Faulty(batches, 1, fail), epochs=1, progress=False)
    assert rim.params is None and len(rim.history["loss"]) == 0


@pytest.mark.parametrize("action", [ctrl_c, fail], ids=["ctrl-c", "error"])
@pytest.mark.parametrize("at", [1, 2, 3])
def test_a_fault_while_writing_a_checkpoint_leaves_only_whole_checkpoints(tmp_path, monkeypatch, batches, at,
                                                                          action):  # fmt: skip
    data = tuple(np.concatenate(parts) for parts in zip(*batches))
    write, calls = persistence._write_atomically, [0]

    def faulty_write(path, content):
        calls[0] += 1
        if calls[0] == at:
            action()  # a Ctrl-C is held back until this checkpoint is whole; an error leaves none
        write(path, content)

    monkeypatch.setattr(persistence, "_write_atomically", faulty_write)
    rim = small_rim()
    fit_until_the_fault(rim, data, action, epochs=5, n_iterations_in_epoch=2, batch_size=BATCH, checkpoints=1,
                        checkpoints_directory=tmp_path, models_to_keep=10)  # fmt: skip
    monkeypatch.setattr(persistence, "_write_atomically", write)
    files = sorted(tmp_path.glob("checkpoint_*"))
    assert [f.name for f in tmp_path.iterdir()] and not [f for f in tmp_path.iterdir() if f not in files]
    # the fault came during epoch `at`'s checkpoint, after its steps: a held-back Ctrl-C lets that
    # write finish; after an error the fit's final checkpoint writes it again
    assert len(files) == at and len(rim.history["loss"]) == at and int(rim._state.count) == 2 * at
    score_fn = small_rim().score_fn
    for file in files:
        RIM.load(file, score_fn=score_fn)
    newest = RIM.load(tmp_path, score_fn=score_fn)
    np.testing.assert_array_equal(newest.history["loss"], rim.history["loss"])
    assert_same_tree(newest.params, rim.params)
    reference = small_rim()
    reference.fit(data, epochs=1, n_iterations_in_epoch=2 * at, batch_size=BATCH, learning_rate=1e-3, progress=False)
    assert_same_tree(rim.params, reference.params, rtol=1e-5, atol=1e-7)
