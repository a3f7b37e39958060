"""Priors for likelihood-free inference: numpyro distributions or anything with ``sample`` and ``log_prob``.

:func:`as_prior` turns what the user passed into a :class:`Prior` — the number of
parameters, finite plotting bounds and two pure functions — so the inference code
never needs to know which library the distribution came from.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Prior(NamedTuple):
    """A prior reduced to what the inference needs.

    Attributes:
        n_params: number of parameters.
        low, high: float(n_params) — finite bounds of the parameter grid.
        sample: ``sample(key, n) -> float(n, n_params)``.
        log_prob: ``log_prob(θ: float(n, n_params)) -> float(n)``; ``-inf`` outside the support.
        distribution: what the user passed.
    """

    n_params: int
    low: np.ndarray
    high: np.ndarray
    sample: Callable[[jax.Array, int], jax.Array]
    log_prob: Callable[[jax.Array], jax.Array]
    distribution: Any


def as_prior(prior: Any, ranges: Sequence[Sequence[float]] | None = None) -> Prior:
    """Wrap ``prior`` (e.g. ``numpyro.distributions.Uniform(low, high).to_event(1)``).

    Args:
        prior: an object with ``sample`` and ``log_prob``: numpyro's ``sample(key, sample_shape)``
            or TensorFlow-Probability's ``sample(sample_shape, seed=key)``.
        ranges: ``[(low, high), …]`` per parameter for the grid; default: the prior's own
            ``low``/``high``, found through ``Independent``/``to_event``/``expand`` wrappers
            and interval supports.

    Raises:
        TypeError: ``prior`` lacks ``sample`` or ``log_prob``.
        ValueError: no finite bounds anywhere (pass ``ranges``), or bad ``ranges``.
    """
    for method in ("sample", "log_prob"):
        if not callable(getattr(prior, method, None)):
            raise TypeError(
                f"`prior` should have a `{method}` method (e.g. numpyro.distributions.Uniform(low, high)"
                f".to_event(1)) but {type(prior).__name__} has none"
            )
    bounds = _checked_ranges(ranges) if ranges is not None else support_bounds(prior)
    n_params = _event_size(prior)
    if bounds is None:
        raise ValueError(
            f"`prior` ({type(prior).__name__}) has no finite `low`/`high` bounds for the parameter grid: "
            "pass `ranges=[(low, high), …]` with one pair per parameter"
        )
    low, high = bounds
    if n_params is None:
        n_params = low.shape[0]
    if ranges is not None and low.shape[0] != n_params:
        raise ValueError(f"`ranges` should have one (low, high) pair per parameter ({n_params}) but has {low.shape[0]}")
    low, high = np.broadcast_to(low, (n_params,)).copy(), np.broadcast_to(high, (n_params,)).copy()
    return Prior(n_params, low, high, _sampler(prior, n_params), _log_prob(prior), prior)


def _checked_ranges(ranges: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        pairs = np.asarray(ranges, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"`ranges` should be [(low, high), …] per parameter but is {ranges!r}") from None
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(
            f"`ranges` should have shape (n_params, 2) — (low, high) per parameter — but has {pairs.shape}"
        )
    if not np.all(np.isfinite(pairs)) or np.any(pairs[:, 0] >= pairs[:, 1]):
        raise ValueError(f"`ranges` (={pairs.tolist()}) must be finite with low < high for every parameter")
    return pairs[:, 0], pairs[:, 1]


def _event_size(prior: Any) -> int | None:
    shape = getattr(prior, "event_shape", None)
    if shape is None:
        return None
    shape = tuple(shape)
    if len(shape) != 1:
        raise ValueError(
            f"`prior` should have a vector event shape (n_params,) but has {shape}; "
            "for independent parameters use `.to_event(1)`"
        )
    return int(shape[0])


def support_bounds(distribution: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Finite ``low``/``high`` of ``distribution`` or of the distributions it wraps."""
    seen = 0
    while distribution is not None and seen < 16:
        for low_name, high_name, owner in (
            ("low", "high", distribution),
            ("lower_bound", "upper_bound", _base_constraint(getattr(distribution, "support", None))),
        ):
            low, high = getattr(owner, low_name, None), getattr(owner, high_name, None)
            if low is not None and high is not None:
                low, high = np.atleast_1d(np.asarray(low, float)), np.atleast_1d(np.asarray(high, float))
                if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
                    return low, high
        distribution, seen = getattr(distribution, "base_dist", None), seen + 1
    return None


def _base_constraint(constraint: Any) -> Any:
    while hasattr(constraint, "base_constraint"):
        constraint = constraint.base_constraint
    return constraint


def _sampler(prior: Any, n_params: int) -> Callable[[jax.Array, int], jax.Array]:
    tfp_style = "seed" in inspect.signature(prior.sample).parameters

    def sample(key: jax.Array, n: int) -> jax.Array:
        θ = prior.sample((n,), seed=key) if tfp_style else prior.sample(key, (n,))
        return jnp.reshape(θ, (n, n_params))

    return sample


def _log_prob(prior: Any) -> Callable[[jax.Array], jax.Array]:
    def log_prob(θ: jax.Array) -> jax.Array:
        value = jnp.asarray(prior.log_prob(θ))
        return jnp.where(jnp.isnan(value), -jnp.inf, value)

    return log_prob
