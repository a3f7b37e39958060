"""Plot an IMNN fit history. Importing this module changes no global matplotlib state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def plot_history(
    history: Mapping[str, Any],
    ax: Any = None,
    expected_detF: float | None = None,
    colour: str = "C0",
    figsize: tuple[float, float] = (5, 15),
    label: str = "",
    filename: str | None = None,
    ncol: int = 1,
    intervals: Sequence[tuple[int, Any]] = (),
):
    """The reference's three-panel history plot; training solid, validation dotted.

    Panels: ``|F|`` (with a dashed line at ``expected_detF`` if given); ``|C|``
    and ``|C⁻¹|`` on a log axis; ``Λ2`` (left) and ``r`` (right, twin axis).

    Args:
        history: ``model.history``.
        ax: three axes to draw on (e.g. from an earlier call, to overlay fits);
            a new figure is made when ``None``.
        expected_detF: analytic ``|F|`` to draw for comparison.
        colour: matplotlib colour of this fit's lines.
        figsize: size of a new figure.
        label: legend label of this fit.
        filename: save the figure there as well.
        ncol: legend columns.
        intervals: ``(iteration, imnn.fisher.Information)`` pairs (``model.information_history``),
            each drawn on the ``|F|`` panel as its estimate with its bootstrap interval.

    Returns:
        The three axes (a numpy array of ``matplotlib.axes.Axes``).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(3, 1, figsize=figsize, sharex=True)
        plt.subplots_adjust(hspace=0.05)
    ax = np.asarray(ax)
    if ax.shape != (3,):
        raise ValueError(f"`ax` should hold 3 axes but has shape {ax.shape}")
    prefix = f"{label} " if label else ""
    iterations = np.arange(len(history["detF"]))
    has_validation = "val_detF" in history and len(history["val_detF"]) > 0

    def lines(axis, name, text, **style):
        axis.plot(iterations, history[name], color=colour, label=f"{prefix}{text}", **style)
        if has_validation:
            axis.plot(
                iterations, history[f"val_{name}"], color=colour, linestyle="dotted",
                label=f"{prefix}{text} (validation)", **style,
            )  # fmt: skip

    lines(ax[0], "detF", r"$|{\bf F}|$")
    if expected_detF is not None:
        ax[0].axhline(expected_detF, color="black", linestyle="dashed", label=r"analytic $|{\bf F}|$")
    for n, (iteration, info) in enumerate(intervals):
        low, high = np.asarray(info.detF_interval)
        ax[0].errorbar(
            iteration, float(info.detF), yerr=[[float(info.detF) - low], [high - float(info.detF)]], color=colour,
            marker="o", capsize=4, label=f"{prefix}{info.confidence:.0%} interval" if n == 0 else None,
        )  # fmt: skip
    ax[0].set_ylabel(r"$|{\bf F}|$")
    lines(ax[1], "detC", r"$|{\bf C}|$")
    lines(ax[1], "detinvC", r"$|{\bf C}^{-1}|$", alpha=0.5)
    ax[1].axhline(1, color="black", linestyle="dashed")
    ax[1].set_yscale("log")
    ax[1].set_ylabel(r"$|{\bf C}|$ and $|{\bf C}^{-1}|$")
    lines(ax[2], "Λ2", r"$\Lambda_2$")
    ax[2].set_ylabel(r"$\Lambda_2$")
    twin = _twin(ax[2])
    twin.plot(iterations, history["r"], color=colour, linestyle="dashed", label=f"{prefix}$r$")
    if has_validation:
        twin.plot(iterations, history["val_r"], color=colour, linestyle="dashdot", label=f"{prefix}$r$ (validation)")
    twin.set_ylabel(r"$r$")
    ax[2].set_xlabel("iteration")
    for axis in ax[:2]:
        axis.legend(frameon=False, ncol=ncol, fontsize="small")
    (left, left_labels), (right, right_labels) = ax[2].get_legend_handles_labels(), twin.get_legend_handles_labels()
    ax[2].legend(left + right, left_labels + right_labels, frameon=False, ncol=ncol, fontsize="small")
    if filename is not None:
        ax[0].figure.savefig(filename, bbox_inches="tight")
    return ax


def _twin(axis: Any) -> Any:
    """The right-hand twin of ``axis``, reused when overlaying several fits."""
    for other in axis.figure.axes:
        if (
            other is not axis
            and other.bbox.bounds == axis.bbox.bounds
            and other.get_shared_x_axes().joined(other, axis)
        ):
            return other
    return axis.twinx()


def plot_information_map(
    result: Any,
    ax: Any = None,
    relative: bool | None = None,
    parameter_names: Sequence[str] | None = None,
    label: str = "",
    colour: str = "C0",
    figsize: tuple[float, float] = (5, 4),
    filename: str | None = None,
):
    """``|F(θ)|`` of an :class:`imnn.information_map.InformationMap` over a 1-D slice or a 2-D grid.

    The parameters that vary between the points decide the picture: one → a line against it
    (the reference ``|F|`` dashed), two → a colour map (of the ratio to the reference where
    there is one), with ``θ_fid`` marked.

    Args:
        result: the map (``model.information_map(...)``).
        ax: axes to draw on; a new figure when ``None``.
        relative: draw ``|F| / reference`` (default: whenever there is a reference).
        parameter_names: axis labels, one per parameter (default ``θ_0, θ_1, …``).
        label, colour: of the line in 1-D.
        figsize, filename: size of a new figure; save it there as well.

    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    θ = np.asarray(result.θ)
    varying = [p for p in range(θ.shape[1]) if np.ptp(θ[:, p]) > 0]
    if len(varying) not in (1, 2):
        raise ValueError(f"the map's points vary in {len(varying)} parameters; a plot needs a 1-D slice or a 2-D grid")
    relative = result.reference_detF is not None if relative is None else relative
    if relative and result.reference_detF is None:
        raise ValueError("`relative=True` needs a map computed with a `reference`")
    names = list(parameter_names) if parameter_names is not None else [f"θ_{p}" for p in range(θ.shape[1])]
    value = result.ratio if relative else result.detF
    value_name = r"$|{\bf F}(\theta)|\,/\,|{\bf F}_{\rm ref}(\theta)|$" if relative else r"$|{\bf F}(\theta)|$"
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    if len(varying) == 1:
        (p,) = varying
        order = np.argsort(θ[:, p])
        ax.plot(θ[order, p], value[order], color=colour, marker="o", label=label or value_name)
        if result.reference_detF is not None and not relative:
            ax.plot(θ[order, p], result.reference_detF[order], color="black", linestyle="dashed", label="reference")
        if relative:
            ax.axhline(1, color="black", linestyle="dashed")
        if result.θ_fid is not None:
            ax.axvline(result.θ_fid[p], color="grey", linestyle="dotted", label=r"$\theta_{\rm fid}$")
        ax.set_xlabel(names[p])
        ax.set_ylabel(value_name)
        ax.legend(frameon=False, fontsize="small")
    else:
        p, q = varying
        mesh = ax.tricontourf(θ[:, p], θ[:, q], value, levels=20)
        ax.figure.colorbar(mesh, ax=ax, label=value_name)
        if result.θ_fid is not None:
            ax.plot(result.θ_fid[p], result.θ_fid[q], marker="*", color="white", markersize=12, markeredgecolor="k")
        ax.set_xlabel(names[p])
        ax.set_ylabel(names[q])
    if filename is not None:
        ax.figure.savefig(filename, bbox_inches="tight")
    return ax


def plot_hybrid_information(
    results: Mapping[str, Any],
    ax: Any = None,
    expected_detF: float | None = None,
    figsize: tuple[float, float] = (5, 3.5),
    filename: str | None = None,
):
    """``|F|`` of the fixed statistic, the network and their union, with bootstrap intervals.

    Args:
        results: ``{label: imnn.hybrid.HybridInformation}``, e.g. one entry per fixed statistic;
            each is a group of three bars.
        ax: axes to draw on; a new figure when ``None``.
        expected_detF: the analytic ``|F|``, drawn as a dashed line.
        figsize, filename: size of a new figure; save it there as well.

    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    parts = ("fixed", "network", "union")
    width = 0.8 / len(parts)
    for i, part in enumerate(parts):
        infos = [getattr(result, part) for result in results.values()]
        detF = np.array([float(info.detF) for info in infos])
        interval = np.array([np.asarray(info.detF_interval, dtype=float) for info in infos]).reshape(-1, 2)
        positions = np.arange(len(infos)) + (i - 1) * width
        ax.bar(positions, detF, width, color=f"C{i}", label=part,
               yerr=np.abs(interval.T - detF), capsize=3)  # fmt: skip
    if expected_detF is not None:
        ax.axhline(expected_detF, color="black", linestyle="dashed", label="analytic")
    ax.set_xticks(np.arange(len(results)), list(results))
    ax.set_ylabel(r"$|{\bf F}|$")
    ax.legend(frameon=False, fontsize="small", ncol=2)
    if filename is not None:
        ax.figure.savefig(filename, bbox_inches="tight")
    return ax
