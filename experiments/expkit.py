"""Shared pieces of the experiments in this folder (importable: ``sys.path`` gets ``experiments/``).

An experiment is a Hydra config ``conf/experiment/<name>.yaml`` (``# @package _global_``, a
``hydra.sweeper.params`` grid, ``tracking.experiment`` = its MLflow experiment name). It runs either
through the command line (``octascope experiment=<name>``, any Hydra launcher) or through the scripts
in ``experiments/<name>/``, which expand the same grid with Hydra's own override parser
(:func:`sweep_jobs`) and analyse each job in-process the way the accuracy benchmark does
(``experiments/benchmarks/accuracy.py``: Hydra compose + :func:`octascope.cli.run_from_config`; its
``octahedra_scores`` and Br-rich definition are reused, importable as ``expkit.accuracy``), so they can
also use the truth tables the command line does not write. Unlike the benchmark, each job is tracked
by ``run_from_config`` itself (config, code and package versions, input checksum), exactly as on the
command line.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

EXPERIMENTS = Path(__file__).resolve().parent
ROOT = EXPERIMENTS.parent
sys.path.insert(0, str(EXPERIMENTS / "benchmarks"))

import accuracy  # noqa: E402  (experiments/benchmarks/accuracy.py)

os.environ.setdefault("MPLBACKEND", "Agg")


def experiment_files() -> list[Path]:
    """Every experiment config (``conf/experiment/*.yaml``, not the sub-groups)."""
    return sorted((ROOT / "conf" / "experiment").glob("*.yaml"))


def compose_experiment(name: str, overrides: list[str] | None = None) -> tuple[dict, dict]:
    """``conf/config.yaml`` with ``experiment=<name>`` and ``overrides``: (the run config, the hydra node)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from octascope.cli import _register_resolvers, conf_dir

    _register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[f"experiment={name}", *(overrides or [])],
                            return_hydra_config=True)
    hydra_node = OmegaConf.to_container(cfg.hydra, resolve=False)
    run = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    return run, hydra_node


def sweep_jobs(name: str) -> list[list[str]]:
    """The jobs of the experiment's sweep (Hydra BasicSweeper semantics: the cartesian product of
    ``hydra.sweeper.params`` in order), each a list of overrides; ``[[]]`` when it sweeps nothing."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    _, hydra_node = compose_experiment(name)
    params = (hydra_node.get("sweeper") or {}).get("params") or {}
    parser = OverridesParser.create()
    axes = []
    for key, value in params.items():
        ov = parser.parse_override(f"{key}={value}")
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.get_value_element_as_str()]
        axes.append([f"{key}={v}" for v in values])
    return [list(job) for job in itertools.product(*axes)] if axes else [[]]


def run_job(name: str, job: list[str], *, workdir: Path, tracking_uri: str | None = None,
            extra: list[str] | None = None):
    """Analyse one job of experiment ``name`` in-process, exactly as ``octascope experiment=<name> <job>``
    does (one MLflow run in the experiment's ``tracking.experiment``, with the config, code and package
    versions, input checksum, metrics and timings). Returns (result, config)."""
    from octascope.cli import run_from_config

    uri = [f"tracking.tracking_uri={tracking_uri}"] if tracking_uri else []
    cfg, _ = compose_experiment(name, [*job, *(extra or []), *uri, "progress=false"])
    out_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, _ = run_from_config(cfg, out_dir)
    return result, cfg


def matched_octahedra(result, tolerance_A: float = 0.6):
    """Found complete (non-edge, finite θ3) octahedra matched one-to-one to the truth octahedra:
    (found rows, truth rows) as two aligned DataFrames (the accuracy metric's matching)."""
    from octascope_plugins.metric.accuracy import match_points

    octs = result.tables["octahedra"]
    use = octs[~octs["edge"].astype(bool)] if "edge" in octs else octs
    use = use[np.isfinite(use["theta3_deg"].to_numpy(float))]
    to = result.truth.octahedra
    to = to[np.isfinite(to["theta3_deg"].to_numpy(float))]
    oi, tj = match_points(use[["x_A", "y_A"]].to_numpy(float), to[["x_A", "y_A"]].to_numpy(float), tolerance_A)
    return use.iloc[oi].reset_index(drop=True), to.iloc[tj].reset_index(drop=True)


def mean_ci(values, level: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of the Student-t confidence interval over ``values`` (NaN dropped)."""
    from scipy import stats

    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return (float(v[0]) if len(v) else math.nan), math.nan, len(v)
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half), len(v)


def fmt_ci(values, digits: int = 2, signed: bool = False) -> str:
    m, h, n = mean_ci(values)
    if not math.isfinite(m):
        return "—"
    s = f"{m:+.{digits}f}" if signed else f"{m:.{digits}f}"
    return s if not math.isfinite(h) else f"{s} ± {h:.{digits}f}"


def timer() -> Any:
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0
