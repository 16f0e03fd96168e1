"""Start-up of the default command: ``octascope`` on the bundled example, wall time (minimum of N runs)
and its phases (issue 24.2; target < 3 s wall).

Each run is a fresh process in one work folder (the MLflow store exists after the first, as for a
user's second run); ``OCTASCOPE_TIMING=1`` makes the command print its phases: ``startup``
(interpreter and imports before ``main``), ``check`` (composing and checking the configuration),
``hydra`` (Hydra's own start before the job), ``plugins``, ``read``, ``tracking`` (opening the
store, logging), ``analysis``, ``outputs`` (tables, figures, summary.json) and ``job``; and when the
summary's first line appeared on the command's output (it prints once the analysis ends, before
the figures and the results' logging). With
``--compare DIR`` the same is run, interleaved, with another checkout's ``platform``/``plugins`` on
the path (a before/after from one run under the same load). ``OCTASCOPE_PREWARM=0`` in the
environment turns off the background import of MLflow (for an A/B of that alone)::

    python experiments/benchmarks/startup.py --runs 5
    python experiments/benchmarks/startup.py --runs 5 --compare /work/main
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_S = 3.0


def one_run(checkout: Path, work: Path, extra: list[str]) -> dict:
    env = dict(os.environ, OCTASCOPE_TIMING="1", MPLBACKEND="Agg",
               PYTHONPATH=f"{checkout / 'platform'}:{checkout / 'plugins'}")
    t0 = time.perf_counter()
    summary_s = float("nan")
    with tempfile.TemporaryFile("w+") as err:  # stderr to a file: only stdout is read as it comes
        proc = subprocess.Popen([sys.executable, "-m", "octascope.app.cli", *extra], cwd=work, env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("octascope: analysed") and summary_s != summary_s:
                summary_s = time.perf_counter() - t0
        rc = proc.wait()
        wall = time.perf_counter() - t0
        err.seek(0)
        m = re.search(r"phases (\{.*\})", err.read())
    phases = json.loads(m.group(1)) if m else {}
    return {"wall_s": wall, "summary_s": summary_s, "rc": rc, "phases": phases}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--compare", default=None, help="another checkout (e.g. /work/main) run interleaved as 'before'")
    ap.add_argument("--out", default=None, help="append the markdown result to this file")
    ap.add_argument("overrides", nargs="*", help="overrides of the command (default: none, the bundled example)")
    args = ap.parse_args(argv)
    checkouts = {"this": ROOT}
    if args.compare:
        checkouts = {"before": Path(args.compare).resolve(), "this": ROOT}
    load0 = os.getloadavg()[0]
    results: dict[str, list[dict]] = {k: [] for k in checkouts}
    with tempfile.TemporaryDirectory(prefix="octascope-startup-") as tmp:
        works = {k: Path(tmp) / k for k in checkouts}
        for k, w in works.items():
            w.mkdir()
            one_run(checkouts[k], w, args.overrides)  # the store and caches exist from here on (not counted)
        for _ in range(args.runs):
            for k in checkouts:
                results[k].append(one_run(checkouts[k], works[k], args.overrides))
    load1 = os.getloadavg()[0]
    lines = [f"## start-up benchmark {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"command: `python experiments/benchmarks/startup.py {' '.join(argv if argv is not None else sys.argv[1:])}`; "
             f"`octascope {' '.join(args.overrides)}`{'' if args.overrides else ' on the bundled example'}, "
             f"{args.runs} runs each (after one warm-up), "
             f"load average {load0:.1f} → {load1:.1f} on {os.cpu_count()} cores", "",
             "| checkout | min wall [s] | median [s] | ratio of min to target 3 s | summary printed after [s] (min, median) "
             "| phases of the fastest run [s] |",
             "|---|---|---|---|---|---|"]
    for k, runs in results.items():
        ok = [r for r in runs if r["rc"] == 0] or runs
        walls = sorted(r["wall_s"] for r in ok)
        best = min(ok, key=lambda r: r["wall_s"])
        phases = ", ".join(f"{n} {v:.2f}" for n, v in best["phases"].items() if n != "wall") or "(not reported)"
        shown = sorted(r["summary_s"] for r in ok)
        lines.append(f"| {k} ({checkouts[k]}) | {walls[0]:.2f} | {walls[len(walls) // 2]:.2f} | {walls[0] / TARGET_S:.2f} | "
                     f"{shown[0]:.2f}, {shown[len(shown) // 2]:.2f} | {phases} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text + "\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
