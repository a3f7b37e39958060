"""Differentiation helpers with the reference ``imnn.utils`` semantics.

``value_and_jacrev`` and ``value_and_jacfwd`` return the function's value and
its Jacobian from one call, the value being computed once (it rides along as
auxiliary output of the Jacobian transformation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from .tfrecords import TFRecords

jacrev = jax.jacrev
jacfwd = jax.jacfwd

__all__ = ["TFRecords", "jacfwd", "jacrev", "value_and_jacfwd", "value_and_jacrev", "value_and_jvps"]


def _with_value_as_aux(fun: Callable, has_aux: bool) -> Callable:
    def fun_with_value(*args: Any, **kwargs: Any):
        out = fun(*args, **kwargs)
        value = out[0] if has_aux else out
        return value, out

    return fun_with_value


def _value_and_jacobian(transform: Callable, fun: Callable, has_aux: bool, **options: Any) -> Callable:
    jacobian_fun = transform(_with_value_as_aux(fun, has_aux), has_aux=True, **options)

    def value_and_jacobian(*args: Any, **kwargs: Any):
        jacobian, out = jacobian_fun(*args, **kwargs)
        return out, jacobian

    return value_and_jacobian


def value_and_jacrev(
    fun: Callable,
    argnums: int | Sequence[int] = 0,
    holomorphic: bool = False,
    allow_int: bool = False,
    has_aux: bool = False,
) -> Callable:
    """Like :func:`jax.jacrev`, but the returned function gives ``(value, jacobian)``.

    With ``has_aux=True`` it gives ``((value, aux), jacobian)``.
    """
    return _value_and_jacobian(jax.jacrev, fun, has_aux, argnums=argnums, holomorphic=holomorphic, allow_int=allow_int)


def value_and_jacfwd(
    fun: Callable,
    argnums: int | Sequence[int] = 0,
    holomorphic: bool = False,
    has_aux: bool = False,
) -> Callable:
    """Like :func:`jax.jacfwd`, but the returned function gives ``(value, jacobian)``.

    With ``has_aux=True`` it gives ``((value, aux), jacobian)``.
    """
    return _value_and_jacobian(jax.jacfwd, fun, has_aux, argnums=argnums, holomorphic=holomorphic)


def value_and_jvps(fun: Callable, primal: jax.Array, tangents: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``fun(primal)`` and its Jacobian-vector products along the columns of ``tangents``.

    The Jacobian itself is never formed: each column is one forward-mode pass,
    batched with ``vmap`` (the primal computation is shared, not repeated).

    Args:
        fun: maps an array shaped like ``primal`` to an array of shape ``out``.
        primal: float(*in).
        tangents: float(*in, k) — ``k`` directions, stacked on the last axis.

    Returns:
        ``(fun(primal), jvps)`` with ``jvps``: float(*out, k).
    """

    def jvp(tangent):
        return jax.jvp(fun, (primal,), (tangent,))

    values, jvps = jax.vmap(jvp, in_axes=-1, out_axes=(None, -1))(tangents)
    return values, jvps
