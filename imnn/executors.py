"""Executors: where, and in what pieces, a summary source is evaluated.

An :class:`Executor` gives the fit engine two pure functions of the weights:

- ``loss_and_grad(w, data, key, λ, α) -> ((loss, Metrics), grads)``;
- ``statistics(w, data, key) -> FisherStatistics``.

:func:`in_memory` evaluates the whole source as one computation. Executors
that split the work into batches or across devices provide the same two
functions, so the fit engine and the public classes do not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from . import fisher
from .sources import Source, summarise


class Executor(NamedTuple):
    """The two functions of the weights that the fit engine and the classes need."""

    loss_and_grad: Callable[..., tuple[tuple[jax.Array, fisher.Metrics], Any]]
    statistics: Callable[[Any, Any, jax.Array], fisher.FisherStatistics]


def in_memory(source: Source, apply: Callable) -> Executor:
    """All simulations through the network at once, differentiated with ``jax.value_and_grad``."""

    def loss(w, data, key, λ, α):
        x, dx_dθ = summarise(source, apply, w, data, key)
        return fisher.loss(x, dx_dθ, λ, α)

    def statistics(w, data, key):
        return fisher.statistics(*summarise(source, apply, w, data, key))

    return Executor(loss_and_grad=jax.value_and_grad(loss, has_aux=True), statistics=statistics)
