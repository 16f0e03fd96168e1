"""Session throughput: one ``octascope source.path='frames/*.npy'`` command over many frames (issue 24.3, 22.1).

Frames (written once into ``$OCTASCOPE_CACHE/session-bench/<kind>-<size>-<dose>/``, reused):

synthetic   ``octascope.input.synthetic_field`` frames (two particles, 0.2 Å/px, with truth sidecars),
            re-noised with one seed per frame: the 20 × 1024² target of issue 22.
field       the paper-size frame: the cached clean 2048² field of ``source=field`` (0.168 Å/px, six
            particles; simulated once by experiments/benchmarks/accuracy.py) re-noised at ``--dose`` with
            one seed per frame, truth beside it. Never simulates a new field: if the clean field is not
            cached the script stops.

It runs the default command (MLflow to a store in the work folder, figures on) as a session with
1 and with 2 workers on the same frames (side by side, in one run), then the same command again
(every frame skipped), and prints frames/min, s/frame, the 1 → 2 worker scaling, and the ratio of
the projected 50-frame session on 2 workers to the target (10 min)::

    python experiments/benchmarks/session.py --kind field --frames 4 --dose 300
    python experiments/benchmarks/session.py --kind synthetic --size 1024 --frames 20 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_50_FRAMES_S = 600.0


def frames_folder(kind: str, size: int, dose: float, n: int) -> Path:
    """Write (or reuse) ``n`` frames with truth sidecars; return their folder."""
    import numpy as np

    from octascope.sim.cache import cache_root

    folder = cache_root() / "session-bench" / f"{kind}-{size}-{dose:g}"
    folder.mkdir(parents=True, exist_ok=True)
    have = sorted(folder.glob("f*.npy"))
    if len(have) >= n:
        return folder
    if kind == "synthetic":
        from octascope.input.synthetic_field import FieldParticle, FieldSpec, make_synthetic_field

        half = size * 0.2 / 2
        particles = (FieldParticle(n_cells=(10, 10), centre_A=(half * 0.55, half), rotation_deg=9.0,
                                   shell_rotation_deg=6.0, shell_depth=2),
                     FieldParticle(n_cells=(8, 8), centre_A=(half * 1.45, half), rotation_deg=7.0, angle_deg=20.0))
        for seed in range(len(have), n):
            image, truth = make_synthetic_field(FieldSpec(particles=particles, shape_px=(size, size), pixel_size_A=0.2,
                                                          dose_e_per_A2=dose, seed=seed))
            _write(folder / f"f{seed:03d}", image.data, truth)
        return folder
    import copy

    import yaml

    from octascope.sim.field import simulate_field

    src = yaml.safe_load((ROOT / "conf" / "source" / "field.yaml").read_text())
    clean_key = None
    for seed in range(len(have), n):
        t0 = time.perf_counter()
        sim = simulate_field(src["particles"], field=src.get("field"), imaging=src.get("imaging"),
                             support=src.get("support"), noise={**copy.deepcopy(src.get("noise") or {}),
                                                                "dose_e_per_A2": dose, "seed": seed},
                             cache_dir=None, progress=False)
        if time.perf_counter() - t0 > 300 and clean_key is None:
            print("warning: the field took > 5 min: it was simulated, not loaded from the cache", file=sys.stderr)
        clean_key = getattr(sim, "key", "")
        data = sim.image.data
        if size < data.shape[0]:
            data = data[:size, :size]
        _write(folder / f"f{seed:03d}", np.asarray(data, dtype=np.float32), sim.truth)
    return folder


def _write(stem: Path, data, truth) -> None:
    import numpy as np

    np.save(stem.with_suffix(".npy"), data)
    truth.columns.to_csv(stem.parent / f"{stem.name}.truth_columns.csv", index=False)
    if getattr(truth, "octahedra", None) is not None:
        truth.octahedra.to_csv(stem.parent / f"{stem.name}.truth_octahedra.csv", index=False)


def run_session(frames: list[Path], workers: int, work: Path, pixel_size_A: float, extra: list[str]) -> dict:
    """One session command over ``frames`` (linked into a folder of their own); wall time and session.json."""
    src = work / f"in-{workers}-{len(frames)}"
    src.mkdir(parents=True, exist_ok=True)
    for f in frames:
        for side in [f, *f.parent.glob(f"{f.stem}.truth_*.csv")]:
            dest = src / side.name
            if not dest.exists():
                os.symlink(side, dest)
    cmd = [sys.executable, "-m", "octascope.app.cli", f"source.path={src}", f"source.pixel_size_A={pixel_size_A}",
           f"batch.workers={workers}", f"batch.index_dir={work / 'index'}", f"tracking.tracking_uri=sqlite:///{work / 'store.db'}",
           *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    sessions = sorted(work.glob("outputs/*/*/session.json"), key=lambda p: p.stat().st_mtime)
    record = json.loads(sessions[-1].read_text()) if sessions else {}
    if proc.returncode not in (0, 1):
        print(proc.stderr[-2000:], file=sys.stderr)
    return {"rc": proc.returncode, **{k: record.get(k) for k in ("ok", "skipped", "failed")},
            "wall_s": wall, "session_wall_s": record.get("wall_s")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=("field", "synthetic"), default="field")
    ap.add_argument("--size", type=int, default=2048, help="frame edge [px] (field: a crop when < 2048)")
    ap.add_argument("--dose", type=float, default=300.0, help="dose [e/Å²]")
    ap.add_argument("--frames", type=int, default=4, help="frames per session")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (same frames)")
    ap.add_argument("--figures", default="[png,svg]", help="figure_formats of the runs (the default command: png, svg)")
    ap.add_argument("--out", default=None, help="append the result as markdown to this file")
    ap.add_argument("overrides", nargs="*", help="more overrides of the command (e.g. tracking.enabled=false)")
    args = ap.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    t0 = time.perf_counter()
    folder = frames_folder(args.kind, args.size, args.dose, args.frames)
    frames = sorted(folder.glob("f*.npy"))[:args.frames]
    prep = time.perf_counter() - t0
    pixel = 0.2 if args.kind == "synthetic" else 0.168
    load0 = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory(prefix="octascope-session-bench-") as tmp:
        for w in [int(x) for x in args.workers.split(",")]:
            work = Path(tmp) / f"w{w}"
            work.mkdir()
            extra = [f"figure_formats={args.figures}", *args.overrides]
            results[w] = run_session(frames, w, work, pixel, extra)
            results[w]["rerun"] = run_session(frames, w, work, pixel, extra)
    load1 = os.getloadavg()
    lines = [f"## session benchmark {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             "", f"command: `python experiments/benchmarks/session.py {' '.join(argv or sys.argv[1:])}`",
             f"frames: {len(frames)} × {args.size}² {args.kind}, {args.dose:g} e/Å², {pixel} Å/px (prepared in {prep:.0f} s); "
             f"load average before {load0[0]:.1f}, after {load1[0]:.1f} on {os.cpu_count()} cores", "",
             "wall: the whole command (process start to exit); session: from the first frame's planning to session.json",
             "",
             "| workers | frames | ok | failed | wall [s] | session [s] | s/frame (wall) | frames/min (wall) | "
             "re-run, all skipped: wall [s] | re-run session [s] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for w, r in results.items():
        n = r.get("ok") or 0
        spf = r["wall_s"] / n if n else float("nan")
        lines.append(f"| {w} | {len(frames)} | {n} | {r.get('failed')} | {r['wall_s']:.1f} | {r['session_wall_s']} | "
                     f"{spf:.1f} | {60 / spf if n else 0:.2f} | {r['rerun']['wall_s']:.1f} | {r['rerun']['session_wall_s']} |")
    ws = sorted(results)
    if len(ws) >= 2 and all(results[w].get("ok") for w in ws[:2]):
        a, b = (results[w]["wall_s"] / results[w]["ok"] for w in ws[:2])
        lines.append("")
        lines.append(f"scaling {ws[0]} → {ws[1]} workers: {a / b:.2f}× the throughput (linear: {ws[1] / ws[0]:.0f}×)")
    best = min(results.values(), key=lambda r: r["wall_s"] / max(r.get("ok") or 0, 1))
    if best.get("ok"):
        proj = best["wall_s"] / best["ok"] * 50
        lines.append(f"projected 50 frames: {proj / 60:.1f} min; target ≤ {TARGET_50_FRAMES_S / 60:.0f} min on 2 cores: "
                     f"ratio {proj / TARGET_50_FRAMES_S:.2f} (≤ 1 meets it)")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text + "\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
