"""The ``lattice`` metric: Cs-Cs spacings C1, C2, C3 and Pb-Pb spacings P1, P2, P3, X-column ellipticity.

C1 (P1) is the distance from a Cs (Pb) column to its neighbour of the same species along the
local ``+a1`` direction, C2 (P2) along ``+a2``; C3 (P3) is the mean of the two that exist. Each
value is reported at the column it starts from, so each neighbour pair is counted once. The
local lattice vectors are those of the nearest octahedron (network builder), falling back to the
particle-wide basis.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from octascope.core.errors import InputError
from octascope.analysis.lattice import estimate_square_basis
from octascope.analysis.octahedral_geometry import metric_input, octahedron_axes
from octascope.core.model import LazyFigures, MetricInput, MetricOutput, Octahedra, Result, Truth
from octascope.core.params import Options, Plugin, param, require
from octascope_plugins.metric.lattice_figures import lattice_figures


def neighbour_spacings(xy_A: np.ndarray, a1: np.ndarray, a2: np.ndarray, tolerance_frac: float) -> np.ndarray:
    """Distances from each point to the point nearest ``xy + a1`` and ``xy + a2`` [Å].

    Parameters
    ----------
    xy_A : numpy.ndarray
        (N, 2) positions of one sublattice [Å].
    a1, a2 : numpy.ndarray
        (N, 2) local lattice vectors at each point [Å].
    tolerance_frac : float
        Largest miss of the expected site, as a fraction of ``|a|`` [1].

    Returns
    -------
    numpy.ndarray
        (N, 2) spacings along a1 and a2; NaN where no neighbour lies within tolerance.
    """
    out = np.full((len(xy_A), 2), np.nan)
    if len(xy_A) < 2:
        return out
    tree = cKDTree(xy_A)
    for k, a in enumerate((a1, a2)):
        target = xy_A + a
        dist, idx = tree.query(target, k=1)
        ok = dist <= tolerance_frac * np.linalg.norm(a, axis=1)
        out[ok, k] = np.linalg.norm(xy_A[idx[ok]] - xy_A[ok], axis=1)
    return out


def ellipticity_scalars(columns: pd.DataFrame, species: str = "X") -> dict[str, float]:
    """Median ellipticity ratio (major/minor width) of one species, its standard error and IQR.

    The standard error of the median is ``1.2533 · std / √n`` (normal approximation), the spread
    measure used by Schrenker et al. (2024). Edge columns are left out.
    """
    if "ellipticity" not in columns or "species" not in columns:
        return {}
    sel = (columns["species"] == species).to_numpy()
    if "edge" in columns:
        sel = sel & ~columns["edge"].to_numpy(bool)
    e = columns.loc[sel, "ellipticity"].to_numpy(float)
    e = e[np.isfinite(e)]
    key = species.lower()
    if e.size == 0:
        return {f"{key}_ellipticity_median": float("nan")}
    q1, q3 = np.percentile(e, [25, 75])
    return {
        f"{key}_ellipticity_median": float(np.median(e)),
        f"{key}_ellipticity_median_err": float(1.2533 * e.std(ddof=1) / np.sqrt(e.size)) if e.size > 1 else float("nan"),
        f"{key}_ellipticity_iqr": float(q3 - q1),
    }


def lattice_spacings(columns: pd.DataFrame, octahedra: Octahedra | None, tolerance_frac: float = 0.25) -> pd.DataFrame:
    """Per-column Cs-Cs and Pb-Pb spacings, particle by particle when the columns carry a
    ``particle`` (each particle measured along its own lattice axes); the table then has a
    ``particle`` column too."""
    if "particle" not in columns or octahedra is None or "particle" not in octahedra.table:
        return _spacings(columns, octahedra, tolerance_frac)
    parts = []
    for pid in np.unique(octahedra.table["particle"].to_numpy(int)):
        tab = octahedra.table[octahedra.table["particle"].to_numpy(int) == pid]
        mine = Octahedra(table=tab, bonds=np.zeros((0, 2), int), lattice_vectors_A=octahedra.lattice_vectors_A)
        cols = columns[columns["particle"].to_numpy(int) == pid]
        parts.append(_spacings(cols, mine, tolerance_frac).assign(particle=int(pid)))
    return pd.concat(parts, ignore_index=True) if parts else _spacings(columns.iloc[:0], None, tolerance_frac)


def _spacings(columns: pd.DataFrame, octahedra: Octahedra | None, tolerance_frac: float) -> pd.DataFrame:
    """Per-column Cs-Cs and Pb-Pb spacings of one lattice.

    Returns
    -------
    pandas.DataFrame
        One row per Cs and per Pb column: ``column`` (row label in ``columns``), ``species``,
        ``x_A``, ``y_A``, ``C1_A``, ``C2_A``, ``C3_A`` (Cs rows), ``P1_A``, ``P2_A``, ``P3_A`` (Pb
        rows) [Å], ``shell`` and ``edge`` (of the nearest octahedron, or the column's own edge flag).
    """
    species = columns["species"].astype(str).to_numpy()
    xy = columns[["x_A", "y_A"]].to_numpy(float)
    if octahedra is not None and len(octahedra) >= 1:
        a1o, a2o = octahedron_axes(octahedra)
        oxy = octahedra.table[["x_A", "y_A"]].to_numpy(float)
        o_shell = octahedra.table["shell"].to_numpy() if "shell" in octahedra.table else np.full(len(oxy), -1)
        o_edge = octahedra.table["edge"].to_numpy(bool) if "edge" in octahedra.table else np.zeros(len(oxy), bool)
    else:
        pb_xy = xy[species == "Pb"]
        basis = estimate_square_basis(pb_xy if len(pb_xy) >= 4 else xy[species == "Cs"])
        oxy = pb_xy if len(pb_xy) else np.zeros((1, 2))
        a1o = np.broadcast_to(basis[0], oxy.shape)
        a2o = np.broadcast_to(basis[1], oxy.shape)
        o_shell = np.full(len(oxy), -1)
        o_edge = np.zeros(len(oxy), bool)
    tree = cKDTree(oxy)
    own_edge = columns["edge"].to_numpy(bool) if "edge" in columns else np.zeros(len(columns), bool)
    parts = []
    for sp, prefix in (("Cs", "C"), ("Pb", "P")):
        sel = np.flatnonzero(species == sp)
        p = xy[sel]
        _, near = tree.query(p, k=1) if len(p) else (None, np.zeros(0, int))
        d = neighbour_spacings(p, a1o[near], a2o[near], tolerance_frac)
        part = pd.DataFrame({
            "column": columns.index.to_numpy()[sel], "species": sp, "x_A": p[:, 0], "y_A": p[:, 1],
            "C1_A": np.nan, "C2_A": np.nan, "C3_A": np.nan, "P1_A": np.nan, "P2_A": np.nan, "P3_A": np.nan,
            "shell": o_shell[near], "edge": o_edge[near] | own_edge[sel],
        })
        part[f"{prefix}1_A"] = d[:, 0]
        part[f"{prefix}2_A"] = d[:, 1]
        n_ok = np.isfinite(d).sum(axis=1)
        part[f"{prefix}3_A"] = np.where(n_ok > 0, np.nansum(d, axis=1) / np.maximum(n_ok, 1), np.nan)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@dataclass(frozen=True, kw_only=True)
class LatticeOptions(Options):
    tolerance_frac: float = param(0.25, unit="fraction of the lattice spacing",
                                  doc="largest miss of the expected neighbour site")
    figures: bool = param(True, doc="draw the spacing maps and line profiles")

    def check(self) -> None:
        require(0 < self.tolerance_frac < 0.5,
                f"tolerance_frac is {self.tolerance_frac}; give a fraction of the lattice spacing in (0, 0.5), e.g. 0.25")


class LatticeMetric(Plugin):
    """Cs-Cs (C1, C2, C3) and Pb-Pb (P1, P2, P3) spacing per column, and X-column ellipticity."""

    name: ClassVar[str] = "lattice"
    Options = LatticeOptions
    options: LatticeOptions
    requires: ClassVar[tuple[str, ...]] = ("columns",)  # the network's local lattice vectors when there is one
    after: ClassVar[tuple[str, ...]] = ()

    def compute(self, data: MetricInput | Result, truth: Truth | None = None) -> MetricOutput:
        """Compute the ``lattice`` table and its mean spacings (and figures)."""
        data = metric_input(data, truth)
        columns = data.columns
        if columns is None or "species" not in columns:
            raise InputError("the lattice metric needs classified columns (species); run a classifier first")
        table = lattice_spacings(columns, data.octahedra, self.options.tolerance_frac)
        use = table[~table["edge"].to_numpy(bool)]
        scalars: dict[str, float] = {}
        for name in ("C1_A", "C2_A", "C3_A", "P1_A", "P2_A", "P3_A"):
            v = use[name].to_numpy(float)
            v = v[np.isfinite(v)]
            scalars[f"{name}_mean"] = float(v.mean()) if v.size else float("nan")
            scalars[f"{name}_std"] = float(v.std(ddof=1)) if v.size > 1 else float("nan")
        scalars.update(ellipticity_scalars(columns, "X"))
        summary = {k: scalars[k] for k in ("C3_A_mean", "P3_A_mean")}
        figures: Mapping[str, Any] = {}
        if self.options.figures and len(use):
            basis = None
            if data.octahedra is not None and np.isfinite(np.asarray(data.octahedra.lattice_vectors_A, float)).all():
                basis = np.asarray(data.octahedra.lattice_vectors_A, float)
            figures = LazyFigures(partial(lattice_figures, table, basis))
        return MetricOutput(tables={"lattice": table}, scalars=scalars, figures=figures, summary=summary)
