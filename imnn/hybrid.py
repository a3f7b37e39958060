"""Hybrid summaries: a fixed statistic, and a network that learns only what it misses.

``Hybrid(fixed, network)`` is a model like any other: its summaries of one simulation
are ``[fixed(d), network(d)]``. ``fixed`` is never trained, so fitting an IMNN with it
maximises the information of the union, and the network's best contribution is what
``fixed`` lacks. :func:`information` (and ``model.hybrid_information()``) report ``|F|`` of
the fixed statistic alone, of the network alone and of the union, each with its bootstrap
interval; :func:`imnn.plotting.plot_hybrid_information` draws them side by side.

The IMNN's regulariser pulls the covariance of all the summaries towards the identity, which
it cannot do for a fixed statistic of another scale: give ``fixed`` through :func:`whiten`
first (an invertible linear map of the statistic, so no Fisher figure changes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg

from . import fisher


class Hybrid(NamedTuple):
    """A model whose summaries are ``[fixed(d), network(d)]``, float(n_fixed + n_network).

    Attributes:
        fixed: ``fixed(d: float(*input_shape)) -> float(n_fixed)`` — a statistic that is not
            trained (e.g. a binned power spectrum); JAX-differentiable for the simulator and
            gradient IMNNs, any JAX function for numerical derivatives.
        network: any model an IMNN accepts (stax pair, flax or equinox module), with
            ``n_summaries − n_fixed`` outputs.
    """

    fixed: Callable[[jax.Array], jax.Array]
    network: Any


def n_fixed(model: Any, input_shape: tuple[int, ...]) -> int:
    """How many of ``model``'s summaries its fixed statistic gives (0 unless ``model`` is a :class:`Hybrid`)."""
    if not isinstance(model, Hybrid):
        return 0
    if not callable(model.fixed):
        raise TypeError(f"`Hybrid.fixed` should be a function of one simulation but is {type(model.fixed).__name__}")
    shape = jax.eval_shape(model.fixed, jax.ShapeDtypeStruct(input_shape, jnp.float32)).shape
    if len(shape) != 1 or shape[0] < 1:
        raise ValueError(
            f"`Hybrid.fixed` should return a vector float(n_fixed) for one simulation of shape {input_shape}, "
            f"but returns shape {shape}"
        )
    return shape[0]


def apply(fixed: Callable, network_apply: Callable) -> Callable:
    """``apply(w, d) = [fixed(d), network_apply(w, d)]``; ``fixed`` gets no weight gradient."""

    def hybrid_apply(w, d):
        return jnp.concatenate([fixed(d), network_apply(w, d)])

    return hybrid_apply


def whiten(fixed: Callable[[jax.Array], jax.Array], simulations: Any) -> Callable[[jax.Array], jax.Array]:
    """``fixed`` standardised on fiducial ``simulations`` float(n, *input_shape): ``L⁻¹ (fixed(d) − mean)``.

    ``mean`` and ``L Lᵀ`` are the statistic's mean and covariance over the simulations, so the
    whitened statistic has zero mean and unit covariance there. The map is linear and invertible,
    so the Fisher information of the statistic (alone or with other summaries) is unchanged.
    """
    t = jax.jit(jax.vmap(fixed))(jnp.asarray(simulations))
    if t.ndim != 2 or t.shape[0] <= t.shape[1] + 1:
        raise ValueError(
            f"`simulations` should hold more simulations than the statistic has entries plus one "
            f"(statistics of shape {tuple(t.shape)}) to estimate its covariance"
        )
    mean = t.mean(axis=0)
    L = jnp.linalg.cholesky(jnp.cov(t, rowvar=False).reshape(t.shape[1], t.shape[1]))
    if not bool(jnp.all(jnp.isfinite(L))):
        raise ValueError("the statistic's covariance over `simulations` is singular: drop redundant entries")

    def whitened(d):
        return jax.scipy.linalg.solve_triangular(L, fixed(d) - mean, lower=True)

    return whitened


class HybridInformation(NamedTuple):
    """The Fisher information of a hybrid model's summaries, by part (each a :class:`imnn.fisher.Information`).

    The three use the same bootstrap resamples, so their intervals are comparable.
    """

    fixed: fisher.Information
    network: fisher.Information
    union: fisher.Information

    def __str__(self) -> str:
        def row(name, info):
            low, high = (float(v) for v in info.detF_interval)
            return f"{name:<8}|F| = {float(info.detF):.4g}  ({info.confidence:.0%} interval {low:.4g} – {high:.4g})"

        return "\n".join(row(name, getattr(self, name)) for name in self._fields)


def information(
    x: jax.Array,
    dx_dθ: jax.Array,
    n_fixed: int,
    *,
    confidence: float = 0.9,
    n_bootstrap: int = 1000,
    hartlap: bool = False,
    key: jax.Array,
) -> HybridInformation:
    """:func:`imnn.fisher.information` of the first ``n_fixed`` summaries, of the rest, and of all.

    Args:
        x: float(n_s, n_summaries) — summaries, the fixed statistic's first.
        dx_dθ: float(n_d, n_summaries, n_params).
        n_fixed: how many of the summaries are the fixed statistic (``0 < n_fixed < n_summaries``).
        confidence, n_bootstrap, hartlap, key: as for :func:`imnn.fisher.information`.
    """
    n_summaries = x.shape[-1]
    if not (isinstance(n_fixed, int) and 0 < n_fixed < n_summaries):
        raise ValueError(f"`n_fixed` (={n_fixed!r}) should be an integer from 1 to n_summaries − 1 = {n_summaries - 1}")
    settings = dict(confidence=confidence, n_bootstrap=n_bootstrap, hartlap=hartlap, key=key)
    parts = (slice(None, n_fixed), slice(n_fixed, None), slice(None))
    return HybridInformation(*(fisher.information(x[:, part], dx_dθ[:, part], **settings) for part in parts))


def for_model(
    model: Any,
    w: Any = None,
    key: jax.Array | None = None,
    validate: bool = True,
    *,
    confidence: float = 0.9,
    n_bootstrap: int = 1000,
    hartlap: bool = False,
) -> HybridInformation:
    """:func:`information` of a hybrid IMNN's own summaries (as ``model.information`` chooses them)."""
    if not model.n_fixed:
        raise ValueError("`hybrid_information` needs an IMNN whose `model` is an `imnn.hybrid.Hybrid`")
    x, dx_dθ, resampling = model._summaries_to_resample(w, key, validate)
    return information(
        x, dx_dθ, model.n_fixed, confidence=confidence, n_bootstrap=n_bootstrap, hartlap=hartlap, key=resampling
    )
