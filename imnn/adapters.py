"""Adapters that give every supported network and optimiser one small interface.

A network becomes a :class:`Network` — ``init(key) -> params`` and
``apply(params, d) -> x`` for ONE simulation ``d`` of ``input_shape``; an
optimiser becomes an :class:`Optimiser` — ``init(params) -> opt_state`` and
``update(grads, opt_state, params, count) -> (params, opt_state)``.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.example_libraries.optimizers import OptimizerState

from . import hybrid


class Network(NamedTuple):
    """A network applied to one simulation: ``apply(params, d: float(*input_shape)) -> float(n_summaries)``."""

    init: Callable[[jax.Array], Any]
    apply: Callable[[Any, jax.Array], jax.Array]


class Optimiser(NamedTuple):
    """An optimiser as two pure functions over ``(params, opt_state)``."""

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any, jax.Array], tuple[Any, Any]]


class OptimiserState(NamedTuple):
    """Everything needed to resume optimisation: pass it as ``key_or_state``.

    Attributes:
        params: network weights the optimiser last produced.
        opt_state: the optimiser's own state.
        count: number of optimiser updates applied so far (int32 scalar).
    """

    params: Any
    opt_state: Any
    count: jax.Array


def _is_instance_of(obj: Any, module: str, qualname: str) -> bool:
    """``isinstance`` against an optional library's class, without importing it."""
    if module not in sys.modules:
        return False
    cls = sys.modules[module]
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            return False
    return isinstance(obj, cls)


def as_network(model: Any, input_shape: tuple[int, ...]) -> Network:
    """Wrap a stax ``(init_fn, apply_fn)`` pair, a ``flax.linen``/``flax.nnx`` or an ``equinox`` module,
    or a :class:`imnn.hybrid.Hybrid` of a fixed statistic and one of those."""
    if isinstance(model, hybrid.Hybrid):
        network = as_network(model.network, input_shape)
        return Network(init=network.init, apply=hybrid.apply(model.fixed, network.apply))
    if _is_instance_of(model, "flax.linen", "Module"):
        return Network(
            init=lambda key: model.init(key, jnp.zeros(input_shape)),
            apply=model.apply,
        )
    if _is_instance_of(model, "flax.nnx", "Module"):
        from flax import nnx

        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        return Network(
            init=lambda key: params,
            apply=lambda p, d: nnx.merge(graphdef, p, rest)(d),
        )
    if _is_instance_of(model, "equinox", "Module"):
        import equinox as eqx

        params, static = eqx.partition(model, eqx.is_inexact_array)
        return Network(init=lambda key: params, apply=lambda p, d: eqx.combine(p, static)(d))
    if isinstance(model, (tuple, list)) and len(model) == 2 and all(map(callable, model)):
        init_fn, apply_fn = model
        return Network(init=lambda key: init_fn(key, input_shape)[1], apply=apply_fn)
    raise TypeError(
        "`model` should be a stax-like (init_fn, apply_fn) pair, a flax.linen or flax.nnx "
        f"Module, or an equinox Module, but is {type(model).__name__}"
    )


def as_optimiser(optimiser: Any) -> Optimiser:
    """Wrap an ``optax.GradientTransformation`` or a ``jax.example_libraries.optimizers`` triple."""
    if isinstance(optimiser, optax.GradientTransformation):

        def update(grads, opt_state, params, count):
            updates, opt_state = optimiser.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        return Optimiser(init=optimiser.init, update=update)
    if isinstance(optimiser, (tuple, list)) and len(optimiser) == 3 and all(map(callable, optimiser)):
        init_fn, update_fn, get_params = optimiser

        def update(grads, opt_state, params, count):
            opt_state = update_fn(count, grads, opt_state)
            return get_params(opt_state), opt_state

        return Optimiser(init=init_fn, update=update)
    raise TypeError(
        "`optimiser` should be an optax.GradientTransformation or an (init, update, get_params) "
        f"triple from jax.example_libraries.optimizers, but is {type(optimiser).__name__}"
    )


def describe(value: Any) -> str:
    """A short description of ``value`` for error messages: ``float32 array of shape (2, 3)``, ``0``, ``'key'``."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{value.dtype} array of shape {tuple(value.shape)}"
    if isinstance(value, (numbers.Number, str, type(None))):
        return repr(value)
    return type(value).__name__


# Raw key data of the built-in implementations: jax.random.PRNGKey(0) under each default impl.
KEY_DATA_SHAPES = {"threefry2x32": (2,), "rbg": (4,), "unsafe_rbg": (4,)}
IMPL_FOR_SHAPE = {(2,): "threefry2x32", (4,): "rbg"}


def is_prng_key(value: Any) -> bool:
    """True for a new-style typed key or raw key data: ``uint32[2]`` (threefry) or ``uint32[4]`` (rbg).

    Raw key data may be a jax or a numpy array (e.g. ``np.asarray(jax.random.PRNGKey(0))``).
    """
    if not isinstance(value, (jax.Array, np.ndarray)):
        return False
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        return value.shape == ()
    return value.dtype == np.uint32 and tuple(value.shape) in IMPL_FOR_SHAPE


def typed_key(value: Any) -> jax.Array:
    """A typed key from a key accepted by :func:`is_prng_key` (same random numbers).

    Raw key data is wrapped with the default implementation when its shape fits it
    (``jax_default_prng_impl``), else with the implementation its shape implies:
    ``(2,)`` → ``threefry2x32``, ``(4,)`` → ``rbg``.
    """
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        return value
    shape = tuple(value.shape)
    default = jax.config.jax_default_prng_impl
    impl = default if KEY_DATA_SHAPES.get(default) == shape else IMPL_FOR_SHAPE[shape]
    return jax.random.wrap_key_data(jnp.asarray(value), impl=impl)


def initial_state(network: Network, optimiser: Any, wrapped: Optimiser, key_or_state: Any) -> OptimiserState:
    """The starting :class:`OptimiserState` from a PRNG key or a previous state.

    A ``jax.example_libraries`` ``OptimizerState`` (what the reference IMNN
    exposed as ``state``) is accepted when ``optimiser`` is such a triple.
    """
    if isinstance(key_or_state, OptimiserState):
        return key_or_state
    if isinstance(key_or_state, OptimizerState) and not isinstance(optimiser, optax.GradientTransformation):
        return OptimiserState(optimiser[2](key_or_state), key_or_state, jnp.zeros((), jnp.int32))
    if is_prng_key(key_or_state):
        params = network.init(typed_key(key_or_state))
        return OptimiserState(params, wrapped.init(params), jnp.zeros((), jnp.int32))
    raise TypeError(
        "`key_or_state` should be a PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)) or a "
        f"previous `state` of an IMNN, but is {describe(key_or_state)}"
    )
