"""The fit engine: one optimisation loop for every IMNN variant.

``make_chunk`` builds a pure function that runs up to ``n_steps`` iterations
inside one ``lax.while_loop``; it is jitted once per model and every fit
setting is a traced argument, so changing ``λ``, ``patience`` or the chunk
length never recompiles. :func:`run` drives chunks from Python: between them it
updates the progress bar, honours Ctrl-C and stops on a non-finite loss, always
keeping the state and history of the last finished chunk.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from . import _checks, fisher
from .adapters import Optimiser
from .executors import Executor, exclusive

BUFFER_SIZE = 1000  # most iterations in one chunk (history buffer length)
TARGET_CHUNK_SECONDS = 1.0  # chunk wall time aimed at when no print_rate is given


class FitState(NamedTuple):
    """Carried across iterations and across ``fit`` calls.

    Attributes:
        w: current weights.
        opt_state: optimiser state.
        count: optimiser updates applied so far (int32).
        best_w: weights with the highest monitored ``|F|`` so far.
        max_detF: that ``|F|`` (float32; ``-inf`` before any iteration).
        key: PRNG key, split once per iteration.
    """

    w: Any
    opt_state: Any
    count: jax.Array
    best_w: Any
    max_detF: jax.Array
    key: jax.Array


class Settings(NamedTuple):
    """Fit settings, all traced scalars (changing them does not recompile)."""

    λ: jax.Array
    α: jax.Array
    patience: jax.Array
    min_iterations: jax.Array
    max_iterations: jax.Array


class Chunk(NamedTuple):
    """What one chunk returns: the new state, loop counters and per-iteration metrics."""

    state: FitState
    iteration: jax.Array
    patience_count: jax.Array
    n_recorded: jax.Array
    nonfinite: jax.Array
    metrics: fisher.Metrics
    val_metrics: fisher.Metrics | None


def _empty_metrics() -> fisher.Metrics:
    return fisher.Metrics(*(jnp.zeros(BUFFER_SIZE, jnp.float32) for _ in fisher.Metrics._fields))


def _record(buffer: fisher.Metrics, index: jax.Array, metrics: fisher.Metrics) -> fisher.Metrics:
    return jax.tree.map(lambda b, m: b.at[index].set(m.astype(b.dtype)), buffer, metrics)


def _all_finite(*trees: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(trees)]
    return jnp.all(jnp.stack([jnp.array(True), *leaves]))


def _stopped(chunk: Chunk, settings: Settings) -> jax.Array:
    out_of_patience = (chunk.iteration >= settings.min_iterations) & (chunk.patience_count >= settings.patience)
    return chunk.nonfinite | out_of_patience | (chunk.iteration >= settings.max_iterations)


def _advance(
    optimiser: Optimiser, c: Chunk, key: jax.Array, evaluated: Any, val_summaries: Any, settings: Settings
) -> Chunk:
    """Apply one evaluated iteration: update, bookkeeping, early-stopping counters.

    ``evaluated`` is ``((loss, Metrics), grads)`` at ``c.state.w``; ``val_summaries``
    the validation ``(x, dx_dθ)`` at the same weights, or ``None`` without validation.
    """
    s = c.state
    (loss, metrics), grads = evaluated
    new_w, new_opt_state = optimiser.update(grads, s.opt_state, s.w, s.count)
    finite = jnp.isfinite(loss) & _all_finite(new_w, new_opt_state)
    monitored = metrics.detF
    val_metrics = c.val_metrics
    if val_summaries is not None:
        current_val = fisher.loss_from_statistics(fisher.statistics(*val_summaries), settings.λ, settings.α)[1]
        monitored = current_val.detF
        val_metrics = _record(val_metrics, c.n_recorded, current_val)
    improved = finite & (monitored > s.max_detF)

    def if_finite(new, old):  # a step to a non-finite loss or state changes nothing but the flag
        return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)

    state = FitState(
        w=if_finite(new_w, s.w),
        opt_state=if_finite(new_opt_state, s.opt_state),
        count=s.count + finite,
        best_w=jax.tree.map(lambda a, b: jnp.where(improved, a, b), s.w, s.best_w),
        max_detF=jnp.where(improved, monitored.astype(s.max_detF.dtype), s.max_detF),
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


def _start(state: FitState, iteration: jax.Array, patience_count: jax.Array, validate: bool) -> Chunk:
    return Chunk(
        state=state,
        iteration=iteration,
        patience_count=patience_count,
        n_recorded=jnp.zeros((), jnp.int32),
        nonfinite=jnp.array(False),
        metrics=_empty_metrics(),
        val_metrics=_empty_metrics() if validate else None,
    )


def make_chunk(executor: Executor, optimiser: Optimiser, validate: bool) -> Callable[..., Chunk]:
    """A compiled function running up to ``n_steps`` fit iterations; build it once per model.

    Signature: ``chunk(state, iteration, patience_count, n_steps, settings, data,
    val_data) -> Chunk``. With ``validate`` the monitored ``|F|`` is the one of
    ``val_data`` at the weights before each update, otherwise the training one.

    A traceable executor runs the whole chunk as one jitted ``lax.while_loop``; a
    streaming one (fed by Python iterators) runs its iterations from Python, each
    an executor call followed by the same jitted update.
    """

    def evaluate(c: Chunk, settings: Settings, data: Any, val_data: Any):
        key, subkey = jax.random.split(c.state.key)
        evaluated = executor.loss_and_grad(c.state.w, data, subkey, settings.λ, settings.α)
        val_summaries = executor.summaries(c.state.w, val_data, subkey) if validate else None
        return key, evaluated, val_summaries

    if not executor.traceable:
        return _host_loop(evaluate, jax.jit(functools.partial(_advance, optimiser)), validate)

    def chunk(state, iteration, patience_count, n_steps, settings, data, val_data) -> Chunk:
        def keep_going(c):
            return (c.n_recorded < n_steps) & ~_stopped(c, settings)

        def iterate(c):
            return _advance(optimiser, c, *evaluate(c, settings, data, val_data), settings)

        return jax.lax.while_loop(keep_going, iterate, _start(state, iteration, patience_count, validate))

    return exclusive(chunk)  # on several devices the loop holds collectives


def _host_loop(evaluate: Callable, advance: Callable, validate: bool) -> Callable[..., Chunk]:
    start = jax.jit(functools.partial(_start, validate=validate))

    def chunk(state, iteration, patience_count, n_steps, settings, data, val_data) -> Chunk:
        c = start(state, iteration, patience_count)
        host_settings = jax.device_get(settings)
        while True:
            counters = jax.device_get(c._replace(state=None, metrics=None, val_metrics=None))
            if counters.n_recorded >= n_steps or _stopped(counters, host_settings):
                return c
            c = advance(c, *evaluate(c, settings, data, val_data), settings)

    return chunk


class Outcome(NamedTuple):
    """What :func:`run` hands back to the model."""

    state: FitState
    history: dict[str, np.ndarray]
    iterations: int
    reason: str  # "converged", "max_iterations", "nonfinite", "interrupted", "error" (or "running")
    error: Exception | None = None  # what stopped a fit with reason "error", to re-raise


def _progress_postfix(history: dict[str, list], patience_count: int) -> dict[str, str]:
    postfix = {"patience": str(patience_count)}
    for name in ("detF", "detC", "detinvC", "Λ2", "r", "val_detF"):
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
    max_iterations: int,
    print_rate: int | None,
    on_chunk: Callable[[Outcome], None] | None = None,
    max_chunk: int = BUFFER_SIZE,
) -> Outcome:
    """Drive jitted chunks until early stopping, ``max_iterations``, a NaN or Ctrl-C.

    Args:
        chunk_fn: the jitted function from :func:`make_chunk`.
        state: where to start.
        settings: traced fit settings.
        data, val_data: passed through to the executor.
        max_iterations: iterations allowed in this call.
        print_rate: iterations between progress-bar updates; ``None`` hides the bar
            and sizes chunks to about ``TARGET_CHUNK_SECONDS`` each.
        on_chunk: called after every finished chunk with the outcome so far (reason ``"running"``).
        max_chunk: most iterations per chunk (1 for slow streaming iterations, so an
            interruption loses none that finished).

    Returns:
        An :class:`Outcome` whose history holds one entry per finished iteration.
    """
    history: dict[str, list] = {}
    host_settings = jax.device_get(settings)  # the stop test between chunks runs in numpy
    iteration, patience_count, reason, error = 0, 0, "max_iterations", None
    n_steps = min(print_rate or 10, max_chunk)
    bar = tqdm(total=max_iterations, disable=print_rate is None, leave=True)
    try:
        while iteration < max_iterations:
            n_steps = min(n_steps, max_iterations - iteration)
            started = time.perf_counter()
            out = chunk_fn(
                state, jnp.int32(iteration), jnp.int32(patience_count), jnp.int32(n_steps),
                settings, data, val_data,
            )  # fmt: skip
            out = jax.device_get(out._replace(state=None))._replace(state=out.state)
            n = int(out.n_recorded)
            for prefix, metrics in (("", out.metrics), ("val_", out.val_metrics)):
                if metrics is not None:
                    for name, values in metrics._asdict().items():
                        history.setdefault(prefix + name, []).append(np.asarray(values[:n]))
            state, iteration, patience_count = out.state, int(out.iteration), int(out.patience_count)
            bar.set_postfix(_progress_postfix(history, patience_count), refresh=False)
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
            f"the loss or the updated weights became non-finite at iteration {iteration + 1} (a singular "
            "covariance or Fisher matrix, e.g. summaries that do not vary or carry no information, or "
            "non-finite simulations); fitting stopped and the weights and history before it are kept"
        )
    return _outcome(state, history, iteration, reason)._replace(error=error)


def _outcome(state: FitState, history: dict[str, list], iteration: int, reason: str) -> Outcome:
    merged = {name: np.concatenate(parts) for name, parts in history.items()}
    return Outcome(state=state, history=merged, iterations=iteration, reason=reason)
