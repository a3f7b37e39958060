"""The RPM's fit step as pure functions, handed to the library's fit engine (:mod:`imnn.engine`).

Three normalisers give ``Fⱼ`` during a minibatch step:

- ``"full"``: every training item's factor, recomputed (and differentiated) each step: exact;
- ``"batch"``: the minibatch's own factors (torchRPM's ``full_N_for_Fj=False``; a biased ``log Fⱼ``);
- ``"cache"``: a bank of every item's factor increments carried with the weights, its
  minibatch rows refreshed each step and the rest held fixed: full-N semantics at minibatch
  cost. The refreshed rows' gradient through ``Fⱼ`` is scaled by ``N/B``, so that it estimates
  the full normaliser's gradient (a sum over all ``N`` rows) without bias. The bank rides in
  :class:`Weights` and the optimiser wrapper of :func:`with_bank` replaces it by the step's
  refreshed bank instead of applying a gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ..adapters import Network, Optimiser
from . import objectives

NORMALISERS = ("full", "batch", "cache")
EVALUATIONS = ("objective", "posterior", "exact")
EVALUATION_CHUNK = 256  # items per evaluation chunk (bounds the J·B·M memory of continuous bounds)
VALIDATION_SATURATION_STEPS = 0  # q="saturated" validates every step: with the use_theta q (a lower bound)


class Weights(NamedTuple):
    """What the engine optimises: the factor networks' weights (one per view), the prior's raw
    parameters (``None`` when fixed), the ``"cache"`` normaliser's bank (``None`` otherwise) and
    the amortised ``q`` network's weights."""

    factors: tuple
    prior: Any
    bank: Any
    q: Any = None  # q="amortized": the q network's weights; q="saturated": raw float(N, n_raw), one row per item


class RPMMetrics(NamedTuple):
    """Recorded per step: the minibatch mean of the objective (nats per datum)."""

    objective: jax.Array


class Model(NamedTuple):
    """An RPM's maths, closed over its family, networks and prior."""

    family: Any
    networks: tuple[Network, ...]
    fixed_prior: Any  # natural parameters of a fixed prior, or None (learnt)
    q_network: Network | None = None  # q="amortized": stacked views of one item -> n_raw
    saturated: bool = False  # q="saturated": a q per item (rows of Weights.q while training)

    def prior(self, w: Weights) -> Any:
        return self.fixed_prior if self.fixed_prior is not None else self.family.prior_natural(w.prior)

    def increments(self, factor_params: tuple, views: tuple) -> Any:
        """Factor increments of every item, leaves with leading axes ``(J, items)``."""

        def apply(network, params, view):
            over_items = jax.vmap(network.apply, (None, 0))
            if getattr(self.family, "chain", False):  # the factor sees one step of one item
                over_items = jax.vmap(jax.vmap(network.apply, (None, 0)), (None, 0))
            return self.family.increment(over_items(params, view).astype(jnp.float32))

        per_view = [apply(n, p, v) for n, p, v in zip(self.networks, factor_params, views)]
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_view)


    def q_natural(self, w: Weights, eta0: Any, views: tuple) -> Any:
        """An amortised ``q``'s natural parameters ``η₀ + increment(net(x₁ … x_J))`` per item (leaves
        with leading axis ``items``), or ``None`` for ``q="use_theta"``."""
        if self.q_network is None:
            return None
        stacked = jnp.concatenate([v.reshape(v.shape[0], -1) for v in views], -1)
        raw = jax.vmap(self.q_network.apply, (None, 0))(w.q, stacked).astype(jnp.float32)
        return jax.tree.map(jnp.add, eta0, self.family.increment(raw))


def with_bank(optimiser: Optimiser) -> Optimiser:
    """``optimiser`` on the networks and prior; the bank's "gradient" is its refreshed value, taken as is."""

    def init(w: Weights) -> Any:
        return optimiser.init(w._replace(bank=None))

    def update(grads: Weights, opt_state: Any, w: Weights, count: jax.Array) -> tuple[Weights, Any]:
        new_w, opt_state = optimiser.update(grads._replace(bank=None), opt_state, w._replace(bank=None), count)
        return new_w._replace(bank=grads.bank), opt_state

    return Optimiser(init=init, update=update)


def _take(tree: Any, index: jax.Array) -> Any:
    return jax.tree.map(lambda leaf: leaf[:, index], tree)


def _scale_gradient(x: jax.Array, factor: float) -> jax.Array:
    """``x``, with its gradient multiplied by ``factor``."""
    return jax.lax.stop_gradient(x) + factor * (x - jax.lax.stop_gradient(x))


def loss_and_grad(model: Model, normaliser: str, batch_size: int) -> Callable:
    """``loss_and_grad(w, views, key) -> ((−objective, RPMMetrics), grads)`` on a minibatch of
    ``batch_size`` distinct items drawn with ``key`` (all items when it is the whole set)."""

    def objective(w: Weights, views: tuple, key: jax.Array):
        n = views[0].shape[0]
        index = jnp.arange(n) if batch_size >= n else jax.random.choice(key, n, (batch_size,), replace=False)
        eta0 = model.prior(w)
        batch_views = tuple(v[index] for v in views)
        if normaliser == "full":
            bank = model.increments(w.factors, views)
            batch = _take(bank, index)
        else:
            batch = model.increments(w.factors, batch_views)
            bank = batch
            if normaliser == "cache":
                rows = jax.tree.map(lambda g: _scale_gradient(g, n / index.shape[0]), batch)
                bank = jax.tree.map(lambda b, g: jax.lax.stop_gradient(b).at[:, index].set(g), w.bank, rows)
        eta_q = model.q_natural(w, eta0, batch_views)
        if model.saturated:  # the batch items' own q, relative to their use_theta q
            eta_q = model.family.relative(objectives.posterior_natural(eta0, batch), w.q[index])
        value = jnp.mean(objectives.per_item(model.family, eta0, batch, bank, eta_q))
        refreshed = jax.lax.stop_gradient(bank) if normaliser == "cache" else None
        return -value, (value, refreshed)

    def evaluate(w, views, key):
        (loss, (value, refreshed)), grads = jax.value_and_grad(objective, has_aux=True)(w, views, key)
        return (loss, RPMMetrics(value)), grads._replace(bank=refreshed)

    return evaluate


def chunked(fn: Callable, batch: Any, size: int = EVALUATION_CHUNK) -> Any:
    """``fn(batch)`` over the item axis (axis 1 of every leaf) in chunks of ``size``, outputs
    concatenated along their first axis (the items)."""
    n = jax.tree.leaves(batch)[0].shape[1]
    n_chunks = -(-n // size)
    padded = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[:, -1:], n_chunks * size - n, 1)], 1), batch)
    pieces = jax.tree.map(lambda a: jnp.moveaxis(a.reshape(a.shape[0], n_chunks, size, *a.shape[2:]), 1, 0), padded)
    out = jax.lax.map(fn, pieces)
    return jax.tree.map(lambda a: a.reshape(n_chunks * size, *a.shape[2:])[:n], out)


def validation(model: Model, normaliser: str) -> Callable:
    """``validate(w, (val_views, train_views), key) -> RPMMetrics``: the mean objective of the
    validation items with the training normaliser (the cache's bank, or all training items)."""

    objective_per_item = evaluator(model, "objective", saturation_steps=VALIDATION_SATURATION_STEPS)

    def validate(w: Weights, data: tuple, key: jax.Array) -> RPMMetrics:
        val_views, train_views = data
        bank = w.bank if normaliser == "cache" else model.increments(w.factors, train_views)
        return RPMMetrics(jnp.mean(objective_per_item(w, bank, val_views)))

    return validate


def evaluator(model: Model, what: str, saturation_steps: int = objectives.SATURATION_STEPS) -> Callable:
    """``evaluate(w, bank, views)`` per item of ``views`` against the normaliser ``bank``: the
    ``"objective"`` float(N), the ``"posterior"`` (probabilities float(N, K), or ``q``'s
    ``(mean, cov)``) or the ``"exact"`` (quadrature) ``log w`` float(N). A saturated ``q`` is
    optimised for each item of ``views`` (``saturation_steps``; 0: the use_theta ``q``)."""
    family = model.family

    def on_chunk(eta0, g, bank, eta_q):
        if model.saturated and what != "exact" and saturation_steps > 0:
            eta_q = objectives.saturated_q(family, eta0, g, bank, saturation_steps)
        if what == "objective":
            return objectives.per_item(family, eta0, g, bank, eta_q)
        if what == "exact":
            return objectives.quadrature_log_w(family, eta0, g, bank)
        return objectives.posterior(family, eta0, g, bank, eta_q)

    def evaluate(w: Weights, bank: Any, views: tuple) -> Any:
        eta0 = model.prior(w)
        eta_q = jax.tree.map(lambda leaf: leaf[None], model.q_natural(w, eta0, views))  # items on axis 1
        unwrap = lambda tree: jax.tree.map(lambda leaf: leaf[0], tree)
        return chunked(lambda c: on_chunk(eta0, c[0], bank, unwrap(c[1])), (model.increments(w.factors, views), eta_q))

    return evaluate
