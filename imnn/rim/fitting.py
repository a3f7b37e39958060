"""The pieces of :meth:`RIM.fit` around the shared fit engine: where the data and state go,
the compiled chunk per setting, the optimiser state to start from, checkpoints and the history.

Each function takes the :class:`~imnn.rim.RIM` it serves as its first argument; ``fit``
itself (in :mod:`imnn.rim.rim`) only checks the arguments and strings these together.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks, engine
from . import checkpoints as store
from . import training
from .training import RIMMetrics

PROGRESS = ("loss", "val_loss")
NONFINITE_HINT = " (e.g. a score that is not finite at the iterates, or a learning rate too large)"
SIMULATOR_ITERATIONS = 100  # iterations per epoch when training on a simulator


def is_arrays(dataset: Any) -> bool:
    """A tuple ``(y, x, *args)`` of arrays, rather than an iterable of batches."""
    return isinstance(dataset, tuple) or (isinstance(dataset, list) and all(hasattr(a, "shape") for a in dataset))


def chunk_length(n_per_epoch: int) -> int:
    """Iterations per engine chunk: the largest divisor of an epoch up to the engine's buffer, so
    that checkpoints and the per-epoch history fall on chunk ends."""
    return max(d for d in range(1, min(n_per_epoch, engine.BUFFER_SIZE) + 1) if n_per_epoch % d == 0)


def iterations_per_epoch(given, dataset, simulator, stream, train, batch_size) -> int:
    if given is not None:
        return _checks.positive_int("n_iterations_in_epoch", given)
    if simulator is not None:
        return SIMULATOR_ITERATIONS
    if stream is None:
        return math.ceil(train[0].shape[0] / batch_size)
    try:
        return _checks.positive_int("the length of `dataset`", len(dataset))
    except TypeError:
        raise ValueError("give `n_iterations_in_epoch`: the iterable `dataset` has no length") from None


def compiled(rim, setting, make_optimizer, batch_size, simulator, sharding, stream, validate: bool):
    """The fit engine's ``(chunk, monitor, optimiser)`` for this setting, built once per RIM
    (a second fit compiles nothing)."""
    if setting not in rim._fits:
        loss = rim._loss
        if stream is None:
            draw = lambda d, key: training.draw(d, key, batch_size, simulator, sharding)
            loss_and_grad = training.loss_and_grad(loss, draw)
        else:
            on_batch = jax.jit(training.loss_and_grad(loss, None))
            loss_and_grad = lambda w, batches, key, weights: on_batch(w, batches.next(), key, weights)

        @jax.jit
        def validation_metrics(w, val_data, key, weights):
            return RIMMetrics(loss(training.used(w), val_data, weights))

        monitor = engine.Monitor(
            metrics=RIMMetrics, score=lambda metrics: -metrics.loss,
            validate=validation_metrics if validate else None, progress=PROGRESS, nonfinite_hint=NONFINITE_HINT,
        )  # fmt: skip
        wrapped = make_optimizer()
        chunk = engine.make_chunk(loss_and_grad, wrapped, monitor, traceable=stream is None)
        rim._fits[setting] = (chunk, monitor, wrapped)
    return rim._fits[setting]


def start_state(rim, setting: tuple, description: dict, wrapped, key: Any, averaged: bool) -> engine.FitState:
    """Continue the previous fit's optimiser when the setting is the same (or a loaded one's),
    else start one on ``rim.params``."""
    previous = rim._state
    stream = engine.fit_key(key, previous, rim._key)
    if previous is not None and rim._state_setting == setting:
        return previous._replace(key=stream, best_score=jnp.float32(-jnp.inf))
    w = training.Averaged(rim.params, rim.params) if averaged else rim.params
    fresh = engine.fresh_state(w, wrapped, stream)
    if rim._pending is None:
        return fresh
    restored = store.restored_state(rim._pending, fresh, description)
    if restored is None:
        return fresh
    return restored._replace(best_score=jnp.float32(-jnp.inf), key=stream if key is not None else restored.key)


def resume_from(rim, directory: str | os.PathLike) -> None:
    """Adopt the newest checkpoint of ``directory`` (the weights, fit state and history) if it fits."""
    saved = store.read(directory)
    store.check_fits(rim, saved)
    store.restore(rim, saved)
    print(f"RIM: resuming from {store.files(directory)[-1]} ({len(rim.history['loss'])} epochs)")


def checkpointer(rim, directory, every: int, keep: int, n_per_epoch: int, validated: bool, setting: tuple,
                 description: dict) -> Callable:  # fmt: skip
    """``save(outcome, final=False)``: a checkpoint every ``every`` epochs of ``outcome`` (absorbed
    into a snapshot: the RIM is untouched), and ``final`` once the RIM absorbed it, unless saved."""
    saved_at = [-1]

    def save(outcome: engine.Outcome, final: bool = False) -> None:
        epochs = outcome.iterations // n_per_epoch
        if final:
            if saved_at[0] != outcome.iterations:
                store.write(rim, directory, len(rim.history["loss"]), keep)
            return
        if outcome.iterations % n_per_epoch == 0 and epochs % every == 0 and saved_at[0] != outcome.iterations:
            snapshot = copy.copy(rim)
            snapshot.history = dict(rim.history)
            absorb(snapshot, outcome, n_per_epoch, validated, setting, description)
            store.write(snapshot, directory, len(snapshot.history["loss"]), keep)
            saved_at[0] = outcome.iterations

    return save


def absorb(rim, outcome, n_per_epoch: int, validated: bool, setting: tuple, description: dict) -> list[float]:
    """Take the fit's end state, kept weights and per-epoch history into ``rim``; return this
    fit's per-epoch training losses."""
    s = outcome.state
    rim._state, rim._state_setting, rim._state_description, rim._pending = s, setting, description, None
    rim.params = training.used(s.best_w if validated and bool(jnp.isfinite(s.best_score)) else s.w)
    epochs = {}
    for name in ("loss", "val_loss"):
        values = outcome.history.get(name, np.zeros(0))
        starts = range(0, len(values), n_per_epoch)
        epochs[name] = np.array([values[i : i + n_per_epoch].mean() for i in starts])
    if not validated:
        epochs["val_loss"] = np.full(len(epochs["loss"]), np.nan)
    for name, values in epochs.items():
        rim.history[name] = np.concatenate([rim.history[name], values])
    return [float(v) for v in epochs["loss"]]
