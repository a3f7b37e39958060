"""The RIM's training maths as pure functions: the batched forward pass, the loss, the batches
drawn per step and the optimiser. :class:`imnn.rim.RIM` hands them to the fit engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import core
from .models import Network


class RIMMetrics(NamedTuple):
    """What the fit engine records per iteration: the training (or validation) loss."""

    loss: jax.Array


def instance_forward(
    network: Network, config: core.Config, score: Callable, x_shape: tuple[int, ...], dimensions: tuple[int, ...],
    inverse_link: Callable, approximate_inverse: Callable | None,
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


def training_loss_and_grad(loss: Callable, batch_size: int, simulator: Callable | None) -> Callable:
    """The engine's ``loss_and_grad(params, data, key, weights)``: a batch of fresh simulations from
    ``simulator(key)``, or ``batch_size`` distinct instances of ``data = (y, x, args)`` drawn by ``key``."""

    def draw(data, key):
        if simulator is not None:
            y, x, *args = jax.vmap(simulator)(jax.random.split(key, batch_size))
            return y, x, tuple(args)
        n = data[0].shape[0]
        index = jax.random.choice(key, n, (batch_size,), replace=False)
        return jax.tree.map(lambda a: a[index], data)

    def loss_and_metrics(params, data, key, weights):
        value = loss(params, draw(data, key), weights)
        return value, RIMMetrics(value)

    return jax.value_and_grad(loss_and_metrics, has_aux=True)


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
