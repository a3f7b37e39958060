"""The fit engine's two ways to run iterations: one ``while_loop`` per chunk, or one program per iteration.

Both do the same maths, so fits agree; the engine measures both and keeps the faster; faults at
any call of either leave the finished chunks intact and a continued fit exact.
"""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import FIT, PROBLEM, NoOutputBias, aggregation_pair, compilations, source_kwargs

import imnn
from imnn import engine


def assert_same_fit(a, b, rtol=1e-5):
    for name in ("detF", "detC", "Λ2", "val_detF"):
        if name in a.history:
            np.testing.assert_allclose(a.history[name], b.history[name], rtol=rtol)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-6), a.final_w, b.final_w)


def pair(kind, aggregated):
    in_memory, spread = aggregation_pair(kind, 4, n_s=60, n_d=30, n_per_device=4)
    return spread if aggregated else in_memory


@pytest.mark.parametrize("aggregated", [False, True], ids=["in_memory", "aggregated"])
@pytest.mark.parametrize("kind", ["simulator", "gradient"])
def test_both_dispatch_modes_fit_the_same(kind, aggregated):
    fits = {}
    for dispatch in ("loop", "step", "auto"):
        model = pair(kind, aggregated)
        model.fit(**FIT, rng=jax.random.key(3), max_iterations=9, print_rate=4, dispatch=dispatch)
        fits[dispatch] = model
    assert len(fits["loop"].history["detF"]) == 9
    assert_same_fit(fits["step"], fits["loop"])
    assert_same_fit(fits["auto"], fits["loop"])
    # no convolution: the loop, chosen without compiling or timing a program per iteration
    assert fits["auto"]._chunk.choice == "loop"
    assert fits["auto"]._chunk.seconds_per_iteration == {}


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        for features in (8, 8):
            x = nn.leaky_relu(nn.Conv(features, (3, 3))(x))
        return nn.Dense(2)(x.mean((0, 1)))


def test_a_convolutional_network_on_cpu_runs_one_program_per_iteration_and_does_not_recompile():
    """XLA:CPU runs the kernel gradient of a convolution several times slower inside a loop."""
    n_s, shape = 60, (24, 24, 1)
    fiducial = jax.random.normal(jax.random.key(0), (n_s, *shape))
    derivative = jax.random.normal(jax.random.key(1), (n_s, *shape, 2))
    model = imnn.GradientIMNN(
        n_s, n_s, 2, 2, shape, jnp.array([1.0, 0.5]), ConvNet(), optax.adam(1e-3), jax.random.key(2),
        fiducial=fiducial, derivative=derivative, verbose=False,
    )  # fmt: skip
    model.fit(10.0, 0.1, min_iterations=6, max_iterations=6)
    measured = model._chunk.seconds_per_iteration
    assert model._chunk.choice == "step", measured
    assert measured["loop"] > 2 * measured["step"], measured
    with compilations() as compiled:
        model.fit(5.0, 0.2, min_iterations=3, max_iterations=3)
    assert compiled == []


def test_dispatch_names_the_argument_and_the_choices():
    model = pair("gradient", False)
    with pytest.raises(ValueError, match="`dispatch` should be 'auto', 'loop' or 'step' but is 'fast'"):
        model.fit(**FIT, max_iterations=2, dispatch="fast")


# ------------------------------------------------------------------ the choice
class Timed:
    """A fake program that sleeps ``seconds`` per iteration (plus ``compile`` on its first call)."""

    def __init__(self, seconds, compile=0.0, loop=False):
        self.seconds, self.compile, self.loop, self.calls = seconds, compile, loop, 0

    def __call__(self, c, *args):
        target = int(args[0]) if self.loop else int(c.n_recorded) + 1
        n = target - int(c.n_recorded)
        time.sleep(self.seconds * n + (self.compile if self.calls == 0 else 0.0))
        self.calls += 1
        return c._replace(n_recorded=c.n_recorded + n, iteration=c.iteration + n)


def fake_start(state, iteration, patience_count):
    return engine.Chunk(None, np.int32(iteration), np.int32(patience_count), np.int32(0), np.bool_(False), None, None)


SETTINGS = engine.Settings((np.float32(10), np.float32(1)), np.int32(10**6), np.int32(0), np.int32(10**6))


@pytest.mark.parametrize(
    "step_seconds, loop_seconds, choice",
    [(0.004, 0.001, "loop"), (0.002, 0.02, "step"), (0.11, 0.001, "step")],
    ids=["dispatch-bound", "loop-hostile", "slow-step-kept-unmeasured"],
)
def test_auto_measures_both_modes_and_keeps_the_faster(step_seconds, loop_seconds, choice):
    step, loop = Timed(step_seconds, compile=0.05), Timed(loop_seconds, compile=0.05, loop=True)
    dispatcher = engine.Dispatcher(fake_start, step, loop)
    done = 0
    for n in (3, 6, 6):  # chunks of the sizes `run` asks for
        chunk = dispatcher(None, done, 0, n, SETTINGS, None, None)
        assert int(chunk.n_recorded) == n  # measuring never changes how many iterations a chunk runs
        done += n
    assert dispatcher.choice == choice, dispatcher.seconds_per_iteration
    calls = step.calls, loop.calls
    dispatcher(None, done, 0, 6, SETTINGS, None, None)
    if choice == "loop":
        assert (step.calls, loop.calls) == (calls[0], calls[1] + 1)  # the whole chunk in one loop call
    else:
        assert (step.calls, loop.calls) == (calls[0] + 6, calls[1])
    if choice == "step" and step_seconds >= engine.STEP_IS_ENOUGH:
        assert loop.calls == 0  # a slow iteration is not risked in a loop that may be far slower


def test_auto_keeps_the_loop_unmeasured_for_a_model_without_loop_hostile_operations():
    step, loop = Timed(0.0), Timed(0.0, loop=True)
    dispatcher = engine.Dispatcher(fake_start, step, loop, worth_measuring=lambda *loop_args: False)
    dispatcher(None, 0, 0, 5, SETTINGS, None, None)
    assert (step.calls, loop.calls, dispatcher.choice) == (0, 1, "loop")


def test_forced_modes_are_honoured_and_a_dataset_model_has_no_loop():
    step, loop = Timed(0.0), Timed(0.0, loop=True)
    dispatcher = engine.Dispatcher(fake_start, step, loop)
    dispatcher(None, 0, 0, 5, SETTINGS, None, None, mode="loop")
    assert (step.calls, loop.calls) == (0, 1)
    dispatcher(None, 5, 0, 5, SETTINGS, None, None, mode="step")
    assert (step.calls, loop.calls) == (5, 1)
    assert engine.Dispatcher(fake_start, step).modes == ("step",)


# ----------------------------------------------------------- faults in a chunk
def stored_model():
    sims = PROBLEM.simulations(jax.random.key(5), 80, 40)
    return imnn.IMNN(
        80, 40, 2, 2, PROBLEM.input_shape, PROBLEM.θ_fid, NoOutputBias(), optax.adam(1e-2),
        jax.random.key(0), **source_kwargs("gradient", sims), verbose=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted():
    model = stored_model()
    model.fit(**FIT, max_iterations=9, print_rate=3, dispatch="loop")
    return model


def fail_at_call(dispatcher, program, at, fault):
    real, calls = getattr(dispatcher, program), [0]

    def failing(*args):
        calls[0] += 1
        if calls[0] == at:
            raise fault("injected")
        return real(*args)

    setattr(dispatcher, program, failing)
    return lambda: setattr(dispatcher, program, real)


@pytest.mark.parametrize("fault", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize(
    "dispatch, program, at, kept",
    [("step", "_step", 1, 0), ("step", "_step", 3, 0), ("step", "_step", 5, 3), ("loop", "_loop", 2, 3)],
)
def test_a_fault_at_any_call_inside_a_chunk_keeps_finished_chunks_and_resumes_exactly(
    dispatch, program, at, kept, fault, uninterrupted
):
    model = stored_model()
    restore = fail_at_call(model._chunk, program, at, fault)
    if fault is KeyboardInterrupt:
        with pytest.warns(UserWarning, match=f"interrupted after {kept} iterations"):
            model.fit(**FIT, max_iterations=9, print_rate=3, dispatch=dispatch)
    else:
        with pytest.raises(RuntimeError, match="injected"):
            model.fit(**FIT, max_iterations=9, print_rate=3, dispatch=dispatch)
    restore()
    assert int(model.state.count) == kept
    assert all(len(v) == kept for k, v in model.history.items() if k != "max_detF")
    model.fit(**FIT, max_iterations=9 - kept, print_rate=3, dispatch=dispatch)
    assert_same_fit(model, uninterrupted)
