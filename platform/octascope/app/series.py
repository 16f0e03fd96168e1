"""A time-series run (``source.frames=all`` or a range): every frame of a stack analysed with the
configured stages, drift registered, particles tracked (:func:`octascope.analysis.series.analyse_series`),
the tables and figures written, the run tracked in MLflow.

The command line dispatches here when ``source.frames`` is set (:mod:`octascope.app.cli`); the
library function is :func:`octascope.analysis.series.analyse_series`. Each frame's analysis is
cached under ``<cache dir>/series/`` (:func:`octascope.sim.cache.cache_root`: ``$OCTASCOPE_CACHE``
or ``~/.cache/octascope``), keyed by the frame's pixels, its index and the analysis configuration,
so a run interrupted after some frames resumes where it stopped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from octascope.analysis.series import SeriesResult, analyse_series, SERIES_CSV_FIRST, SeriesOptions
from octascope.app.run import build_stages
from octascope.analysis.pipeline import run_pipeline
from octascope.app.config import validate_config
from octascope.core.errors import ConfigError, PluginParameterError
from octascope.core.params import options_from
from octascope.core.registry import get_registry, package_version
from octascope.input.readers import input_checksum, read_stack
from octascope.input.sources import check_source_config
from octascope.results.export import check_export, write_provenance
from octascope.results.outputs import (
    _jsonable, atomic_write, check_figure_formats, COLUMNS_CSV_FIRST, save_figures, write_json, write_table,
)
from octascope.results.series_figures import series_figures
from octascope.results.summary import mlflow_line
from octascope.results.tracking import DIR_TAG, log_run, log_start, tracked_run
from octascope.sim.cache import cache_root

if TYPE_CHECKING:
    from octascope.core.model import Image, Result
    from octascope.core.registry import Registry

#: configuration keys that change what a frame's analysis gives (the cache key); the rest (tracking,
#: figures, progress, the series' own options, the frame selection) do not
_ANALYSIS_KEYS = ("denoiser", "locator", "classifier", "network", "metric", "region", "refine", "particles")
_SOURCE_ANALYSIS_KEYS = ("pixel_size_A", "signal_index", "signal", "signal_type", "invert")


def cache_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What the per-frame cache key holds besides the frame's pixels and index: the analysis
    configuration and the octascope version."""

    src = cfg.get("source") or {}
    return {"version": package_version("octascope"),
            "source": {k: src.get(k) for k in _SOURCE_ANALYSIS_KEYS},
            **{k: cfg.get(k) for k in _ANALYSIS_KEYS}}


def frame_times_s(stack_frames: list[int], file_frame_time_s: float | None, frame_time_s: float | None) -> tuple[np.ndarray, str]:
    """Time of each frame [s] and where it came from: ``source.frame_time_s`` when given, else the
    file's time axis, else unknown (NaN)."""
    idx = np.asarray(stack_frames, float)
    if frame_time_s is not None:
        return idx * float(frame_time_s), "source.frame_time_s"
    if file_frame_time_s is not None:
        return idx * float(file_frame_time_s), "the file's time axis"
    return np.full(len(idx), np.nan), "unknown (give source.frame_time_s)"


def run_series_from_config(cfg: dict[str, Any], output_dir: Path, *, job_tag: str | None = None,
                           registry: "Registry | None" = None) -> tuple["SeriesResult", dict[str, Any]]:
    """Run a time-series analysis from a resolved configuration dict and write its outputs:
    ``columns.csv``, ``octahedra.csv``, ``particles.csv`` (with ``frame``; ``particle`` = tracked id),
    ``series.csv``, ``drift.csv``, the series figures, ``config.yaml``, ``summary.json`` (last)."""

    validate_config(cfg)
    src = dict(cfg["source"])
    check_source_config(src)
    formats = check_figure_formats(cfg.get("figure_formats"))
    try:
        opts = options_from(SeriesOptions, dict(cfg.get("series") or {}), "series")
    except PluginParameterError as exc:
        raise ConfigError(str(exc)) from None

    if check_export(cfg.get("export")):
        raise ConfigError("export is written by single-image runs; a time series writes its tables (series.csv and the "
                          "per-frame tables): give export=[] with source.frames, or export one frame with source.frame=N")
    if not src.get("path"):
        raise ConfigError("source.frames reads the frames of a stack file; give source.path=<stack file>")
    registry = registry or get_registry()
    stages = build_stages(cfg, registry)
    stack = read_stack(src["path"], frames=src["frames"], pixel_size_A=src.get("pixel_size_A"),
                       signal_index=src.get("signal_index"), signal=src.get("signal"),
                       signal_type=src.get("signal_type") or "unknown", invert=bool(src.get("invert") or False))
    times, time_from = frame_times_s(stack.frames, stack.frame_time_s, src.get("frame_time_s"))
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if cfg.get("progress", True) else None

    def analyse(image: "Image") -> "Result":
        return run_pipeline(image, truth=None, progress=None, region=cfg.get("region"), refine=cfg.get("refine"),
                            particles=cfg.get("particles"), **stages)

    first = stack[0]
    track = cfg.get("tracking") or {}

    def body() -> tuple["SeriesResult", dict[str, Any]]:
        t0 = time.perf_counter()
        result = analyse_series(stack, analyse=analyse, frame_indices=stack.frames, time_s=times,
                                dose_per_frame_e_per_A2=src.get("dose_per_frame_e_per_A2"), options=opts,
                                cache_dir=cache_root() / "series", cache_config=cache_config(cfg), progress=say)
        info = {"path": str(stack.path), "input_sha256": input_checksum(first), "n_stack": stack.n_stack, "time_from": time_from,
                "pixel_size_A": stack.pixel_size_A, "pixel_size_from": {"file": "the file's calibration", "override": "source.pixel_size_A"}.get(
                    str(stack.metadata.get("pixel_size_from")), "?"),
                "seconds": time.perf_counter() - t0}
        files = write_series_outputs(result, output_dir, config=cfg, figure_formats=formats, info=info)
        files["info"] = info
        return result, files

    if not track.get("enabled", True):
        return body()

    tags = {"octascope.source": f"{stack.path} frames {src['frames']}"[:250],
            DIR_TAG: str(Path(output_dir).resolve())[:5000], **({"hydra.job.num": job_tag} if job_tag else {})}
    with tracked_run(tracking_uri=track.get("tracking_uri"), experiment=track.get("experiment", "octascope"),
                     run_name=track.get("run_name"), tags=tags) as run:
        log_start(params=cfg, image=first, input_checksum=input_checksum(first))
        result, files = body()
        log_run(scalars=series_scalars(result), timings_s={"series": float(files["info"]["seconds"])},
                artifact_dir=output_dir)
        files["mlflow_run_id"], files["mlflow_experiment_id"] = run.info.run_id, run.info.experiment_id
    return result, files


def series_scalars(result: "SeriesResult") -> dict[str, float]:
    """Flat numbers of a series for MLflow: frames, tracks, largest drift [Å], per-track rotation change [deg]."""
    out = {"series.n_frames": float(len(result.frames)), "series.n_cached": float(result.n_cached),
           "series.n_tracks": float(result.series["particle"].nunique()) if len(result.series) else 0.0,
           "series.max_drift_A": float(np.hypot(*result.drift_px.T).max() * result.pixel_size_A)}
    for pid in sorted(result.series["particle"].unique()) if len(result.series) else ():
        change, err = result.rotation_change_deg(int(pid))
        if np.isfinite(change):
            out[f"series.particle{pid}.rotation_change_deg"] = change
            out[f"series.particle{pid}.rotation_change_err_deg"] = err
    return out


def write_series_outputs(result: "SeriesResult", run_dir: str | Path, *, config: Mapping[str, Any] | None = None,
                         figure_formats: tuple[str, ...] = ("png", "svg"), info: Mapping[str, Any] | None = None
                         ) -> dict[str, Any]:
    """Write the series' tables, figures, config and ``summary.json`` (last) into ``run_dir``."""

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {}
    written["columns"] = write_table(result.columns, run_dir / "columns.csv", ["frame"] + COLUMNS_CSV_FIRST)
    written["octahedra"] = write_table(result.octahedra, run_dir / "octahedra.csv", ["frame", "particle"])
    written["particles"] = write_table(result.particles, run_dir / "particles.csv", ["frame", "particle", "frame_particle"])
    written["series"] = write_table(result.series, run_dir / "series.csv", SERIES_CSV_FIRST)
    d = result.drift_px
    drift = pd.DataFrame({"frame": result.frames, "time_s": result.time_s, "drift_x_px": d[:, 0], "drift_y_px": d[:, 1],
                          "drift_x_A": d[:, 0] * result.pixel_size_A, "drift_y_A": d[:, 1] * result.pixel_size_A})
    written["drift"] = write_table(drift, run_dir / "drift.csv")
    if figure_formats:
        written.update(save_figures({k: (f, 120) for k, f in series_figures(result).items()}, run_dir, figure_formats))
    if config is not None:
        # lazy: PyYAML (~10 ms to import), not loaded at start-up
        import yaml

        written["config"] = atomic_write(run_dir / "config.yaml",
                                         lambda tmp: tmp.write_text(yaml.safe_dump(_jsonable(dict(config)), sort_keys=False)))
    tracks = []
    for pid in sorted(result.series["particle"].unique()) if len(result.series) else ():
        rows = result.series[result.series["particle"] == pid]
        change, err = result.rotation_change_deg(int(pid))
        tracks.append({"particle": int(pid), "frames": [int(f) for f in rows["frame"]],
                       "rotation_change_deg": change, "rotation_change_err_deg": err,
                       "theta3_deg_mean": float(np.nanmean(rows["theta3_deg"])) if rows["theta3_deg"].notna().any() else None})
    summary = {"kind": "series", "frames": [int(f) for f in result.frames], "n_cached": result.n_cached,
               "failed": {str(k): v for k, v in result.failed.items()}, "tracks": tracks,
               "scalars": series_scalars(result), **({"input": dict(info)} if info else {})}

    written["provenance"] = write_provenance(run_dir, input_checksum=(info or {}).get("input_sha256"),
                                             input_path=(info or {}).get("path"), tables=result.tables,
                                             extra={"frames": [int(f) for f in result.frames]})
    written["summary"] = write_json(summary, run_dir / "summary.json")
    return written


def format_series_summary(result: "SeriesResult", files: Mapping[str, Any], output_dir: Path,
                          tracking_uri: str | None) -> str:
    """The lines printed at the end of a time-series run."""
    info = files.get("info") or {}
    n = len(result.frames)
    lines = [f"octascope: analysed time series {Path(str(info.get('path', '?'))).name}: frames "
             f"{result.frames[0]}..{result.frames[-1]} ({n} of {info.get('n_stack', n)}), "
             f"{info.get('pixel_size_A', result.pixel_size_A):g} Å/px from {info.get('pixel_size_from', '?')}, "
             f"in {info.get('seconds', float('nan')):.1f} s ({result.n_cached} frame(s) from the cache)"]
    lines.append(f"  time: {info.get('time_from', '?')}; drift up to "
                 f"{np.hypot(*result.drift_px.T).max() * result.pixel_size_A:.2f} Å")
    if result.failed:
        lines.append(f"  frames refused: {len(result.failed)} ({', '.join(map(str, list(result.failed)[:5]))}"
                     f"{' ...' if len(result.failed) > 5 else ''}); the reasons are in summary.json")
    for pid in sorted(result.series["particle"].unique()) if len(result.series) else ():
        rows = result.series[result.series["particle"] == pid]
        change, err = result.rotation_change_deg(int(pid))
        rot = (f"rotation change {change:+.2f}" + (f" ± {err:.2f}°" if np.isfinite(err) else "°")
               if np.isfinite(change) else "rotation change: seen in one frame")
        th = rows["theta3_deg"].to_numpy(float)
        tilt = f", mean θ3 {np.nanmean(th):.2f}° (frames {np.nanmin(th):.2f}-{np.nanmax(th):.2f}°)" if np.isfinite(th).any() else ""
        lines.append(f"  particle {pid}: in {len(rows)} frame(s), {rot}{tilt}")
    lines.append(f"  outputs: {output_dir}")
    if files.get("mlflow_run_id"):
        lines.append(mlflow_line(files, tracking_uri))
    return "\n".join(lines)
