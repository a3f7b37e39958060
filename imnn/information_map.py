"""The Fisher information of a fixed compressor across parameter space.

An IMNN is fitted at ``θ_fid``; away from it its summaries may lose information.
:func:`information_map` evaluates ``F(θ)`` of any summary function at a set of
parameter points, from a simulator (differentiated through) or from simulations the
user made at those points, and :func:`imnn.plotting.plot_information_map` draws
``|F(θ)|`` (or its ratio to a reference) over a 1-D slice or a 2-D grid. Every IMNN
has it as ``model.information_map(θ, ...)`` at its own weights.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from . import _checks, fisher, sources


class InformationMap(NamedTuple):
    """``F`` of one compressor at each of ``n_points`` parameter points.

    Attributes:
        θ: float(n_points, n_params) — the points.
        F: float(n_points, n_params, n_params) — the Fisher matrix of the summaries at each.
        detF: float(n_points) — its determinant.
        reference_detF: float(n_points) or ``None`` — the reference ``|F|`` (e.g. analytic) at each.
        θ_fid: float(n_params) or ``None`` — where the compressor was fitted (marked on plots).
    """

    θ: np.ndarray
    F: np.ndarray
    detF: np.ndarray
    reference_detF: np.ndarray | None = None
    θ_fid: np.ndarray | None = None

    @property
    def ratio(self) -> np.ndarray | None:
        """``detF / reference_detF`` float(n_points), or ``None`` without a reference."""
        return None if self.reference_detF is None else self.detF / self.reference_detF


def grid(θ_fid: Any, values: Mapping[int, Any]) -> np.ndarray:
    """Points float(n_points, n_params) at ``θ_fid`` except in the parameters keyed in ``values``.

    ``grid(θ_fid, {1: np.linspace(0.5, 2, 20)})`` is a 1-D slice in parameter 1;
    two keys give the full 2-D grid (the first key's values vary slowest).
    """
    θ_fid = np.asarray(θ_fid, dtype=float)
    if not values or not all(isinstance(p, int) and 0 <= p < θ_fid.size for p in values):
        raise ValueError(f"`values` should map parameter indices 0…{θ_fid.size - 1} to their values, got {values!r}")
    axes = np.meshgrid(*[np.asarray(v, dtype=float) for v in values.values()], indexing="ij")
    points = np.tile(θ_fid, (axes[0].size, 1))
    for p, axis in zip(values, axes):
        points[:, p] = axis.ravel()
    return points


def information_map(
    summary: Callable[[jax.Array], jax.Array],
    θ: Any,
    *,
    simulator: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    key: jax.Array | None = None,
    n_s: int = 1000,
    n_d: int | None = None,
    simulations: Sequence[tuple[Any, Any]] | None = None,
    δθ: Any = None,
    reference: Any = None,
    θ_fid: Any = None,
    progress: bool = True,
) -> InformationMap:
    """``F(θ)`` of the summaries ``summary(d)`` at every row of ``θ``.

    Args:
        summary: ONE simulation float(*input_shape) → float(n_summaries); not trained.
        θ: float(n_points, n_params) — e.g. from :func:`grid`.
        simulator: ``simulator(key, θ) -> float(*input_shape)``, differentiable in θ: at each point
            ``n_s`` fresh simulations, the first ``n_d`` (default all) differentiated (forward mode).
        key: PRNG key for the simulator (point ``i`` uses ``fold_in(key, i)``).
        simulations: instead of a simulator, one ``(fiducial, derivative)`` per point in the
            gradient layout (``float(n, *input_shape)``, ``float(n_d, *input_shape, n_params)``) or,
            with ``δθ``, the numerical layout ``float(n_d, 2, n_params, *input_shape)``.
        δθ: float(n_params) — finite-difference steps of numerical-layout ``simulations``.
        reference: the ``|F|`` to compare with: a function ``θ -> F`` float(n_params, n_params)
            (e.g. an analytic Fisher matrix), another :class:`InformationMap` at the same points
            (e.g. of a baseline summary), or float(n_points) values.
        θ_fid: where the compressor was fitted, kept for plots.
        progress: show a progress bar over the points.
    """
    summary = summary if isinstance(summary, jax.tree_util.Partial) else jax.tree_util.Partial(summary)
    θ = np.asarray(θ, dtype=float)
    if θ.ndim != 2:
        raise ValueError(f"`θ` should have shape (n_points, n_params) but has {θ.shape}")
    if (simulator is None) == (simulations is None):
        raise ValueError("give either `simulator` (and `key`) or `simulations` (one per point of `θ`)")
    if simulator is not None:
        if key is None:
            raise ValueError("`key` must be a PRNG key when `simulator` is given")
        key, n_s = _checks.key("key", key), _checks.positive_int("n_s", n_s)
        n_d = n_s if n_d is None else _checks.positive_int("n_d", n_d)
        if n_d > n_s:
            raise ValueError(f"`n_d` (={n_d}) must not exceed `n_s` (={n_s})")
        at_point = functools.partial(_simulated_F, summary, simulator=simulator, n_s=n_s, n_d=n_d)
        inputs = [(jnp.asarray(t, jnp.float32), jax.random.fold_in(key, i)) for i, t in enumerate(θ)]
    else:
        if len(simulations) != len(θ):
            raise ValueError(f"`simulations` should hold one (fiducial, derivative) per point: {len(θ)}, "
                             f"but holds {len(simulations)}")  # fmt: skip
        δθ = None if δθ is None else _checks.positive_vector("δθ", δθ, θ.shape[1])
        inputs = [(jnp.asarray(fiducial), jnp.asarray(derivative), δθ) for fiducial, derivative in simulations]
        at_point = functools.partial(_stored_F, summary)
    F = np.stack([np.asarray(at_point(*item)) for item in tqdm(inputs, desc="F(θ)", disable=not progress)])
    if F.shape[1:] != (θ.shape[1],) * 2:
        raise ValueError(f"the derivatives hold {F.shape[1]} parameters but `θ` has {θ.shape[1]} columns")
    return InformationMap(
        θ=θ, F=F, detF=np.linalg.det(F), reference_detF=_reference(reference, θ),
        θ_fid=None if θ_fid is None else np.asarray(θ_fid, dtype=float),
    )  # fmt: skip


def for_model(model: Any, θ: Any, *, w: Any = None, n_s: int | None = None, n_d: int | None = None,
              **kwargs: Any) -> InformationMap:  # fmt: skip
    """:func:`information_map` of an IMNN's summaries at weights ``w`` (default ``model.w``).

    ``n_s`` and ``n_d`` default to the model's; numerical-gradient models use their ``δθ``
    for ``simulations``. See :func:`information_map` for the other arguments.
    """
    w = model.w if w is None else w
    if kwargs.get("simulations") is not None:
        kwargs.setdefault("δθ", getattr(model, "δθ", None))
    else:
        kwargs.update(n_s=model.n_s if n_s is None else n_s, n_d=model.n_d if n_d is None else n_d)
    kwargs.setdefault("θ_fid", model.θ_fid)
    return information_map(jax.tree_util.Partial(model._network.apply, w), θ, **kwargs)


def _apply(summary, d):
    return summary(d)


@functools.partial(jax.jit, static_argnames=("simulator", "n_s", "n_d"))
def _simulated_F(summary, θ, key, *, simulator, n_s, n_d):
    source = sources.simulator(simulator, θ, n_s, n_d, "forward")
    return fisher.statistics(*sources.summarise(source, _apply, summary, None, key)).F


@jax.jit
def _stored_F(summary, fiducial, derivative, δθ):
    n_d = derivative.shape[0]
    source = sources.gradient(n_d) if δθ is None else sources.numerical(δθ, n_d)
    return fisher.statistics(*sources.summarise(source, _apply, summary, (fiducial, derivative), None)).F


def _reference(reference: Any, θ: np.ndarray) -> np.ndarray | None:
    if reference is None:
        return None
    if isinstance(reference, InformationMap):
        if reference.θ.shape != θ.shape or not np.allclose(reference.θ, θ):
            raise ValueError("the `reference` map was evaluated at other points than `θ`")
        return reference.detF
    if callable(reference):
        return np.array([float(np.linalg.det(np.asarray(reference(jnp.asarray(t))))) for t in θ])
    values = np.asarray(reference, dtype=float)
    if values.shape != (len(θ),):
        raise ValueError(f"`reference` values should have shape (n_points,) = ({len(θ)},) but have {values.shape}")
    return values
