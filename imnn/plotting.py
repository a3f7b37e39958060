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
