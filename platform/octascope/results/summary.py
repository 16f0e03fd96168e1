"""summary.json and the short report printed after a run, built from the metrics' own sections.

Each metric returns its summary section (:attr:`octascope.core.model.MetricOutput.summary`); they
are listed under ``metrics.<name>``. The keys scripts read stay where they were: ``tilt`` is the
``octahedral`` metric's core/shell means, ``accuracy`` the ``accuracy`` metric's section (or
``null`` without truth), ``scalars`` every flat scalar, ``timings_s`` every stage's time.
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


def _particle_line(row: Mapping[str, Any]) -> str:
    """One particle in the printed summary."""
    head = (f"  particle {row['particle']}: {row['size_a1_nm']:.1f} x {row['size_a2_nm']:.1f} nm"
            + (f", rotated {row['rotation_deg']:.1f}°" if math.isfinite(row.get("rotation_deg", float("nan"))) else "")
            + (", at the frame edge" if row.get("touches_edge") else ""))
    if row.get("verdict") != "analysed":
        return head + " — not analysed (see FLAG)"
    parts = [f"{int(row.get('n_octahedra_measured', 0))} octahedra measured"]
    for region in ("core", "shell"):
        v, e = row.get(f"theta3_deg_{region}", float("nan")), row.get(f"theta3_deg_{region}_err", float("nan"))
        if v is not None and math.isfinite(v):
            parts.append(f"θ3 {region} {v:.2f} ± {e:.2f}°" if e is not None and math.isfinite(e) else f"θ3 {region} {v:.2f}°")
    return head + ": " + ", ".join(parts)


def _nan() -> float:
    return float("nan")


def format_summary(result: Result, files: Mapping[str, Any], output_dir: Path, tracking_uri: str | None) -> str:
    """The short report printed at the end of a run (``tracking_uri``: the resolved store the run was logged to)."""
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
    tilt = (sections.get("octahedral") or {}).get("tilt") or {}
    for region in ("core", "shell"):
        vals = [tilt.get(f"theta{k}_deg_mean_{region}") for k in (1, 2, 3)]
        if all(v is None for v in vals):
            continue
        if all(v is None or not math.isfinite(v) for v in vals):
            lines.append(f"  mean tilt ({region}): no complete octahedra in the {region} "
                         "(change the depth with metric.octahedral.shell_depth_cells)")
        else:
            lines.append(f"  mean tilt ({region}): " + ", ".join(
                f"θ{k} {v:.2f}°" for k, v in zip((1, 2, 3), vals) if v is not None))
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
    lines.append(f"  outputs: {output_dir}")
    if "mlflow_run_id" in files:
        lines.append(f"  MLflow run {files['mlflow_run_id']}: open with  mlflow ui --backend-store-uri {tracking_uri}")
    return "\n".join(lines)
