"""summary.json and the short report printed after a run, built from the metrics' own sections.

Each metric returns its summary section (:attr:`octascope.core.model.MetricOutput.summary`); they
are listed under ``metrics.<name>``. The keys scripts read stay where they were: ``tilt`` is the
``octahedral`` metric's core/shell means, ``accuracy`` the ``accuracy`` metric's section (or
``null`` without truth), ``scalars`` every flat scalar, ``timings_s`` every stage's time.
``core_shell_test`` states, per analysed particle, whether its core − shell Δθ3 differs from zero
beyond its total (statistical and systematic) uncertainty (:func:`core_shell_tests`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from octascope.core.model import Result


def summarize(result: Result) -> dict[str, Any]:
    """The content of summary.json: image, plugins, counts, tilt, region, flags, accuracy, metric sections, scalars, timings."""
    cols = result.columns
    counts = cols["species"].value_counts().to_dict() if cols is not None and "species" in cols else {}
    sections = result.summaries
    accuracy = sections.get("accuracy", {}) if result.truth is not None else None
    return {
        "image": {
            "source": result.image.source, "shape_px": list(result.image.shape),
            "pixel_size_A": result.image.pixel_size_A, "signal": result.image.signal,
            "dose_e_per_A2": result.image.dose_e_per_A2,
        },
        "plugins": result.plugins,
        "counts": {str(k): int(v) for k, v in counts.items()},
        "n_columns": 0 if cols is None else len(cols),
        "n_octahedra": 0 if result.octahedra is None else len(result.octahedra),
        "tilt": dict((sections.get("octahedral") or {}).get("tilt") or {}),
        "region": None if result.region is None else {
            "source": result.region.source, "fraction_of_image": result.region.fraction,
            "columns_outside_dropped": result.n_outside_region},
        "particles": _particle_rows(result),
        "core_shell_test": core_shell_tests(result),
        "columns_outside_particles": result.n_outside_particles,
        "flags": list(result.flags),
        "trusted": not result.flags,
        "accuracy": None if accuracy is None else dict(accuracy),
        "metrics": {name: dict(section) for name, section in sections.items()},
        "scalars": dict(result.scalars),
        "timings_s": dict(result.timings_s),
    }


def _particle_rows(result: Result) -> list[dict[str, Any]]:
    """The rows of the particle table (particles.csv) as plain values."""
    table = result.tables.get("particles")
    if table is None or table.empty:
        return []
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in table.to_dict("records")]


def core_shell_tests(result: Result) -> list[dict[str, Any]]:
    """Per analysed particle with octahedra in core and shell: Δθ3 = core − shell [deg], its total 1σ
    (statistical and systematic, correlations kept; the statistical and systematic parts too), z,
    the two-sided p-value and the verdict (``significant at 3σ``, ``significant at 2σ``,
    ``not significant (< 2σ)``), from the ``particles`` table
    (:func:`octascope.analysis.particle_table.particle_tilts`)."""
    out = []
    for row in _particle_rows(result):
        d = row.get("dtheta3_core_minus_shell_deg")
        if row.get("verdict") != "analysed" or d is None or not math.isfinite(d):
            continue
        out.append({"particle": row["particle"], "dtheta3_deg": d,
                    "error_deg": row.get("dtheta3_core_minus_shell_total_err_deg",
                                         row.get("dtheta3_core_minus_shell_err_deg")),
                    "stat_error_deg": row.get("dtheta3_core_minus_shell_err_deg"),
                    "sys_error_deg": row.get("dtheta3_core_minus_shell_sys_deg"),
                    "z": row.get("dtheta3_z"), "p": row.get("dtheta3_p"), "verdict": row.get("dtheta3_verdict")})
    return out


def core_shell_line(test: Mapping[str, Any], several: bool) -> str:
    """One line of the printed summary: the core − shell test of a particle."""
    who = f"particle {test['particle']}: " if several else ""
    err, z, p = test.get("error_deg"), test.get("z"), test.get("p")
    if err is None or not math.isfinite(err):
        return f"  core − shell Δθ3: {who}{test['dtheta3_deg']:+.2f}° (no uncertainty: untested)"
    parts = []
    if test.get("sys_error_deg") is not None and math.isfinite(test["sys_error_deg"]):
        parts.append(f"stat {test['stat_error_deg']:.2f}, sys {test['sys_error_deg']:.2f}")
    return (f"  core − shell Δθ3: {who}{test['dtheta3_deg']:+.2f} ± {err:.2f}° ({'; '.join(parts) + '; ' if parts else ''}"
            f"z {z:+.1f}, p {p:.2g}): {test['verdict']}")


def _particle_line(row: Mapping[str, Any]) -> str:
    """One particle in the printed summary."""
    head = (f"  particle {row['particle']}: {row['size_a1_nm']:.1f} x {row['size_a2_nm']:.1f} nm"
            + (f", rotated {row['rotation_deg']:.1f}°" if math.isfinite(row.get("rotation_deg", float("nan"))) else "")
            + (", at the frame edge" if row.get("touches_edge") else ""))
    if row.get("verdict") != "analysed":
        return head + " — not analysed (see FLAG)"
    parts = [f"{int(row.get('n_octahedra_measured', 0))} octahedra measured"]
    for region in ("core", "shell"):
        v = row.get(f"theta3_deg_{region}", float("nan"))
        e = row.get(f"theta3_deg_{region}_total_err", row.get(f"theta3_deg_{region}_err", float("nan")))
        if v is not None and math.isfinite(v):
            parts.append(f"θ3 {region} {v:.2f} ± {e:.2f}°" if e is not None and math.isfinite(e) else f"θ3 {region} {v:.2f}°")
    return head + ": " + ", ".join(parts)


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _theta_values(tilt: Mapping[str, Any], region: str) -> str:
    parts = []
    for k in (1, 2, 3):
        v, e = tilt.get(f"theta{k}_deg_mean_{region}"), tilt.get(f"theta{k}_deg_mean_{region}_err")
        if _finite(v):
            parts.append(f"θ{k} {v:.2f}" + (f" ± {e:.2f}°" if _finite(e) else "°"))
    return ", ".join(parts)


def tilt_lines(tilt: Mapping[str, Any], shell_depth_cells: int | None = None) -> list[str]:
    """The mean-tilt lines of the printed summary from the ``octahedral`` metric's ``tilt`` section.

    With octahedra in both the core and the shell: one line each. When one of them is empty (a
    particle at most 2 × ``shell_depth_cells`` cells across has no core), the mean over all
    measured octahedra, then one line that says why there is no core/shell split and which
    ``metric.octahedral.shell_depth_cells`` would give one. Each ± is the total 1σ (statistical
    and systematic, docs/uncertainty.md).
    """
    lines: list[str] = []
    has = {r: any(_finite(tilt.get(f"theta{k}_deg_mean_{r}")) for k in (1, 2, 3)) for r in ("core", "shell")}
    if not any(f"theta{k}_deg_mean_{r}" in tilt for k in (1, 2, 3) for r in ("core", "shell")):
        return lines
    if has["core"] and has["shell"]:
        return [f"  mean tilt ({r}): {_theta_values(tilt, r)}" for r in ("core", "shell")]
    n_all = tilt.get("n_octahedra_measured")
    if "theta3_deg_mean_all" not in tilt:  # a metric without the frame-wide mean
        for r in ("core", "shell"):
            lines.append(f"  mean tilt ({r}): {_theta_values(tilt, r)}" if has[r] else
                         f"  mean tilt ({r}): no complete octahedra in the {r} "
                         "(change the depth with metric.octahedral.shell_depth_cells)")
        return lines
    if not any(_finite(tilt.get(f"theta{k}_deg_mean_all")) for k in (1, 2, 3)):
        return ["  mean tilt: no octahedron measured (every one misses a bond or lies at the rim)"]
    lines.append(f"  mean tilt (all {n_all} octahedra): {_theta_values(tilt, 'all')}")
    depth = shell_depth_cells
    deepest = tilt.get("deepest_shell_cells")
    cells = f"{depth}-cell" if depth is not None else "set"
    if not has["core"] and has["shell"]:
        if deepest is not None and depth is not None and deepest < depth:
            fix = (f"metric.octahedral.shell_depth_cells={deepest} or less gives one" if deepest >= 1
                   else "the particle is too small for a core")
            why = (f"every octahedron lies within the {cells} shell (the deepest is {deepest} "
                   f"cell{'s' if deepest != 1 else ''} below the surface); {fix}")
        else:
            why = (f"no octahedron of the core could be measured (its depth below the surface is unknown "
                   f"where the particle meets the frame edge, or it misses a bond)")
        lines.append(f"  core/shell: no core — {why}")
    elif has["core"] and not has["shell"]:
        why = ("the shell is set to 0 cells (metric.octahedral.shell_depth_cells=0)" if depth == 0 else
               "no octahedron of the shell could be measured (at the rim, missing a bond, or of unknown depth)")
        lines.append(f"  core/shell: no shell — {why}")
    else:
        lines.append("  core/shell: neither could be measured: the depth below the surface is unknown "
                     "(the particle meets the frame edge)")
    return lines


def _nan() -> float:
    return float("nan")


def format_summary(result: Result, files: Mapping[str, Any], output_dir: Path, tracking_uri: str | None) -> str:
    """The short report printed at the end of a run (``tracking_uri``: the resolved store the run was logged to):
    :func:`format_result` then :func:`format_locations`."""
    return format_result(result) + "\n" + format_locations(files, output_dir, tracking_uri)


def format_locations(files: Mapping[str, Any], output_dir: Path, tracking_uri: str | None) -> str:
    """The report's last lines: where the outputs are and, for a tracked run, how to open it in MLflow."""
    lines = [f"  outputs: {output_dir}"]
    if "mlflow_run_id" in files:
        lines.append(mlflow_line(files, tracking_uri))
    return "\n".join(lines)


def format_result(result: Result) -> str:
    """The report's numbers: image, columns, octahedra, particles, tilt, core-shell tests, accuracy,
    region and flags. The command prints them as soon as the analysis ends, before its figures
    are drawn and the run is logged to MLflow."""
    sections = result.summaries
    lines = [f"octascope: analysed {result.image.source} ({result.image.shape[1]}x{result.image.shape[0]} px, "
             f"{result.image.pixel_size_A:.4g} Å/px) in {result.timings_s.get('total', _nan()):.1f} s"]
    counts = {} if result.columns is None else result.columns["species"].value_counts().to_dict()
    lines.append("  columns: " + ", ".join(f"{sp} {counts.get(sp, 0)}" for sp in ("Pb", "X", "Cs", "unknown")))
    if result.octahedra is not None:
        lines.append(f"  octahedra: {len(result.octahedra)}")
    rows = _particle_rows(result)
    if len(rows) > 1:
        analysed = sum(r.get("verdict") == "analysed" for r in rows)
        lines.append(f"  particles: {len(rows)} ({analysed} analysed, {len(rows) - analysed} not)")
    if len(rows) > 1 or any(r.get("touches_edge") for r in rows):
        lines.extend(_particle_line(r) for r in rows)
    octahedral = sections.get("octahedral") or {}
    lines.extend(tilt_lines(octahedral.get("tilt") or {}, octahedral.get("shell_depth_cells")))
    tests = core_shell_tests(result)
    lines.extend(core_shell_line(t, len(rows) > 1) for t in tests)
    s = sections.get("accuracy") or {}
    if result.truth is not None and "detection_f1" in s:
        acc = [f"detection F1 {s['detection_f1']:.3f} (outer cell {s.get('detection_f1_outer', _nan()):.3f})",
               f"RMSE {s.get('rmse_pm_all', _nan()):.1f} pm (Pb {s.get('rmse_pm_Pb', _nan()):.1f}, "
               f"X {s.get('rmse_pm_X', _nan()):.1f}, Cs {s.get('rmse_pm_Cs', _nan()):.1f})"]
        if "species_accuracy" in s:
            acc.append(f"species accuracy {100 * s['species_accuracy']:.1f} %")
        if "theta3_mae_deg" in s:
            acc.append(f"θ3 error {s['theta3_mae_deg']:.2f}°")
        lines.append("  accuracy vs truth: " + ", ".join(acc))
    if result.region is not None:
        lines.append(f"  crystal region: {100 * result.region.fraction:.0f} % of the image ({result.region.source}); "
                     f"{result.n_outside_region} columns outside it dropped")
    for flag in result.flags:
        lines.append(f"  FLAG: {flag}")
    return "\n".join(lines)


def mlflow_line(files: Mapping[str, Any], tracking_uri: str | None) -> str:
    """The printed line that says how to open a run's experiment in the MLflow UI.

    MLflow 3 starts a new browser in its GenAI mode, whose experiment page is a traces overview;
    the ``workflowType=machine_learning`` parameter opens the experiment on its runs instead.
    """
    url = "http://127.0.0.1:5000/"
    if files.get("mlflow_experiment_id"):
        url += f"#/experiments/{files['mlflow_experiment_id']}?workflowType=machine_learning"
    return f"  MLflow run {files['mlflow_run_id']}: open with  mlflow ui --backend-store-uri {tracking_uri}  then  {url}"
