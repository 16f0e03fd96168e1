"""MLflow tracking: one MLflow run per analysis.

The default store is an embedded SQLite file (``sqlite:///mlruns.db`` in the working
directory): no server to start. Point ``tracking_uri`` (or ``MLFLOW_TRACKING_URI``) at a shared
MLflow server for a team. A run that raises is marked FAILED, never left RUNNING.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """The configured URI, else ``MLFLOW_TRACKING_URI``, else the embedded SQLite store.

    A relative SQLite path is made absolute against the working directory: MLflow caches its
    database engine per URI string, so a relative URI would keep pointing at the first
    directory it was used from.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        uri = prefix + str((Path.cwd() / uri[len(prefix):]).resolve())
    return uri


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested mapping into ``a.b.c`` keys (lists are kept as their string form)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def metric_name(name: str) -> str:
    """An MLflow-safe metric name (MLflow rejects ':' and other characters)."""
    return _BAD.sub("_", name.replace(":", "/"))


@contextlib.contextmanager
def tracked_run(*, tracking_uri: str | None = None, experiment: str = "octascope", run_name: str | None = None,
                tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """Start an MLflow run; end it FINISHED, or FAILED if the body raises."""
    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    mlflow.set_experiment(experiment)
    run = mlflow.start_run(run_name=run_name, tags=dict(tags or {}))
    try:
        yield run
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def log_run(*, params: Mapping[str, Any], scalars: Mapping[str, float], timings_s: Mapping[str, float],
            artifact_dir: str | Path | None = None) -> None:
    """Log flattened parameters, finite scalar metrics, stage timings and the output files."""
    import mlflow

    flat = {k: ("null" if v is None else str(v))[:500] for k, v in flatten(params).items()}
    items = list(flat.items())
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start:start + 100]))
    metrics = {metric_name(k): float(v) for k, v in scalars.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
    metrics.update({metric_name(f"time_s/{k}"): float(v) for k, v in timings_s.items()})
    if metrics:
        mlflow.log_metrics(metrics)
    if artifact_dir is not None:
        mlflow.log_artifacts(str(artifact_dir))
