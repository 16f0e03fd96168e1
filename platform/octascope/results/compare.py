"""``octascope compare``: the comparison table of an MLflow experiment, printed from the store without
the UI.

Every ``octascope`` run logs its flattened configuration as parameters (``denoiser.name``,
``source.noise.dose_e_per_A2``, ...) and its figures under stable metric names (``detection_f1``,
``theta_mae_deg``, ``time_s/total``, ...). This groups the FINISHED runs of one experiment by the
parameters given and prints mean ± sd of the metrics over the rest (the noise seeds)::

    octascope compare --experiment method-comparison
    octascope compare --experiment method-comparison --by denoiser.name,classifier.name \\
        --metrics detection_f1,theta_mae_deg --format csv
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from octascope.core.errors import ConfigError
from octascope.results.tracking import quiet_mlflow_logging, readable_store, resolve_tracking_uri, store_error

#: default grouping: what the method comparison varies (seeds are averaged over)
DEFAULT_BY = ("source.noise.dose_e_per_A2", "denoiser.name", "locator.name", "classifier.name", "network.name")
#: default metrics (names logged by the accuracy metric and the pipeline's timings)
#: metrics shown when the runs have no truth: the structural results (θ core/shell with errors, octahedra, flags)
STRUCTURAL_METRICS = ("theta1_deg_mean_core", "theta1_deg_mean_shell", "theta2_deg_mean_core", "theta2_deg_mean_shell",
                      "theta3_deg_mean_core", "theta3_deg_mean_shell", "n_octahedra", "n_particles_analysed", "n_flags")
#: metrics shown when the runs have truth (accuracy; names logged by the accuracy metric and the pipeline's timings)
ACCURACY_METRICS = ("detection_f1", "detection_f1_outer", "rmse_pm_Pb", "rmse_pm_X", "rmse_pm_Cs", "species_accuracy",
                   "theta_mae_deg", "L1_mae_pm", "L2_mae_pm", "octahedra_recall", "time_s/total")
DEFAULT_METRICS = ACCURACY_METRICS


def default_metrics(df: pd.DataFrame) -> tuple[str, ...]:
    """Accuracy metrics when any run was measured against truth (``detection_f1`` logged), else the
    structural results."""
    col = "metrics.detection_f1"
    has_truth = col in df and pd.to_numeric(df[col], errors="coerce").notna().any()
    return ACCURACY_METRICS if has_truth else STRUCTURAL_METRICS


def runs_frame(experiment: str, tracking_uri: str | None = None, status: str = "FINISHED") -> pd.DataFrame:
    """All runs of ``experiment`` with ``status`` (``params.*``, ``metrics.*`` columns; MLflow's search_runs)."""
    # lazy: MLflow (~0.6 s to import), only when a run is tracked
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    if not readable_store(uri):  # none is created
        raise ConfigError(f"no tracking store at {uri}; run octascope there first, or give --tracking-uri")
    quiet_mlflow_logging()
    mlflow.set_tracking_uri(uri)
    try:
        if mlflow.get_experiment_by_name(experiment) is None:
            names = sorted(e.name for e in mlflow.search_experiments())
            raise ConfigError(f"no MLflow experiment '{experiment}' in {uri}; experiments: {', '.join(names) or '(none)'}")
        df = mlflow.search_runs(experiment_names=[experiment], filter_string=f"attributes.status = '{status}'",
                                max_results=100000, output_format="pandas")
    except Exception as exc:
        raise store_error(uri, exc) from exc
    return df


#: parameters that describe the run, not the method: never grouped by automatically
_NOT_METHOD = ("image.", "input.", "package.", "octascope.", "experiment.", "bench.", "tracking.")


def auto_by(df: pd.DataFrame) -> list[str]:
    """The configuration parameters that differ between the runs, except noise/random seeds and run
    bookkeeping; the method comparison's order first (dose, denoiser, locator, classifier, network)."""
    names = [c.removeprefix("params.") for c in df if c.startswith("params.")]
    vary = [n for n in names if not n.startswith(_NOT_METHOD) and not n.endswith("seed")
            and df[f"params.{n}"].nunique(dropna=True) > 1]  # set by one plugin only (others: absent) is not a variable
    first = [b for b in DEFAULT_BY if b in vary]
    return first + sorted(set(vary) - set(first)) or list(DEFAULT_BY[:1])


def mean_sd(values: Any, fmt: str = "{:.3f}") -> str:
    """``mean ± sd`` (sample sd) of the finite values, formatted with ``fmt``; one value alone; ``—`` for none."""
    x = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float)
    x = x[np.isfinite(x)]
    if not len(x):
        return "—"
    if len(x) == 1:
        return fmt.format(x[0])
    return f"{fmt.format(x.mean())} ± {fmt.format(x.std(ddof=1)).lstrip('+')}"


def _digits(name: str) -> int:
    if name.startswith("n_"):
        return 0
    if name.startswith(("detection", "species", "octahedra_recall")):
        return 3
    if "_deg" in name:
        return 2
    return 1


def comparison_table(df: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per combination of ``by`` (params): n runs and mean ± sd of each metric (as strings)."""
    by = [b for b in by if f"params.{b}" in df]
    rows = []
    keys = [f"params.{b}" for b in by]
    if not keys:
        groups = [((), df)]
    else:
        groups = list(df.fillna({k: "" for k in keys}).groupby(keys, sort=True))
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, key))
        row["runs"] = len(g)
        for m in metrics:
            col, err = f"metrics.{m}", f"metrics.{m}_err"
            fmt = f"{{:.{_digits(m)}f}}"
            if col in g and len(g) == 1 and err in g and pd.notna(g[err].iloc[0]) and pd.notna(g[col].iloc[0]):
                row[m] = f"{fmt.format(g[col].iloc[0])} ± {fmt.format(g[err].iloc[0])}"  # one run: its own error
            else:
                row[m] = mean_sd(g[col], fmt) if col in g else "—"
        rows.append(row)
    out = pd.DataFrame(rows)
    for b in by:  # numeric parameters (doses) sort as numbers
        num = pd.to_numeric(out[b], errors="coerce")
        if num.notna().all():
            out["_" + b] = num
    sort = ["_" + b if "_" + b in out else b for b in by]
    if sort:
        out = out.sort_values(sort, kind="stable").drop(columns=[c for c in out if c.startswith("_")])
    return out.reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    head = list(table.columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in head) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="octascope compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default="octascope",
                    help="MLflow experiment name (tracking.experiment of the runs; default octascope)")
    ap.add_argument("--tracking-uri", default=None, help="store (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns.db)")
    ap.add_argument("--by", default="auto",
                    help="comma-separated parameters to group by; auto (default): every configuration parameter that "
                         "differs between the runs except seeds")
    ap.add_argument("--metrics", default="auto",
                    help="comma-separated metric names; auto (default): accuracy vs truth when the runs have truth, "
                         "else the structural results (mean θ core/shell ± error, octahedra, particles, flags)")
    ap.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    ap.add_argument("--status", default="FINISHED", help="run status to include (FINISHED, FAILED, ...)")
    args = ap.parse_args(argv)
    df = runs_frame(args.experiment, args.tracking_uri, args.status)
    if "tags.octascope.kind" in df:  # a session's parent run holds counts, not results
        df = df[df["tags.octascope.kind"].fillna("") != "session"]
    if not len(df):
        print(f"octascope compare: no {args.status} runs in experiment '{args.experiment}'")
        return 1
    # group only by parameters that vary (a constant column says nothing), but keep at least one
    by = auto_by(df) if args.by == "auto" else [b for b in args.by.split(",") if b]
    varying = [b for b in by if f"params.{b}" in df and df[f"params.{b}"].nunique(dropna=False) > 1]
    metrics = default_metrics(df) if args.metrics == "auto" else [m for m in args.metrics.split(",") if m]
    table = comparison_table(df, varying or by[:1], list(metrics))
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    else:
        print(to_markdown(table))
    n_failed = 0 if args.status != "FINISHED" else len(runs_frame(args.experiment, args.tracking_uri, "FAILED"))
    if n_failed and not math.isnan(n_failed):
        print(f"\n({n_failed} FAILED run(s) not in the table: octascope compare --experiment {args.experiment} "
              "--status FAILED)")
    return 0
