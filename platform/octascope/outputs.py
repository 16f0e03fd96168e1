"""Writing the output files of one analysis (DESIGN.md "Outputs"), atomically.

Every file is written to a temporary name in the same directory and moved into place with
:func:`os.replace`, so a crash never leaves a half-written table behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from .model import Result

#: public column order of columns.csv (more columns may follow)
COLUMNS_CSV_FIRST = ["x_A", "y_A", "x_px", "y_px", "species", "amplitude", "sigma_major_A", "sigma_minor_A", "ellipticity"]
OCTAHEDRA_CSV_FIRST = ["x_A", "y_A", "theta1_deg", "theta2_deg", "theta3_deg", "L1_A", "L2_A", "shell"]


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the finished file to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_table(df: pd.DataFrame, path: Path, first: list[str] | None = None) -> Path:
    """Write a CSV atomically, with the public columns first."""
    if first:
        order = [c for c in first if c in df] + [c for c in df if c not in first]
        df = df[order]
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


def write_json(obj: Mapping[str, Any], path: Path) -> Path:
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def summarize(result: Result) -> dict[str, Any]:
    """The content of summary.json: counts, core/shell tilts, accuracy, timings, plugins."""
    cols = result.columns
    counts = cols["species"].value_counts().to_dict() if cols is not None and "species" in cols else {}
    s = result.scalars
    tilt = {}
    for k in (1, 2, 3):
        for region in ("core", "shell"):
            key = f"theta{k}_deg_mean_{region}"
            if key in s:
                tilt[key] = s[key]
    accuracy_keys = [k for k in s if k.startswith(("detection_", "rmse_pm", "species_accuracy", "theta", "L1_", "L2_"))
                     and ("mae" in k or "bias" in k or k.startswith(("detection_", "rmse_pm", "species_accuracy")))]
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
        "tilt": tilt,
        "region": None if result.region is None else {
            "source": result.region.source, "fraction_of_image": result.region.fraction,
            "columns_outside_dropped": result.n_outside_region},
        "flags": list(result.flags),
        "trusted": not result.flags,
        "accuracy": {k: s[k] for k in accuracy_keys} if result.truth is not None else None,
        "scalars": dict(s),
        "timings_s": dict(result.timings_s),
    }


def write_outputs(result: Result, run_dir: str | Path, *, config: Mapping[str, Any] | None = None,
                  figure_formats: tuple[str, ...] = ("png", "svg")) -> dict[str, Path]:
    """Write columns.csv, octahedra.csv, lattice.csv, other metric tables, summary.json,
    figures (PNG and SVG) and the resolved config into ``run_dir``.

    Returns
    -------
    dict
        Name -> path of every file written.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if result.columns is not None:
        written["columns"] = write_table(result.columns, run_dir / "columns.csv", COLUMNS_CSV_FIRST)
    for name, table in result.tables.items():
        first = OCTAHEDRA_CSV_FIRST if name == "octahedra" else None
        written[name] = write_table(table, run_dir / f"{name}.csv", first)
    if result.denoised is not None:
        written["denoised"] = atomic_write(run_dir / "denoised.npy", lambda tmp: np.save(tmp.open("wb"), result.denoised.data))
    for name, fig in result.figures.items():
        for fmt in figure_formats:
            written[f"{name}.{fmt}"] = atomic_write(
                run_dir / f"{name}.{fmt}", lambda tmp, f=fig, fm=fmt: f.savefig(tmp, format=fm, dpi=150, bbox_inches="tight"))
    if result.figures:
        import matplotlib.pyplot as plt

        for fig in result.figures.values():
            plt.close(fig)
    if result.region is not None:
        mask8 = (np.asarray(result.region.mask, bool) * 255).astype(np.uint8)

        def _png(tmp: Path) -> None:
            import imageio.v3 as iio

            iio.imwrite(tmp, mask8, extension=".png")

        written["crystal_mask"] = atomic_write(run_dir / "crystal_mask.png", _png)
        if figure_formats:
            import matplotlib.pyplot as plt

            from .figures import region_overlay

            fig = region_overlay(result.denoised or result.image, result.region)
            for fmt in figure_formats:
                written[f"crystal_region.{fmt}"] = atomic_write(
                    run_dir / f"crystal_region.{fmt}", lambda tmp, fm=fmt: fig.savefig(tmp, format=fm, dpi=120, bbox_inches="tight"))
            plt.close(fig)
    if config is not None:
        import yaml

        written["config"] = atomic_write(run_dir / "config.yaml",
                                         lambda tmp: tmp.write_text(yaml.safe_dump(_jsonable(dict(config)), sort_keys=False)))
    written["summary"] = write_json(summarize(result), run_dir / "summary.json")
    return written
