"""The particle table (particles.csv) and the frame's statistics over particles.

One row per particle: where it is and how large (centroid [Å], area [nm²], extent along its two
lattice axes [nm], aspect ratio), its in-plane rotation [deg] and Pb-Pb lattice parameters [Å],
the zone-axis verdict, its columns per species, the octahedra measured, its verdict with the
reasons, and whether it touches the frame edge. The ``octahedral`` metric adds its mean tilts in
core and shell with their uncertainties and the test of the core − shell difference
(:func:`particle_tilts`), joined on ``particle``.
"""

from __future__ import annotations

from typing import Any
import math

import numpy as np
import pandas as pd

from octascope.analysis.uncertainty import GeometryCovariance, Part, region_weights
from octascope.core.model import TILT_NAMES, Particle, Result

#: columns of particles.csv that scripts read (more may follow)
PARTICLES_CSV_FIRST = ["particle", "verdict", "trusted", "reasons", "touches_edge", "centroid_x_A", "centroid_y_A",
                       "area_nm2", "size_a1_nm", "size_a2_nm", "aspect_ratio", "rotation_deg", "a1_A", "a2_A",
                       "zone_axis"]


def _lattice(p: Particle) -> tuple[float, float, float]:
    """|a1|, |a2| [Å] and the angle between them [deg] of a particle's Pb-Pb basis (NaN without one)."""
    if p.lattice_basis_A is None:
        return float("nan"), float("nan"), float("nan")
    b = np.asarray(p.lattice_basis_A, float)
    n1, n2 = np.linalg.norm(b, axis=1)
    angle = float(np.degrees(np.arccos(np.clip(abs(b[0] @ b[1]) / (n1 * n2), 0, 1))))
    return float(n1), float(n2), angle


def particle_table(result: Result) -> pd.DataFrame:
    """The per-particle table of a result (module docstring); empty without particles."""
    rows: list[dict[str, Any]] = []
    cols = result.columns
    geo = result.geometry.table if result.geometry is not None else None
    for p in result.particles:
        mine = cols[cols["particle"] == p.id] if cols is not None and "particle" in cols else None
        counts = mine["species"].value_counts().to_dict() if mine is not None and "species" in mine else {}
        a1, a2, angle = _lattice(p)
        s1, s2 = p.size_A
        octs = geo[geo["particle"] == p.id] if geo is not None and "particle" in geo else None
        measured = 0 if octs is None else int(np.isfinite(octs["theta3_deg"].to_numpy(float)).sum())
        unknown_depth = 0 if octs is None or "depth_known" not in octs else int((~octs["depth_known"].astype(bool)).sum())
        rows.append({
            "particle": p.id, "verdict": p.verdict, "trusted": p.trusted, "reasons": "; ".join(p.reasons),
            "touches_edge": p.touches_edge, "centroid_x_A": p.centroid_A[0], "centroid_y_A": p.centroid_A[1],
            "area_nm2": p.area_A2 / 100.0, "size_a1_nm": s1 / 10.0, "size_a2_nm": s2 / 10.0,
            "aspect_ratio": max(s1, s2) / min(s1, s2) if min(s1, s2) > 0 else float("nan"),
            "rotation_deg": p.orientation_deg, "a1_A": a1, "a2_A": a2, "lattice_angle_deg": angle,
            "zone_axis": p.zone_axis, "zone_axis_score": p.zone_axis_score,
            "n_columns": 0 if mine is None else len(mine),
            **{f"n_{sp}": int(counts.get(sp, 0)) for sp in ("Pb", "X", "Cs", "unknown")},
            "n_octahedra": 0 if octs is None else len(octs), "n_octahedra_measured": measured,
            "n_octahedra_depth_unknown": unknown_depth,
        })
    return pd.DataFrame(rows, columns=None if rows else PARTICLES_CSV_FIRST)


def _mean_and_error(values: np.ndarray, errors: np.ndarray | None) -> tuple[float, float, int]:
    """Mean of finite values and its standard error from their scatter (sd/√n) with two or more,
    the one octahedron's own 1σ with one: the estimate without a propagated covariance."""
    ok = np.isfinite(values)
    v = values[ok]
    if v.size == 0:
        return float("nan"), float("nan"), 0
    if v.size == 1:
        e = float(errors[ok][0]) if errors is not None else float("nan")
        return float(v[0]), e, 1
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size)), int(v.size)


#: |z| at and above which a difference is stated significant, strictest first
SIGNIFICANCE_LEVELS = (3.0, 2.0)


def significance(difference: float, error: float) -> tuple[float, float, str]:
    """The test of a difference against zero with its 1σ: z, the two-sided p-value of a Gaussian
    error, and a verdict ("significant at 3σ", "significant at 2σ", "not significant (< 2σ)" or
    "untested" without an error)."""

    if not (np.isfinite(difference) and np.isfinite(error) and error > 0):
        return float("nan"), float("nan"), "untested"
    z = difference / error
    p = math.erfc(abs(z) / math.sqrt(2.0))
    for level in SIGNIFICANCE_LEVELS:
        if abs(z) >= level:
            return float(z), float(p), f"significant at {level:g}σ"
    return float(z), float(p), f"not significant (< {SIGNIFICANCE_LEVELS[-1]:g}σ)"


def core_shell_masks(table: pd.DataFrame, shell_depth_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Which octahedra are in the core and which in the shell (the outer ``shell_depth_cells``).

    Edge octahedra are in neither. An octahedron whose depth is unknown (its particle is cut by
    the frame edge, ``shell`` -1) is in the core only when even its least possible depth
    (``shell_min``) is at least ``shell_depth_cells``, and never in the shell.
    """
    use = ~table["edge"].to_numpy(bool) if "edge" in table else np.ones(len(table), bool)
    shell = table["shell"].to_numpy(float)
    shell_min = table["shell_min"].to_numpy(float) if "shell_min" in table else shell
    known = shell >= 0
    core = use & ((known & (shell >= shell_depth_cells)) | (~known & (shell_min >= shell_depth_cells)))
    in_shell = use & known & (shell < shell_depth_cells)
    return core, in_shell


def particle_tilts(geometry: pd.DataFrame, shell_depth_cells: int,
                   covariance: GeometryCovariance | None = None) -> pd.DataFrame:
    """Per particle: mean θ1-θ3 in core and shell and core − shell Δθ3, with their uncertainties [deg].

    With the propagation of the column covariance (``covariance``, rows following ``geometry``)
    each mean and the difference are linear combinations of the column positions, so their 1σ keeps
    the X columns shared by neighbouring octahedra and the correlation of neighbouring columns:
    ``<name>_err`` the statistical part (the image's noise), ``<name>_sys`` the systematic part,
    ``<name>_total_err`` both; ``<name>_sd`` is the scatter of the octahedra (their tilts differ,
    which is structure, not error). Δθ3 is tested against zero with the total uncertainty:
    ``dtheta3_z``, ``dtheta3_p`` (two-sided) and ``dtheta3_verdict`` (:func:`significance`).
    Without a covariance the errors are the scatter's standard error (sd/√n).
    """
    rows = []
    if "particle" not in geometry:
        geometry = geometry.assign(particle=1)
    pid_all = geometry["particle"].to_numpy()
    for pid, tab in geometry.groupby("particle", sort=True):
        at = np.flatnonzero(pid_all == pid)
        core, shell = core_shell_masks(tab, shell_depth_cells)
        row: dict[str, Any] = {"particle": int(pid)}
        weights: dict[str, np.ndarray] = {}
        for name in TILT_NAMES:
            base = name.replace("_deg", "")
            err = tab[f"{base}_err_deg"].to_numpy(float) if f"{base}_err_deg" in tab else None
            values = tab[name].to_numpy(float)
            for region, sel in (("core", core), ("shell", shell)):
                m, e, n = _mean_and_error(values[sel], None if err is None else err[sel])
                key = f"{base}_deg_{region}"
                row[key], row[f"n_octahedra_{region}"] = m, n
                row[f"{key}_sd"] = float(np.std(values[sel][np.isfinite(values[sel])], ddof=1)) if n > 1 else float("nan")
                if covariance is not None and err is not None:
                    w = np.zeros(len(geometry))
                    w[at] = region_weights(sel, values)
                    weights[f"{base}_{region}"] = w
                    parts: tuple[tuple[Part, str], ...] = (("stat", "err"), ("sys", "sys"), ("total", "total_err"))
                    for part, suffix in parts:
                        row[f"{key}_{suffix}"] = covariance.error(name, w, part) if n else float("nan")
                else:
                    row[f"{key}_err"] = e
        row["dtheta3_core_minus_shell_deg"] = row["theta3_deg_core"] - row["theta3_deg_shell"]
        if "theta3_core" in weights and covariance is not None:
            w = weights["theta3_core"] - weights["theta3_shell"]
            dparts: tuple[tuple[Part, str], ...] = (("stat", "err_deg"), ("sys", "sys_deg"), ("total", "total_err_deg"))
            for part, suffix in dparts:
                row[f"dtheta3_core_minus_shell_{suffix}"] = covariance.error("theta3_deg", w, part) \
                    if np.isfinite(row["dtheta3_core_minus_shell_deg"]) else float("nan")
            total = row["dtheta3_core_minus_shell_total_err_deg"]
        else:
            total = row["dtheta3_core_minus_shell_err_deg"] = float(np.hypot(row["theta3_deg_core_err"],
                                                                               row["theta3_deg_shell_err"]))
        row["dtheta3_z"], row["dtheta3_p"], row["dtheta3_verdict"] = significance(row["dtheta3_core_minus_shell_deg"], total)
        rows.append(row)
    return pd.DataFrame(rows)


def frame_statistics(particles: pd.DataFrame) -> dict[str, float]:
    """Scalars over the analysed particles of a frame (MLflow): their number, mean and spread of
    size and of mean θ3 in core and shell, particle-weighted."""
    if particles.empty:
        return {}
    done = particles[particles["verdict"] == "analysed"]
    out: dict[str, float] = {}
    for name, col in (("size_nm", None), ("theta3_deg_core", "theta3_deg_core"), ("theta3_deg_shell", "theta3_deg_shell")):
        if col is None:
            v = np.sqrt(done["size_a1_nm"].to_numpy(float) * done["size_a2_nm"].to_numpy(float))
        elif col in done:
            v = done[col].to_numpy(float)
        else:
            continue
        v = v[np.isfinite(v)]
        out[f"particles_{name}_mean"] = float(v.mean()) if v.size else float("nan")
        out[f"particles_{name}_sd"] = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return out
