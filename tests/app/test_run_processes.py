"""The error contract with real processes: concurrent runs into a new SQLite store, SIGTERM/SIGINT, SIGKILL
and `octascope runs --fix-stale`. Each starts several `python -m octascope.app.cli` processes (MLflow
import, store creation), so they are `slow`: python -m pytest -m slow tests/app/test_run_processes.py"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FAST = ["source=synthetic", "source.spec.n_cells=[5,5]", "progress=false", "figure_formats=[]"]
#: a run long enough to be interrupted in its locator stage
LONG = ["source=synthetic", "source.spec.n_cells=[14,14]", "progress=true", "figure_formats=[png,svg]"]


def _env():
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("OCTASCOPE_DEBUG", None)
    env.pop("OCTASCOPE_RUN_ID", None)
    return env


def _start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "octascope.app.cli", *args], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _runs(db: Path) -> list[tuple[str, str, int]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("select r.run_uuid, r.status, count(p.key) from runs r left join params p "
                           "on p.run_uuid = r.run_uuid group by r.run_uuid").fetchall()
    finally:
        con.close()


def _start_and_wait_for_locator(args, cwd):
    """Start a run and return (process, stderr lines so far, reader thread) once its locator runs."""
    proc = _start(args, cwd)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    t0 = time.time()
    while not any(line.startswith("[2/") for line in lines):
        assert proc.poll() is None, "".join(lines)
        assert time.time() - t0 < 300, "".join(lines)
        time.sleep(0.1)
    time.sleep(0.5)
    return proc, lines, reader


def test_concurrent_runs_into_a_new_store_lose_nothing(tmp_path):
    n = 4
    procs = [_start(FAST, tmp_path) for _ in range(n)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [e for _, e in outs]
    assert not any("Traceback" in e for _, e in outs)
    runs = _runs(tmp_path / "mlruns.db")
    assert sorted(r[1] for r in runs) == ["FINISHED"] * n
    folders = {line.split("outputs: ", 1)[1] for o, _ in outs for line in o.splitlines() if "outputs: " in line}
    assert len(folders) == n  # started in the same second, each in its own folder
    assert all((tmp_path / f / "summary.json").exists() for f in folders)  # printed relative to the working folder


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_mark_the_run_failed(tmp_path, sig):
    # the store exists (a finished run), as for a user's second run
    assert _start(FAST, tmp_path).wait(timeout=600) == 0
    proc, lines, reader = _start_and_wait_for_locator(LONG, tmp_path)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    reader.join(10)
    err = "".join(lines)
    messages = [line for line in err.splitlines() if line.strip() and not line.startswith("[")]
    assert proc.returncode == 128 + sig, err
    assert len(messages) == 1 and messages[0].startswith(f"octascope: error: stopped by {sig.name}; "), err
    assert "Traceback" not in err
    runs = sorted(_runs(tmp_path / "mlruns.db"), key=lambda r: r[1])
    assert [r[1] for r in runs] == ["FAILED", "FINISHED"]
    assert runs[0][2] > 20  # parameters were logged when the run started
    assert not list(tmp_path.rglob("*.part"))
    assert len([p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]) == 1  # the interrupted run left no folder


def test_sigkill_during_the_analysis_leaves_no_running_run(tmp_path):
    # the store exists (a finished run), as for a user's second run
    assert _start(FAST, tmp_path).wait(timeout=600) == 0
    proc, lines, reader = _start_and_wait_for_locator(LONG, tmp_path)
    proc.kill()
    proc.wait(timeout=60)
    # the run is logged after its analysis (its numbers print first): a killed analysis leaves no RUNNING run
    assert [r[1] for r in _runs(tmp_path / "mlruns.db")] == ["FINISHED"]
    folder = max((p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    assert json.loads((folder / ".octascope-run").read_text())["pid"] == proc.pid
    assert not (folder / "summary.json").exists()  # incomplete, and says so
    part = folder / f".columns.csv.{proc.pid}.x1y2z3.part"  # what a kill during a write leaves
    part.write_text("half a ta")

    fix = subprocess.run([sys.executable, "-m", "octascope.app.cli", "runs", "--fix-stale"], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert fix.returncode == 0, fix.stderr
    assert not folder.exists() and not part.exists()
    assert [r[1] for r in _runs(tmp_path / "mlruns.db")] == ["FINISHED"]


def test_fix_stale_marks_a_killed_process_run_killed(tmp_path):
    # a process killed while its MLflow run is open (a kill while a run logs, a time series' run) leaves it RUNNING
    code = ("import os, signal\n"
            "from octascope.results.tracking import log_start, tracked_run\n"
            "with tracked_run(run_name='killed'):\n"
            "    log_start(params={'locator': {'name': 'gaussian'}})\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ((run_id, status, n_params),) = _runs(tmp_path / "mlruns.db")
    assert status == "RUNNING" and n_params > 1

    listing = subprocess.run([sys.executable, "-m", "octascope.app.cli", "runs"], cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0, listing.stderr
    assert run_id[:8] in listing.stdout and "RUNNING" in listing.stdout

    fix = subprocess.run([sys.executable, "-m", "octascope.app.cli", "runs", "--fix-stale"], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert fix.returncode == 0, fix.stderr
    assert "marked 1 run(s) KILLED" in fix.stdout
    assert _runs(tmp_path / "mlruns.db")[0][1] == "KILLED"
