"""The fit engine: one optimisation loop for every model of the library.

A model hands the engine its ``loss_and_grad(w, data, key, *hyper) -> ((loss, metrics),
grads)`` and a :class:`Monitor` (which metrics to record, which score to maximise for
early stopping and best weights, and how to evaluate validation data).

``make_chunk`` builds the function that runs up to ``n_steps`` iterations, as one
``lax.while_loop`` program or as one program per iteration, whichever is faster for
the model (measured, see :class:`Dispatcher`); its programs are jitted once per model
and every fit setting is a traced argument, so changing ``λ``, ``patience`` or the
chunk length never recompiles. :func:`run` drives chunks from Python: between them it
updates the progress bar, honours Ctrl-C and stops on a non-finite loss, always
keeping the state and history of the last finished chunk.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from . import _checks
from .adapters import Optimiser
from .executors import exclusive

BUFFER_SIZE = 1000  # most iterations in one chunk (history buffer length)
TARGET_CHUNK_SECONDS = 1.0  # chunk wall time aimed at when no print_rate is given


class FitState(NamedTuple):
    """Carried across iterations and across ``fit`` calls.

    Attributes:
        w: current weights.
        opt_state: optimiser state.
        count: optimiser updates applied so far (int32).
        best_w: weights with the highest monitored score so far.
        best_score: that score (float32; ``-inf`` before any iteration).
        key: PRNG key, split once per iteration.
    """

    w: Any
    opt_state: Any
    count: jax.Array
    best_w: Any
    best_score: jax.Array
    key: jax.Array


def fit_key(key: Any, previous: FitState | None, model_key: jax.Array) -> jax.Array:
    """The PRNG stream of a fit: ``key`` if given, else where the previous fit left it, else one
    derived from the model's key."""
    if key is not None:
        return _checks.key("key", key)
    if previous is not None:
        return previous.key
    return jax.random.fold_in(model_key, 1)


def fresh_state(w: Any, optimiser: Optimiser, key: jax.Array) -> FitState:
    """A fit starting at ``w`` with a new optimiser state."""
    return FitState(w=w, opt_state=optimiser.init(w), count=jnp.zeros((), jnp.int32), best_w=w,
                    best_score=jnp.float32(-jnp.inf), key=key)  # fmt: skip


class Settings(NamedTuple):
    """Fit settings, all traced scalars (changing them does not recompile).

    ``hyper`` holds the model's loss hyper-parameters, passed on to ``loss_and_grad``
    and ``Monitor.validate`` after the key (the IMNN's ``(λ, α)``)."""

    hyper: tuple
    patience: jax.Array
    min_iterations: jax.Array
    max_iterations: jax.Array


class Monitor(NamedTuple):
    """What the engine records and watches for one kind of model.

    Attributes:
        metrics: the NamedTuple type of the per-iteration metrics (scalar fields).
        score: ``score(metrics) -> scalar``, higher is better (early stopping, best weights).
        validate: ``validate(w, val_data, key, *hyper) -> metrics`` at the weights before each
            update, whose score is then the monitored one; ``None`` without validation.
        progress: history names shown on the progress bar (their latest values).
        nonfinite_hint: what a non-finite loss usually means, for its warning.
    """

    metrics: type
    score: Callable[[Any], jax.Array]
    validate: Callable[..., Any] | None = None
    progress: tuple[str, ...] = ()
    nonfinite_hint: str = ""


class Chunk(NamedTuple):
    """What one chunk returns: the new state, loop counters and per-iteration metrics."""

    state: FitState
    iteration: jax.Array
    patience_count: jax.Array
    n_recorded: jax.Array
    nonfinite: jax.Array
    metrics: Any
    val_metrics: Any


def _empty_metrics(metrics_type: type) -> Any:
    return metrics_type(*(jnp.zeros(BUFFER_SIZE, jnp.float32) for _ in metrics_type._fields))


def _record(buffer: Any, index: jax.Array, metrics: Any) -> Any:
    return jax.tree.map(lambda b, m: b.at[index].set(m.astype(b.dtype)), buffer, metrics)


def _all_finite(*trees: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(trees)]
    return jnp.all(jnp.stack([jnp.array(True), *leaves]))


def _stopped(chunk: Chunk, settings: Settings) -> jax.Array:
    out_of_patience = (chunk.iteration >= settings.min_iterations) & (chunk.patience_count >= settings.patience)
    return chunk.nonfinite | out_of_patience | (chunk.iteration >= settings.max_iterations)


def _advance(
    optimiser: Optimiser,
    score: Callable,
    c: Chunk,
    key: jax.Array,
    evaluated: Any,
    current_val: Any,
    settings: Settings,
) -> Chunk:
    """Apply one evaluated iteration: update, bookkeeping, early-stopping counters.

    ``evaluated`` is ``((loss, metrics), grads)`` at ``c.state.w``; ``current_val`` the
    validation metrics at the same weights, or ``None`` without validation.
    """
    s = c.state
    (loss, metrics), grads = evaluated
    new_w, new_opt_state = optimiser.update(grads, s.opt_state, s.w, s.count)
    finite = jnp.isfinite(loss) & _all_finite(new_w, new_opt_state)
    monitored = score(metrics)
    val_metrics = c.val_metrics
    if current_val is not None:
        monitored = score(current_val)
        val_metrics = _record(val_metrics, c.n_recorded, current_val)
    improved = finite & (monitored > s.best_score)

    def if_finite(new, old):  # a step to a non-finite loss or state changes nothing but the flag
        return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)

    state = FitState(
        w=if_finite(new_w, s.w),
        opt_state=if_finite(new_opt_state, s.opt_state),
        count=s.count + finite,
        best_w=jax.tree.map(lambda a, b: jnp.where(improved, a, b), s.w, s.best_w),
        best_score=jnp.where(improved, monitored.astype(s.best_score.dtype), s.best_score),
        key=key,
    )
    counts = (c.iteration >= settings.min_iterations) & finite
    return Chunk(
        state=state,
        iteration=c.iteration + finite,
        patience_count=jnp.where(improved, 0, c.patience_count + counts),
        n_recorded=c.n_recorded + finite,
        nonfinite=~finite,
        metrics=_record(c.metrics, c.n_recorded, metrics),  # ignored beyond n_recorded
        val_metrics=val_metrics,
    )


def _start(state: FitState, iteration: jax.Array, patience_count: jax.Array, monitor: Monitor) -> Chunk:
    return Chunk(
        state=state,
        iteration=iteration,
        patience_count=patience_count,
        n_recorded=jnp.zeros((), jnp.int32),
        nonfinite=jnp.array(False),
        metrics=_empty_metrics(monitor.metrics),
        val_metrics=None if monitor.validate is None else _empty_metrics(monitor.metrics),
    )


def make_chunk(loss_and_grad: Callable, optimiser: Optimiser, monitor: Monitor, traceable: bool = True) -> Dispatcher:
    """The function running up to ``n_steps`` fit iterations; build it once per model.

    Signature: ``chunk(state, iteration, patience_count, n_steps, settings, data,
    val_data, mode="auto") -> Chunk``. With ``monitor.validate`` the monitored score is
    the one of ``val_data`` at the weights before each update, otherwise the training one.

    A traceable ``loss_and_grad``'s iterations run either as one jitted ``lax.while_loop``
    per chunk or as one jitted program per iteration (see :class:`Dispatcher`); a
    streaming one (fed by Python iterators, ``traceable=False``) runs its iterations from
    Python, each a ``loss_and_grad`` call followed by the same jitted update.
    """

    def evaluate(c: Chunk, settings: Settings, data: Any, val_data: Any):
        key, subkey = jax.random.split(c.state.key)
        evaluated = loss_and_grad(c.state.w, data, subkey, *settings.hyper)
        current_val = None
        if monitor.validate is not None:
            current_val = monitor.validate(c.state.w, val_data, subkey, *settings.hyper)
        return key, evaluated, current_val

    start = jax.jit(functools.partial(_start, monitor=monitor))
    if not traceable:
        advance = jax.jit(functools.partial(_advance, optimiser, monitor.score))

        def streamed_step(c: Chunk, settings: Settings, data: Any, val_data: Any) -> Chunk:
            return advance(c, *evaluate(c, settings, data, val_data), settings)

        return Dispatcher(start, streamed_step)

    def step(c: Chunk, settings: Settings, data: Any, val_data: Any) -> Chunk:
        return _advance(optimiser, monitor.score, c, *evaluate(c, settings, data, val_data), settings)

    def loop(c: Chunk, n_steps: jax.Array, settings: Settings, data: Any, val_data: Any) -> Chunk:
        def keep_going(c):
            return (c.n_recorded < n_steps) & ~_stopped(c, settings)

        return jax.lax.while_loop(keep_going, lambda c: step(c, settings, data, val_data), c)

    looped = exclusive(loop)  # on several devices both programs hold collectives (see executors.exclusive)

    def holds_loop_hostile_primitives(*loop_args) -> bool:  # the trace is kept for the loop's compilation
        return bool(_primitives(looped.trace(*loop_args).jaxpr) & LOOP_HOSTILE_ON_CPU)

    return Dispatcher(start, exclusive(step), looped, holds_loop_hostile_primitives)


DISPATCH_MODES = ("auto", "loop", "step")
MEASURE_SECONDS = 0.05  # least wall time of the loop's timed measurement call
LOOP_HOSTILE_ON_CPU = frozenset({"conv_general_dilated"})  # primitives XLA:CPU compiles poorly inside loops
STEP_IS_ENOUGH = 0.1  # seconds per iteration from which one program per iteration is kept unmeasured


def _primitives(jaxpr: Any) -> set[str]:
    """Names of the primitives in ``jaxpr`` and in every jaxpr nested in its equations."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for value in eqn.params.values():
            for inner in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(inner, "eqns"):
                    names |= _primitives(inner)
    return names


def _counters(c: Chunk) -> Chunk:
    return jax.device_get(c._replace(state=None, metrics=None, val_metrics=None))


class Dispatcher:
    """Runs a chunk of iterations as one ``while_loop`` program or as one program per iteration.

    A loop amortises the Python dispatch of every iteration (the fastest for small
    networks), but XLA compiles some operations inside loops far worse than outside
    them: on a CPU the kernel gradient of a convolution (``flax.linen.Conv``) runs
    10–100× slower in a loop body. ``mode="auto"`` on a CPU first traces the loop (the
    trace is kept for its compilation); a model without ``LOOP_HOSTILE_ON_CPU``
    primitives keeps the loop, so small networks compile one program, as before. For
    the others it measures both on the model's first iterations (a program per
    iteration twice, the first compiling it; then the loop twice, the first compiling
    it, the second for at least ``MEASURE_SECONDS``) and keeps the faster for every
    later chunk and fit; an iteration of ``STEP_IS_ENOUGH`` seconds or more keeps one
    program per iteration unmeasured. ``dispatch="step"`` forces the program per
    iteration for a model slow in loops for another reason.
    Every measured iteration is a real one: both programs do the same maths, so the
    trajectory does not depend on the choice (beyond floating-point rounding). On
    accelerators, and across several processes (whose measurements would differ),
    ``"auto"`` is the loop.

    Attributes:
        choice: ``"loop"`` or ``"step"`` once known (``None`` while measuring).
        seconds_per_iteration: the measured times, by mode.
    """

    def __init__(
        self, start: Callable, step: Callable, loop: Callable | None = None, worth_measuring: Callable | None = None
    ):
        self._start, self._step, self._loop = start, step, loop
        self._worth_measuring = worth_measuring or (lambda *loop_args: True)
        self.modes = ("step",) if loop is None else ("loop", "step")
        measure = jax.default_backend() == "cpu" and jax.process_count() == 1
        self.choice = "step" if loop is None else (None if measure else "loop")
        self.seconds_per_iteration: dict[str, float] = {}
        self._calls = {"loop": 0, "step": 0}
        self._measuring = False

    def __call__(self, state, iteration, patience_count, n_steps, settings, data, val_data, mode="auto") -> Chunk:
        c = self._start(state, iteration, patience_count)
        host_settings, n_steps, counters = jax.device_get(settings), int(n_steps), _counters(c)
        if mode == "auto" and self.choice is None and not self._measuring:
            if self._worth_measuring(c, jnp.int32(n_steps), settings, data, val_data):
                self._measuring = True
            else:
                self.choice = "loop"
        while counters.n_recorded < n_steps and not _stopped(counters, host_settings):
            use, target = self._plan(mode, counters, n_steps)
            started, done = time.perf_counter(), int(counters.n_recorded)
            if use == "step":
                c = self._step(c, settings, data, val_data)
            else:
                c = self._loop(c, jnp.int32(target), settings, data, val_data)
            counters = _counters(c)  # waits for the result
            self._learn(use, time.perf_counter() - started, int(counters.n_recorded) - done)
        return c

    def _plan(self, mode: str, counters: Chunk, n_steps: int) -> tuple[str, int]:
        """The program for the next call and the iteration count at which a loop stops.

        While measuring: the program per iteration first (twice), then the loop for one
        iteration (compiling it) and for enough iterations to time it."""
        if mode != "auto" or self.choice is not None:
            return (self.choice if mode == "auto" else mode), n_steps
        if "step" not in self.seconds_per_iteration:
            return "step", n_steps
        done = int(counters.n_recorded)
        if self._calls["loop"] == 0:
            return "loop", done + 1
        wanted = math.ceil(MEASURE_SECONDS / max(self.seconds_per_iteration["step"], 1e-9))
        return "loop", done + int(np.clip(wanted, 1, n_steps - done))

    def _learn(self, mode: str, elapsed: float, n: int) -> None:
        self._calls[mode] += 1
        if self.choice is not None or self._calls[mode] == 1 or n == 0:
            return  # decided, or the call compiled its program
        measured = elapsed / n
        self.seconds_per_iteration[mode] = min(measured, self.seconds_per_iteration.get(mode, math.inf))
        if mode == "step" and measured >= STEP_IS_ENOUGH:
            self.choice = "step"  # the loop can save only the dispatch (< 1 ms), and may be far slower
        elif len(self.seconds_per_iteration) == len(self.modes):
            self.choice = min(self.seconds_per_iteration, key=self.seconds_per_iteration.get)

    def _cache_size(self) -> int:
        """Compiled entries of its jitted programs (for compile counts in benchmarks)."""
        return sum(fn._cache_size() for fn in (self._step, self._loop) if hasattr(fn, "_cache_size"))

    def describe(self) -> str | None:
        """How iterations are dispatched, with the times measured, or ``None`` while measuring."""
        if self.choice is None:
            return None
        how = "one while_loop per chunk" if self.choice == "loop" else "one program per iteration"
        times = ", ".join(f"{m} {1e3 * t:.3g} ms" for m, t in sorted(self.seconds_per_iteration.items()))
        return f"{how} ({times}/it measured)" if times else f"{how} (not measured)"


class Outcome(NamedTuple):
    """What :func:`run` hands back to the model."""

    state: FitState
    history: dict[str, np.ndarray]
    iterations: int
    reason: str  # "converged", "max_iterations", "nonfinite", "interrupted", "error" (or "running")
    error: Exception | None = None  # what stopped a fit with reason "error", to re-raise


def _progress_postfix(
    history: dict[str, list], iteration: int, patience_count: int, names: tuple[str, ...], epoch_length: int | None,
    early_stopping: bool,
) -> dict[str, str]:  # fmt: skip
    """The bar's columns: the patience count (in epochs when ``epoch_length`` is given, and only
    while early stopping can happen), the epoch, and the latest of each recorded metric."""
    if epoch_length is None:
        postfix = {"patience": str(patience_count)}
    else:
        postfix = {"epoch": str(-(-iteration // epoch_length))}
        if early_stopping:
            postfix["patience"] = str(patience_count // epoch_length)
    for name in names:
        recorded = [part for part in history.get(name, []) if len(part)]
        if recorded:
            postfix[name] = f"{recorded[-1][-1]:.3g}"
    return postfix


def run(
    chunk_fn: Callable[..., Chunk],
    state: FitState,
    settings: Settings,
    data: Any,
    val_data: Any,
    *,
    monitor: Monitor,
    max_iterations: int,
    print_rate: int | None,
    on_chunk: Callable[[Outcome], None] | None = None,
    max_chunk: int = BUFFER_SIZE,
    dispatch: str = "auto",
    show_progress: bool | None = None,
    epoch_length: int | None = None,
) -> Outcome:
    """Drive jitted chunks until early stopping, ``max_iterations``, a NaN or Ctrl-C.

    Args:
        chunk_fn: the :class:`Dispatcher` from :func:`make_chunk`.
        state: where to start.
        settings: traced fit settings.
        data, val_data: passed through to ``loss_and_grad`` and ``monitor.validate``.
        monitor: the model's :class:`Monitor` (progress-bar names, non-finite hint).
        max_iterations: iterations allowed in this call.
        print_rate: iterations between progress-bar updates; ``None`` hides the bar
            and sizes chunks to about ``TARGET_CHUNK_SECONDS`` each.
        on_chunk: called after every finished chunk with the outcome so far (reason ``"running"``).
        max_chunk: most iterations per chunk (1 for slow streaming iterations, so an
            interruption loses none that finished).
        dispatch: ``"auto"``, ``"loop"`` or ``"step"`` (see :class:`Dispatcher`).
        show_progress: show the bar (default: when ``print_rate`` is given), e.g. ``False`` to
            keep the chunk length ``print_rate`` without a bar.
        epoch_length: iterations per epoch, to show the epoch (and the patience in epochs) on the bar.

    Returns:
        An :class:`Outcome` whose history holds one entry per finished iteration.
    """
    history: dict[str, list] = {}
    host_settings = jax.device_get(settings)  # the stop test between chunks runs in numpy
    iteration, patience_count, reason, error = 0, 0, "max_iterations", None
    n_steps = min(print_rate or 10, max_chunk)
    bar = tqdm(
        total=max_iterations,
        disable=not (print_rate is not None if show_progress is None else show_progress),
        leave=True,
    )
    try:
        while iteration < max_iterations:
            n_steps = min(n_steps, max_iterations - iteration)
            started = time.perf_counter()
            out = chunk_fn(
                state, jnp.int32(iteration), jnp.int32(patience_count), n_steps, settings, data, val_data,
                mode=dispatch,
            )  # fmt: skip
            out = jax.device_get(out._replace(state=None))._replace(state=out.state)
            n = int(out.n_recorded)
            for prefix, metrics in (("", out.metrics), ("val_", out.val_metrics)):
                if metrics is not None:
                    for name, values in metrics._asdict().items():
                        history.setdefault(prefix + name, []).append(np.asarray(values[:n]))
            state, iteration, patience_count = out.state, int(out.iteration), int(out.patience_count)
            postfix = _progress_postfix(history, iteration, patience_count, monitor.progress, epoch_length,
                                        bool(host_settings.patience <= max_iterations))  # fmt: skip
            bar.set_postfix(postfix, refresh=False)
            bar.update(n)
            if on_chunk is not None:
                on_chunk(_outcome(state, history, iteration, "running"))
            if bool(out.nonfinite):
                reason = "nonfinite"
                break
            if bool(_stopped(out, host_settings)):
                reason = "converged" if iteration < max_iterations else "max_iterations"
                break
            if print_rate is None:
                elapsed = max(time.perf_counter() - started, 1e-6)
                n_steps = int(np.clip(n * TARGET_CHUNK_SECONDS / elapsed, 1, max_chunk))
    except KeyboardInterrupt:
        reason = "interrupted"
    except Exception as caught:  # e.g. a user's simulator failing: keep the progress, then re-raise
        reason, error = "error", caught
    finally:
        bar.close()
    if reason == "interrupted":
        _checks.warn(
            f"fit interrupted after {iteration} iterations; the history and best weights "
            "up to the last finished chunk are kept"
        )
    if reason == "nonfinite":
        _checks.warn(
            f"the loss or the updated weights became non-finite at iteration {iteration + 1}"
            f"{monitor.nonfinite_hint}; fitting stopped and the weights and history before it are kept"
        )
    return _outcome(state, history, iteration, reason)._replace(error=error)


def _outcome(state: FitState, history: dict[str, list], iteration: int, reason: str) -> Outcome:
    merged = {name: np.concatenate(parts) for name, parts in history.items()}
    return Outcome(state=state, history=merged, iterations=iteration, reason=reason)
