"""One analysis from a resolved configuration dict: build the plugins, read the input, run the
pipeline, write the outputs, track the run in MLflow. No Hydra here (:mod:`octascope.app.cli` is the
Hydra wrapper around :func:`run_from_config`).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Callable, Mapping
import time

from octascope.core import interrupts
from octascope.core.model import Result
from octascope.analysis.pipeline import BuiltStages, order_metrics, resolve_stage, run_pipeline
from octascope.core.registry import Registry, get_registry

#: wall time of the phases of the last run in this process [s] (``OCTASCOPE_TIMING=1`` prints them;
#: experiments/benchmarks/startup.py reads them)
PHASES: dict[str, float] = {}


class _phase:
    """``with _phase("name"):`` adds the block's wall time to :data:`PHASES`."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        PHASES[self.name] = PHASES.get(self.name, 0.0) + time.perf_counter() - self.t0


#: the stages built from a config, by their keyword in :func:`octascope.analysis.pipeline.run_pipeline`
STAGE_KEYS: tuple[str, ...] = ("denoiser", "locator", "classifier", "network")


def build_stages(cfg: Mapping[str, Any], registry: Registry) -> BuiltStages:
    """Instantiate the configured plugins (only registered names can be instantiated).

    Returns ``denoiser``, ``locator``, ``classifier``, ``network`` (stage objects) and ``metrics``
    (a list, in the order :func:`octascope.analysis.pipeline.order_metrics` runs them).
    """

    denoiser = resolve_stage(registry, "denoiser", cfg["denoiser"])
    locator = resolve_stage(registry, "locator", cfg["locator"])
    classifier = resolve_stage(registry, "classifier", cfg["classifier"])
    network = resolve_stage(registry, "network", cfg["network"])
    metric_cfgs = list((cfg.get("metric") or {}).values())
    metrics = order_metrics([resolve_stage(registry, "metric", m) for m in metric_cfgs])
    return BuiltStages(denoiser=denoiser, locator=locator, classifier=classifier, network=network, metrics=metrics)


def input_stem(image: Any, source: Mapping[str, Any]) -> str:
    """The name a run is known by: the input file's stem, else the source's name or kind."""
    path = (getattr(image, "metadata", None) or {}).get("path") or source.get("path")
    if path:
        return Path(str(path)).stem
    return str(source.get("name") or source.get("kind") or "run")


def run_from_config(cfg: dict[str, Any], output_dir: Path, *, job_tag: str | None = None,
                    registry: Registry | None = None, run_name: str | None = None,
                    tags: Mapping[str, str] | None = None,
                    on_result: Callable[[Result], None] | None = None) -> tuple[Result, dict[str, Path]]:
    """Run one analysis from a resolved configuration dict (no Hydra objects) and write its outputs.

    The configuration is checked first (:func:`octascope.app.config.validate_config`), the plugins are
    built and the image is read before the MLflow run starts; the run then logs the parameters,
    the input checksum, the code version and the image metadata at once, so a run that dies later
    still says what it analysed. ``registry``: the plugin registry to build from (default: a fresh
    :func:`~octascope.core.registry.get_registry`; the command line passes the one it checked with).
    ``run_name``: the MLflow run's name (default ``tracking.run_name``, else the input's stem and the
    non-default settings, :func:`octascope.results.tracking.run_name`); ``tags``: more MLflow tags.
    ``tracking.parent_run_id`` makes the run a child of that run (a session's frame).
    ``on_result`` is called with the result as soon as the analysis ends, before the outputs are
    written and the results logged (the command prints its summary there: the numbers do not wait
    for the figures and the store).
    """
    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.app.config import validate_config
    from octascope.input.sources import load_source
    from octascope.input.readers import input_checksum
    from octascope.results.export import check_export, write_extras
    from octascope.results.outputs import check_figure_formats, write_outputs

    with _phase("plugins"):
        validate_config(cfg)
        formats = check_figure_formats(cfg.get("figure_formats"))
        check_export(cfg.get("export"))
        registry = registry or get_registry()
        stages = build_stages(cfg, registry)
    with _phase("read"):
        image, truth = load_source(**cfg["source"])
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True)) if cfg.get("progress", True) else None
    track = cfg.get("tracking") or {}

    def body(before_summary: Callable[[], None] | None = None) -> tuple[Result, dict[str, Path]]:
        with _phase("analysis"):
            result = run_pipeline(image, truth=truth, progress=progress, region=cfg.get("region"), refine=cfg.get("refine"),
                                  particles=cfg.get("particles"), **stages)
        interrupts.raise_if_stopped()
        if on_result is not None:
            on_result(result)
        with _phase("outputs"):
            tables = {"columns": result.columns, **result.tables} if result.columns is not None else dict(result.tables)
            extras = write_extras(result.image, result.columns, output_dir, cfg, tables)  # [h-series] exports, provenance.json
            files = write_outputs(result, output_dir, config=cfg, figure_formats=formats,  # summary.json last
                                  before_summary=before_summary)
        return result, {**extras, **files}

    if not track.get("enabled", True):
        return body()
    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.results.tracking import DIR_TAG, check_store, log_run, log_start, run_name as default_name, tracked_run

    check_store(track.get("tracking_uri"))  # a store that cannot be one is refused before the analysis
    all_tags = {"octascope.source": image.source[:250], DIR_TAG: str(Path(output_dir).resolve())[:5000],
                **({"hydra.job.num": job_tag} if job_tag else {}), **dict(tags or {})}
    name = run_name or track.get("run_name") or default_name(input_stem(image, cfg.get("source") or {}), cfg)

    def tracked() -> Any:
        return tracked_run(tracking_uri=track.get("tracking_uri"), experiment=track.get("experiment", "octascope"),
                           run_name=name, tags=all_tags, parent_run_id=track.get("parent_run_id"))

    # The store is touched once the numbers are printed and the outputs written, just before
    # summary.json (a store that fails then leaves an incomplete folder, removed as for any failed
    # run); a run that fails before, or is stopped, is still logged, FAILED, with what it analysed.
    with contextlib.ExitStack() as stack:
        opened: list[Any] = []
        tried = False

        def open_run() -> None:
            nonlocal tried
            tried = True
            t0 = time.perf_counter()
            opened.append(stack.enter_context(tracked()))
            log_start(params=cfg, image=image, input_checksum=input_checksum(image))
            dt = time.perf_counter() - t0  # inside the outputs phase: counted as tracking
            PHASES["tracking"] = PHASES.get("tracking", 0.0) + dt
            PHASES["outputs"] = PHASES.get("outputs", 0.0) - dt

        try:
            result, files = body(open_run)
        except BaseException:
            if not tried:  # the store itself failing is the error; logging to it again would fail twice
                _log_failed(tracked, cfg, image)
            raise
        t1 = time.perf_counter()
        log_run(scalars=result.scalars, timings_s=result.timings_s, artifact_dir=output_dir)
        files["mlflow_run_id"], files["mlflow_experiment_id"] = opened[0].info.run_id, opened[0].info.experiment_id
    PHASES["tracking"] = PHASES.get("tracking", 0.0) + time.perf_counter() - t1
    return result, files


def _log_failed(tracked: Callable[[], Any], cfg: Mapping[str, Any], image: Any) -> None:
    """Log the run that is failing (its parameters, input checksum and image; ended FAILED) while its
    error propagates; a store that cannot take it adds one warning line, not a second error."""
    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.input.readers import input_checksum
    from octascope.results.tracking import log_start

    class _Failed(Exception):
        pass

    try:
        with tracked():
            log_start(params=cfg, image=image, input_checksum=input_checksum(image))
            raise _Failed
    except _Failed:
        pass
    except Exception as exc:  # noqa: BLE001 - the run's own error is the one to report
        print(f"octascope: warning: the failed run was not logged to MLflow ({type(exc).__name__}: {exc})",
              file=sys.stderr, flush=True)
