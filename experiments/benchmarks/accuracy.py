"""Accuracy benchmark at the method paper's doses: simulated iDPC images with truth, analysed by the
default ``octascope`` command and by a "best" configuration.

Usage::

    python experiments/benchmarks/accuracy.py --out experiments/benchmarks/results/accuracy.md
    python experiments/benchmarks/accuracy.py --quick --out accuracy-quick.md     # 2-core machine, < ~10 min cached
    python experiments/benchmarks/accuracy.py --images cspbi3,mixed --doses clean,300 --seeds 0,1,2 \\
        --overrides "classifier=sofs network=sofs denoiser=bm3d"

Images (``octascope.sim``, each step cached in ``$OCTASCOPE_CACHE`` or ``~/.cache/octascope``; the
MD of the two cubes takes ~15 min each on one core the first time):

============  =====================================================================================
cspbi3        the default CsPbI3 cube (``conf/source/simulated.yaml``: 3.8 nm, ReaxFF MD at 300 K),
              weak-phase iDPC, 0.2 Å/px, 10 MD snapshots averaged (a scan integrates the motion)
mixed         the Br-segregated CsPbI(3-x)Br(x) cube (``+simulation=mixed_halide``), same imaging
rotated       cspbi3 rotated in-plane by 17° (``source.imaging.scan_rotation_deg=17``)
carbon        cspbi3 on 3 nm of amorphous carbon (``+simulation=carbon_support``)
multislice    abTEM multislice iDPC of a 20 Å x 20 Å corner crop of cspbi3 (``+simulation=multislice_crop``,
              0.25 Å/px, 2 snapshots)
multislice_full
              abTEM multislice iCoM of the whole cspbi3 cube (``+simulation=multislice_full``, 0.25 Å/px,
              one snapshot, a 50 Å window, PRISM interpolation 4); the first run simulates it (501 s of
              one core on the 2-core machine), then it comes from the cache; not in ``--quick``
field         a 2048² frame at 0.168 Å/px on 3 nm of carbon with six particles (``source=field``,
              ``conf/source/field.yaml``): 10 nm static, 8.8 nm with a core/shell tilt gradient, 7.5 nm
              5° off [001], 10 nm cut by the frame edge, two touching 3.8 nm MD particles; per-particle rows
============  =====================================================================================

The field is analysed at 1,000, 300, 220 and 100 e/Å² by default; besides its frame row it gets one
row per true particle (detection, species, octahedra coverage, θ error, core − shell Δθ3 found and
true) and the frame's verdict counts (on-axis particles analysed, off-axis ones that yielded tilts).

Doses: ``clean`` (no noise, one run) and 1000, 300, 100 e/Å² (the paper images at ≈220 e/Å²), each
with the noise seeds given (≥ 3 by default; iDPC shot noise on the CoM, :mod:`octascope.sim.noise`).

Every image is analysed by composing ``conf/config.yaml`` with Hydra's compose API and running it
with :func:`octascope.app.cli.run_from_config`, exactly as the command line does; row *i* of the table
is reproduced by ``octascope source=simulated <image overrides> source.noise.dose_e_per_A2=<dose>
source.noise.seed=<seed> [<config overrides>]`` (printed in the output file). Two configurations:
``default`` (no override) and ``best`` (``--overrides``, default ``classifier=sofs network=sofs``).
The benchmark itself adds only ``figure_formats=[]`` (no figures: the analysis is the same) and
switches the pipeline's own MLflow logging off to log each analysis once, itself, with the
benchmark's labels.

Measured per analysis (the ``accuracy`` metric's scalars, and from its matching): detection
precision, recall, F1 (all columns and the outermost cell), position RMSE per species [pm], species
accuracy, θ error = mean(|Δθ1|, |Δθ2|) over matched complete (non-edge) octahedra [deg], octahedra
found (complete, with θ) / true, and for the mixed-halide cube the Br-rich (br_fraction ≥ 0.5 of its
four in-plane X columns) minus I-only θ3 difference [deg], measured vs truth on the same matched
octahedra. A run that raises is a failure row with its one-line message. Each analysis is one
MLflow run in ``--experiment`` (default ``accuracy-benchmark``) of ``--tracking-uri`` (default the
project's ``sqlite:///mlruns.db``): params ``bench.image``, ``bench.dose``, ``bench.config``,
``bench.seed`` plus the flattened config; metrics the accuracy scalars plus ``bench/...``.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("MPLBACKEND", "Agg")
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

#: image name -> Hydra overrides of the source (``source=simulated`` first)
IMAGES: dict[str, list[str]] = {
    "cspbi3": ["source=simulated", "source.imaging.max_snapshots=10"],
    "mixed": ["source=simulated", "+simulation=mixed_halide", "source.imaging.max_snapshots=10"],
    "rotated": ["source=simulated", "source.imaging.max_snapshots=10", "source.imaging.scan_rotation_deg=17.0"],
    "carbon": ["source=simulated", "+simulation=carbon_support", "source.imaging.max_snapshots=10"],
    "multislice": ["source=simulated", "+simulation=multislice_crop"],
    "multislice_full": ["source=simulated", "+simulation=multislice_full"],
    "field": ["source=field"],
}
DOSES = ("clean", "1000", "300", "100")
#: doses of an image when none are given (the paper images at ≈220 e/Å²)
DOSES_OF = {"field": ("1000", "300", "220", "100")}
#: overrides of every analysis in the benchmark that do not change the analysis
BENCH_OVERRIDES = ["figure_formats=[]", "progress=false", "tracking.enabled=false"]
#: images left out of ``--quick`` (a smoke run): their first simulation costs minutes
#: (``multislice_full``: 501 s of one core)
SLOW_FIRST = ("multislice_full",)
DEFAULT_IMAGES = list(IMAGES)
QUICK = dict(images=[i for i in IMAGES if i not in SLOW_FIRST], doses=list(DOSES), seeds=[0])
BR_RICH_MIN = 0.5  # br_fraction of an octahedron's four in-plane X columns: Br-rich at or above, I-only at 0


def compose(overrides: list[str]) -> dict:
    """``conf/config.yaml`` composed with ``overrides`` (Hydra compose API), resolved to plain values."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from octascope.app.cli import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def source_overrides(image: str, dose: str, seed: int) -> list[str]:
    """Hydra overrides of one simulated image at one dose and noise seed."""
    d = "null" if dose == "clean" else str(float(dose))
    return [*IMAGES[image], f"source.noise.dose_e_per_A2={d}", f"source.noise.seed={seed}", "source.progress=false"]


def prepare_image(image: str) -> dict:
    """Simulate (or load from the cache) the clean image of ``image``: MD, imaging; returns its size and cost."""
    from octascope.sim.simulation import simulate

    src = compose(source_overrides(image, "clean", 0))["source"]
    if src.pop("kind") == "field":
        return prepare_field(src)
    for k in ("path", "pixel_size_A", "frame", "signal_index", "signal", "signal_type", "truth_path",
              "truth_octahedra_path", "name"):
        src.pop(k, None)
    t0 = time.perf_counter()
    sim = simulate(**src)
    info = sim.clean.info
    return {"shape": sim.image.shape, "pixel_size_A": sim.image.pixel_size_A, "mode": info.get("mode"),
            "n_snapshots": info.get("n_snapshots"), "imaging_s": float(info.get("seconds", float("nan"))),
            "wall_s": time.perf_counter() - t0, "key": sim.keys["image"], "n_columns": len(sim.truth.columns),
            "composition": sim.truth.metadata["composition"]}


def prepare_field(src: dict) -> dict:
    """Simulate (or load from the cache) the clean field; its size and cost."""
    from octascope.sim.field import simulate_field

    t0 = time.perf_counter()
    sim = simulate_field(src["particles"], field=src.get("field"), imaging=src.get("imaging"), support=src.get("support"),
                         noise={**(src.get("noise") or {}), "dose_e_per_A2": None}, cache_dir=src.get("cache_dir"),
                         progress=False)
    info = sim.clean.info
    return {"shape": sim.image.shape, "pixel_size_A": sim.image.pixel_size_A, "mode": info.get("mode"),
            "n_snapshots": info.get("n_snapshots"), "imaging_s": float(info.get("seconds", float("nan"))),
            "wall_s": time.perf_counter() - t0, "key": sim.key, "n_columns": len(sim.truth.columns),
            "composition": f"{len(src['particles'])} particles"}


def octahedra_scores(result, tolerance_A: float) -> dict[str, float]:
    """θ error, octahedra counts and the Br-rich minus I-only θ3 difference vs truth.

    Found octahedra are those of the ``octahedra`` table that are not ``edge`` and have a finite θ3;
    they are matched one-to-one to truth octahedra with the accuracy metric's own matching.
    """
    from octascope_plugins.metric.accuracy import match_points

    out: dict[str, float] = {}
    truth = result.truth
    to = truth.octahedra if truth is not None else None
    octs = result.tables.get("octahedra")
    if to is None:
        return out
    to = to[np.isfinite(to["theta3_deg"].to_numpy(float))]
    if "valid_001" in to:  # a particle off the zone axis has no [001] truth to find
        to = to[to["valid_001"].astype(bool).to_numpy()]
    out["octahedra_true"] = float(len(to))
    if octs is None or not len(octs):
        out["octahedra_found"] = 0.0
        return out
    use = octs[~octs["edge"].astype(bool)] if "edge" in octs else octs
    use = use[np.isfinite(use["theta3_deg"].to_numpy(float))]
    out["octahedra_found"] = float(len(use))
    oi, tj = match_points(use[["x_A", "y_A"]].to_numpy(float), to[["x_A", "y_A"]].to_numpy(float), tolerance_A)
    out["octahedra_matched"] = float(len(oi))
    if not len(oi):
        return out
    d12 = np.concatenate([use[q].to_numpy(float)[oi] - to[q].to_numpy(float)[tj] for q in ("theta1_deg", "theta2_deg")])
    d12 = d12[np.isfinite(d12)]
    out["theta12_error_deg"] = float(np.abs(d12).mean()) if len(d12) else float("nan")
    if "br_fraction" in to and np.nanmax(to["br_fraction"].to_numpy(float), initial=0.0) > 0:
        br = to["br_fraction"].to_numpy(float)[tj]
        rich, pure = br >= BR_RICH_MIN, br == 0
        if rich.any() and pure.any():
            found3 = use["theta3_deg"].to_numpy(float)[oi]
            true3 = to["theta3_deg"].to_numpy(float)[tj]
            out["br_rich_n"] = float(rich.sum())
            out["br_minus_i_theta3_found_deg"] = float(found3[rich].mean() - found3[pure].mean())
            out["br_minus_i_theta3_true_deg"] = float(true3[rich].mean() - true3[pure].mean())
    return out


def analyse(image: str, dose: str, seed: int, config: str, config_overrides: list[str], *, workdir: Path,
            tracking_uri: str | None, experiment: str) -> dict:
    """One analysis as a table row (``ok`` False with ``error`` when it raised), logged to MLflow."""
    import mlflow

    from octascope.app.run import run_from_config
    from octascope.results.tracking import log_run, tracked_run

    overrides = source_overrides(image, dose, seed) + list(config_overrides)
    row = {"image": image, "dose": dose, "config": config, "seed": seed, "ok": False, "error": "",
           "command": "octascope " + " ".join(shlex.quote(o) for o in overrides if o != "source.progress=false")}
    bench = {"bench.image": image, "bench.dose": dose, "bench.config": config, "bench.seed": seed,
             "bench.overrides": " ".join(config_overrides) or "(default)"}
    cfg = compose(overrides + BENCH_OVERRIDES)  # a config that does not compose is a bug of the benchmark: raise
    t0 = time.perf_counter()
    try:
        tol = float(((cfg.get("metric") or {}).get("accuracy") or {}).get("match_tolerance_A", 0.6))
        out_dir = Path(tempfile.mkdtemp(prefix=f"{image}-{dose}-{config}-{seed}-", dir=workdir))
        with tracked_run(tracking_uri=tracking_uri, experiment=experiment,
                         run_name=f"{image} {dose} {config} seed {seed}", tags={"octascope.benchmark": "accuracy"}):
            mlflow.log_params(bench)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result, _ = run_from_config(cfg, out_dir)
            except Exception as exc:
                mlflow.set_tag("error", _one_line(exc)[:5000])
                raise
            extra = octahedra_scores(result, tol)
            scalars = {**result.scalars, **{f"bench/{k}": v for k, v in extra.items()}}
            log_run(params=cfg, scalars=scalars, timings_s=result.timings_s)
        row.update(result.scalars)
        row.update(extra)
        per = result.tables.get("accuracy_particles")
        if per is not None:
            row["particles"] = per.to_dict("records")
        row["ok"] = True
        row["time_s"] = float(result.timings_s.get("total", time.perf_counter() - t0))
    except Exception as exc:  # a failed analysis is a result of the benchmark, not its end
        row["error"] = _one_line(exc)
        row["time_s"] = time.perf_counter() - t0
    return row


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


#: table columns: (header, row key, format, scale)
COLUMNS = [
    ("precision", "detection_precision", "{:.3f}", 1.0),
    ("recall", "detection_recall", "{:.3f}", 1.0),
    ("F1", "detection_f1", "{:.3f}", 1.0),
    ("F1 outer", "detection_f1_outer", "{:.3f}", 1.0),
    ("RMSE Pb [pm]", "rmse_pm_Pb", "{:.1f}", 1.0),
    ("RMSE X [pm]", "rmse_pm_X", "{:.1f}", 1.0),
    ("RMSE Cs [pm]", "rmse_pm_Cs", "{:.1f}", 1.0),
    ("species acc.", "species_accuracy", "{:.3f}", 1.0),
    ("θ err [deg]", "theta12_error_deg", "{:.2f}", 1.0),
    ("oct. found", "octahedra_found", "{:.0f}", 1.0),
    ("oct. matched", "octahedra_matched", "{:.0f}", 1.0),
    ("oct. true", "octahedra_true", "{:.0f}", 1.0),
    ("particles analysed", "n_particles_analysed", "{:.0f}", 1.0),
    ("particles refused", "n_particles_refused", "{:.0f}", 1.0),
    ("off-axis with θ", "n_particles_off_axis_with_tilts", "{:.0f}", 1.0),
]
BR_COLUMNS = [("Δθ3 Br−I found [deg]", "br_minus_i_theta3_found_deg", "{:+.2f}", 1.0),
              ("Δθ3 Br−I true [deg]", "br_minus_i_theta3_true_deg", "{:+.2f}", 1.0)]


def markdown_table(rows: pd.DataFrame) -> str:
    """One line per image × dose × config: mean ± sd over the seeds that ran; failures counted."""
    from octascope.results.compare import mean_sd

    with_br = any(c in rows for c in ("br_minus_i_theta3_found_deg",))
    cols = COLUMNS + (BR_COLUMNS if with_br else [])
    head = ["image", "dose [e/Å²]", "config", "runs ok"] + [c[0] for c in cols] + ["time [s]", "failure"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {name: i for i, name in enumerate(IMAGES)}
    dose_order = {d: i for i, d in enumerate(DOSES)}
    groups = rows.groupby(["image", "dose", "config"], sort=False)
    keys = sorted(groups.groups, key=lambda k: (order.get(k[0], 99), dose_order.get(k[1], 99), k[2] != "default", k[2]))
    for key in keys:
        g = groups.get_group(key)
        ok = g[g["ok"]]
        fails = g.loc[~g["ok"], "error"]
        fail = "" if not len(fails) else f"{len(fails)}×: {fails.iloc[0][:160]}".replace("|", "/")
        cells = [mean_sd(ok[c[1]], c[2]) if (len(ok) and c[1] in ok) else "—" for c in cols]
        cells.append(mean_sd(g["time_s"], "{:.1f}"))
        lines.append("| " + " | ".join([key[0], key[1], key[2], f"{len(ok)}/{len(g)}", *cells, fail]) + " |")
    return "\n".join(lines)


def particle_rows(rows: list[dict]) -> pd.DataFrame:
    """One row per analysis and true particle (fields), with the analysis' labels."""
    out = []
    for r in rows:
        for p in r.get("particles") or []:
            out.append({"image": r["image"], "dose": r["dose"], "config": r["config"], "seed": r["seed"], **p})
    return pd.DataFrame(out)


#: per-particle table columns: (header, key, format)
PARTICLE_COLUMNS = [("F1", "detection_f1", "{:.3f}"), ("species acc.", "species_accuracy", "{:.3f}"),
                    ("coverage", "coverage", "{:.2f}"), ("θ err [deg]", "theta_mae_deg", "{:.2f}"),
                    ("Δθ3 core−shell found [deg]", "dtheta3_found_deg", "{:+.2f}"),
                    ("Δθ3 true [deg]", "dtheta3_true_deg", "{:+.2f}"), ("Δθ3 error [deg]", "dtheta3_error_deg", "{:+.2f}")]


def particle_markdown(particles: pd.DataFrame) -> str:
    """Per true particle × dose × config: mean ± sd over seeds; the found particles and whether it
    has a valid [001] truth (an off-axis particle must yield no octahedra: coverage 0)."""
    from octascope.results.compare import mean_sd

    head = ["image", "dose [e/Å²]", "config", "particle", "[001] truth", "found as"] + [c[0] for c in PARTICLE_COLUMNS]
    lines = ["Per particle (fields):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, g in particles.groupby(["image", "dose", "config", "particle_true"], sort=False):
        found = ",".join(sorted(set(g["particle_found"].astype(str))))
        cells = [mean_sd(g[c[1]], c[2]) if c[1] in g else "—" for c in PARTICLE_COLUMNS]
        lines.append("| " + " | ".join([str(key[0]), str(key[1]), str(key[2]), str(key[3]),
                                        "yes" if bool(g["valid_001"].iloc[0]) else "no (off-axis)", found, *cells]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="accuracy-benchmark.md", help="markdown file for the table (a .csv of all runs beside it)")
    parser.add_argument("--quick", action="store_true", help="one noise seed (every image and dose): a 2-core smoke run")
    parser.add_argument("--images", default=None, help=f"comma-separated, of {','.join(IMAGES)} (default all; --quick: all but {','.join(SLOW_FIRST)})")
    parser.add_argument("--doses", default=None, help="comma-separated e/Å² or 'clean' (default clean,1000,300,100)")
    parser.add_argument("--seeds", default=None, help="comma-separated noise seeds (default 0,1,2; --quick: 0)")
    parser.add_argument("--overrides", default="classifier=sofs network=sofs",
                        help="Hydra overrides of the 'best' configuration (space-separated)")
    parser.add_argument("--configs", default="default,best", help="which of default,best to run")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: the project's sqlite:///mlruns.db)")
    parser.add_argument("--experiment", default="accuracy-benchmark", help="MLflow experiment name")
    parser.add_argument("--rows-from", action="append", default=[],
                        help="CSV written by an earlier run (beside its --out): its rows join the table (not re-run)")
    args = parser.parse_args(argv)

    images = args.images.split(",") if args.images else list(QUICK["images"] if args.quick else DEFAULT_IMAGES)
    unknown = [i for i in images if i not in IMAGES]
    if unknown:
        parser.error(f"unknown image(s) {unknown}; use {list(IMAGES)}")
    doses = args.doses.split(",") if args.doses else None
    for d in doses or ():
        if d != "clean" and not float(d) > 0:
            parser.error(f"dose {d!r}: a positive number of e/Å² or 'clean'")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else (QUICK["seeds"] if args.quick else [0, 1, 2])
    configs = {"default": [], "best": shlex.split(args.overrides)}
    configs = {k: v for k, v in configs.items() if k in args.configs.split(",")}

    jobs = [(im, d, s, c) for im in images for d in (doses or DOSES_OF.get(im, DOSES))
            for s in (seeds[:1] if d == "clean" else seeds) for c in configs]
    print(f"accuracy benchmark: {len(images)} images × {len(doses or DOSES)} doses × seeds {seeds} × configs "
          f"{list(configs)} = {len(jobs)} analyses", flush=True)
    t_start = time.perf_counter()
    prepared = {}
    for im in images:  # MD and clean images first (cached in $OCTASCOPE_CACHE): the long part the first time
        print(f"image {im}: simulating or loading from the cache ...", flush=True)
        prepared[im] = p = prepare_image(im)
        print(f"image {im}: {p['composition']} {p['mode']} {p['shape'][1]}x{p['shape'][0]} px at {p['pixel_size_A']} Å/px, "
              f"{p['n_snapshots']} snapshots, {p['n_columns']} true columns; imaging took {p['imaging_s']:.0f} s when "
              f"computed, ready in {p['wall_s']:.1f} s (image key {p['key']})", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="octascope-accuracy-") as tmp:
        workdir = Path(tmp)
        for n, (im, d, s, c) in enumerate(jobs, 1):
            t0 = time.perf_counter()
            row = analyse(im, d, s, c, configs[c], workdir=workdir, tracking_uri=args.tracking_uri,
                          experiment=args.experiment)
            rows.append(row)
            wall = time.perf_counter() - t0
            if row["ok"]:
                msg = (f"F1 {row.get('detection_f1', math.nan):.3f}, species {row.get('species_accuracy', math.nan):.3f}, "
                       f"θ err {row.get('theta12_error_deg', math.nan):.2f}°, octahedra "
                       f"{row.get('octahedra_found', 0):.0f}/{row.get('octahedra_true', 0):.0f}")
            else:
                msg = f"FAILED {row['error'][:120]}"
            print(f"[{n}/{len(jobs)}] {im} {d} {c} seed {s}: {msg} ({wall:.1f} s, total {time.perf_counter() - t_start:.0f} s)",
                  flush=True)
    earlier = [pd.read_csv(f, keep_default_na=False, na_values=[""]) for f in args.rows_from]
    for e in earlier:
        e["ok"] = e["ok"].astype(str) == "True"
        e["dose"] = e["dose"].astype(str)
        e["error"] = e["error"].fillna("").astype(str)
    particles = particle_rows(rows)
    table = pd.concat([*earlier, pd.DataFrame([{k: v for k, v in r.items() if k != "particles"} for r in rows])],
                      ignore_index=True)
    md = markdown_table(table) + ("\n\n" + particle_markdown(particles) if len(particles) else "")
    from octascope.results.tracking import resolve_tracking_uri

    header = [f"# Accuracy benchmark ({'quick' if args.quick else 'full'})", "",
              f"Command: `python experiments/benchmarks/accuracy.py {' '.join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))}`",
              "",
              *(["Rows also from: " + ", ".join(f"`{f}`" for f in args.rows_from), ""] if args.rows_from else []),
              f"{len(jobs)} analyses in {time.perf_counter() - t_start:.0f} s; mean ± sd over noise seeds {seeds} "
              "(clean: one run). Configs: default = `conf/config.yaml` as is; best = " + f"`{args.overrides}`.",
              "θ err = mean(|Δθ1|, |Δθ2|) over matched complete octahedra; oct. found = complete octahedra with θ; "
              "Δθ3 Br−I: mean θ3 of Br-rich (≥ 50 % Br in-plane X) minus I-only octahedra, found vs truth on the "
              "same matched octahedra.",
              f"MLflow: experiment `{args.experiment}` in `{resolve_tracking_uri(args.tracking_uri)}`.", ""]
    cmds = ["", "Image commands (add `source.noise.dose_e_per_A2=… source.noise.seed=…` and the config overrides):", ""]
    cmds += [f"- {im}: `octascope {' '.join(IMAGES[im])}` — {prepared[im]['composition']}, {prepared[im]['mode']}, "
             f"{prepared[im]['shape'][1]}×{prepared[im]['shape'][0]} px at {prepared[im]['pixel_size_A']} Å/px, "
             f"{prepared[im]['n_snapshots']} MD snapshots, {prepared[im]['n_columns']} true columns "
             f"(imaging {prepared[im]['imaging_s']:.0f} s when computed)" for im in images]
    text = "\n".join(header) + "\n" + md + "\n" + "\n".join(cmds) + "\n"
    print(text, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    table.to_csv(out.with_suffix(".csv"), index=False)
    if len(particles):
        particles.to_csv(out.with_suffix(".particles.csv"), index=False)
    print(f"wrote {out} and {out.with_suffix('.csv')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
