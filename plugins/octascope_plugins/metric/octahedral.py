"""The ``octahedral`` metric: the per-octahedron table (octahedra.csv), core/shell tilt statistics and maps.

The geometry itself (φ1-φ4, θ1-θ3, σ1-σ4, L1, L2 and their uncertainties) is computed once by the
pipeline after the network builder (:mod:`octascope.analysis.octahedral_geometry`); this metric reports
it: the ``octahedra`` table, the means of θ1-θ3 in the core and the shell (the outer
``shell_depth_cells`` unit cells) with their propagated uncertainties, of L1 and L2, the per-particle
means and the test of each particle's core − shell difference (``particles`` table,
:func:`octascope.analysis.particle_table.particle_tilts`), and the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd

from octascope.core.errors import InputError
from octascope.analysis.octahedral_geometry import metric_input
from octascope.analysis.particle_table import core_shell_masks, particle_tilts
from octascope.analysis.uncertainty import GeometryCovariance, region_weights
from octascope.core.model import LazyFigures, TILT_NAMES, MetricInput, MetricOutput, Result, Truth
from octascope.core.params import Options, Plugin, param, require
from octascope_plugins.metric.octahedral_figures import octahedral_figures


def core_shell_scalars(table: pd.DataFrame, shell_depth_cells: int,
                       covariance: GeometryCovariance | None = None) -> dict[str, float]:
    """Means of θ1-θ3 in the core (shell index >= depth) and the shell (< depth), and of L1, L2.

    Edge-flagged rows are left out; so is an octahedron whose depth is unknown (its particle is
    cut by the frame edge) unless it is surely in the core
    (:func:`octascope.analysis.particle_table.core_shell_masks`). Empty groups give NaN. With the
    propagation (``covariance``, rows following ``table``) the means of θ get their total 1σ
    (``<name>_mean_<region>_err``: statistical and systematic, correlations kept).
    """
    keep = ~table["edge"].to_numpy(bool)
    core_all, shell_all = core_shell_masks(table, shell_depth_cells)
    use = table[keep]
    in_core, in_shell = core_all[keep], shell_all[keep]
    scalars: dict[str, float] = {}
    for name in TILT_NAMES:
        v = use[name].to_numpy(float)
        for region, sel in (("core", in_core), ("shell", in_shell)):
            vv = v[sel & np.isfinite(v)]
            scalars[f"{name}_mean_{region}"] = float(vv.mean()) if vv.size else float("nan")
            scalars[f"{name}_std_{region}"] = float(vv.std(ddof=1)) if vv.size > 1 else float("nan")
            if covariance is not None and vv.size and f"{name.replace('_deg', '')}_err_deg" in table:
                w = np.zeros(len(table))
                w[np.flatnonzero(keep)] = region_weights(sel, v)
                scalars[f"{name}_mean_{region}_err"] = covariance.error(name, w, "total")
        vv = v[np.isfinite(v)]
        scalars[f"{name}_mean"] = float(vv.mean()) if vv.size else float("nan")
    for name in ("L1_A", "L2_A"):
        v = use[name].to_numpy(float)
        v = v[np.isfinite(v)]
        scalars[f"{name}_mean"] = float(v.mean()) if v.size else float("nan")
    for col in ("theta3_err_deg", "theta3_sys_deg", "theta3_total_err_deg"):
        if col in use:
            e = use[col].to_numpy(float)
            e = e[np.isfinite(e)]
            scalars[f"{col}_median"] = float(np.median(e)) if e.size else float("nan")
    return scalars


def all_octahedra_tilt(table: pd.DataFrame, shell_depth_cells: int,
                       covariance: GeometryCovariance | None = None) -> dict[str, Any]:
    """The frame's mean θ1-θ3 over every measured (non-edge) octahedron, core and shell together,
    with its total 1σ, and what the core/shell split found: ``n_octahedra_core``,
    ``n_octahedra_shell``, ``n_octahedra_measured`` and ``deepest_shell_cells`` (the largest known
    depth below the surface, in unit cells; ``None`` when no depth is known).

    The printed summary falls back to this mean when the core or the shell is empty — a particle
    at most 2 × ``shell_depth_cells`` cells across has no core (the bundled 6-cell example with the
    default 3-cell shell).
    """
    keep = ~table["edge"].to_numpy(bool)
    in_core, in_shell = core_shell_masks(table, shell_depth_cells)
    shell = table["shell"].to_numpy(float)
    known = keep & (shell >= 0)
    out: dict[str, Any] = {}
    measured = keep & np.isfinite(table["theta3_deg"].to_numpy(float)) if "theta3_deg" in table else keep
    for k in (1, 2, 3):
        name = f"theta{k}_deg"
        v = table[name].to_numpy(float)
        sel = keep & np.isfinite(v)
        out[f"{name}_mean_all"] = float(v[sel].mean()) if sel.any() else float("nan")
        if covariance is not None and sel.any() and f"theta{k}_err_deg" in table:
            out[f"{name}_mean_all_err"] = covariance.error(name, region_weights(sel, v), "total")
    out["n_octahedra_measured"] = int(measured.sum())
    out["n_octahedra_core"] = int((in_core & measured).sum())
    out["n_octahedra_shell"] = int((in_shell & measured).sum())
    out["deepest_shell_cells"] = int(shell[known].max()) if known.any() else None
    return out


@dataclass(frozen=True, kw_only=True)
class OctahedralOptions(Options):
    shell_depth_cells: int = param(3, unit="unit cells",
                                   doc="octahedra closer than this to the particle edge form the shell, the rest the core")
    uncertainty: bool = param(True, doc="report the propagated 1σ errors (*_err_*, *_sys_*, *_total_err_*) in the "
                                        "tables")
    figures: bool = param(True, doc="draw θ/φ/L maps, core/shell histograms, the tilt profile and the network overlay")

    def check(self) -> None:
        require(self.shell_depth_cells >= 0,
                f"shell_depth_cells is {self.shell_depth_cells}; give a number of unit cells >= 0 (default 3)")


class OctahedralMetric(Plugin):
    """Octahedral tilt angles and X-Pb-X lengths per octahedron, with core/shell statistics."""

    name: ClassVar[str] = "octahedral"
    Options = OctahedralOptions
    options: OctahedralOptions
    requires: ClassVar[tuple[str, ...]] = ("columns", "octahedra", "geometry")
    after: ClassVar[tuple[str, ...]] = ()

    def compute(self, data: MetricInput | Result, truth: Truth | None = None) -> MetricOutput:
        """The ``octahedra`` table, its scalars, the ``tilt`` summary section (and figures)."""
        data = metric_input(data, truth)
        if data.columns is None or data.octahedra is None or data.geometry is None:
            raise InputError("the octahedral metric needs located columns and an octahedral network; run a network builder first")
        table = data.geometry.table.copy()
        covariance = data.geometry.covariance if self.options.uncertainty else None
        if not self.options.uncertainty:
            table = table.drop(columns=[c for c in table.columns if c.endswith(("_err_deg", "_err_A", "_sys_deg", "_sys_A"))])
        depth = self.options.shell_depth_cells
        scalars = core_shell_scalars(table, depth, covariance)
        scalars["n_octahedra"] = float(len(table))
        scalars["n_octahedra_complete"] = float(table["complete"].sum())
        scalars["n_octahedra_edge"] = float(table["edge"].sum())
        tilt = {f"theta{k}_deg_mean_{region}": scalars[f"theta{k}_deg_mean_{region}"]
                for k in (1, 2, 3) for region in ("core", "shell")}
        tilt.update({k: v for k, v in scalars.items() if k.startswith("theta") and k.endswith("_err") and "_mean_" in k})
        tilt.update(all_octahedra_tilt(table, depth, covariance))
        summary = {"tilt": tilt, "shell_depth_cells": depth,
                   "n_octahedra_complete": int(table["complete"].sum()), "n_octahedra_edge": int(table["edge"].sum())}
        figures: Mapping[str, Any] = {}
        if self.options.figures and len(table):
            figures = LazyFigures(partial(octahedral_figures, data.denoised, data.columns, data.octahedra, table, depth,
                                          data.particles))
        return MetricOutput(tables={"octahedra": table, "particles": particle_tilts(table, depth, covariance)}, scalars=scalars,
                            figures=figures, summary=summary)
