"""Checks of a resolved run configuration (a plain dict, no Hydra): every key is read by something.

The command line composes the configuration with Hydra; :func:`validate_config` then refuses
what nothing would read (``+foo=1``, ``+tracking.colour=red``), unknown figure formats, and
tracking URIs MLflow could not use, before anything is written. Stage parameters are checked by
the plugin registry when the plugins are built; source keys by :func:`octascope.input.sources.load_source`;
the ``region`` and ``refine`` groups here, as the options of those steps
(:class:`~octascope.analysis.region.RegionOptions`, :class:`~octascope.analysis.refine.RefineOptions`).

What a configuration can execute: nothing but registered plugins (selected by ``name``). A
``_target_`` key is refused anywhere (see :func:`find_targets`); the command line also refuses
Hydra callbacks, logging factories and launchers/sweepers other than the installed Hydra plugins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from octascope.core.errors import ConfigError, PluginParameterError
from octascope.core.params import Options, param, require, options_from
from octascope.analysis.particles import ParticleOptions
from octascope.analysis.refine import RefineOptions
from octascope.analysis.region import RegionOptions
from octascope.results.outputs import check_figure_formats
from octascope.results.tracking import check_tracking_uri

#: top-level keys of a run configuration and what reads them
TOP_LEVEL_KEYS = {
    "source": "sources.load_source",
    "denoiser": "the denoiser plugin",
    "locator": "the locator plugin",
    "classifier": "the classifier plugin",
    "network": "the network plugin",
    "metric": "the metric plugins",
    "tracking": "tracking",
    "progress": "the progress lines",
    "figure_formats": "outputs.write_outputs",
    "region": "region.find_region",
    "refine": "refine.refine_columns",
    "particles": "analysis.particles.ParticleOptions",
    "batch": "app.batch.BatchOptions (sessions: source.path a glob or a folder)",
    # [h-series] time series (source.frames) and exports
    "series": "analysis.series.SeriesOptions (a source.frames run)",
    "export": "results.export.export_results",
}
TRACKING_KEYS = ("enabled", "tracking_uri", "experiment", "run_name", "parent_run_id")


def find_targets(node: Any, path: str = "") -> Iterator[str]:
    """Paths of every ``_target_`` key (Hydra's 'import and call this') in a nested config."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            here = f"{path}.{k}" if path else str(k)
            if str(k) == "_target_":
                yield here
            yield from find_targets(v, here)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from find_targets(v, f"{path}[{i}]")


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Refuse a run configuration with keys nothing reads, ``_target_`` keys, bad ``region`` or
    ``refine`` keys or values, unknown figure formats or an unusable tracking URI
    (:class:`ConfigError`, one line with the fix)."""
    targets = list(find_targets(cfg))
    if targets:
        raise ConfigError(f"'{targets[0]}' would import and call a Python object; octascope configs select "
                          "registered plugins by name only: remove it")
    unknown = sorted(set(cfg) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(f"unknown configuration key(s) {unknown}, read by nothing; check the spelling "
                          f"(keys: {', '.join(TOP_LEVEL_KEYS)}; `octascope --cfg job` prints the configuration)")
    for stage in ("source", "denoiser", "locator", "classifier", "network", "tracking", "region", "refine", "particles",
                  "batch"):
        if stage in cfg and not isinstance(cfg[stage], Mapping):
            raise ConfigError(f"'{stage}' must be a group of keys, got {cfg[stage]!r}; choose an option with {stage}=<name>")
    track = cfg.get("tracking") or {}
    bad = sorted(set(track) - set(TRACKING_KEYS))
    if bad:
        raise ConfigError(f"tracking has no key(s) {bad}; its keys are {', '.join(TRACKING_KEYS)}")
    _check_step_options(cfg)
    if "batch" in cfg:
        batch_options(cfg)

    check_figure_formats(cfg.get("figure_formats"))
    if track.get("enabled", True):
        check_tracking_uri(track.get("tracking_uri"))


def _check_step_options(cfg: Mapping[str, Any]) -> None:
    """Build the ``region``, ``refine`` and ``particles`` options as the run will, so a bad key or
    value stops the command before the image is read."""

    for group, cls in (("region", RegionOptions), ("refine", RefineOptions), ("particles", ParticleOptions)):
        try:
            options_from(cls, dict(cfg.get(group) or {}), group)
        except PluginParameterError as exc:
            raise ConfigError(str(exc)) from None


@dataclass(frozen=True, kw_only=True)
class BatchOptions(Options):
    """How a session runs: the ``batch`` group of the run configuration (read only when
    ``source.path`` is a glob or a folder)."""

    workers: int | str = param("auto", doc="processes analysing frames at once on this machine; auto: the free cores "
                                            "(usable cores minus the load average, at least 1)")
    skip_done: bool = param(True, doc="reuse a complete earlier result of the same input file and configuration")
    index_dir: str = param("outputs/.octascope-index", doc="folder of the done-frame index (one file per frame key)")
    dry_run: bool = param(False, doc="list the frames (and, with a Hydra launcher, the jobs it would submit); "
                                     "analyse nothing")

    def check(self) -> None:
        require(self.workers == "auto" or (isinstance(self.workers, int) and self.workers >= 1),
                f"workers must be auto or a whole number >= 1, got {self.workers!r}")
        require(bool(str(self.index_dir).strip()), "index_dir must name a folder")


def batch_options(cfg: Mapping[str, Any]) -> BatchOptions:
    """The ``batch`` group of a configuration as :class:`BatchOptions` (ConfigError when wrong)."""

    raw = dict(cfg.get("batch") or {})
    if isinstance(raw.get("workers"), str) and raw["workers"].isdigit():
        raw["workers"] = int(raw["workers"])
    try:
        return options_from(BatchOptions, raw, "batch")
    except PluginParameterError as exc:
        raise ConfigError(str(exc)) from None
