"""Corner plots: 1-D densities on the diagonal, 2-D contours or scatters below it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from . import marginals as _marginals


def targets_to_plot(target: int | Sequence[int] | None, n_targets: int) -> list[int]:
    """The target indices a plot shows: all (None), one (int) or several (list)."""
    if target is None:
        return list(range(n_targets))
    chosen = [target] if isinstance(target, (int, np.integer)) else list(target)
    if not chosen or not all(isinstance(t, (int, np.integer)) and 0 <= t < n_targets for t in chosen):
        raise ValueError(
            f"`target` should be None, an index or a list of indices in [0, {n_targets}) but is {target!r}"
        )
    return [int(t) for t in chosen]


def colours_for(colours: str | Sequence[str] | None, n: int) -> list[str]:
    """One colour per plotted target (matplotlib's cycle by default)."""
    if colours is None:
        return [f"C{i}" for i in range(n)]
    if isinstance(colours, str):
        return [colours] * n
    colours = list(colours)
    if len(colours) < n:
        raise ValueError(f"`colours` should name at least {n} colours (one per target) but has {len(colours)}")
    return colours


def spans(points: Sequence[Any], targets: Sequence[int], gridsize: int | Sequence[int]) -> list[np.ndarray]:
    """Grid points per coordinate from the smallest to the largest of ``points[t]`` float(n, d) over ``targets``."""
    d = np.shape(points[targets[0]])[-1]
    values = np.concatenate([np.asarray(points[t], dtype=float).reshape(-1, d) for t in targets])
    if values.shape[0] == 0:
        raise ValueError(f"there are no points to plot for targets {list(targets)}")
    low, high = values.min(0), values.max(0)
    low, high = np.where(high > low, low, low - 0.5), np.where(high > low, high, high + 0.5)  # one distinct value
    return _marginals.grid(low, high, _marginals.gridsizes(gridsize, d))


def setup(
    n_params: int,
    ranges: Sequence[np.ndarray],
    ax: Any = None,
    axis_labels: Sequence[str] | None = None,
    figsize: tuple[float, float] = (10, 10),
    format: bool = False,
) -> np.ndarray:
    """A new (n_params, n_params) grid of axes, or ``ax`` (formatted only if ``format``)."""
    if ax is not None:
        ax = np.asarray(ax, dtype=object).reshape(n_params, n_params)
        if not format:
            return ax
    else:
        _, ax = plt.subplots(n_params, n_params, figsize=figsize, squeeze=False)
        plt.subplots_adjust(wspace=0.1, hspace=0.1)
    for row in range(n_params):
        for column in range(n_params):
            axis = ax[row, column]
            if column > row:
                axis.axis("off")
                continue
            axis.set_xlim(ranges[column][0], ranges[column][-1])
            if row != column:
                axis.set_ylim(ranges[row][0], ranges[row][-1])
            if row < n_params - 1:
                axis.set_xticklabels([])
            elif axis_labels is not None:
                axis.set_xlabel(axis_labels[column])
            if column > 0 or row == 0:
                axis.set_yticklabels([]) if row != column else axis.set_yticks([])
            elif axis_labels is not None:
                axis.set_ylabel(axis_labels[row])
    return ax


def _known_lines(ax: np.ndarray, known: Any) -> None:
    n_params = ax.shape[0]
    for row in range(n_params):
        for column in range(row + 1):
            ax[row, column].axvline(known[column], color="black", linestyle="dashed", linewidth=1)
            if row != column:
                ax[row, column].axhline(known[row], color="black", linestyle="dashed", linewidth=1)


def plot_marginals(
    ax: np.ndarray,
    ranges: Sequence[np.ndarray],
    marginals: _marginals.Marginals,
    targets: Sequence[int],
    colours: Sequence[str],
    levels: Sequence[float],
    linestyle: str,
    label: str | None,
    known: Any,
) -> None:
    """Draw 1-D densities and the ``levels`` credible contours of each 2-D density."""
    n_params = len(ranges)
    for row in range(n_params):
        for column in range(row + 1):
            for i, (target, colour) in enumerate(zip(targets, colours)):
                density = np.asarray(marginals[row][column][target])
                if row == column:
                    ax[row, column].plot(ranges[row], density, color=colour, linestyle=linestyle,
                                         label=label if i == 0 else None)  # fmt: skip
                else:
                    heights = _marginals.levels(density, levels)
                    if density.max() > 0 and len(heights) > 0:
                        ax[row, column].contour(ranges[column], ranges[row], density.T, levels=heights,
                                                colors=[colour], linestyles=[linestyle])  # fmt: skip
    if known is not None:
        _known_lines(ax, known)


def plot_points(
    ax: np.ndarray,
    ranges: Sequence[np.ndarray],
    points: Sequence[Any],
    targets: Sequence[int],
    colours: Sequence[str],
    hist: bool,
    s: float,
    alpha: float,
    linestyle: str,
    label: str | None,
) -> None:
    """Scatter each pair of coordinates of ``points[target]`` float(n, n_params); histograms on the diagonal."""
    n_params = len(ranges)
    for target, colour in zip(targets, colours):
        values = np.asarray(points[target]).reshape(-1, n_params)
        name = f"{label} target {target + 1}" if label else f"target {target + 1}"
        for row in range(n_params):
            for column in range(row + 1):
                if row == column and hist:
                    edges = _marginals.bin_edges(ranges[row])
                    ax[row, column].hist(values[:, row], bins=edges, density=True, histtype="step",
                                         color=colour, linestyle=linestyle)  # fmt: skip
                elif row != column:
                    ax[row, column].scatter(values[:, column], values[:, row], s=s, alpha=alpha, color=colour,
                                            label=name if (row, column) == (1, 0) else None)  # fmt: skip


def legend(ax: np.ndarray, ncol: int, bbox_to_anchor: tuple[float, float]) -> None:
    """One legend, above the corner, for every labelled artist."""
    handles, labels = [], []
    for axis in ax.ravel():
        for handle, text in zip(*axis.get_legend_handles_labels()):
            if text not in labels:
                handles.append(handle)
                labels.append(text)
    if handles:
        ax[0, -1].legend(handles, labels, frameon=False, loc="upper right", bbox_to_anchor=bbox_to_anchor, ncol=ncol)
