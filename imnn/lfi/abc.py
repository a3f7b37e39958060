"""Rejection approximate Bayesian computation on compressed summaries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .. import _checks
from .._core import accepts_ascii_aliases
from . import corner
from . import marginals as _marginals
from .base import LikelihoodFreeInference
from .simulate import F_distance, container, distances_to_targets, euclidean_distance, from_prior, simulations


class ApproximateBayesianComputation(LikelihoodFreeInference):
    """Keep the prior draws whose simulated summaries land within ϵ of each target's summary.

    ``p(θ | d_obs) ≈ {θ_i ~ p(θ) : D(g(f(θ_i)), g(d_obs)) < ϵ}`` for a simulator ``f``,
    a compressor ``g`` (e.g. ``model.get_estimate``) and a distance ``D``, Fisher-weighted
    when ``F`` is given: with IMNN estimates, ϵ is then in units of the Fisher error.

    Args:
        target_data: float(*input_shape) or float(n_targets, *input_shape).
        prior: see :class:`LikelihoodFreeInference`.
        simulator: ``simulator(key, θ: float(n, n_params)) -> float(n, *input_shape)``, JAX-traceable;
            or ``None`` to run on simulations made beforehand (``abc(ϵ, parameters=…, summaries=…)``).
        compressor: ``compressor(float(n, *input_shape)) -> float(n, n_summaries)``, JAX-traceable.
        gridsize: grid points per parameter for the marginals.
        F: float(n_params, n_params) (e.g. ``model.F``) or one per target; the summaries must
            then be parameter estimates. ``None``: Euclidean distance.
        distance_measure: ``distance(summaries: float(n, n_summaries), target: float(n_summaries), F)
            -> float(n)``, replacing the default.
        ranges: ``[(low, high), …]`` grid bounds when the prior has none.
        batch_size: simulations per jitted call.

    Attributes:
        target_summaries: float(n_targets, n_summaries).
        parameters, summaries, distances: :class:`~imnn.lfi.simulate.container` of all the
            simulations so far and, after a call with ϵ, the accepted ones per target.
    """

    def __init__(
        self,
        target_data: Any,
        prior: Any,
        simulator: Callable | None,
        compressor: Callable,
        gridsize: int | Sequence[int] = 100,
        F: Any = None,
        distance_measure: Callable | None = None,
        ranges: Sequence[Sequence[float]] | None = None,
        batch_size: int = 10_000,
    ):
        super().__init__(prior, gridsize, ranges=ranges)
        self.simulator, self.compressor = simulator, compressor
        self._simulations = simulations(target_data, self._prior, simulator, compressor, batch_size)
        self.target_summaries = self._simulations.target_summaries
        self.n_targets, self.n_summaries = self.target_summaries.shape
        if F is not None:
            if self.n_summaries != self.n_params:
                raise ValueError(
                    f"`F` weights distances between parameter estimates, but the compressor returns {self.n_summaries} "
                    f"summaries for {self.n_params} parameters: pass F=None or a `distance_measure`"
                )
            self.F = jnp.asarray(_checks.matrices_per_target("F", F, self.n_targets, self.n_params))
        else:
            self.F = jnp.broadcast_to(jnp.eye(self.n_summaries), (self.n_targets, self.n_summaries, self.n_summaries))
        if distance_measure is not None and not callable(distance_measure):
            raise TypeError(f"`distance_measure` should be a function but is {type(distance_measure).__name__}")
        self.distance_measure = distance_measure or (F_distance if F is not None else euclidean_distance)
        self.parameters, self.summaries, self.distances = container(), container(), container()

    # IMNN 0.3.2 had the distances as methods: ``abc.F_distance(x, y, F)``.
    F_distance = staticmethod(F_distance)
    euclidean_distance = staticmethod(euclidean_distance)

    # ----------------------------------------------------------------- running
    @accepts_ascii_aliases
    def __call__(
        self,
        ϵ: float | Sequence[float] | None = None,
        rng: jax.Array | None = None,
        n_samples: int | None = None,
        parameters: Any = None,
        summaries: Any = None,
        min_accepted: int | None = None,
        max_iterations: int = 10,
        smoothing: float | None = None,
        replace: bool = False,
    ) -> tuple[container, container, container]:
        """Simulate from the prior and/or accept within ϵ.

        Args:
            ϵ: acceptance distance, one for all targets or one per target. ``None``: only simulate.
            rng, n_samples: simulate ``n_samples`` new draws from the prior.
            parameters, summaries: add premade simulations instead: their parameters float(n, n_params)
                and their compressed summaries float(n, n_summaries) (as ``compressor`` returns them).
            min_accepted: keep simulating ``n_samples`` at a time (at most ``max_iterations`` times)
                until every target has this many accepted.
            smoothing: Gaussian smoothing (grid cells) of the marginal histograms.
            replace: drop earlier simulations first.

        Returns:
            ``(parameters, distances, summaries)`` containers.
        """
        simulate = rng is not None and n_samples is not None
        premade = parameters is not None and summaries is not None
        if not (simulate or premade or self.parameters.all is not None):
            raise ValueError(
                "No simulations yet: pass `rng` (a PRNG key) and `n_samples`, or premade `parameters` and `summaries`"
            )
        if min_accepted is not None:
            if ϵ is None or not simulate:
                raise ValueError("`min_accepted` needs `ϵ`, `rng` and `n_samples`")
            return self.get_min_accepted(rng, ϵ, min_accepted, n_samples, max_iterations, smoothing, replace)
        if simulate:
            self._simulate(rng, n_samples, replace=replace)
            replace = False
        if premade:
            self.set_samples(parameters, summaries, replace=replace)
        if ϵ is not None:
            self.set_accepted(ϵ, smoothing)
        return self.parameters, self.distances, self.summaries

    def get_samples(self, rng: jax.Array, n_samples: int) -> tuple[jax.Array, jax.Array]:
        """``n_samples`` prior draws float(n_samples, n_params) and their summaries float(n_samples, n_summaries)."""
        return from_prior(self._simulations, rng, n_samples)

    def get_min_accepted(
        self,
        rng: jax.Array,
        ϵ: float | Sequence[float],
        accepted: int,
        n_simulations: int = 1,
        max_iterations: int = 10,
        smoothing: float | None = None,
        replace: bool = False,
        verbose: bool = True,
    ) -> tuple[container, container, container]:
        """Simulate ``n_simulations`` at a time until every target has ``accepted`` samples within ϵ.

        Stops after ``max_iterations`` rounds with a warning if some target still has fewer.
        ``verbose``: show a progress bar.

        Returns:
            ``(parameters, distances, summaries)`` containers.
        """
        accepted = _checks.positive_int("accepted", accepted)
        rng = _checks.key("rng", rng)
        if replace:
            self.parameters, self.summaries, self.distances = container(), container(), container()
        rounds = range(_checks.positive_int("max_iterations", max_iterations))
        bar = tqdm(rounds, desc="ABC", leave=False, disable=not _checks.boolean("verbose", verbose))
        for _ in bar:
            if self.parameters.all is not None and min(self._accepted_counts(ϵ)) >= accepted:
                break
            rng, key = jax.random.split(rng)
            self._simulate(key, n_simulations)
            bar.set_postfix(accepted=min(self._accepted_counts(ϵ)))
        bar.close()
        self.set_accepted(ϵ, smoothing)
        if min(self.parameters.n_accepted) < accepted:
            _checks.warn(
                f"only {self.parameters.n_accepted} samples accepted within ϵ after {max_iterations} rounds of "
                f"{n_simulations} simulations (wanted {accepted}): raise `max_iterations`, `n_simulations` or ϵ"
            )
        return self.parameters, self.distances, self.summaries

    def _simulate(self, rng: jax.Array, n_samples: int, replace: bool = False) -> None:
        """Add ``n_samples`` prior draws, dropping (with a warning) those whose summaries are not finite."""
        θ, x = self.get_samples(rng, n_samples)
        finite = np.asarray(jnp.all(jnp.isfinite(x), axis=1))
        if not finite.all():
            _checks.warn(
                f"{int((~finite).sum())} of {θ.shape[0]} simulations have non-finite summaries (NaN or inf from "
                "`simulator` or `compressor`) and are dropped"
            )
            θ, x = θ[finite], x[finite]
        self.set_samples(θ, x, replace=replace)

    # ------------------------------------------------------------ bookkeeping
    def set_samples(self, parameters: Any, summaries: Any, distances: Any = None, replace: bool = False) -> None:
        """Add (or with ``replace`` set) simulations and their distances float(n_targets, n) to every target."""
        parameters = _checks.array("parameters", parameters, (np.shape(parameters)[0], self.n_params))
        summaries = _checks.array("summaries", summaries, (parameters.shape[0], self.n_summaries))
        if distances is None:
            distances = distances_to_targets(
                self.distance_measure, jnp.asarray(summaries), self.target_summaries, self.F
            )
        distances = np.asarray(distances)
        if self.parameters.all is None or replace:
            self.parameters.all, self.summaries.all, self.distances.all = (
                np.asarray(parameters), np.asarray(summaries), distances,
            )  # fmt: skip
        else:
            self.parameters.all = np.concatenate([self.parameters.all, parameters])
            self.summaries.all = np.concatenate([self.summaries.all, summaries])
            self.distances.all = np.concatenate([self.distances.all, distances], axis=1)
        for box in (self.parameters, self.summaries, self.distances):
            box.size = self.parameters.all.shape[0]

    def _ϵ_per_target(self, ϵ: float | Sequence[float]) -> np.ndarray:
        values = np.broadcast_to(np.asarray(ϵ, dtype=float), (self.n_targets,)) if np.ndim(ϵ) == 0 else np.asarray(ϵ)
        if values.shape != (self.n_targets,) or not np.all(values > 0):
            raise ValueError(
                f"`ϵ` should be a positive number or {self.n_targets} of them (one per target) but is {ϵ!r}"
            )
        return values

    def _accepted_counts(self, ϵ: float | Sequence[float]) -> list[int]:
        return list((self.distances.all < self._ϵ_per_target(ϵ)[:, None]).sum(1))

    def set_accepted(self, ϵ: float | Sequence[float], smoothing: float | None = None) -> None:
        """Split the simulations into accepted (distance < ϵ) and rejected per target; update the marginals."""
        ϵ = self._ϵ_per_target(ϵ)
        masks = self.distances.all < ϵ[:, None]
        for box, values in ((self.parameters, self.parameters.all), (self.summaries, self.summaries.all)):
            box.accepted = [values[mask] for mask in masks]
            box.rejected = [values[~mask] for mask in masks]
            box.n_accepted = [int(mask.sum()) for mask in masks]
        self.distances.accepted = [d[mask] for d, mask in zip(self.distances.all, masks)]
        self.distances.rejected = [d[~mask] for d, mask in zip(self.distances.all, masks)]
        self.distances.n_accepted = self.parameters.n_accepted
        self.parameters.ϵ = self.summaries.ϵ = self.distances.ϵ = ϵ
        self.marginals = self.get_marginals(smoothing=smoothing)

    # ------------------------------------------------------------ marginals
    def get_marginals(
        self,
        accepted_parameters: Sequence[Any] | None = None,
        ranges: Sequence[Any] | None = None,
        gridsize: int | Sequence[int] | None = None,
        smoothing: float | None = None,
    ) -> _marginals.Marginals:
        """Histogram marginals (see :func:`imnn.lfi.marginals.from_samples`) of samples per target.

        Args:
            accepted_parameters: per target float(n, n_params) (default: the accepted parameters,
                with their importance weights for the PMC).
            ranges: grid points (bin centres) per parameter (default :attr:`ranges`).
            gridsize: without ``ranges``, a grid of this many points over the prior's bounds instead.
            smoothing: Gaussian smoothing in grid cells (``None``: Scott's rule; ``0``: none).
        """
        weights = None
        if accepted_parameters is None:
            accepted_parameters, weights = self.parameters.accepted, self.parameters.weights
            if accepted_parameters is None:
                raise ValueError(f"{type(self).__name__} has no accepted samples yet: run it first")
        return _marginals.from_samples(accepted_parameters, self._grid(ranges, gridsize), weights, smoothing)

    def set_marginals(
        self,
        accepted_parameters: Sequence[Any] | None = None,
        ranges: Sequence[Any] | None = None,
        gridsize: int | Sequence[int] | None = None,
        smoothing: float | None = None,
    ) -> _marginals.Marginals:
        """Set (and return) :attr:`marginals` from :meth:`get_marginals` with the same arguments."""
        self.marginals = self.get_marginals(accepted_parameters, ranges, gridsize, smoothing)
        return self.marginals

    # ---------------------------------------------------------------- plots
    def scatter_summaries(
        self,
        ax: Any = None,
        ranges: Sequence[np.ndarray] | None = None,
        points: Sequence[Any] | None = None,
        label: str | None = None,
        axis_labels: Sequence[str] | None = None,
        colours: str | Sequence[str] | None = None,
        hist: bool = True,
        s: float = 5.0,
        alpha: float = 1.0,
        figsize: tuple[float, float] = (10, 10),
        linestyle: str = "solid",
        gridsize: int | Sequence[int] = 100,
        target: int | Sequence[int] | None = None,
        format: bool = False,
        ncol: int = 2,
        bbox_to_anchor: tuple[float, float] = (0.0, 1.0),
    ) -> np.ndarray:
        """Corner scatter plot of the accepted summaries per target (an n_summaries × n_summaries grid).

        Arguments are as in :meth:`scatter_plot`, except:

        Args:
            points: per target float(n, n_summaries) (default ``self.summaries.accepted``).
            ranges: axis grid per summary (default: ``gridsize`` points from the smallest to the
                largest plotted value, which also sets the histogram bins).
            gridsize: grid points per summary (one int for all, or one per summary).

        Returns:
            The (n_summaries, n_summaries) array of axes.
        """
        points = self.summaries.accepted if points is None else points
        if points is None:
            raise ValueError(f"{type(self).__name__} has no accepted summaries yet: run it first or pass `points`")
        if ranges is None:
            ranges = corner.spans(points, corner.targets_to_plot(target, len(points)), gridsize)
        return self.scatter_plot(ax, ranges, points, label, axis_labels, colours, hist, s, alpha, figsize, linestyle,
                                 target, format, ncol, bbox_to_anchor)  # fmt: skip
