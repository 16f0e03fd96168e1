"""The ``octascope`` command: Hydra-composed analysis runs, sweeps, and plugin listing.

    octascope                                   # analyse the default input
    octascope source.path=particle.emd          # analyse your file
    octascope --multirun denoiser=none,bm3d     # a sweep, one MLflow run per job
    octascope plugins [STAGE]                   # list registered plugins

Hydra lives only here: the configuration is turned into plain values and handed to the library.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from .errors import OctascopeError

#: metrics that read the tables of other metrics run last
_LATE_METRICS = ("accuracy", "denoise-quality")


def conf_dir() -> Path:
    """The Hydra config directory: ``$OCTASCOPE_CONF``, the packaged copy, or the repository's ``conf/``."""
    env = os.environ.get("OCTASCOPE_CONF")
    if env:
        return Path(env).resolve()
    packaged = Path(__file__).parent / "conf"
    if (packaged / "config.yaml").exists():
        return packaged
    return (Path(__file__).resolve().parents[2] / "conf").resolve()


def build_stages(cfg: dict[str, Any], registry: Any) -> dict[str, Any]:
    """Instantiate the configured plugins (only registered names can be instantiated)."""
    from .pipeline import resolve_stage

    stages = {stage: resolve_stage(registry, stage, cfg[stage]) for stage in ("denoiser", "locator", "classifier", "network")}
    metric_cfgs = list((cfg.get("metric") or {}).values())
    metric_cfgs.sort(key=lambda m: m.get("name") in _LATE_METRICS)
    stages["metrics"] = [resolve_stage(registry, "metric", m) for m in metric_cfgs]
    return stages


def run_from_config(cfg: dict[str, Any], output_dir: Path, *, job_tag: str | None = None) -> tuple[Any, dict[str, Path]]:
    """Run one analysis from a resolved configuration dict (no Hydra objects) and write its outputs."""
    from .outputs import write_outputs
    from .pipeline import run_pipeline
    from .registry import get_registry
    from .sources import load_source
    from .tracking import log_run, tracked_run

    registry = get_registry()
    stages = build_stages(cfg, registry)
    image, truth = load_source(**cfg["source"])
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True)) if cfg.get("progress", True) else None
    track = cfg.get("tracking") or {}

    def body() -> tuple[Any, dict[str, Path]]:
        result = run_pipeline(image, truth=truth, progress=progress, region=cfg.get("region"), **stages)
        formats = tuple(cfg.get("figure_formats") or ())
        files = write_outputs(result, output_dir, config=cfg, figure_formats=formats)
        return result, files

    if not track.get("enabled", True):
        return body()
    tags = {"octascope.source": image.source[:250], **({"hydra.job.num": job_tag} if job_tag else {})}
    with tracked_run(tracking_uri=track.get("tracking_uri"), experiment=track.get("experiment", "octascope"),
                     run_name=track.get("run_name"), tags=tags) as run:
        result, files = body()
        log_run(params=cfg, scalars=result.scalars, timings_s=result.timings_s, artifact_dir=output_dir)
        files["mlflow_run_id"] = run.info.run_id  # type: ignore[assignment]
    return result, files


def format_summary(result: Any, files: dict[str, Any], output_dir: Path, tracking_uri: str | None) -> str:
    """The short report printed at the end of a run."""
    s = result.scalars
    lines = [f"octascope: analysed {result.image.source} ({result.image.shape[1]}x{result.image.shape[0]} px, "
             f"{result.image.pixel_size_A:.4g} Å/px) in {result.timings_s.get('total', float('nan')):.1f} s"]
    counts = result.columns["species"].value_counts().to_dict()
    lines.append("  columns: " + ", ".join(f"{sp} {counts.get(sp, 0)}" for sp in ("Pb", "X", "Cs", "unknown")))
    if result.octahedra is not None:
        lines.append(f"  octahedra: {len(result.octahedra)}")
    for region in ("core", "shell"):
        vals = [s.get(f"theta{k}_deg_mean_{region}") for k in (1, 2, 3)]
        if all(v is None for v in vals):
            continue
        if all(v is None or not math.isfinite(v) for v in vals):
            lines.append(f"  mean tilt ({region}): no complete octahedra in the {region} "
                         "(change the depth with metric.octahedral.shell_depth_cells)")
        else:
            lines.append(f"  mean tilt ({region}): " + ", ".join(
                f"θ{k} {v:.2f}°" for k, v in zip((1, 2, 3), vals) if v is not None))
    if result.truth is not None and "detection_f1" in s:
        acc = [f"detection F1 {s['detection_f1']:.3f} (outer cell {s.get('detection_f1_outer', float('nan')):.3f})",
               f"RMSE {s.get('rmse_pm_all', float('nan')):.1f} pm (Pb {s.get('rmse_pm_Pb', float('nan')):.1f}, "
               f"X {s.get('rmse_pm_X', float('nan')):.1f}, Cs {s.get('rmse_pm_Cs', float('nan')):.1f})"]
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
        from .tracking import resolve_tracking_uri

        uri = resolve_tracking_uri(tracking_uri)
        lines.append(f"  MLflow run {files['mlflow_run_id']}: open with  mlflow ui --backend-store-uri {uri}")
    return "\n".join(lines)


def _hydra_task(cfg: Any) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    container = OmegaConf.to_container(cfg, resolve=True)
    job_tag = str(hc.job.num) if hc.mode.name == "MULTIRUN" else None
    try:
        result, files = run_from_config(container, output_dir, job_tag=job_tag)
    except OctascopeError as exc:
        _remove_if_empty(output_dir)
        if os.environ.get("OCTASCOPE_DEBUG"):
            raise
        print(f"octascope: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except BaseException:
        _remove_if_empty(output_dir)
        raise
    print(format_summary(result, files, output_dir, (container.get("tracking") or {}).get("tracking_uri")))


def _remove_if_empty(path: Path) -> None:
    """Remove the run directory Hydra made, and its empty parents below the working directory."""
    cwd = Path.cwd().resolve()
    path = path.resolve()
    while path != cwd and cwd in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent


def list_plugins(stage: str | None = None) -> str:
    """A table of registered plugins: stage, name, distribution, version, summary."""
    from .registry import get_registry

    rows = [(p.stage, p.name, f"{p.distribution} {p.version}", p.summary) for p in get_registry().info(stage)]
    widths = [max(len(r[i]) for r in rows + [("stage", "name", "from", "")]) for i in range(3)]
    out = [f"{'stage':<{widths[0]}}  {'name':<{widths[1]}}  {'from':<{widths[2]}}  summary"]
    out += [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``octascope`` console command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "plugins":
        rest = [a for a in argv[1:] if a != "list"]
        try:
            print(list_plugins(rest[0] if rest else None))
        except OctascopeError as exc:
            print(f"octascope: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        return
    import hydra

    sys.argv = [sys.argv[0], *argv]
    os.environ.setdefault("MPLBACKEND", "Agg")
    t0 = time.perf_counter()
    hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(_hydra_task)()
    if os.environ.get("OCTASCOPE_TIMING"):
        print(f"octascope: wall time {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
