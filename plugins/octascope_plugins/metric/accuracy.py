"""Accuracy against ground truth: detection, position, species, tilt and bond length."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree, ConvexHull

from octascope.analysis.octahedral_geometry import metric_input
from octascope.core.model import MetricInput, MetricOutput, Result, Truth
from octascope.core.params import Options, Plugin, param, require
from octascope.analysis.lattice import estimate_square_basis
from octascope.analysis.particle_table import core_shell_masks

_SPECIES = ("Pb", "X", "Cs")


def match_points(found_xy: np.ndarray, true_xy: np.ndarray, tolerance_A: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of found to true points within a tolerance.

    Pairs are accepted greedily in order of increasing distance, each point used at most once.
    With a tolerance well below half the nearest-neighbour spacing (0.6 Å vs 3.1 Å here) a
    point has at most one candidate and this equals the optimal assignment.

    Returns
    -------
    found_idx, true_idx : numpy.ndarray of int
        Positional indices of matched pairs.
    """
    if len(found_xy) == 0 or len(true_xy) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    pairs = cKDTree(found_xy).query_ball_tree(cKDTree(true_xy), r=tolerance_A)
    fi = np.repeat(np.arange(len(found_xy)), [len(p) for p in pairs])
    ti = np.fromiter((t for p in pairs for t in p), dtype=int, count=len(fi))
    d = np.linalg.norm(found_xy[fi] - true_xy[ti], axis=1)
    order = np.argsort(d, kind="stable")
    used_f = np.zeros(len(found_xy), bool)
    used_t = np.zeros(len(true_xy), bool)
    keep: list[int] = []
    for k in order:  # loop over candidate pairs (≈ one per column), not pixels
        if not used_f[fi[k]] and not used_t[ti[k]]:
            used_f[fi[k]] = used_t[ti[k]] = True
            keep.append(int(k))
    kept = np.asarray(keep, dtype=int)
    return fi[kept], ti[kept]


def _prf(n_match: int, n_found: int, n_true: int) -> tuple[float, float, float]:
    precision = n_match / n_found if n_found else float("nan")
    recall = n_match / n_true if n_true else float("nan")
    f1 = 2 * n_match / (n_found + n_true) if (n_found + n_true) else float("nan")
    return precision, recall, f1


def outer_cell_mask(xy_A: np.ndarray, species: np.ndarray, shell: np.ndarray | None = None) -> np.ndarray:
    """Columns of the outermost unit cell: ``shell == 0`` when truth has a shell index, else
    columns within one Pb-Pb spacing of the convex hull of all columns."""
    if shell is not None:
        return np.asarray(shell) == 0

    a = float(np.mean(np.linalg.norm(estimate_square_basis(xy_A[species == "Pb"]), axis=1)))
    hull = ConvexHull(xy_A)
    eq = hull.equations  # outward normals: n·x + b <= 0 inside, -(n·x + b) = distance to a facet
    depth = -(xy_A @ eq[:, :2].T + eq[:, 2])
    return depth.min(axis=1) < a


@dataclass(frozen=True, kw_only=True)
class AccuracyOptions(Options):
    match_tolerance_A: float = param(0.6, unit="Å", doc="largest distance between a found and a true column to count as the same column")

    def check(self) -> None:
        require(self.match_tolerance_A > 0, f"match_tolerance_A must be > 0 Å, got {self.match_tolerance_A}")


#: the accuracy figures of summary.json's ``accuracy`` section (the rest stay in ``scalars``)
def _is_summary_key(k: str) -> bool:
    return k.startswith(("detection_", "rmse_pm", "species_accuracy")) or (
        k.startswith(("theta", "L1_", "L2_")) and ("mae" in k or "bias" in k))


class AccuracyMetric(Plugin):
    """Detection, localisation, classification and geometry errors against ground truth.

    Found and true columns are matched one-to-one within ``match_tolerance_A``. Reported:
    precision, recall and F1 of detection (all columns and the outermost unit cell), position
    RMSE per true species [pm], species accuracy over matched columns, and, when truth
    octahedra are given, the error of θ1/θ2/θ3 [deg] and L1/L2 [Å] of matched octahedra
    (non-edge octahedra of the pipeline's octahedral geometry; no other metric is needed).
    """

    name: ClassVar[str] = "accuracy"
    Options = AccuracyOptions
    options: AccuracyOptions
    requires: ClassVar[tuple[str, ...]] = ("columns",)  # and the geometry, when truth has octahedra
    after: ClassVar[tuple[str, ...]] = ("octahedral",)  # its shell depth, for the per-particle core − shell Δθ3

    def compute(self, data: MetricInput | Result, truth: Truth | None = None) -> MetricOutput:
        data = metric_input(data, truth)
        truth = data.truth
        if truth is None or data.columns is None:
            return MetricOutput()
        found, true = _without_invalid_truth(data.columns, truth.columns, self.options.match_tolerance_A)
        f_xy = found[["x_A", "y_A"]].to_numpy(float)
        t_xy = true[["x_A", "y_A"]].to_numpy(float)
        fi, ti = match_points(f_xy, t_xy, self.options.match_tolerance_A)
        s: dict[str, float] = {}
        s["n_columns_found"] = len(found)
        s["n_columns_true"] = len(true)
        s["detection_precision"], s["detection_recall"], s["detection_f1"] = _prf(len(fi), len(found), len(true))

        t_species = true["species"].astype(str).to_numpy()
        outer = outer_cell_mask(t_xy, t_species, true["shell"].to_numpy() if "shell" in true else None)
        # found columns near an outer true column (or unmatched ones close to the outer region) count for the outer score
        matched_outer = outer[ti]
        f_outer = np.zeros(len(found), bool)
        f_outer[fi[matched_outer]] = True
        unmatched = np.setdiff1d(np.arange(len(found)), fi)
        if len(unmatched) and outer.any():
            d, nearest = cKDTree(t_xy).query(f_xy[unmatched], k=1)
            f_outer[unmatched] = outer[nearest]
        s["detection_precision_outer"], s["detection_recall_outer"], s["detection_f1_outer"] = _prf(
            int(matched_outer.sum()), int(f_outer.sum()), int(outer.sum()))

        err = f_xy[fi] - t_xy[ti]
        sq = (err**2).sum(axis=1)
        s["rmse_pm_all"] = float(np.sqrt(sq.mean()) * 100) if len(sq) else float("nan")
        for sp in _SPECIES:
            m = t_species[ti] == sp
            s[f"rmse_pm_{sp}"] = float(np.sqrt(sq[m].mean()) * 100) if m.any() else float("nan")
        matches = pd.DataFrame({
            "found_row": found.index.to_numpy()[fi], "true_row": true.index.to_numpy()[ti],
            "x_A": t_xy[ti, 0], "y_A": t_xy[ti, 1], "dx_pm": err[:, 0] * 100, "dy_pm": err[:, 1] * 100,
            "true_species": t_species[ti],
        })
        if "species" in found:
            f_species = found["species"].astype(str).to_numpy()[fi]
            matches["found_species"] = f_species
            s["species_accuracy"] = float((f_species == t_species[ti]).mean()) if len(fi) else float("nan")
            for sp in _SPECIES:
                m = t_species[ti] == sp
                s[f"species_accuracy_{sp}"] = float((f_species[m] == sp).mean()) if m.any() else float("nan")

        tables = {"accuracy_matches": matches}
        octs = data.geometry.table if data.geometry is not None else None
        true_octs = truth.octahedra
        if true_octs is not None and "valid_001" in true_octs:
            true_octs = true_octs[true_octs["valid_001"].astype(bool).to_numpy()]
        if true_octs is not None and octs is not None and len(octs):
            use = octs[~octs["edge"].astype(bool)] if "edge" in octs else octs
            to = true_octs
            oi, tj = match_points(use[["x_A", "y_A"]].to_numpy(float), to[["x_A", "y_A"]].to_numpy(float),
                                  self.options.match_tolerance_A)
            s["n_octahedra_matched"] = len(oi)
            s["octahedra_recall"] = len(oi) / len(to) if len(to) else float("nan")
            geo = {"octahedron_x_A": to["x_A"].to_numpy()[tj], "octahedron_y_A": to["y_A"].to_numpy()[tj]}
            for q in ("theta1_deg", "theta2_deg", "theta3_deg", "L1_A", "L2_A"):
                if q in use and q in to:
                    geo[f"{q}_error"] = use[q].to_numpy(float)[oi] - to[q].to_numpy(float)[tj]
                    e = geo[f"{q}_error"][np.isfinite(geo[f"{q}_error"])]
                    unit = "deg" if q.endswith("deg") else "pm"
                    scale = 1.0 if unit == "deg" else 100.0
                    base = q.replace("_deg", "").replace("_A", "")
                    s[f"{base}_mae_{unit}"] = float(np.abs(e).mean() * scale) if len(e) else float("nan")
                    s[f"{base}_bias_{unit}"] = float(e.mean() * scale) if len(e) else float("nan")
            if "theta1_deg_error" in geo and "theta2_deg_error" in geo:
                e12 = np.abs(np.r_[geo["theta1_deg_error"], geo["theta2_deg_error"]])
                e12 = e12[np.isfinite(e12)]
                # the tilt error of the low-dose issue: mean(|Δθ1|, |Δθ2|) over matched octahedra
                s["theta_mae_deg"] = float(e12.mean()) if len(e12) else float("nan")
            tables["accuracy_octahedra"] = pd.DataFrame(geo)
        if "particle" in truth.columns and "particle" in data.columns:
            octahedral = data.previous.get("octahedral")
            depth = int((octahedral.summary if octahedral is not None else {}).get("shell_depth_cells", 3))
            per = particle_accuracy(data.columns, truth, data.geometry.table if data.geometry is not None else None,
                                    self.options.match_tolerance_A, depth)
            tables["accuracy_particles"] = per
            s.update(particle_verdict_counts(per))
        return MetricOutput(tables=tables, scalars=s, summary={k: v for k, v in s.items() if _is_summary_key(k)})


def _without_invalid_truth(found: pd.DataFrame, true: pd.DataFrame, tolerance_A: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leave out the truth of particles that have no valid [001] truth (``valid_001`` False: off
    the zone axis, their projected columns are streaks) and the found columns on them."""
    if "valid_001" not in true or true["valid_001"].astype(bool).all():
        return found, true
    valid = true["valid_001"].astype(bool).to_numpy()
    d, k = cKDTree(true[["x_A", "y_A"]].to_numpy(float)).query(found[["x_A", "y_A"]].to_numpy(float), k=1)
    on_invalid = ~valid[k] & (d < 3 * tolerance_A + 2.0)
    return found[~on_invalid], true[valid]


def _holders(found_ids: np.ndarray, share: float = 0.1) -> list[int]:
    """The found particles (ids > 0) that hold at least ``share`` of a true particle's matched
    columns: one, or several when it was split (e.g. the two registry domains of a planar fault)."""
    ids, counts = np.unique(found_ids[found_ids > 0], return_counts=True)
    return [int(i) for i in ids[counts >= share * max(found_ids.size, 1)]]


def particle_accuracy(found: pd.DataFrame, truth: Truth, geometry: pd.DataFrame | None, tolerance_A: float,
                      shell_depth_cells: int) -> pd.DataFrame:
    """One row per true particle: the found particles that hold its matched columns (``4+5`` when
    it was split), detection precision/recall/F1 and species accuracy on its columns, octahedra coverage
    (measured octahedra matched / true), θ error mean(|Δθ1|, |Δθ2|) [deg] and the core − shell Δθ3
    found and true [deg] (the same shell depth), and whether the true particle has a valid [001] truth."""

    true = truth.columns
    t_xy, f_xy = true[["x_A", "y_A"]].to_numpy(float), found[["x_A", "y_A"]].to_numpy(float)
    fi, ti = match_points(f_xy, t_xy, tolerance_A)
    t_pid, f_pid = true["particle"].to_numpy(int), found["particle"].to_numpy(int)
    t_sp = true["species"].astype(str).to_numpy()
    f_sp = found["species"].astype(str).to_numpy() if "species" in found else np.full(len(found), "unknown")
    valid = true["valid_001"].astype(bool).to_numpy() if "valid_001" in true else np.ones(len(true), bool)
    rows = []
    for tp in np.unique(t_pid):
        m = t_pid[ti] == tp
        fps = _holders(f_pid[fi[m]])
        n_found = int(np.isin(f_pid, fps).sum())
        matched_in = int((m & np.isin(f_pid[fi], fps)).sum())
        prec, rec, f1 = _prf(matched_in, n_found, int((t_pid == tp).sum()))
        row = {"particle_true": int(tp), "particle_found": "+".join(str(p) for p in fps) or "-",
               "valid_001": bool(valid[t_pid == tp].all()),
               "detection_precision": prec, "detection_recall": rec, "detection_f1": f1,
               "species_accuracy": float((f_sp[fi[m]] == t_sp[ti[m]]).mean()) if m.any() else float("nan")}
        row.update(_particle_geometry_errors(truth, geometry, tp, fps, tolerance_A, shell_depth_cells, core_shell_masks))
        rows.append(row)
    return pd.DataFrame(rows)


def _particle_geometry_errors(truth: Truth, geometry: pd.DataFrame | None, tp: int, fps: list[int], tolerance_A: float,
                              depth: int, core_shell_masks) -> dict[str, float]:
    """Coverage, θ error and core − shell Δθ3 (found, true, error) of one true particle."""
    out = {"n_octahedra_true": 0, "coverage": float("nan"), "theta_mae_deg": float("nan"),
           "dtheta3_true_deg": float("nan"), "dtheta3_found_deg": float("nan"), "dtheta3_error_deg": float("nan")}
    to = truth.octahedra
    if to is None or "particle" not in to:
        return out
    to = to[(to["particle"].to_numpy(int) == tp) & np.isfinite(to["theta3_deg"].to_numpy(float))]
    out["n_octahedra_true"] = len(to)
    if "shell" in to:
        shell = to["shell"].to_numpy(float)
        t3 = to["theta3_deg"].to_numpy(float)
        core, sh = t3[shell >= depth], t3[shell < depth]
        if core.size and sh.size:
            out["dtheta3_true_deg"] = float(core.mean() - sh.mean())
    if geometry is None or not fps or "particle" not in geometry or len(to) == 0:
        return out
    g = geometry[np.isin(geometry["particle"].to_numpy(int), fps) & ~geometry["edge"].astype(bool).to_numpy()]
    g = g[np.isfinite(g["theta3_deg"].to_numpy(float))]
    oi, tj = match_points(g[["x_A", "y_A"]].to_numpy(float), to[["x_A", "y_A"]].to_numpy(float), tolerance_A)
    out["coverage"] = len(oi) / len(to)
    if len(oi):
        e = np.abs(np.r_[g["theta1_deg"].to_numpy(float)[oi] - to["theta1_deg"].to_numpy(float)[tj],
                         g["theta2_deg"].to_numpy(float)[oi] - to["theta2_deg"].to_numpy(float)[tj]])
        out["theta_mae_deg"] = float(np.nanmean(e))
    c, sh = core_shell_masks(g, depth)
    t3 = g["theta3_deg"].to_numpy(float)
    if c.any() and sh.any():
        out["dtheta3_found_deg"] = float(t3[c].mean() - t3[sh].mean())
        out["dtheta3_error_deg"] = out["dtheta3_found_deg"] - out["dtheta3_true_deg"]
    return out


def particle_verdict_counts(per: pd.DataFrame) -> dict[str, float]:
    """Frame-level verdict counts of a field with truth: true particles, those with a valid [001]
    truth analysed (found with octahedra) and the invalid (off-axis) ones that yielded tilts (should be 0)."""
    valid = per["valid_001"].astype(bool)
    with_tilts = per["coverage"].fillna(0) > 0
    return {"n_particles_true": float(len(per)), "n_particles_true_on_axis": float(valid.sum()),
            "n_particles_on_axis_analysed": float((valid & with_tilts).sum()),
            "n_particles_off_axis_with_tilts": float((~valid & with_tilts).sum())}
