"""Executors: where, and in what pieces, a summary source is evaluated.

An :class:`Executor` gives the fit engine and the model classes four functions:

- ``prepare(data) -> data``: lays the user's arrays out once, at construction;
- ``place(tree) -> tree``: puts weights, optimiser state and keys where the
  computation runs (replicated over the devices);
- ``summaries(w, data, key) -> (x: float(n_s, n_summaries), dx_dθ: float(n_d, n_summaries, n_params))``;
- ``loss_and_grad(w, data, key, λ, α) -> ((loss, Metrics), grads)``.

A *traceable* executor's functions can run inside ``jax.jit`` (the fit engine
compiles whole chunks of iterations); a streaming one (:mod:`imnn.streaming`)
reads Python iterators, so it is called from Python and jits its own pieces.

:func:`in_memory` evaluates the whole source as one computation;
:func:`imnn.aggregation.aggregated` evaluates it in batches across devices;
:func:`imnn.streaming.streamed` feeds the same batched passes from iterators.
The fit engine and the classes do not know which one they use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from . import fisher
from .sources import Source, summarise


class Executor(NamedTuple):
    """The functions of the weights that the fit engine and the classes need."""

    loss_and_grad: Callable[..., tuple[tuple[jax.Array, fisher.Metrics], Any]]
    summaries: Callable[[Any, Any, jax.Array], tuple[jax.Array, jax.Array]]
    prepare: Callable[[Any], Any]
    place: Callable[[Any], Any]
    traceable: bool = True  # False: its functions read Python iterators and jit their own pieces


def _identity(tree: Any) -> Any:
    return tree


def exclusive(fn: Callable) -> Callable:
    """``jax.jit(fn)`` for a program with cross-device collectives, run with nothing else in flight.

    Each call waits for its inputs, then for its result. JAX dispatches asynchronously,
    and a runtime is free to start the devices' shares of independent programs in any
    order: two programs with collectives in flight at once can then each hold some
    devices at a rendezvous that the other's shares never reach (XLA:CPU aborts the
    process after a timeout; NCCL issued in different orders, or gloo across
    processes, hangs). A program run alone cannot wait on another, so programs with
    collectives go through here, and everything dispatched freely (per-batch work in
    :mod:`imnn.streaming`) has none.
    """
    compiled = jax.jit(fn)

    def call(*args):
        jax.block_until_ready(args)
        return jax.block_until_ready(compiled(*args))

    call._cache_size = compiled._cache_size  # for compile counts in benchmarks
    call.trace = compiled.trace  # its jaxpr; the trace is shared with later calls
    return call


def in_memory(source: Source, apply: Callable) -> Executor:
    """All simulations through the network at once, differentiated with ``jax.value_and_grad``."""
    summaries = functools.partial(summarise, source, apply)

    def loss(w, data, key, λ, α):
        return fisher.loss(*summaries(w, data, key), λ, α)

    return Executor(
        loss_and_grad=jax.value_and_grad(loss, has_aux=True),
        summaries=summaries,
        prepare=jax.device_put,  # the user's arrays, once, onto the default device
        place=_identity,
    )
