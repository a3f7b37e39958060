"""The base of every inference class: the prior, the parameter grid, marginals and corner plots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import corner
from . import marginals as _marginals
from .priors import as_prior


class LikelihoodFreeInference:
    """A prior, a grid over its bounds and marginal densities per target, with corner plots.

    Args:
        prior: numpyro distribution with event shape (n_params,) — e.g.
            ``numpyro.distributions.Uniform(low, high).to_event(1)`` — or any object with
            ``sample`` and ``log_prob`` (see :func:`imnn.lfi.priors.as_prior`).
        gridsize: grid points per parameter (one int for all, or one per parameter).
        marginals: optional full density float(n_targets, *gridsize) on the grid, turned
            into :attr:`marginals`.
        ranges: ``[(low, high), …]`` per parameter when the prior has no finite bounds
            (or to zoom the grid in).

    Attributes:
        n_params: number of parameters.
        n_targets: number of targets (``None`` until known).
        gridsize: list of grid points per parameter.
        ranges: list of float(gridsize[i]) grid points per parameter.
        marginals: ``marginals[row][column]`` for ``column ≤ row``: float(n_targets, gridsize[row])
            densities on the diagonal, float(n_targets, gridsize[column], gridsize[row]) below;
            ``None`` until computed.
    """

    n_targets: int | None = None

    def __init__(
        self,
        prior: Any,
        gridsize: int | Sequence[int] = 100,
        marginals: Any = None,
        ranges: Sequence[Sequence[float]] | None = None,
    ):
        self._prior = as_prior(prior, ranges)
        self.prior = prior
        self.n_params = self._prior.n_params
        self.gridsize = _marginals.gridsizes(gridsize, self.n_params)
        self.ranges = _marginals.grid(self._prior.low, self._prior.high, self.gridsize)
        self.marginals = None if marginals is None else self.put_marginals(marginals)

    def put_marginals(self, marginals: Any) -> _marginals.Marginals:
        """Set :attr:`marginals` from a full density float(n_targets, *gridsize) on the grid."""
        self.marginals = _marginals.from_grid(marginals, self.ranges)
        self.n_targets = self.marginals[0][0].shape[0]
        return self.marginals

    @staticmethod
    def get_gridsize(gridsize: int | Sequence[int], size: int) -> list[int]:
        """``gridsize`` as a list of ``size`` numbers of grid points (one int is repeated)."""
        return _marginals.gridsizes(gridsize, size)

    def target_choice(self, target: int | Sequence[int] | None) -> tuple[list[int], int]:
        """The indices of the targets ``target`` selects (None: all) and how many there are."""
        if self.n_targets is None:
            raise ValueError(f"{type(self).__name__} has no targets yet: run it, or set `n_targets`")
        targets = corner.targets_to_plot(target, self.n_targets)
        return targets, len(targets)

    def _grid(self, ranges: Sequence[Any] | None, gridsize: int | Sequence[int] | None) -> list[np.ndarray]:
        """``ranges`` as arrays; by default :attr:`ranges`, or a grid over the prior's bounds with ``gridsize``."""
        if ranges is not None:
            return [np.asarray(points, dtype=float) for points in ranges]
        if gridsize is None:
            return self.ranges
        return _marginals.grid(self._prior.low, self._prior.high, self.get_gridsize(gridsize, self.n_params))

    @staticmethod
    def get_levels(marginal: Any, ranges: Any = None, levels: Sequence[float] = (0.68, 0.95)) -> list[float]:
        """Heights of the contours of a gridded density enclosing ``levels`` of its mass (increasing)."""
        return _marginals.levels(marginal, levels)

    def setup_plot(
        self,
        ax: Any = None,
        ranges: Sequence[np.ndarray] | None = None,
        axis_labels: Sequence[str] | None = None,
        figsize: tuple[float, float] = (10, 10),
        format: bool = False,
    ) -> np.ndarray:
        """A (n_params, n_params) array of corner-plot axes (new, or ``ax`` formatted if ``format``)."""
        ranges = self.ranges if ranges is None else ranges
        return corner.setup(len(ranges), ranges, ax, axis_labels, figsize, format or ax is None)

    def marginal_plot(
        self,
        ax: Any = None,
        ranges: Sequence[np.ndarray] | None = None,
        marginals: _marginals.Marginals | None = None,
        known: Any = None,
        label: str | None = None,
        axis_labels: Sequence[str] | None = None,
        levels: Sequence[float] | None = None,
        linestyle: str = "solid",
        colours: str | Sequence[str] | None = None,
        target: int | Sequence[int] | None = None,
        format: bool = False,
        ncol: int = 2,
        bbox_to_anchor: tuple[float, float] = (1.0, 1.0),
    ) -> np.ndarray:
        """Corner plot of the marginals: densities on the diagonal, credible contours below.

        Args:
            ax: axes from an earlier plot to draw on (e.g. to compare methods); new if None.
            ranges: grid points per parameter (default :attr:`ranges`).
            marginals: as :attr:`marginals` (default: this object's).
            known: float(n_params) true values, drawn as dashed lines.
            label: legend entry for these curves.
            axis_labels: one name per parameter.
            levels: enclosed probability of each contour (default 68 % and 95 %).
            linestyle, colours: line style; a colour or one per target (default C0, C1, …).
            target: index or list of indices of the targets to draw (default all).
            format: format the axes ``ax`` as a corner plot.
            ncol, bbox_to_anchor: legend columns and position.

        Returns:
            The (n_params, n_params) array of axes.
        """
        marginals = self.marginals if marginals is None else marginals
        if marginals is None:
            raise ValueError(f"{type(self).__name__} has no marginals yet: run it first or pass `marginals`")
        ranges = self.ranges if ranges is None else ranges
        targets = corner.targets_to_plot(target, marginals[0][0].shape[0])
        ax = self.setup_plot(ax, ranges, axis_labels, format=format)
        corner.plot_marginals(ax, ranges, marginals, targets, corner.colours_for(colours, len(targets)),
                              (0.68, 0.95) if levels is None else levels, linestyle, label, known)  # fmt: skip
        corner.legend(ax, ncol, bbox_to_anchor)
        return ax

    def scatter_plot(
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
        target: int | Sequence[int] | None = None,
        format: bool = False,
        ncol: int = 2,
        bbox_to_anchor: tuple[float, float] = (0.0, 1.0),
    ) -> np.ndarray:
        """Corner scatter plot of points per target (default: the accepted parameters).

        Arguments not listed are as in :meth:`marginal_plot`.

        Args:
            points: per target float(n, n_params) (default ``self.parameters.accepted``).
            hist: histograms of each coordinate on the diagonal.
            s, alpha: marker size and opacity.

        Returns:
            The (n_params, n_params) array of axes.
        """
        if points is None:
            points = getattr(getattr(self, "parameters", None), "accepted", None)
            if points is None:
                raise ValueError(f"{type(self).__name__} has no accepted samples yet: run it first or pass `points`")
        ranges = self.ranges if ranges is None else ranges
        targets = corner.targets_to_plot(target, len(points))
        ax = self.setup_plot(ax, ranges, axis_labels, figsize, format)
        corner.plot_points(ax, ranges, points, targets, corner.colours_for(colours, len(targets)),
                           hist, s, alpha, linestyle, label)  # fmt: skip
        corner.legend(ax, ncol, bbox_to_anchor)
        return ax
