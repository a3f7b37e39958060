"""Simulate-and-compress in jitted batches, the distances between summaries, and sample containers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .. import _checks
from .priors import Prior

Summarise = Callable[[jax.Array, jax.Array], jax.Array]


class Simulations(NamedTuple):
    """What every simulation-based method needs: the targets' summaries and jitted draws.

    Attributes:
        target_summaries: float(n_targets, n_summaries).
        summarise: ``summarise(key, θ: float(n, n_params)) -> float(n, n_summaries)``, jitted
            (``None`` without a simulator: then only premade simulations can be used).
        sample_prior: ``sample_prior(key, n) -> float(n, n_params)``, jitted.
        batch_size: simulations per jitted call.
    """

    target_summaries: jax.Array
    summarise: Summarise | None
    sample_prior: Callable[[jax.Array, int], jax.Array]
    batch_size: int


def simulations(
    target_data: Any, prior: Prior, simulator: Callable | None, compressor: Callable, batch_size: int
) -> Simulations:
    """Check the user's functions and compile the simulate-and-compress step (``simulator`` may be None)."""
    for name, fn in (("simulator", simulator), ("compressor", compressor)):
        if not callable(fn) and not (name == "simulator" and fn is None):
            raise TypeError(f"`{name}` should be a function but is {type(fn).__name__}")
    return Simulations(
        compress_targets(compressor, target_data),
        None if simulator is None else jax.jit(lambda key, θ: jnp.asarray(compressor(simulator(key, θ)))),
        jax.jit(prior.sample, static_argnums=1),
        _checks.positive_int("batch_size", batch_size),
    )


def from_prior(setup: Simulations, rng: jax.Array, n_samples: int) -> tuple[jax.Array, jax.Array]:
    """``n_samples`` prior draws float(n_samples, n_params) and their summaries float(n_samples, n_summaries)."""
    if setup.summarise is None:
        raise ValueError(
            "there is no `simulator` (simulator=None), so nothing can be simulated: pass premade `parameters` "
            "float(n, n_params) and their compressed `summaries` float(n, n_summaries) instead"
        )
    n_samples = _checks.positive_int("n_samples", n_samples)
    prior_key, simulation_key = jax.random.split(_checks.key("rng", rng))
    θ = setup.sample_prior(prior_key, n_samples)
    return θ, in_batches(setup.summarise, simulation_key, θ, min(n_samples, setup.batch_size), desc="simulating")


class container:
    """Samples of one kind (parameters, summaries or distances) and their accepted subsets.

    Attributes:
        all: every sample: float(n, n_params) / float(n, n_summaries) for parameters and
            summaries; float(n_targets, n) for distances (PMC: a leading n_targets axis on all).
        accepted: list, per target, of the accepted samples.
        rejected: list, per target, of the rejected samples (``None`` for PMC).
        n_accepted: list of the number accepted per target.
        weights: PMC only: list, per target, of float(n_points) importance weights summing to one.
        ϵ: float(n_targets) — the acceptance distance of ``accepted`` per target.
        size: number of samples in ``all``.
    """

    def __init__(self) -> None:
        self.all = self.accepted = self.rejected = self.n_accepted = self.weights = self.ϵ = None
        self.size = 0

    def __repr__(self) -> str:
        return f"container(size={self.size}, n_accepted={self.n_accepted})"


def in_batches(summarise: Summarise, key: jax.Array, θ: jax.Array, batch_size: int, desc: str) -> jax.Array:
    """Summaries float(n, n_summaries) of simulations at each row of ``θ`` float(n, n_params).

    Every call of ``summarise`` has ``batch_size`` rows (the last batch is padded by repeating
    rows), so one compilation serves any ``n``; a progress bar appears for more than one batch.
    """
    n = θ.shape[0]
    n_batches = -(-n // batch_size)
    padded = jnp.concatenate([θ, jnp.broadcast_to(θ[-1:], (n_batches * batch_size - n, θ.shape[1]))])
    keys = jax.random.split(key, n_batches)
    pieces = []
    for i in tqdm(range(n_batches), desc=desc, disable=n_batches == 1, leave=False):
        pieces.append(summarise(keys[i], padded[i * batch_size : (i + 1) * batch_size]))
    summaries = jnp.concatenate(pieces)[:n]
    if summaries.ndim != 2 or summaries.shape[0] != n:
        raise ValueError(
            f"`compressor(simulator(key, θ))` should return float(n, n_summaries) for θ of shape (n, n_params) "
            f"but returned shape {summaries.shape[:1] + summaries.shape[1:]}"
        )
    return summaries


def compress_targets(compressor: Callable, target_data: Any) -> jax.Array:
    """Summaries float(n_targets, n_summaries) of the target data (one simulation or a batch)."""
    summaries = jnp.asarray(compressor(jnp.asarray(target_data)))
    summaries = summaries[None] if summaries.ndim == 1 else summaries
    if summaries.ndim != 2:
        raise ValueError(
            "`compressor(target_data)` should return float(n_summaries) for one simulation or "
            f"float(n_targets, n_summaries) for a batch but returned shape {summaries.shape}"
        )
    if not bool(jnp.all(jnp.isfinite(summaries))):
        raise ValueError("the summaries of `target_data` contain non-finite values")
    return summaries


def F_distance(summaries: jax.Array, target: jax.Array, F: jax.Array) -> jax.Array:
    """Fisher-weighted distance √((x − x_t)ᵀ F (x − x_t)): float(n) for summaries float(n, n_params)."""
    difference = summaries - target
    return jnp.sqrt(jnp.einsum("ni,ij,nj->n", difference, F, difference))


def euclidean_distance(summaries: jax.Array, target: jax.Array, F: Any = None) -> jax.Array:
    """Euclidean distance ``|x − x_t|``: float(n) for summaries float(n, n_summaries)."""
    return jnp.sqrt(jnp.sum((summaries - target) ** 2, axis=-1))


def distances_to_targets(distance: Callable, summaries: jax.Array, targets: jax.Array, F: jax.Array) -> np.ndarray:
    """float(n_targets, n): the distance of every summary float(n, n_summaries) to every target."""
    return np.stack([np.asarray(distance(summaries, target, f)) for target, f in zip(targets, F)])
