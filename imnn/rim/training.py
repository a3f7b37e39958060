"""The RIM's training maths as pure functions: the batched forward pass, the loss, the batches
drawn per step and the optimiser. :class:`imnn.rim.RIM` hands them to the fit engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .. import _checks
from ..adapters import Optimiser, as_optimiser, describe
from . import core
from .models import Network


class RIMMetrics(NamedTuple):
    """What the fit engine records per iteration: the training (or validation) loss."""

    loss: jax.Array


def instance_forward(
    network: Network,
    config: core.Config,
    score: Callable,
    x_shape: tuple[int, ...],
    dimensions: tuple[int, ...],
    inverse_link: Callable,
    approximate_inverse: Callable | None,
) -> Callable:
    """``forward(params, y, *args) -> float(T[+1], *x_shape)``: one instance's model-space iterates."""

    def forward(params, y, *args):
        h0 = network.hidden(dimensions)

        def step(z, y, score, h):
            return network.apply(params, z, y, score, h)

        zeros = jnp.zeros(x_shape)
        if config.initialization == "model":  # one network pass from nothing gives z₀, which is an iterate
            z0, h0 = step(zeros, y, zeros, h0)
            return jnp.concatenate([z0[None], core.iterate(config, step, score, z0, h0, y, args)])
        z0 = zeros if config.initialization == "zeros" else inverse_link(approximate_inverse(y, *args))
        return core.iterate(config, step, score, z0, h0, y, args)

    return forward


def batched(forward: Callable) -> Callable:
    """``forward(params, y, args)`` over a leading batch axis of ``y`` and of every one of ``args``."""
    return lambda params, y, args: jax.vmap(lambda y, a: forward(params, y, *a))(y, args)


def batch_loss(forward: Callable, inverse_link: Callable) -> Callable:
    """``loss(params, (y, x, args), weights)``: the batch mean of ``Σₜ wₜ‖zₜ − ψ⁻¹(x)‖²``."""
    run = batched(forward)

    def loss(params, batch, weights):
        y, x, args = batch
        zs = run(params, y, args)
        return jnp.mean(jax.vmap(core.loss, (0, 0, None))(zs, jax.vmap(inverse_link)(x), weights))

    return loss


class Averaged(NamedTuple):
    """The weights of a fit with an exponential moving average: the optimiser's and their average.
    Validation, the best weights and the weights kept after the fit are the average's."""

    params: Any
    average: Any


def used(w: Any) -> Any:
    """The weights a prediction uses: the average of :class:`Averaged` weights, else ``w``."""
    return w.average if isinstance(w, Averaged) else w


def averaged(optimiser: Optimiser, decay: float) -> Optimiser:
    """``optimiser`` on :class:`Averaged` weights, updating the average after each step with
    ``min(decay, (1 + n) / (10 + n))`` at update ``n`` (torch_ema's warm-up), from the initial weights."""

    def update(grads, opt_state, w, count):
        params, opt_state = optimiser.update(grads, opt_state, w.params, count)
        rate = jnp.minimum(decay, (1.0 + count) / (10.0 + count))
        average = jax.tree.map(lambda a, p: rate * a + (1 - rate) * p, w.average, params)
        return Averaged(params, average), opt_state

    return Optimiser(init=lambda w: optimiser.init(w.params), update=update)


def draw(data: Any, key: jax.Array, batch_size: int, simulator: Callable | None, sharding: Any = None) -> tuple:
    """One training batch ``(y, x, args)``: ``batch_size`` fresh simulations from ``simulator(key)``,
    or as many distinct instances of ``data = (y, x, args)``; split over ``sharding``'s devices."""

    def spread(tree):
        return tree if sharding is None else jax.lax.with_sharding_constraint(tree, sharding)

    if simulator is not None:
        y, x, *args = jax.vmap(simulator)(spread(jax.random.split(key, batch_size)))
        return spread((y, x, tuple(args)))
    index = jax.random.choice(key, data[0].shape[0], (batch_size,), replace=False)
    return spread(jax.tree.map(lambda a: a[index], data))


def loss_and_grad(loss: Callable, draw_batch: Callable | None) -> Callable:
    """The engine's ``loss_and_grad(w, data, key, weights)`` on the batch ``draw_batch(data, key)``
    (``None``: ``data`` is the batch), differentiated in the optimiser's weights only."""

    def loss_and_metrics(params, data, key, weights):
        value = loss(params, data if draw_batch is None else draw_batch(data, key), weights)
        return value, RIMMetrics(value)

    gradient = jax.value_and_grad(loss_and_metrics, has_aux=True)
    return lambda w, data, key, weights: gradient(w.params if isinstance(w, Averaged) else w, data, key, weights)


def optimiser(
    learning_rate: float, warmup: int, clip: float, scheduler: Callable | None
) -> optax.GradientTransformation:
    """Adam at ``scheduler(step)`` (default ``learning_rate``), ramped linearly from 0 over ``warmup``
    steps, after clipping the gradients' global norm to ``clip`` when it is positive."""
    schedule = scheduler if scheduler is not None else optax.constant_schedule(learning_rate)
    if warmup > 0:
        base = schedule
        schedule = lambda step: base(step) * jnp.minimum(step / warmup, 1.0)
    adam = optax.adam(schedule)
    return optax.chain(optax.clip_by_global_norm(clip), adam) if clip > 0 else adam


def fit_optimiser(
    learning_rate: float, warmup: int, clip: float, scheduler: Callable | None,
    optimizer: optax.GradientTransformation | None, ema_decay: float,
) -> tuple[dict[str, Any], Callable[[], Optimiser]]:  # fmt: skip
    """``(description, make)``: the fit's optimiser described in plain values (saved with its state,
    compared on resume) and a function building it for the engine, averaging with ``ema_decay`` > 0."""
    if optimizer is None:
        learning_rate = _checks.positive_float("learning_rate", learning_rate)
        warmup = _checks.non_negative_int("warmup", warmup)
        if isinstance(clip, bool) or not (isinstance(clip, (int, float)) and clip >= 0):
            raise ValueError(f"`clip` should be a number ≥ 0 (0: no clipping), but is {clip!r}")
        description = {"optimizer": "adam", "learning_rate": learning_rate, "warmup": warmup, "clip": float(clip),
                       "scheduler": scheduler is not None}  # fmt: skip
        transformation = optimiser(learning_rate, warmup, float(clip), scheduler)
    elif isinstance(optimizer, optax.GradientTransformation):
        description, transformation = {"optimizer": "user"}, optimizer
    else:
        raise TypeError(f"`optimizer` should be an optax.GradientTransformation, but is {describe(optimizer)}")
    description["ema_decay"] = float(ema_decay)

    def make() -> Optimiser:
        wrapped = as_optimiser(transformation)
        return averaged(wrapped, float(ema_decay)) if ema_decay > 0 else wrapped

    return description, make
