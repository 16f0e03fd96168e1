"""Sessions: one command analyses every frame of a folder or a glob (``octascope source.path='session/*.emd'``).

Which files a session takes
    ``source.path`` is a *glob* when it holds ``*``, ``?`` or ``[`` (``**`` matches sub-folders),
    and a *folder* when it names one: the files directly inside (not sub-folders). A path that
    exists with an image suffix is always one image (``in_a[1].npy``; a ``.zspy`` store is a folder;
    a folder named ``x.npy`` is refused by the reader as one). Either way only
    readable image files count (the suffixes of :data:`octascope.input.readers.FORMATS`: ``.tif``,
    ``.tiff``, ``.dm3``, ``.dm4``, ``.emd``, ``.hspy``, ``.zspy``, ``.npy``, ``.png``, any case), hidden
    files never; frames are analysed in sorted path order. Truth tables beside the images
    (``<stem>.truth_columns.csv``) are found per frame as for one file.

How they run
    On one machine: one process pool (:func:`run_session`) of ``batch.workers`` processes that import
    the libraries once and take frame after frame; each worker pins its numerical libraries (BLAS,
    OpenMP, torch) to one thread when there are several workers. ``batch.workers=auto`` takes the
    free cores (the usable cores minus the load average, at least one). With a Hydra launcher other
    than the basic one (``hydra/launcher=slurm``) the frames become the jobs of a Hydra sweep
    (:func:`sweep_overrides`), and the session table is collected when the launcher returns.

What they write (docs/outputs.md, "Sessions")
    ``<session>/frames/<stem>/``: one complete run folder per frame analysed now; ``session.csv`` (one
    row per frame and particle, :data:`SESSION_COLUMNS`), ``session.json`` (counts, timings, the
    frames; written last: the session is complete when it exists) and ``session.html`` when the
    report module is installed. One MLflow parent run for the session, a child run per frame.

Skipping what is done
    A frame is identified by the SHA-256 of its file and the analysis configuration
    (:func:`frame_key`; where it is tracked, the progress lines and the session settings do not
    count). A complete run folder for that key, found through the index
    ``batch.index_dir`` (one small file per key), is reused: the frame is listed in ``session.csv``
    with its earlier folder and run, and not analysed again (``batch.skip_done=false`` redoes it).
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
import copy

import pandas as pd

from octascope.app.config import BatchOptions, batch_options
from octascope.app.run import run_from_config
from octascope.core.errors import InputError, OctascopeError
from octascope.core.registry import get_registry
from octascope.input.readers import FORMATS
from octascope.results import report
from octascope.results.outputs import (
    atomic_write, claim_output_dir, is_complete, release_failed_output_dir, write_json, write_table,
)
from octascope.results.tracking import end_parent_run, run_for_output_dir, run_name, start_parent_run

__all__ = ["BatchOptions", "batch_options", "expand_frames", "run_session", "frame_key", "session_rows"]

#: characters that make source.path a glob
GLOB_CHARS = "*?["
#: hidden file in each frame folder: the frame's key, input checksum and MLflow run
FRAME_FILE = ".octascope-frame.json"
#: the session's table and its record (written last)
SESSION_CSV, SESSION_JSON = "session.csv", "session.json"
#: columns of session.csv, in order (one row per frame and particle; a frame without particles: one row)
SESSION_COLUMNS = [
    "frame", "particle", "status", "verdict", "trusted", "reasons", "n_octahedra",
    "theta1_deg_core", "theta1_deg_core_total_err", "theta1_deg_shell", "theta1_deg_shell_total_err",
    "theta2_deg_core", "theta2_deg_core_total_err", "theta2_deg_shell", "theta2_deg_shell_total_err",
    "theta3_deg_core", "theta3_deg_core_total_err", "theta3_deg_shell", "theta3_deg_shell_total_err",
    "dtheta3_core_minus_shell_deg", "dtheta3_core_minus_shell_total_err_deg", "dtheta3_verdict",
    "frame_flags", "error", "mlflow_run_id", "output_dir", "input_sha256", "source",
]
#: per-particle columns of session.csv copied from particles.csv
_PARTICLE_COLUMNS = [c for c in SESSION_COLUMNS[3:22]]
#: configuration groups that do not change a frame's result
_NOT_RESULT = ("tracking", "progress", "batch")


def is_batch_path(value: Any) -> bool:
    """Whether a ``source.path`` value names several frames: a glob or a folder."""
    if not isinstance(value, str) or not value or value.startswith("octascope://"):
        return False
    path = Path(value).expanduser()
    if path.suffix.lower() in _image_suffixes() and (path.exists() or path.is_symlink()):
        return False  # a file (or a .zspy folder) of that name: one image, even with [ ] * ? in its name
    return any(c in value for c in GLOB_CHARS) or path.is_dir()


def _image_suffixes() -> set[str]:
    return set(FORMATS)


def expand_frames(pattern: str) -> list[Path]:
    """The image files a glob or a folder names, sorted (rules: module docstring).

    Raises
    ------
    InputError
        Nothing readable matches (one line naming the pattern and the suffixes read).
    """

    suffixes = _image_suffixes()
    text = os.path.expanduser(pattern)
    if Path(text).is_dir():
        found = [p for p in Path(text).iterdir() if not p.name.startswith(".")]
        what = f"folder {text}"
    else:
        found = [Path(p) for p in _glob.glob(text, recursive=True)]
        what = f"'{pattern}'"
    # image files, and .zspy stores (zarr folders)
    frames = sorted(p for p in found if p.suffix.lower() in suffixes and (p.is_file() or p.suffix.lower() == ".zspy"))
    if not frames:
        raise InputError(f"no image files in {what} (read: {', '.join(sorted(suffixes))}; a folder's sub-folders "
                         "are not searched); check source.path, or use a glob such as 'session/**/*.emd'")
    return frames


def file_checksum(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes (the value :func:`octascope.input.readers.input_checksum` logs)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def frame_key(input_sha256: str, cfg: Mapping[str, Any]) -> str:
    """The identity of one frame's result: its input checksum and the configuration that changes
    the result (``source.path``, tracking, progress and session settings left out), hashed."""
    analysis = {k: v for k, v in cfg.items() if k not in _NOT_RESULT}
    source = dict(analysis.get("source") or {})
    source.pop("path", None)
    analysis["source"] = source
    text = json.dumps({"input": input_sha256, "config": analysis}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def find_done(index_dir: str | Path, key: str) -> dict[str, Any] | None:
    """The record of a complete earlier result for ``key`` (from the index), or None."""

    try:
        entry = json.loads((Path(index_dir) / f"{key}.json").read_text())
        folder = Path(entry["output_dir"])
        record = json.loads((folder / FRAME_FILE).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("key") != key or not is_complete(folder):
        return None
    return dict(record, output_dir=str(folder))


def record_done(index_dir: str | Path, record: Mapping[str, Any]) -> None:
    """Write a frame's record into its folder (:data:`FRAME_FILE`) and the index (after it is complete)."""

    folder = Path(record["output_dir"])
    text = json.dumps(dict(record), sort_keys=True)
    atomic_write(folder / FRAME_FILE, lambda tmp: tmp.write_text(text))
    index = Path(index_dir)
    index.mkdir(parents=True, exist_ok=True)
    entry = json.dumps({"output_dir": str(folder.resolve()), "key": record["key"]})
    atomic_write(index / f"{record['key']}.json", lambda tmp: tmp.write_text(entry))


def frame_dirs(frames: Sequence[Path], root: Path) -> list[Path]:
    """One output folder per frame under ``root``: the file's stem, ``-2``, ``-3``... when stems repeat."""
    seen: dict[str, int] = {}
    out = []
    for f in frames:
        stem = f.stem or "frame"
        n = seen[stem] = seen.get(stem, 0) + 1
        out.append(root / (stem if n == 1 else f"{stem}-{n}"))
    return out


def free_cores() -> int:
    """Usable cores minus the 1-minute load average (other processes' work), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, min(n, int(n - load + 0.5)))


#: environment variables that cap numerical libraries' threads
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS")


def _init_worker(threads: int) -> None:
    """Process-pool initializer: import the libraries once, cap torch's threads, ignore nothing."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    # numpy, scipy and the pipeline came with this module's imports (octascope.app.run): once per worker
    get_registry()
    if "torch" in sys.modules:
        # lazy: torch (~1.2 s to import) only when a plugin loaded it already
        import torch

        torch.set_num_threads(threads)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or exc.__class__.__name__


def analyse_frame(job: Mapping[str, Any]) -> dict[str, Any]:
    """Analyse one frame of a session (a process-pool task; plain values in and out).

    ``job``: ``cfg`` (the resolved configuration, ``source.path`` the frame), ``output_dir``,
    ``key``, ``input_sha256``, ``index_dir``, ``num``, ``run_name``, ``tags``. The folder is
    claimed, the analysis runs (:func:`octascope.app.run.run_from_config`), the frame's record is
    written and indexed. A failure is returned (``status: failed`` and the one-line error) and its
    incomplete folder removed; it never stops the other frames.
    """

    out = Path(job["output_dir"])
    t0 = time.perf_counter()
    claimed = False
    try:
        claim_output_dir(out, {"session": job.get("session"), "job": str(job.get("num"))})
        claimed = True
        _result, files = run_from_config(dict(job["cfg"]), out, job_tag=str(job.get("num")), registry=get_registry(),
                                         run_name=job.get("run_name"), tags=job.get("tags"))
        record = {"key": job["key"], "input_sha256": job["input_sha256"], "source": job["cfg"]["source"]["path"],
                  "mlflow_run_id": str(files.get("mlflow_run_id") or ""), "output_dir": str(out.resolve())}
        record_done(job["index_dir"], record)
        return {**record, "status": "ok", "seconds": time.perf_counter() - t0}
    except KeyboardInterrupt:
        if claimed:
            release_failed_output_dir(out)
        raise
    except Exception as exc:
        if claimed:
            release_failed_output_dir(out)
        msg = _one_line(exc) if isinstance(exc, OctascopeError) else f"{exc.__class__.__name__}: {_one_line(exc)}"
        return {"status": "failed", "error": msg, "source": job["cfg"]["source"]["path"], "key": job["key"],
                "input_sha256": job["input_sha256"], "output_dir": "", "mlflow_run_id": "",
                "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------------
# the session table
# ------------------------------------------------------------------------------------------------

def session_rows(frame: str, outcome: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``session.csv`` for one frame: one per particle of its ``particles.csv`` (one row
    when it has none, or failed), the frame's flags from its ``summary.json``."""

    base = {"frame": frame, "status": outcome.get("status", ""), "error": outcome.get("error", ""),
            "mlflow_run_id": outcome.get("mlflow_run_id", ""), "output_dir": outcome.get("output_dir", ""),
            "input_sha256": str(outcome.get("input_sha256", "")).removeprefix("sha256:"),
            "source": outcome.get("source", "")}
    folder = Path(outcome["output_dir"]) if outcome.get("output_dir") else None
    if folder is None or not (folder / "summary.json").is_file():
        return [base]
    summary = json.loads((folder / "summary.json").read_text())
    base["frame_flags"] = "; ".join(map(str, summary.get("flags") or []))
    table = folder / "particles.csv"
    particles = pd.read_csv(table) if table.is_file() and table.stat().st_size else pd.DataFrame()
    if particles.empty:
        return [dict(base, n_octahedra=summary.get("n_octahedra"))]
    rows = []
    for rec in particles.to_dict("records"):
        row = dict(base)
        row["particle"] = rec.get("particle")
        for c in _PARTICLE_COLUMNS:
            if c in rec:
                row[c] = rec[c]
        rows.append(row)
    return rows


def write_session_table(rows: list[dict[str, Any]], session_dir: Path) -> pd.DataFrame:
    """``session.csv`` (columns :data:`SESSION_COLUMNS`), written atomically; returns the table."""

    df = pd.DataFrame(rows)
    for c in SESSION_COLUMNS:
        if c not in df:
            df[c] = None
    df = df[SESSION_COLUMNS]
    df["particle"] = pd.array(df["particle"], dtype="Int64") if df["particle"].notna().any() else df["particle"]
    write_table(df, session_dir / SESSION_CSV, SESSION_COLUMNS)
    return df


def write_session_files(rows: list[dict[str, Any]], outcomes: Sequence[Mapping[str, Any] | None], session_dir: Path,
                        say: Callable[[str], None]) -> None:
    """``session.csv`` and ``session.html`` (:func:`octascope.results.report.write_session_report`,
    linking the run folders of ``outcomes``). The page is a view of the table: when it cannot be
    written, ``say`` gets a warning and the session goes on."""
    table = write_session_table(rows, session_dir)
    try:
        report.write_session_report(session_dir, table, [Path(o["output_dir"]) for o in outcomes if o and o.get("output_dir")])
    except Exception as exc:  # the report is a view; the table is the result
        say(f"octascope: warning: session.html not written ({exc.__class__.__name__}: {_one_line(exc)})")


# ------------------------------------------------------------------------------------------------
# running a session
# ------------------------------------------------------------------------------------------------

def run_name_for(frame: Path, cfg: Mapping[str, Any]) -> str:
    """The MLflow run name of a frame: its file stem and the settings that differ from the defaults."""

    return run_name(frame.stem, cfg)


@dataclass
class Session:
    """A planned session: the frames, their folders, keys and earlier results."""

    frames: list[Path]
    dirs: list[Path]
    checksums: list[str]
    keys: list[str]
    done: list[dict[str, Any] | None]


def plan_session(frames: Sequence[Path], cfg: Mapping[str, Any], session_dir: Path, options: BatchOptions) -> Session:
    """Checksums, keys, folders and the earlier complete results of every frame."""
    checksums = [file_checksum(f) for f in frames]
    keys = [frame_key(c, cfg) for c in checksums]
    done = [find_done(options.index_dir, k) if options.skip_done else None for k in keys]
    return Session(list(frames), frame_dirs(frames, session_dir / "frames"), checksums, keys, done)


def frame_config(cfg: Mapping[str, Any], frame: Path) -> dict[str, Any]:
    """A frame's configuration: the session's, with ``source.path`` the frame and no stage progress
    lines (the session prints one line per frame)."""

    out = copy.deepcopy(dict(cfg))
    out["source"] = dict(out.get("source") or {}, path=str(frame))
    out["progress"] = False
    out.pop("batch", None)
    return out


def run_session(cfg: Mapping[str, Any], frames: Sequence[Path], session_dir: str | Path, *,
                say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Analyse every frame of a session on this machine; write ``session.csv`` and ``session.json``.

    Parameters
    ----------
    cfg : mapping
        The resolved run configuration (the ``batch`` group read as :class:`BatchOptions`).
    frames : sequence of Path
        The image files (:func:`expand_frames`).
    session_dir : str or Path
        The session's folder (claimed by the caller, or created here).
    say : callable, optional
        Where the progress lines go (default: stderr).

    Returns
    -------
    dict
        The content of ``session.json``: counts (``ok``, ``skipped``, ``failed``), ``wall_s``,
        ``frames_per_min``, ``workers``, the MLflow parent run id and one record per frame.
    """
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    options = batch_options(cfg)
    session_dir = Path(session_dir)
    session_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    plan = plan_session(frames, cfg, session_dir, options)
    todo = [i for i, d in enumerate(plan.done) if d is None]
    workers = free_cores() if options.workers == "auto" else int(options.workers)
    workers = max(1, min(workers, len(todo) or 1))
    n = len(plan.frames)
    track = dict(cfg.get("tracking") or {})
    # the parent run only when something is analysed now (a re-run of done frames touches no store)
    parent = _start_parent(track, session_dir, n) if track.get("enabled", True) and todo else None
    outcomes: list[dict[str, Any] | None] = [None] * n
    for i, d in enumerate(plan.done):
        if d is not None:
            outcomes[i] = dict(d, status="skipped")
            say(f"[{i + 1}/{n}] {plan.frames[i].name}: done before, skipped ({d['output_dir']})")
    jobs = []
    for i in todo:
        fcfg = frame_config(cfg, plan.frames[i])
        if parent is not None:
            fcfg["tracking"] = dict(fcfg.get("tracking") or {}, parent_run_id=parent)
        jobs.append({"cfg": fcfg, "output_dir": str(plan.dirs[i]), "key": plan.keys[i], "num": i,
                     "input_sha256": plan.checksums[i], "index_dir": options.index_dir, "session": str(session_dir),
                     "run_name": run_name_for(plan.frames[i], cfg), "tags": {"octascope.session": str(session_dir.resolve())}})
    if jobs:
        say(f"octascope: session of {n} frame(s): {len(jobs)} to analyse with {workers} worker(s)"
            + (f", {n - len(jobs)} done before" if n > len(jobs) else ""))
    finished = 0
    interrupted: BaseException | None = None
    try:
        for i, out in _map(jobs, workers):
            outcomes[i] = out
            finished += 1
            what = (f"ok in {out['seconds']:.1f} s ({out['output_dir']})" if out["status"] == "ok"
                    else f"FAILED: {out['error']}")
            say(f"[{i + 1}/{n}] {plan.frames[i].name}: {what}")
    except BaseException as exc:  # SIGINT/SIGTERM: the session is recorded as far as it went
        interrupted = exc
    rows = [r for i, f in enumerate(plan.frames)
            for r in session_rows(str(f), outcomes[i] or {"status": "not run", "source": str(f)})]
    write_session_files(rows, outcomes, session_dir, say)
    wall = time.perf_counter() - t0
    counts = {s: sum(1 for o in outcomes if o and o["status"] == s) for s in ("ok", "skipped", "failed")}
    record = {"frames": n, **counts, "not_run": n - sum(counts.values()), "workers": workers, "wall_s": round(wall, 2),
              "frames_per_min": round(counts["ok"] / wall * 60, 2) if counts["ok"] else 0.0,
              "mlflow_parent_run_id": parent, "source_path": str((cfg.get("source") or {}).get("path")),
              "results": [dict(o or {"status": "not run"}, frame=str(f)) for f, o in zip(plan.frames, outcomes)]}
    write_json(record, session_dir / SESSION_JSON)
    if parent is not None:
        _end_parent(track, parent, record, session_dir, failed=interrupted is not None)
    if interrupted is not None:
        raise interrupted
    return record


def _map(jobs: list[dict[str, Any]], workers: int) -> Any:
    """Yield ``(frame index, outcome)`` as frames finish: in this process with one worker, else in
    one process pool whose workers import the libraries once and run one thread each."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield job["num"], analyse_frame(job)
        return
    # lazy: multiprocessing, only when a session runs in parallel
    import multiprocessing as mp

    pinned = (*THREAD_ENV, "OCTASCOPE_FIGURE_WORKERS")  # one core per worker: no figure processes of its own either
    saved = {k: os.environ.get(k) for k in pinned}
    os.environ.update({k: "1" for k in pinned})  # inherited by the workers when they start
    try:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                   initializer=_init_worker, initargs=(1,))
        try:
            pending = {pool.submit(analyse_frame, job): job["num"] for job in jobs}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    num = pending.pop(fut)
                    try:
                        out = fut.result()
                    except Exception as exc:  # a worker died (killed, out of memory)
                        job = jobs[[j["num"] for j in jobs].index(num)]
                        out = {"status": "failed", "error": f"worker process died ({exc.__class__.__name__}: "
                               f"{_one_line(exc)})", "source": job["cfg"]["source"]["path"], "key": job["key"],
                               "input_sha256": job["input_sha256"], "output_dir": "", "mlflow_run_id": "",
                               "seconds": 0.0}
                    yield num, out
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _start_parent(track: Mapping[str, Any], session_dir: Path, n_frames: int) -> str:
    return start_parent_run(tracking_uri=track.get("tracking_uri"), experiment=track.get("experiment", "octascope"),
                            run_name=track.get("run_name") or f"session_{session_dir.name}",
                            tags={"octascope.session": str(session_dir.resolve()), "octascope.output_dir": str(session_dir.resolve()),
                                  "octascope.frames": str(n_frames)})


def _end_parent(track: Mapping[str, Any], parent: str, record: Mapping[str, Any], session_dir: Path, *,
                failed: bool) -> None:
    metrics = {k: float(record[k]) for k in ("frames", "ok", "skipped", "failed", "wall_s", "frames_per_min")}
    end_parent_run(parent, tracking_uri=track.get("tracking_uri"), metrics=metrics,
                   files=[session_dir / SESSION_CSV, session_dir / SESSION_JSON, session_dir / "session.html"],
                   status="FAILED" if failed or record.get("failed") else "FINISHED")


# ------------------------------------------------------------------------------------------------
# sessions through a Hydra launcher (SLURM)
# ------------------------------------------------------------------------------------------------

def sweep_overrides(frames: Sequence[Path], session_dir: Path) -> list[str]:
    """The Hydra overrides that turn a session into a sweep: one job per frame (``source.path`` as a
    sweep over the files), the jobs' folders ``<session>/frames/<job number>``."""
    def q(p: Path) -> str:
        s = str(p)
        return f"'{s}'" if "'" not in s else f'"{s}"'

    return [f"source.path={','.join(q(f.resolve()) for f in frames)}", f"hydra.sweep.dir={q(session_dir.resolve() / 'frames')}",
            "hydra.sweep.subdir=${hydra.job.num}", "progress=false"]


def sbatch_preview(launcher: Mapping[str, Any], n_jobs: int, folder: str | Path) -> str | None:
    """The ``#SBATCH`` header submitit would write for a session's job array (``hydra/launcher=slurm``),
    made without a cluster (None when submitit is not installed)."""
    try:
        # lazy: submitit is optional (the [cluster] extra)
        from submitit.slurm.slurm import _make_sbatch_string
    except ImportError:
        return None
    mem = launcher.get("mem_gb")
    keys: dict[str, Any] = {"partition": launcher.get("partition"), "account": launcher.get("account"),
            "time": launcher.get("timeout_min"), "cpus_per_task": launcher.get("cpus_per_task"),
            "ntasks_per_node": launcher.get("tasks_per_node"), "nodes": launcher.get("nodes"),
            "gpus_per_node": launcher.get("gpus_per_node"), "qos": launcher.get("qos"),
            "constraint": launcher.get("constraint"), "mem": f"{mem}GB" if mem else None,
            "array_parallelism": launcher.get("array_parallelism") or 256,
            "job_name": launcher.get("name") or "octascope"}
    text = _make_sbatch_string(command="python -u -m submitit.core._submit <folder>", folder=str(folder),
                               map_count=n_jobs, **{k: v for k, v in keys.items() if v is not None})
    return "\n".join(line for line in text.splitlines() if line.startswith("#SBATCH"))


def collect_sweep(plan: Session, session_dir: Path, cfg: Mapping[str, Any],
                  failed: Mapping[int, str], wall_s: float, *, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """After a launcher's sweep: index the complete job folders and write ``session.csv``,
    ``session.html`` and ``session.json`` over every frame of the session — the frames done before
    (``skipped``, their earlier folders) and the sweep's jobs, numbered in the order of the frames
    not done before (:func:`sweep_overrides`; job ``j``'s folder is ``<session>/frames/<j>``)."""

    options = batch_options(cfg)
    outcomes: list[dict[str, Any]] = []
    job = 0
    for f, sha, done in zip(plan.frames, plan.checksums, plan.done):
        if done is not None:
            outcomes.append(dict(done, status="skipped"))
            continue
        folder = session_dir / "frames" / str(job)
        if is_complete(folder):
            record = {"key": frame_key(sha, cfg), "input_sha256": sha, "source": str(f),
                      "mlflow_run_id": _run_id_of(folder, cfg), "output_dir": str(folder.resolve())}
            record_done(options.index_dir, record)
            outcomes.append(dict(record, status="ok"))
        else:
            outcomes.append({"status": "failed", "error": failed.get(job, "no complete result"), "source": str(f),
                             "input_sha256": sha})
        job += 1
    rows = [r for f, o in zip(plan.frames, outcomes) for r in session_rows(str(f), o)]
    write_session_files(rows, outcomes, session_dir, say or (lambda msg: print(msg, file=sys.stderr, flush=True)))
    counts = {s: sum(1 for o in outcomes if o["status"] == s) for s in ("ok", "skipped", "failed")}
    summary: dict[str, Any] = {"frames": len(plan.frames), **counts, "wall_s": round(wall_s, 2), "launcher": True,
                               "results": [dict(o, frame=str(f)) for f, o in zip(plan.frames, outcomes)]}
    write_json(summary, session_dir / SESSION_JSON)
    return summary


def _run_id_of(folder: Path, cfg: Mapping[str, Any]) -> str:
    """The MLflow run that wrote ``folder`` (searched by its output-folder tag), or ''."""
    track = dict(cfg.get("tracking") or {})
    if not track.get("enabled", True):
        return ""
    try:
        return run_for_output_dir(folder, track.get("tracking_uri")) or ""
    except Exception:
        return ""
