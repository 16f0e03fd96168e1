"""Figures of a time series (:class:`octascope.analysis.series.SeriesResult`): per tracked particle,
its mean octahedral tilts, lattice parameters and in-plane rotation against time (or dose, or frame)
with 1σ error bars, and the measured drift.

Pyplot-free :class:`matplotlib.figure.Figure` objects, as in :mod:`octascope.results.figures`
(whose :func:`~octascope.results.figures.new_figure` they use; no style of their own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from octascope.results.figures import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from octascope.analysis.series import SeriesResult


def series_axis(series: pd.DataFrame) -> tuple[str, str]:
    """The x column of the series figures and its label: time [s] when known, else the cumulative
    dose [e/Å²], else the frame index."""
    for col, label in (("time_s", "time [s]"), ("dose_e_per_A2", "cumulative dose [e/Å²]")):
        if col in series and np.isfinite(pd.to_numeric(series[col], errors="coerce")).any():
            return col, label
    return "frame", "frame"


def _panels(series: pd.DataFrame, quantities: list[tuple[str, str, str]], title: str) -> "Figure":
    xcol, xlabel = series_axis(series)
    fig, axes = new_figure(len(quantities))
    for ax, (col, err, label) in zip(axes, quantities):
        for pid, grp in series.groupby("particle"):
            if col not in grp or not np.isfinite(grp[col].to_numpy(float)).any():
                continue
            yerr = grp[err].to_numpy(float) if err in grp else None
            ax.errorbar(grp[xcol].to_numpy(float), grp[col].to_numpy(float), yerr=yerr, marker="o", ms=3,
                        capsize=2, lw=1, label=f"particle {pid}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
    if series["particle"].nunique() > 1:
        axes[0].legend(fontsize="small")
    fig.suptitle(title)
    return fig


def series_tilt_figure(series: pd.DataFrame) -> "Figure":
    """Mean θ1, θ2, θ3 [deg] of each tracked particle against time/dose/frame, ±1σ."""
    return _panels(series, [(f"theta{k}_deg", f"theta{k}_err_deg", f"mean θ{k} [deg]") for k in (1, 2, 3)],
                   "octahedral tilts per particle (±1σ)")


def series_lattice_figure(series: pd.DataFrame) -> "Figure":
    """Pb-Pb lattice parameters |a1|, |a2| [Å] and the in-plane rotation [deg] against time/dose/frame, ±1σ."""
    return _panels(series, [("a1_A", "a1_err_A", "|a1| [Å]"), ("a2_A", "a2_err_A", "|a2| [Å]"),
                            ("rotation_deg", "rotation_err_deg", "in-plane rotation [deg]")],
                   "lattice parameters and rotation per particle (±1σ)")


def series_drift_figure(result: "SeriesResult") -> "Figure":
    """The drift (x, y) of every frame against the first [Å] from the registration."""
    fig, (ax,) = new_figure(1)
    d = result.drift_px * result.pixel_size_A
    ax.plot(result.frames, d[:, 0], marker="o", ms=3, label="x")
    ax.plot(result.frames, d[:, 1], marker="s", ms=3, label="y")
    ax.set_xlabel("frame")
    ax.set_ylabel("drift against the first frame [Å]")
    ax.legend(fontsize="small")
    return fig


def series_figures(result: "SeriesResult") -> dict[str, "Figure"]:
    """The figures of a series by file stem (none without particles)."""
    if not len(result.series):
        return {"series_drift": series_drift_figure(result)}
    return {"series_tilts": series_tilt_figure(result.series), "series_lattice": series_lattice_figure(result.series),
            "series_drift": series_drift_figure(result)}
