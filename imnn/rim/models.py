"""RIM networks: ``model(x, y, score, h) -> (dx, h_new)`` for ONE instance.

A RIM network exposes ``channels`` (the last axis of ``x``) and
``initialize_hidden_states(dimensions)`` (its zero memory for one instance);
:func:`as_network` turns it into two pure functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from .. import _checks
from ..adapters import _is_instance_of

ACTIVATIONS = {"tanh": jnp.tanh, "relu": nn.relu, "elu": nn.elu, "swish": nn.swish, "silu": nn.silu,
               "sigmoid": nn.sigmoid}  # fmt: skip


def activation(name: str) -> Callable:
    """The activation called ``name`` (case-insensitive), one of ``ACTIVATIONS``."""
    return ACTIVATIONS[_checks.one_of("activation", name, tuple(ACTIVATIONS))]


def hyperparameters(model: nn.Module) -> dict[str, Any]:
    """``{"architecture": class name, field: value, ...}``: what rebuilds a built-in network."""
    values = {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in ("parent", "name")}
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    return {"architecture": type(model).__name__, **plain}


class MLP(nn.Module):
    """A RIM network for vector problems (``dimensions=()``): dense → GRU → dense.

    Per instance ``x`` and ``score`` are float(channels); the input layer sees
    ``[x, score]`` (and the flattened ``y`` with ``condition_on_observation``), a GRU
    cell of ``hidden_units`` updates all of its state, and a linear layer reads the
    update ``dx`` out of it.

    Attributes:
        channels: size of ``x``.
        hidden_units: width of the input layer and of the GRU state.
        activation: of the input layer (``"tanh"``, ``"relu"``, ``"elu"``, ``"swish"``, ``"sigmoid"``).
        condition_on_observation: also feed ``y`` to the input layer.
    """

    channels: int
    hidden_units: int = 64
    activation: str = "tanh"
    condition_on_observation: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, score: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        inputs = [x, score] + ([jnp.ravel(y)] if self.condition_on_observation else [])
        e = activation(self.activation)(nn.Dense(self.hidden_units)(jnp.concatenate(inputs)))
        h, _ = nn.GRUCell(self.hidden_units)(h, e)
        return nn.Dense(self.channels)(h), h

    def initialize_hidden_states(self, dimensions: tuple[int, ...]) -> jax.Array:
        """float(hidden_units) zeros (``dimensions`` must be ``()``)."""
        if tuple(dimensions) != ():
            raise ValueError(f"MLP is for vector problems, `dimensions=()`, but `dimensions` is {dimensions}")
        return jnp.zeros(self.hidden_units)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return hyperparameters(self)


class Network(NamedTuple):
    """A RIM network as pure functions of one instance."""

    init: Callable[..., Any]  # (key, x, y, score, h) -> params
    apply: Callable[..., tuple[jax.Array, Any]]  # (params, x, y, score, h) -> (dx, h_new)
    channels: int
    hidden: Callable[[tuple[int, ...]], Any]  # dimensions -> h0


def as_network(model: Any) -> Network:
    """Wrap a RIM network: a ``flax.linen`` or ``flax.nnx`` module with ``channels`` and
    ``initialize_hidden_states``, or a stax-style 4-tuple ``(init_fn, apply_fn, channels,
    initialize_hidden_states)`` with ``init_fn(key, (x_shape, y_shape, score_shape, h_shape)) ->
    (output_shapes, params)`` and ``apply_fn(params, (x, y, score, h)) -> (dx, h_new)``."""
    if isinstance(model, (tuple, list)):
        if len(model) != 4 or not (callable(model[0]) and callable(model[1]) and callable(model[3])):
            raise TypeError(
                "a stax-style `model` should be (init_fn, apply_fn, channels, initialize_hidden_states), "
                f"but is a {type(model).__name__} of {len(model)} items"
            )
        init_fn, apply_fn, channels, hidden = model
        return Network(
            init=lambda key, *inputs: init_fn(key, tuple(jnp.shape(a) for a in inputs))[1],
            apply=lambda params, *inputs: apply_fn(params, inputs),
            channels=_checks.positive_int("model's channels", channels),
            hidden=hidden,
        )
    is_linen, is_nnx = _is_instance_of(model, "flax.linen", "Module"), _is_instance_of(model, "flax.nnx", "Module")
    if not (is_linen or is_nnx):
        raise TypeError(
            "`model` should be a flax.linen or flax.nnx Module such as imnn.rim.MLP, or a stax-style "
            f"(init_fn, apply_fn, channels, initialize_hidden_states), but is {type(model).__name__}"
        )
    for attribute in ("channels", "initialize_hidden_states"):
        if not hasattr(model, attribute):
            raise TypeError(f"`model` ({type(model).__name__}) should have a `{attribute}` attribute")
    channels = _checks.positive_int("model's channels", model.channels)
    if is_linen:
        return Network(init=model.init, apply=model.apply, channels=channels, hidden=model.initialize_hidden_states)
    from flax import nnx

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return Network(
        init=lambda key, *inputs: params,  # an nnx module holds its initial weights already
        apply=lambda p, *inputs: nnx.merge(graphdef, p, rest)(*inputs),
        channels=channels,
        hidden=model.initialize_hidden_states,
    )
