"""Faults at every stage of a streamed fit: the result equals a clean fit, or the model says it has none.

A dataset IMNN reads batches from iterators, checks them, places them on their
devices and assembles them into global arrays, in two passes per iteration.
Ctrl-C or an error can land in any of those steps. The batch accounting must
stay exact: after the fault the fit continues to the same weights, Fisher
matrix and estimates as an undisturbed in-memory fit on the same simulations.
"""

import re
import signal
import warnings

import jax
import numpy as np
import pytest
from helpers import FIT, PROBLEM, dataset_pair

import imnn
from imnn import streaming

ITERATIONS = 5
COLLECTIVES = re.compile(r"all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute|collective-broadcast")


@pytest.fixture(scope="module")
def clean():
    """Per kind: the in-memory fit of ITERATIONS iterations and its estimates for a few simulations."""
    targets = PROBLEM.simulations(jax.random.key(7), 8, 1).fiducial
    results = {}
    for kind in ("gradient", "numerical"):
        in_memory, _ = dataset_pair(kind, 2, validation=False)
        in_memory.fit(**FIT, max_iterations=ITERATIONS)
        results[kind] = (in_memory, np.asarray(in_memory.get_estimate(targets)), targets)
    return results


class Trap:
    """Fires ``action`` on the ``at``-th call of whatever it wraps, once; says whether it fired."""

    def __init__(self, at, action=None):
        self.at, self.action, self.calls, self.fired = at, action, 0, False

    def __call__(self):
        self.calls += 1
        if self.calls == self.at and not self.fired:
            self.fired = True
            if self.action is not None:
                self.action()
            return True
        return False


def ctrl_c():
    signal.raise_signal(signal.SIGINT)  # a real Ctrl-C: a signal, delivered between bytecodes


def raise_interrupt():
    raise KeyboardInterrupt


class Wrapped:
    """An iterator calling ``before`` before each read and ``after(batch)`` on what it read."""

    def __init__(self, iterator, before=None, after=None):
        self.iterator, self.before, self.after = iterator, before, after

    def __iter__(self):
        return self

    def __next__(self):
        if self.before:
            self.before()
        batch = next(self.iterator)
        return self.after(batch) if self.after else batch


def wrap_iterators(model, **hooks):
    for feed in model._data:
        if feed is not None:
            feed.slots = [(i, d, Wrapped(it, **hooks)) for i, d, it in feed.slots]


def nan_once(trap):
    return lambda batch: jax.tree.map(lambda a: np.full_like(a, np.nan), batch) if trap() else batch


def fit_through_faults(model):
    """Fit until ITERATIONS iterations are done, as a user would after an interruption or an error."""
    faults = []
    for _ in range(4):
        done = len(model.history["detF"])
        if done >= ITERATIONS:
            break
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model.fit(**FIT, max_iterations=ITERATIONS - done)
            except (ValueError, OSError) as error:
                faults.append(type(error).__name__)
        faults += ["interrupted" for w in caught if "interrupted" in str(w.message)]
    return faults


def assert_matches_clean(model, clean_fit):
    in_memory, estimates, targets = clean_fit
    assert len(model.history["detF"]) == ITERATIONS
    np.testing.assert_allclose(model.history["detF"], in_memory.history["detF"], rtol=1e-4)
    np.testing.assert_allclose(model.F, in_memory.F, rtol=1e-4)
    np.testing.assert_allclose(model.dμ_dθ, in_memory.dμ_dθ, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.get_estimate(targets), estimates, rtol=1e-3, atol=1e-4)


STAGES = ["ctrl-c inside next", "ctrl-c as next returns", "interrupt raised by next", "error raised by next",
          "rejected batch", "ctrl-c in check", "ctrl-c in placement", "ctrl-c in assembly"]  # fmt: skip


@pytest.mark.parametrize("at", [3, 29])
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("kind", ["gradient", "numerical"])
def test_a_fault_at_any_stage_of_a_read_leaves_the_fit_exact(kind, stage, at, clean, monkeypatch):
    _, model = dataset_pair(kind, 2, validation=False)
    if stage == "ctrl-c inside next":
        trap = Trap(at, ctrl_c)
        wrap_iterators(model, before=trap)
    elif stage == "ctrl-c as next returns":  # the iterator has moved on: the batch must not be lost
        trap = Trap(at, ctrl_c)
        wrap_iterators(model, after=lambda batch: (trap(), batch)[1])
    elif stage == "interrupt raised by next":
        trap = Trap(at, raise_interrupt)
        wrap_iterators(model, before=trap)
    elif stage == "error raised by next":
        trap = Trap(at, lambda: (_ for _ in ()).throw(OSError("disk read failed")))
        wrap_iterators(model, before=trap)
    elif stage == "rejected batch":
        trap = Trap(at)
        wrap_iterators(model, after=nan_once(trap))
    else:
        trap = Trap(at, ctrl_c)
        target = {"ctrl-c in check": (streaming.Feed, "_check"),
                  "ctrl-c in placement": (jax, "device_put"),
                  "ctrl-c in assembly": (jax, "make_array_from_single_device_arrays")}[stage]  # fmt: skip
        original = getattr(*target)

        def trapped(*args, **kwargs):
            trap()
            return original(*args, **kwargs)

        monkeypatch.setattr(*target, trapped)
    faults = fit_through_faults(model)
    monkeypatch.undo()
    assert trap.fired and faults, f"the fault never happened ({trap.calls} calls)"
    assert_matches_clean(model, clean[kind])


def test_the_library_loaders_carry_on_after_an_interrupt_inside_a_read(clean):
    """Ctrl-C while a memory map is read (here raised from inside the read itself)."""
    _, model = dataset_pair("numerical", 2, validation=False)
    trap = Trap(11, raise_interrupt)

    class SlowDisk:
        def __init__(self, array):
            self.array, self.shape = array, array.shape

        def __len__(self):
            return len(self.array)

        def __getitem__(self, index):
            trap()
            return self.array[index]

    for feed in model._data:
        for _, _, loader in feed.slots:
            loader.arrays = tuple(SlowDisk(a) for a in loader.arrays)
    faults = fit_through_faults(model)
    assert trap.fired and faults == ["interrupted"]
    assert_matches_clean(model, clean["numerical"])


def test_a_loader_reads_the_same_batch_again_after_a_failed_read():
    data = np.arange(20.0).reshape(10, 2)
    (loader,) = imnn.loaders.batches(data, 1, 4)
    first = next(loader)

    class Failing:
        shape = data.shape

        def __len__(self):
            return len(data)

        def __getitem__(self, index):
            raise KeyboardInterrupt

    loader.arrays = (Failing(),)
    with pytest.raises(KeyboardInterrupt):
        next(loader)
    loader.arrays = (data,)
    np.testing.assert_array_equal(next(loader), data[4:8])
    np.testing.assert_array_equal(next(loader), data[8:10])
    np.testing.assert_array_equal(next(loader), first)


@pytest.mark.parametrize("fault", [KeyboardInterrupt, RuntimeError])
def test_a_fault_in_the_closing_statistics_pass_keeps_the_checkpoint_and_clears_stale_statistics(fault, tmp_path):
    _, model = dataset_pair("gradient", 2, validation=False)
    model.fit(**FIT, max_iterations=2)
    path = tmp_path / "fit.imnn"

    def failing(*args):
        raise fault("in the statistics pass")

    model._statistics = failing
    with pytest.raises(fault):
        model.fit(**FIT, max_iterations=3, checkpoint=path)
    assert len(model.history["detF"]) == 5
    assert model.F is None and model.C is None and model.μ is None  # never the old ones beside new weights
    with pytest.raises(RuntimeError, match="Fisher statistics"):
        model.get_estimate(np.zeros(PROBLEM.input_shape))
    _, fresh = dataset_pair("gradient", 2, validation=False)
    fresh.load(path)
    assert len(fresh.history["detF"]) == 5  # every iteration of the interrupted fit was saved
    np.testing.assert_array_equal(fresh.history["detF"], model.history["detF"])


def test_per_batch_programs_hold_no_collective(monkeypatch):
    """The programs dispatched many at a time must never wait for another device (see executors.exclusive)."""
    texts = []
    original = streaming._per_device

    def recording(fn, mesh, in_specs):
        compiled = original(fn, mesh, in_specs)

        def call(*args):
            if len(texts) < 20:
                texts.append(compiled.lower(*args).compile().as_text())
            return compiled(*args)

        return call

    monkeypatch.setattr(streaming, "_per_device", recording)
    for kind in ("gradient", "numerical"):
        _, model = dataset_pair(kind, 4, validation=False)
        model.fit(**FIT, max_iterations=1)
    assert len(texts) >= 6
    found = [sorted(set(COLLECTIVES.findall(text))) for text in texts]
    assert not any(found), found
