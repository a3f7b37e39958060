"""Marginal densities on a parameter grid, in the layout of the corner plots.

A *marginals* object is a list of rows, ``marginals[row][column]`` for ``column ≤ row``:
the diagonal holds float(n_targets, gridsize[row]) 1-D densities and below it
float(n_targets, gridsize[column], gridsize[row]) 2-D densities, each normalised to
integrate to one over the grid (a Riemann sum with the grid spacing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

Marginals = list[list[np.ndarray]]


def gridsizes(gridsize: int | Sequence[int], n_params: int) -> list[int]:
    """``gridsize`` as one number of grid points (≥ 2) per parameter."""
    sizes = [gridsize] * n_params if isinstance(gridsize, (int, np.integer)) else list(gridsize)
    if len(sizes) != n_params or not all(isinstance(n, (int, np.integer)) and n >= 2 for n in sizes):
        raise ValueError(
            f"`gridsize` should be an integer ≥ 2 or {n_params} of them (one per parameter) but is {gridsize!r}"
        )
    return [int(n) for n in sizes]


def grid(low: np.ndarray, high: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Grid points per parameter: ``ranges[i]`` is float(sizes[i]) from ``low[i]`` to ``high[i]``."""
    return [np.linspace(lo, hi, n) for lo, hi, n in zip(low, high, sizes)]


def _spacing(points: np.ndarray) -> float:
    return float(points[1] - points[0])


def bin_edges(points: np.ndarray) -> np.ndarray:
    """float(len(points) + 1) edges of bins centred on the grid points."""
    half = _spacing(points) / 2
    return np.concatenate([points - half, points[-1:] + half])


def _normalised(density: np.ndarray, axes_ranges: Sequence[np.ndarray]) -> np.ndarray:
    """Divide each target's density by its integral over the grid (first axis: targets)."""
    cell = np.prod([_spacing(points) for points in axes_ranges])
    total = density.reshape(density.shape[0], -1).sum(1) * cell
    total = np.where(total > 0, total, 1.0)
    return density / total.reshape((-1,) + (1,) * (density.ndim - 1))


def from_grid(density: Any, ranges: Sequence[np.ndarray]) -> Marginals:
    """Marginals of a full density evaluated on the grid.

    Args:
        density: float(n_targets, *gridsizes) — e.g. an exact posterior on the grid.
        ranges: the grid points per parameter.
    """
    density = np.asarray(density, dtype=float)
    n_params = len(ranges)
    expected = tuple(len(points) for points in ranges)
    if density.ndim != n_params + 1 or density.shape[1:] != expected:
        raise ValueError(f"`marginals` should have shape (n_targets, *{expected}) but has {density.shape}")
    rows: Marginals = []
    for row in range(n_params):
        rows.append([])
        for column in range(row + 1):
            keep = {row, column}
            summed = density.sum(axis=tuple(1 + i for i in range(n_params) if i not in keep))
            rows[row].append(_normalised(summed, [ranges[i] for i in sorted(keep)]))
    return rows


def from_samples(
    samples: Sequence[Any],
    ranges: Sequence[np.ndarray],
    weights: Sequence[Any] | None = None,
    smoothing: float | None = None,
) -> Marginals:
    """Smoothed histogram marginals of (weighted) samples, one set of samples per target.

    Args:
        samples: per target float(n_i, n_params).
        ranges: grid points per parameter; each grid point is the centre of a bin.
        weights: per target float(n_i) (e.g. PMC importance weights), default equal.
        smoothing: standard deviation, in grid cells, of the Gaussian smoothing of the
            histograms; ``0`` for raw histograms; ``None`` (default) for Scott's rule, a
            kernel density estimate's bandwidth ``σ n_eff^(-1/(d+4))`` for d-dimensional
            marginals with ``n_eff = 1/Σw²`` (weights summing to one).
    """
    if smoothing is not None and (not np.isfinite(smoothing) or smoothing < 0):
        raise ValueError(f"`smoothing` (={smoothing!r}) must be None or a number of grid cells ≥ 0")
    edges = [bin_edges(points) for points in ranges]
    cells = np.array([_spacing(points) for points in ranges])
    weights = [None] * len(samples) if weights is None else weights
    n_params = len(ranges)
    rows: Marginals = [[[] for _ in range(row + 1)] for row in range(n_params)]
    for θ, w in zip(samples, weights):
        θ = np.asarray(θ, dtype=float).reshape(-1, n_params)
        w = np.full(θ.shape[0], 1 / max(θ.shape[0], 1)) if w is None else np.asarray(w, float) / np.sum(w)
        spread = moments(θ, w)[1] / cells if θ.shape[0] > 1 else np.zeros(n_params)
        n_eff = 1 / max(np.sum(w**2), 1e-300)
        for row in range(n_params):
            for column in range(row + 1):
                axes = [row] if row == column else [column, row]
                counts = np.histogramdd(θ[:, axes], bins=[edges[i] for i in axes], weights=w)[0]
                σ = spread[axes] * n_eff ** (-1 / (len(axes) + 4)) if smoothing is None else smoothing
                counts = gaussian_filter(counts, σ, mode="constant")
                rows[row][column].append(counts)
    return [
        [
            _normalised(np.stack(per_target), [ranges[column]] if row == column else [ranges[column], ranges[row]])
            for column, per_target in enumerate(columns)
        ]
        for row, columns in enumerate(rows)
    ]


def gaussian(means: Any, covariances: Any, ranges: Sequence[np.ndarray]) -> Marginals:
    """Marginals of Gaussians, evaluated analytically on the grid (no full grid is built).

    Args:
        means: float(n_targets, n_params).
        covariances: float(n_targets, n_params, n_params).
    """
    means, covariances = np.asarray(means, float), np.asarray(covariances, float)
    rows: Marginals = []
    for row in range(len(ranges)):
        rows.append([])
        for column in range(row + 1):
            index = [column] if row == column else [column, row]
            points = np.stack(np.meshgrid(*[ranges[i] for i in index], indexing="ij"), -1)
            densities = []
            for mean, covariance in zip(means[:, index], covariances[:, index][:, :, index]):
                offset = points - mean
                χ2 = np.einsum("...i,ij,...j->...", offset, np.linalg.inv(covariance), offset)
                densities.append(np.exp(-0.5 * (χ2 - χ2.min())))
            rows[row].append(_normalised(np.stack(densities), [ranges[i] for i in index]))
    return rows


def levels(density: np.ndarray, fractions: Sequence[float] = (0.68, 0.95)) -> list[float]:
    """Heights of the contours enclosing ``fractions`` of the mass of a gridded density, increasing.

    The density is sorted from its highest cell down; the height of a contour is that of
    the cell at which the cumulative mass first reaches the fraction.
    """
    values = np.sort(np.asarray(density, float).ravel())[::-1]
    cumulative = np.cumsum(values) / values.sum()
    heights = {float(values[min(np.searchsorted(cumulative, f), values.size - 1)]) for f in fractions}
    return sorted(heights)


def moments(samples: Any, weights: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean float(n_params) and standard deviation float(n_params) of samples float(n, n_params)."""
    samples = np.asarray(samples, float)
    weights = np.ones(samples.shape[0]) if weights is None else np.asarray(weights, float)
    weights = weights / weights.sum()
    mean = weights @ samples
    return mean, np.sqrt(weights @ (samples - mean) ** 2)
