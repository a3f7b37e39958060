"""Validation at the public boundary: each check names the argument and shows the value."""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .adapters import is_prng_key


def _shape_of(value: Any) -> str:
    return str(tuple(np.shape(value))) if hasattr(value, "shape") else type(value).__name__


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is a positive integer (bools are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise _error(value, f"`{name}` (={value!r}) must be a positive integer")
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is an integer ``≥ 0``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise _error(value, f"`{name}` (={value!r}) must be a non-negative integer")
    return int(value)


def positive_float(name: str, value: Any) -> float:
    """``value`` as a ``float`` if it is a finite real number ``> 0``."""
    if isinstance(value, bool) or (not isinstance(value, numbers.Real) and not _is_scalar_array(value)):
        raise TypeError(f"`{name}` should be a positive number but is {type(value).__name__}")
    number = float(value)
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"`{name}` (={number!r}) must be a finite number > 0")
    return number


def _is_scalar_array(value: Any) -> bool:
    return hasattr(value, "shape") and np.shape(value) == () and np.issubdtype(np.asarray(value).dtype, np.number)


def _error(value: Any, message: str) -> Exception:
    is_number = isinstance(value, numbers.Number) and not isinstance(value, bool)
    return ValueError(message) if is_number else TypeError(message)


def input_shape(value: Any) -> tuple[int, ...]:
    """The simulation shape as a tuple of positive ints."""
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in value
    ):
        raise TypeError(f"`input_shape` should be a tuple of positive integers, e.g. (10,), but is {value!r}")
    return tuple(int(n) for n in value)


def vector(name: str, value: Any, length: int) -> jax.Array:
    """A finite float vector of shape ``(length,)`` (lists and tuples are accepted)."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` should be an array of {length} numbers but is {value!r}") from None
    if array.shape != (length,):
        raise ValueError(f"`{name}` should have shape ({length},) but has {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` (={value!r}) must be finite")
    return jnp.asarray(array, dtype=jnp.result_type(float))


def positive_vector(name: str, value: Any, length: int) -> jax.Array:
    """:func:`vector`, also requiring every entry ``> 0`` (e.g. finite-difference steps)."""
    array = vector(name, value, length)
    if not bool((array > 0).all()):
        raise ValueError(f"`{name}` (={array.tolist()}) must be positive")
    return array


def array(name: str, value: Any, shape: tuple[int, ...]) -> Any:
    """``value`` itself, if it is a float array of exactly ``shape`` with only finite values.

    It stays where the user put it (numpy or jax); executors decide where data lives.
    """
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        raise TypeError(f"`{name}` should be an array of shape {shape} but is {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"`{name}` should have shape {shape} but has {tuple(value.shape)}")
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"`{name}` should be an array of floats but has dtype {value.dtype}")
    n_bad = int(np.size(value) - np.count_nonzero(np.isfinite(np.asarray(value))))
    if n_bad:
        raise ValueError(f"`{name}` contains {n_bad} non-finite values (NaN or inf)")
    return value


def key(name: str, value: Any) -> jax.Array:
    """A PRNG key, new-style (``jax.random.key``) or old-style (``jax.random.PRNGKey``).

    Old-style keys are wrapped as typed keys (same random numbers), so switching
    style between calls does not recompile.
    """
    if not is_prng_key(value):
        raise TypeError(
            f"`{name}` should be a PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)) "
            f"but is {type(value).__name__} {_shape_of(value)}"
        )
    return value if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(value)


def output_shape(name: str, fn: Any, args: tuple, expected: tuple[int, ...], what: str) -> None:
    """Check, without running it, that ``fn(*args)`` returns an array of shape ``expected``."""
    try:
        out = jax.eval_shape(fn, *args)
    except Exception as error:
        raise ValueError(f"`{name}` failed when applied to {what}: {error}") from error
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(expected):
        raise ValueError(f"`{name}` should return shape {expected} for {what} but returns {_shape_of(out)}")


def matrices_per_target(name: str, value: Any, n_targets: int, n_params: int) -> np.ndarray:
    """A (n_params, n_params) matrix, a list of them or float(n_targets, n_params, n_params) → the stacked form."""
    matrices = np.asarray(np.stack(value) if isinstance(value, (list, tuple)) else value, dtype=float)
    if matrices.shape == (n_params, n_params):
        matrices = np.broadcast_to(matrices, (n_targets, n_params, n_params))
    if matrices.shape != (n_targets, n_params, n_params):
        raise ValueError(
            f"`{name}` should have shape ({n_params}, {n_params}) or ({n_targets}, {n_params}, {n_params}) "
            f"(one per target) but has {matrices.shape}"
        )
    if not np.all(np.isfinite(matrices)):
        raise ValueError(f"`{name}` contains non-finite values")
    if not np.allclose(matrices, np.swapaxes(matrices, -1, -2), rtol=1e-5, atol=1e-8) or np.any(
        np.linalg.eigvalsh(matrices) <= 0
    ):
        raise ValueError(f"`{name}` must be symmetric positive definite")
    return matrices
