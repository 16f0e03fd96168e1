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
        "flags": list(result.flags),
        "trusted": not result.flags,
        "accuracy": None if accuracy is None else dict(accuracy),
        "metrics": {name: dict(section) for name, section in sections.items()},
        "scalars": dict(result.scalars),
        "timings_s": dict(result.timings_s),
    }


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
