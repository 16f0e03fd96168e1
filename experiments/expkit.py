"""Shared pieces of the experiments in this folder (importable: ``sys.path`` gets ``experiments/``).

An experiment is a Hydra config ``conf/experiment/<name>.yaml`` (``# @package _global_``, a
``hydra.sweeper.params`` grid, ``tracking.experiment`` = its MLflow experiment name). It runs either
through the command line (``octascope experiment=<name>``, any Hydra launcher) or through the scripts
in ``experiments/<name>/``, which expand the same grid with Hydra's own override parser
(:func:`sweep_jobs`) and analyse each job in-process the way the accuracy benchmark does
(``experiments/benchmarks/accuracy.py``: Hydra compose + :func:`octascope.app.cli.run_from_config`; its
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

    from octascope.app.cli import _register_resolvers, conf_dir

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
    from octascope.app.run import run_from_config

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


# --- core / shell split of the tilt error, from what every run already writes -----------------------
#
# The accuracy metric writes ``accuracy_octahedra.csv`` (run folder and MLflow artifact): one row per
# matched complete octahedron with the TRUE position (``octahedron_x_A``, ``octahedron_y_A``) and the
# errors ``theta1_deg_error`` .. ``L2_A_error``. The truth octahedra of a simulated source carry
# ``shell`` (octahedra layers from the particle edge, 0 = outermost) and do not depend on the noise seed
# or dose, so the split needs the truth once per source, not a re-analysis.


def truth_octahedra(config_name: str, overrides: list[str] | None = None):
    """The truth octahedra (with ``shell``) of experiment ``config_name``'s source (the simulation cache:
    seconds). Dose and noise seed do not change them."""
    from octascope.input.sources import load_source

    cfg, _ = compose_experiment(config_name, overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, truth = load_source(**cfg["source"])
    if truth is None or truth.octahedra is None or "shell" not in truth.octahedra:
        raise ValueError(f"{config_name}: the source has no truth octahedra with a shell index")
    return truth.octahedra


def core_shell_errors(acc_octahedra, truth_oct, shell_depth_cells: int = 1, tolerance_A: float = 0.01) -> dict[str, float]:
    """θ and L errors of the matched octahedra split into shell (truth ``shell`` < ``shell_depth_cells``)
    and core (the rest).

    ``acc_octahedra`` is the accuracy metric's ``accuracy_octahedra`` table; its positions are the truth
    octahedra's, so each row is assigned the truth shell of the truth octahedron within ``tolerance_A``
    (rows without one raise: the table and the truth are not of the same source). Returns, for
    region ∈ {core, shell}: ``theta_mae_deg_<region>`` (mean |Δθ1|, |Δθ2|, the definition of
    ``theta_mae_deg``), ``theta3_mae_deg_<region>``, ``L_mae_pm_<region>`` (mean |ΔL1|, |ΔL2|),
    ``octahedra_recall_<region>`` (matched / truth octahedra in the region) and ``n_octahedra_<region>``
    (matched)."""
    from scipy.spatial import cKDTree

    t_xy = truth_oct[["x_A", "y_A"]].to_numpy(float)
    t_shell = truth_oct["shell"].to_numpy(int)
    out: dict[str, float] = {}
    if len(acc_octahedra):
        d, idx = cKDTree(t_xy).query(acc_octahedra[["octahedron_x_A", "octahedron_y_A"]].to_numpy(float), k=1)
        if np.any(d > tolerance_A):
            raise ValueError(f"{int(np.sum(d > tolerance_A))} matched octahedra are not at a truth octahedron "
                             f"(largest offset {d.max():.3f} Å): another source's truth?")
        shell = t_shell[idx]
    else:
        shell = np.zeros(0, int)

    def mae(cols, sel, scale=1.0):
        e = np.abs(np.concatenate([acc_octahedra[c].to_numpy(float)[sel] for c in cols if c in acc_octahedra] or [np.zeros(0)]))
        e = e[np.isfinite(e)]
        return float(e.mean() * scale) if len(e) else math.nan

    for region, sel, tsel in (("core", shell >= shell_depth_cells, t_shell >= shell_depth_cells),
                              ("shell", shell < shell_depth_cells, t_shell < shell_depth_cells)):
        out[f"theta_mae_deg_{region}"] = mae(["theta1_deg_error", "theta2_deg_error"], sel)
        out[f"theta3_mae_deg_{region}"] = mae(["theta3_deg_error"], sel)
        out[f"L_mae_pm_{region}"] = mae(["L1_A_error", "L2_A_error"], sel, 100.0)
        out[f"n_octahedra_{region}"] = float(sel.sum())
        out[f"octahedra_recall_{region}"] = float(sel.sum() / tsel.sum()) if tsel.sum() else math.nan
    return out


def run_artifact(artifact_uri: str, name: str):
    """A CSV artifact of an MLflow run with a local (file) artifact store, as a DataFrame (None if absent)."""
    from urllib.parse import unquote, urlparse

    import pandas as pd

    p = Path(unquote(urlparse(artifact_uri).path)) / name
    return pd.read_csv(p) if p.is_file() else None


def main(argv: list[str] | None = None) -> int:
    """``python experiments/expkit.py <config> [--only key=value ...]``: run the jobs of an experiment's
    sweep in this process, one MLflow run each (as ``octascope experiment=<config>`` does), keeping only
    the jobs that contain every ``--only`` override — a subset of a sweep, which Hydra cannot narrow from
    the command line for a ``+group`` axis (e.g. ``--only +experiment/deep=dip``)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python experiments/expkit.py", description=main.__doc__.split("\n\n")[0])
    ap.add_argument("config", help="conf/experiment/<config>.yaml")
    ap.add_argument("--only", action="append", default=[], help="keep jobs with this override (repeatable)")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--workdir", default="multirun", help="parent folder of the run folders")
    args = ap.parse_args(argv)
    jobs = [j for j in sweep_jobs(args.config) if all(o in j for o in args.only)]
    if not jobs:
        print(f"no job of {args.config} has {args.only}", file=sys.stderr)
        return 2
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    failed = 0
    for k, job in enumerate(jobs):
        t = timer()
        try:
            result, _ = run_job(args.config, job, workdir=work, tracking_uri=args.tracking_uri)
            s = result.scalars
            print(f"[{k + 1}/{len(jobs)}] {' '.join(job)}: {t():.0f} s, F1 {s.get('detection_f1', math.nan):.3f}, "
                  f"θ error {s.get('theta_mae_deg', math.nan):.2f}°", flush=True)
        except Exception as exc:  # one failed job does not stop the others (Hydra's multirun does the same)
            failed += 1
            print(f"[{k + 1}/{len(jobs)}] {' '.join(job)}: FAILED after {t():.0f} s: {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
