"""Validation at the public boundary: each check names the argument and shows the value."""

from __future__ import annotations

import math
import numbers
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .adapters import describe, is_prng_key, typed_key

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
INT32_MAX = 2**31 - 1


def _inside_package(filename: str) -> bool:
    return os.path.abspath(filename).startswith(PACKAGE_DIR + os.sep)


def caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning raised by this function's caller point outside ``imnn``.

    Counts the frames from the caller of ``warnings.warn`` (level 1) up to the first
    one whose file is not in the ``imnn`` package: the user's line.
    """
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and _inside_package(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the user's line: the first caller outside ``imnn``."""
    warnings.warn(message, category, stacklevel=caller_stacklevel())


def _shape_of(value: Any) -> str:
    return str(tuple(np.shape(value))) if hasattr(value, "shape") else type(value).__name__


def one_of(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """``value`` lower-cased if it is one of the ``allowed`` strings, compared case-insensitively."""
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"`{name}` should be one of {allowed} (case-insensitive), but is {value!r}")
    return value.lower()


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
        raise TypeError(f"`{name}` should be a positive number, e.g. 0.1, but is {describe(value)}")
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


def vector(name: str, value: Any, length: int, counted_by: str = "n_params") -> jax.Array:
    """A finite float vector of shape ``(length,)`` (lists and tuples are accepted).

    ``counted_by`` names the argument that sets ``length``, for the error message.
    """
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` should be an array of {length} numbers but is {value!r}") from None
    if array.shape != (length,):
        raise ValueError(
            f"`{name}` should have shape ({counted_by},) = ({length},) but has {array.shape}: "
            f"change `{name}` or `{counted_by}`"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` (={value!r}) must be finite")
    return jnp.asarray(array, dtype=jnp.result_type(float))


def positive_vector(name: str, value: Any, length: int, counted_by: str = "n_params") -> jax.Array:
    """:func:`vector`, also requiring every entry ``> 0`` (e.g. finite-difference steps)."""
    array = vector(name, value, length, counted_by)
    if not bool((array > 0).all()):
        raise ValueError(f"`{name}` (={array.tolist()}) must be positive (every entry > 0)")
    return array


def array(name: str, value: Any, shape: tuple[int, ...], layout: str | None = None) -> Any:
    """``value`` itself, if it is a float array of exactly ``shape`` with only finite values.

    ``layout`` spells ``shape`` in argument names (``"(n_s, *input_shape)"``) for the message.
    It stays where the user put it (numpy or jax); executors decide where data lives.
    """
    expected = f"{layout} = {tuple(shape)}" if layout else str(tuple(shape))
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        raise TypeError(f"`{name}` should be an array of shape {expected} but is {describe(value)}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"`{name}` should have shape {expected} but has {tuple(value.shape)}")
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(
            f"`{name}` should be an array of floats but has dtype {value.dtype}: convert it, e.g. "
            f"`{name}.astype(np.float32)`"
        )
    bad = ~np.isfinite(np.asarray(value))
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"`{name}` contains {int(bad.sum())} non-finite values (NaN or inf), the first at index {first}: "
            "every value must be finite"
        )
    return value


def same_dtype(arrays: Sequence[tuple[str, Any]]) -> None:
    """Check that the named arrays share one dtype (as JAX will hold them: float64 is float32 without x64).

    Mixed precision (e.g. float16 ``fiducial`` with float32 ``derivative``) would otherwise fail
    deep inside the fit's ``jax.jvp``.
    """
    named = [(name, jax.dtypes.canonicalize_dtype(value.dtype)) for name, value in arrays if value is not None]
    for name, dtype in named[1:]:
        if dtype != named[0][1]:
            first, first_dtype = named[0]
            raise TypeError(
                f"`{name}` has dtype {dtype} but `{first}` has dtype {first_dtype}: give all simulations in "
                f"one floating-point precision, e.g. `{name}.astype({str(first_dtype)!r})`"
            )


def iteration_count(name: str, value: Any, minimum: int = 0) -> int:
    """``value`` as an ``int`` in ``[minimum, 2**31 - 1]`` (iteration counts are int32 in the fit loop)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _error(value, f"`{name}` (={value!r}) must be an integer ≥ {minimum}")
    if value < minimum:
        raise ValueError(f"`{name}` (={value!r}) must be an integer ≥ {minimum}")
    if value > INT32_MAX:
        raise ValueError(f"`{name}` (={value!r}) must be at most 2**31 - 1 = {INT32_MAX}")
    return int(value)


class Default(int):
    """An ``int`` default that a check can tell apart from the same number given by the user."""

    def __repr__(self) -> str:
        return int.__repr__(self)


def iteration_limits(patience: Any, min_iterations: Any, max_iterations: Any) -> tuple[int, int, int]:
    """Checked ``(patience, min_iterations, max_iterations)`` of a fit.

    ``patience ≥ 1``; a ``min_iterations`` given by the user must not exceed
    ``max_iterations``, while the :class:`Default` one is capped at it.
    """
    patience = iteration_count("patience", patience, minimum=1)
    max_iterations = iteration_count("max_iterations", max_iterations)
    if isinstance(min_iterations, Default):
        return patience, min(int(min_iterations), max_iterations), max_iterations
    min_iterations = iteration_count("min_iterations", min_iterations)
    if min_iterations > max_iterations:
        raise ValueError(
            f"`min_iterations` (={min_iterations}) must not exceed `max_iterations` (={max_iterations}): "
            "lower `min_iterations` or raise `max_iterations`"
        )
    return patience, min_iterations, max_iterations


def regularisation(λ: Any, ϵ: Any) -> tuple[float, float]:
    """``(λ, ϵ)`` as floats if both are positive and give a defined α (``ϵ(λ − 1) + ϵ²/(1 + ϵ) > 0``)."""
    λ, ϵ = positive_float("λ", λ), positive_float("ϵ", ϵ)
    if ϵ * (λ - 1) + ϵ**2 / (1 + ϵ) <= 0:
        raise ValueError(f"`λ` (={λ}) and `ϵ` (={ϵ}) give an undefined α: ϵ(λ − 1) + ϵ²/(1 + ϵ) must be > 0")
    return λ, ϵ


def one_or_batch(name: str, value: Any, shape: tuple[int, ...]) -> bool:
    """True if ``value`` is one item of ``shape``, False if a batch ``(n, *shape)``; else a ValueError."""
    given = tuple(np.shape(value))
    if given == tuple(shape):
        return True
    if len(given) == len(shape) + 1 and given[1:] == tuple(shape):
        return False
    raise ValueError(
        f"`{name}` should have shape {tuple(shape)} (one simulation) or (n,) + {tuple(shape)} (a batch) but has {given}"
    )


def boolean(name: str, value: Any) -> bool:
    """``value`` as a ``bool`` if it is ``True``/``False`` (numpy bools too; not strings or numbers)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` should be True or False but is {describe(value)}")
    return bool(value)


def dispatch(value: Any, available: tuple[str, ...]) -> str:
    """``value`` as ``"auto"`` or one of the dispatch modes ``available`` to this model."""
    if value != "auto" and value not in available:
        if value in ("loop", "step"):
            raise ValueError(
                f"`dispatch` (={value!r}) is not available here: this model reads its data from iterators and "
                "runs one iteration per dispatch; use 'auto' or 'step'"
            )
        raise ValueError(f"`dispatch` should be 'auto', 'loop' or 'step' but is {value!r}")
    return value


def n_per_device(value: Any, n_s: int, n_devices: int) -> int:
    """``value`` as an ``int`` from 1 up to ``ceil(n_s / n_devices)``, the largest batch the data can fill.

    A larger batch only pads every device with copies of earlier simulations.
    """
    value = positive_int("n_per_device", value)
    largest = math.ceil(n_s / n_devices)
    if value > largest:
        raise ValueError(
            f"`n_per_device` (={value}) is larger than `n_s` (={n_s}) simulations spread over {n_devices} "
            f"device(s) can fill: at most ceil(n_s / n_devices) = {largest} is useful (more only adds padding); "
            "lower `n_per_device`"
        )
    return value


def key(name: str, value: Any) -> jax.Array:
    """A PRNG key, new-style (``jax.random.key``) or old-style (``jax.random.PRNGKey``).

    Old-style keys — ``uint32[2]`` (threefry) or ``uint32[4]`` (rbg), as jax or numpy
    arrays — are wrapped as typed keys (same random numbers), so switching style
    between calls does not recompile.
    """
    if not is_prng_key(value):
        raise TypeError(
            f"`{name}` should be a PRNG key (jax.random.key(0), or jax.random.PRNGKey(0): uint32 of "
            f"shape (2,) or (4,)) but is {describe(value)}"
        )
    return typed_key(value)


def output_shape(
    name: str, fn: Any, args: tuple, expected: tuple[int, ...], what: str, fix: str = "", floats: bool = False
) -> None:
    """Check, without running it, that ``fn(*args)`` returns an array of shape ``expected``.

    Args:
        fix: what to change when the shape differs, appended to the message.
        floats: also require a floating-point dtype.
    """
    try:
        out = jax.eval_shape(fn, *args)
    except Exception as error:
        raise ValueError(f"`{name}` failed when applied to {what}: {error}") from error
    suffix = f": {fix}" if fix else ""
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(expected):
        raise ValueError(f"`{name}` should return shape {expected} for {what} but returns {_shape_of(out)}{suffix}")
    if floats and not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(
            f"`{name}` should return floats for {what} but returns dtype {out.dtype}: "
            f"convert its output, e.g. `.astype(jnp.float32)`"
        )


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
