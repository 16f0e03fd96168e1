"""Calibration benchmark: do the reported 1σ uncertainties hold against the truth?

Usage::

    python experiments/benchmarks/calibration.py --out experiments/benchmarks/results/calibration-after.md
    python experiments/benchmarks/calibration.py --cases static --doses 300 --seeds 0-3      # smoke

Images (``octascope.sim``, cached in ``$OCTASCOPE_CACHE`` or ``~/.cache/octascope``): the default
3.8 nm CsPbI3 cube (``conf/source/simulated.yaml``), weak-phase iDPC at 0.2 Å/px,

- ``static``: the built orthorhombic structure without MD (``run_md=False``): every column's atoms
  are aligned, so only the noise separates the image from the truth; the statistical uncertainty
  alone should be calibrated.
- ``md``: the cached ReaxFF MD at 300 K, 8 snapshots averaged (``simulate()`` with the default
  config): thermally smeared columns whose image peak is not their mean atom position; here only
  the total (statistical + systematic) uncertainty can cover the error.

Each image is analysed with :func:`octascope.analyze` and the default stages (``none``, ``gaussian``,
``lattice``, ``nearest``; the default command's) at every dose and noise seed; ``--refine image`` or
``--refine gradient`` adds the model-based refinement (:mod:`octascope.analysis.refine`), whose
uncertainties then replace the locator's. For every column
matched to a true column (0.6 Å) and every complete, non-edge octahedron matched to a true one:
z = (measured − truth) / reported 1σ, for x and y (pooled as "position"), θ1 and θ2 (pooled) and
θ3, and per image for the particle's mean θ3 in the core and in the shell (the outer
``shell_depth_cells`` = 1 cell; reported mean vs the mean of the truth over the same matched
octahedra) and their difference Δθ3 = core − shell. Two uncertainties: ``stat`` — ``x_err_A``,
``theta3_err_deg``, ``theta3_deg_core_err`` as reported — and ``total`` — ``x_total_err_A``,
``theta3_total_err_deg``, ``theta3_deg_core_total_err`` (statistical and systematic in quadrature;
absent before issue 19, shown as "–"). Also, for the statistical part alone, z against the
noise-free image's analysis (``vs clean``: the noise is the only difference).

Targets (issue 19): on static particles sd(z) in 0.85–1.15, 1σ coverage (|z| < 1) 68 ± 6 %, 2σ
coverage (|z| < 2) ≥ 93 %; on the MD particle with the total uncertainty 1σ coverage ≥ 60 %.
The script only needs the public analysis API and the ``*_err_*`` columns, so it runs against any
version of the code (``PYTHONPATH`` of another checkout) — the "before" table was made that way.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

TOLERANCE_A = 0.6
SHELL_DEPTH = 1
#: quantity -> (value columns, truth columns, stat error columns, total error columns)
QUANTITIES = {
    "position": (("x_A", "y_A"), ("x_err_A", "y_err_A"), ("x_total_err_A", "y_total_err_A")),
    "θ1/θ2": (("theta1_deg", "theta2_deg"), ("theta1_err_deg", "theta2_err_deg"),
              ("theta1_total_err_deg", "theta2_total_err_deg")),
    "θ3": (("theta3_deg",), ("theta3_err_deg",), ("theta3_total_err_deg",)),
}
MEANS = ("core", "shell", "core − shell")


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def simulate_case(case: str, dose: float | None, seed: int):
    from octascope.sim.simulation import simulate

    return simulate(run_md=case == "md", noise={"dose_e_per_A2": dose, "seed": seed}, progress=False)


#: the model-based refinement after classification (``--refine``): None (off, the default command) or its domain
REFINE: str | None = None
#: the denoiser (``--denoiser``): the default command's
DENOISER: str = "none"


def run_analysis(image, truth):
    from octascope import analyze

    return analyze(image, truth=truth, denoiser=DENOISER, metrics=[("octahedral", {"shell_depth_cells": SHELL_DEPTH, "figures": False}), "accuracy"],
                   refine=None if REFINE is None else {"enabled": True, "domain": REFINE}, progress=None)


def _pick(table: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    return np.column_stack([table[c].to_numpy(float) if c in table else np.full(len(table), np.nan) for c in names])


def _complete(octs: pd.DataFrame) -> pd.DataFrame:
    use = octs[~octs["edge"].astype(bool)] if "edge" in octs else octs
    return use[np.isfinite(use["theta3_deg"].to_numpy(float))]


def _matched_columns(found: pd.DataFrame, ref: pd.DataFrame):
    from octascope_plugins.metric.accuracy import match_points

    i, j = match_points(found[["x_A", "y_A"]].to_numpy(float), ref[["x_A", "y_A"]].to_numpy(float), TOLERANCE_A)
    return found.iloc[i].reset_index(drop=True), ref.iloc[j].reset_index(drop=True)


def z_rows(result, truth_cols: pd.DataFrame, truth_octs: pd.DataFrame, clean) -> dict[str, dict[str, np.ndarray]]:
    """Errors and reported uncertainties of one analysis: quantity -> {err, stat, total, err_clean, stat_clean}."""
    out: dict[str, dict[str, np.ndarray]] = {}
    cols = result.columns[result.columns["species"].astype(str).isin(["Pb", "X", "Cs"])]
    octs = _complete(result.tables["octahedra"])
    for q, (names, stat, total) in QUANTITIES.items():
        table, ref, ref_clean = (cols, truth_cols, None if clean is None else clean.columns) if q == "position" else \
            (octs, truth_octs, None if clean is None else _complete(clean.tables["octahedra"]))
        f, t = _matched_columns(table, ref)
        rec = {"err": (_pick(f, names) - _pick(t, names)).ravel(), "stat": _pick(f, stat).ravel(),
               "total": _pick(f, total).ravel()}
        if ref_clean is not None:
            fc, c = _matched_columns(table, ref_clean)
            rec["err_clean"] = (_pick(fc, names) - _pick(c, names)).ravel()
            rec["stat_clean"] = _pick(fc, stat).ravel()
        out[q] = rec
    # the particle's mean θ3 in core and shell vs the truth over the same matched octahedra
    parts = result.tables.get("particles")
    f, t = _matched_columns(octs, truth_octs)
    shell = f["shell"].to_numpy() < SHELL_DEPTH
    truth_mean = {"core": np.nanmean(t["theta3_deg"].to_numpy(float)[~shell]) if (~shell).any() else np.nan,
                  "shell": np.nanmean(t["theta3_deg"].to_numpy(float)[shell]) if shell.any() else np.nan}
    truth_mean["core − shell"] = truth_mean["core"] - truth_mean["shell"]
    if parts is not None and len(parts):
        row = parts.iloc[0]
        for region, key in (("core", "theta3_deg_core"), ("shell", "theta3_deg_shell"),
                            ("core − shell", "dtheta3_core_minus_shell_deg")):
            stat_key = f"{key}_err" if region != "core − shell" else "dtheta3_core_minus_shell_err_deg"
            total_key = f"{key}_total_err" if region != "core − shell" else "dtheta3_core_minus_shell_total_err_deg"
            out[f"mean θ3 {region}"] = {"err": np.array([row.get(key, np.nan) - truth_mean[region]]),
                                        "stat": np.array([row.get(stat_key, np.nan)]),
                                        "total": np.array([row.get(total_key, np.nan)])}
    return out


def summarise(errs: np.ndarray, sig: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(errs) & np.isfinite(sig) & (sig > 0)
    if ok.sum() < 2:
        return {"n": int(ok.sum()), "sd_z": math.nan, "cov1": math.nan, "cov2": math.nan, "median_sigma": math.nan}
    z = errs[ok] / sig[ok]
    return {"n": int(ok.sum()), "sd_z": float(np.std(z, ddof=1)), "mean_z": float(np.mean(z)),
            "cov1": float(np.mean(np.abs(z) < 1)), "cov2": float(np.mean(np.abs(z) < 2)),
            "median_sigma": float(np.median(sig[ok]))}


#: noise-free MD images of the systematic study: name -> simulate() keywords
STUDY_IMAGES = {
    "cspbi3 (8 snapshots, default)": {},
    "Br-segregated CsPbI3-xBrx (8 snapshots)": {"structure": {"br_fraction": 0.1667, "mixing": "paper"}},
    "cspbi3 (10 snapshots, validation)": {"imaging": {"max_snapshots": 10}},
}
#: images whose errors set the table (the third is the same trajectory, a check)
STUDY_POOLED = 2


def systematic_study() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The study behind :data:`octascope.analysis.uncertainty.SYSTEMATIC_A`: the default analysis
    of noise-free MD images; per column its error against the truth, split along and across its
    Pb–X bond for X columns (the analysis' own :func:`~octascope.analysis.uncertainty.column_bond_axes`
    and :func:`~octascope.analysis.uncertainty.column_depth_class`), and per image the mean θ3
    and L errors in core and shell."""
    from octascope.analysis.uncertainty import column_bond_axes, column_depth_class
    from octascope.sim.simulation import simulate

    cols_rows, oct_rows = [], []
    for k, (name, kw) in enumerate(STUDY_IMAGES.items()):
        sim = simulate(noise={"dose_e_per_A2": None}, progress=False, **kw)
        res = run_analysis(sim.image, sim.truth)
        cols = res.columns[res.columns["species"].astype(str).isin(["Pb", "X", "Cs"])]
        axes = column_bond_axes(cols, res.octahedra)
        cols = cols.assign(depth=column_depth_class(cols, res.octahedra), ux=axes[:, 0], uy=axes[:, 1])
        f, t = _matched_columns(cols, sim.truth.columns)
        err = f[["x_A", "y_A"]].to_numpy(float) - t[["x_A", "y_A"]].to_numpy(float)
        u = f[["ux", "uy"]].to_numpy(float)
        bonded = np.isfinite(u).all(1)
        # along / across the bond for bonded X; the two image axes otherwise
        e1 = np.where(bonded, (err * np.nan_to_num(u)).sum(1), err[:, 0])
        e2 = np.where(bonded, err[:, 1] * np.nan_to_num(u[:, 0]) - err[:, 0] * np.nan_to_num(u[:, 1]), err[:, 1])
        cols_rows.append(pd.DataFrame({"image": name, "pooled": k < STUDY_POOLED, "species": f["species"].astype(str),
                                       "depth": f["depth"], "bonded": bonded, "e1": e1, "e2": e2}))
        octs = _complete(res.tables["octahedra"])
        tru = sim.truth.octahedra
        fo, to = _matched_columns(octs, tru[np.isfinite(tru["theta3_deg"].to_numpy(float))])
        d = fo["theta3_deg"].to_numpy(float) - to["theta3_deg"].to_numpy(float)
        dl = (fo[["L1_A", "L2_A"]].to_numpy(float) - to[["L1_A", "L2_A"]].to_numpy(float)).mean(1)
        shell = fo["shell"].to_numpy() < SHELL_DEPTH
        oct_rows.append({"image": name, "n": len(d), "theta3_rms": float(np.sqrt(np.mean(d**2))),
                         "theta3_mean": float(d.mean()), "core_mean": float(d[~shell].mean()),
                         "shell_mean": float(d[shell].mean()), "n_core": int((~shell).sum()), "n_shell": int(shell.sum()),
                         "L_core_mean": float(np.nanmean(dl[~shell])), "L_shell_mean": float(np.nanmean(dl[shell])),
                         "L_rms": float(np.sqrt(np.nanmean(dl**2)))})
    return pd.concat(cols_rows, ignore_index=True), pd.DataFrame(oct_rows)


def _study_values(g: pd.DataFrame) -> tuple[float, float]:
    """(along, across) RMS [Å] for bonded X, the per-axis RMS twice otherwise."""
    if g["species"].iloc[0] == "X":
        b = g[g["bonded"]]
        return float(np.sqrt(np.mean(b["e1"] ** 2))), float(np.sqrt(np.mean(b["e2"] ** 2)))
    v = float(np.sqrt(np.mean(np.r_[g["e1"], g["e2"]] ** 2)))
    return v, v


def _pm(sp: str, a: float, c: float) -> str:
    return f"{100 * a:.1f} / {100 * c:.1f}" if sp == "X" else f"{100 * a:.1f}"


def study_markdown(cols: pd.DataFrame, octs: pd.DataFrame) -> str:
    lines = ["RMS error of the noise-free analysis against the MD truth [pm]: X along / across its Pb–X bond, "
             "Pb and Cs per image axis; depth: outer = in the outermost unit cell.", "",
             "| image | species | depth | columns | RMS [pm] |", "|---|---|---|---|---|"]
    for (img, sp, depth), g in cols.groupby(["image", "species", "depth"], sort=False):
        lines.append(f"| {img} | {sp} | {depth} | {len(g)} | {_pm(sp, *_study_values(g))} |")
    lines += ["", "Pooled over the first two images (the table `SYSTEMATIC_A`):", "",
              "| species | depth | columns | RMS [pm] |", "|---|---|---|---|"]
    table = {}
    for (sp, depth), g in cols[cols["pooled"]].groupby(["species", "depth"]):
        a, c = _study_values(g)
        table[(sp, depth)] = (round(a, 3), round(c, 3))
        lines.append(f"| {sp} | {depth} | {len(g)} | {_pm(sp, a, c)} |")
    lines += ["", f"`SYSTEMATIC_A = {table}`", "",
              "Per octahedron (matched, complete): θ3 and L = (L1 + L2)/2 against the truth.", "",
              "| image | octahedra | θ3 RMS error | mean θ3 error | core mean (n) | shell mean (n) | L RMS error | mean L error core / shell |",
              "|---|---|---|---|---|---|---|---|"]
    for r in octs.to_dict("records"):
        lines.append(f"| {r['image']} | {r['n']} | {r['theta3_rms']:.2f}° | {r['theta3_mean']:+.2f}° | "
                     f"{r['core_mean']:+.2f}° ({r['n_core']}) | {r['shell_mean']:+.2f}° ({r['n_shell']}) | "
                     f"{100 * r['L_rms']:.1f} pm | {100 * r['L_core_mean']:+.1f} / {100 * r['L_shell_mean']:+.1f} pm |")
    return "\n".join(lines) + "\n"


def run(cases: list[str], doses: list[float], seeds: list[int], md_seeds: list[int]) -> pd.DataFrame:
    rows = []
    for case in cases:
        base = simulate_case(case, None, 0)
        clean = run_analysis(base.image, base.truth)
        truth_cols, truth_octs = base.truth.columns, base.truth.octahedra
        truth_octs = truth_octs[np.isfinite(truth_octs["theta3_deg"].to_numpy(float))]
        for dose in doses:
            acc: dict[str, dict[str, list]] = {}
            t0, n_ok = time.perf_counter(), 0
            for seed in (seeds if case == "static" else md_seeds):
                sim = simulate_case(case, dose, seed)
                try:
                    res = run_analysis(sim.image, sim.truth)
                except Exception as exc:  # a refused image is counted, not fatal
                    print(f"{case} {dose:g} seed {seed}: {type(exc).__name__}: {exc}", flush=True)
                    continue
                n_ok += 1
                for q, rec in z_rows(res, truth_cols, truth_octs, clean).items():
                    for k, v in rec.items():
                        acc.setdefault(q, {}).setdefault(k, []).append(v)
            for q, rec in acc.items():
                cat = {k: np.concatenate(v) for k, v in rec.items()}
                err = cat["err"]
                row = {"image": case, "dose": dose, "quantity": q, "analyses": n_ok,
                       "rms_error": float(np.sqrt(np.nanmean(err**2)))}
                row.update({f"stat_{k}": v for k, v in summarise(err, cat["stat"]).items()})
                row.update({f"total_{k}": v for k, v in summarise(err, cat["total"]).items()})
                if "err_clean" in cat:
                    row.update({f"clean_{k}": v for k, v in summarise(cat["err_clean"], cat["stat_clean"]).items()})
                rows.append(row)
            print(f"{case} {dose:g} e/Å²: {n_ok} analyses in {time.perf_counter() - t0:.0f} s", flush=True)
    return pd.DataFrame(rows)


def _f(v: float, fmt: str) -> str:
    return "–" if v is None or not np.isfinite(v) else format(v, fmt)


def markdown(df: pd.DataFrame, command: str, wall_s: float) -> str:
    lines = [f"Command: `{command}` ({wall_s / 60:.1f} min wall on the shared 2-core machine).", "",
             "z = (measured − truth) / reported 1σ. stat: the reported `*_err_*`; total: `*_total_err_*` "
             "(statistical ⊕ systematic). vs clean: the statistical z against the noise-free image's analysis. "
             "Position and θ in pm/deg are RMS errors; σ the median reported 1σ. Targets: static sd(z) 0.85–1.15, "
             "|z|<1 68 ± 6 %, |z|<2 ≥ 93 %; MD total |z|<1 ≥ 60 %.", "",
             "| image | dose [e/Å²] | quantity | n | RMS error | σ stat | sd z stat | \\|z\\|<1 stat | \\|z\\|<2 stat "
             "| σ total | sd z total | \\|z\\|<1 total | \\|z\\|<2 total | sd z vs clean | \\|z\\|<1 vs clean |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in df.to_dict("records"):
        scale, unit = (100.0, " pm") if r["quantity"] == "position" else (1.0, "°")
        lines.append(
            f"| {r['image']} | {r['dose']:g} | {r['quantity']} | {r['stat_n']} | {_f(r['rms_error'] * scale, '.2f')}{unit} "
            f"| {_f(r['stat_median_sigma'] * scale, '.2f')} | {_f(r['stat_sd_z'], '.2f')} | {_f(100 * r['stat_cov1'], '.0f')} % "
            f"| {_f(100 * r['stat_cov2'], '.0f')} % | {_f(r.get('total_median_sigma', math.nan) * scale, '.2f')} "
            f"| {_f(r.get('total_sd_z', math.nan), '.2f')} | {_f(100 * r.get('total_cov1', math.nan), '.0f')} % "
            f"| {_f(100 * r.get('total_cov2', math.nan), '.0f')} % | {_f(r.get('clean_sd_z', math.nan), '.2f')} "
            f"| {_f(100 * r.get('clean_cov1', math.nan), '.0f')} % |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="static,md")
    ap.add_argument("--doses", default="100,300,1000")
    ap.add_argument("--seeds", default="0-19", help="noise seeds of the static images (ranges a-b allowed)")
    ap.add_argument("--md-seeds", default="0-9", help="noise seeds of the MD images")
    ap.add_argument("--out", default=None, help="markdown table to write")
    ap.add_argument("--csv", default=None, help="the table as CSV")
    ap.add_argument("--refine", default=None, choices=["image", "gradient"],
                    help="refine the classified columns (refine.enabled=true, refine.domain=...); default: off")
    ap.add_argument("--denoiser", default="none", help="denoiser of the analysis (default: the default command's, none)")
    ap.add_argument("--study-systematic", action="store_true",
                    help="instead: the noise-free MD study that sets the systematic term (docs/uncertainty.md)")
    args = ap.parse_args(argv)
    global REFINE, DENOISER
    REFINE = args.refine
    DENOISER = args.denoiser
    t0 = time.perf_counter()
    if args.study_systematic:
        text = study_markdown(*systematic_study())
        print(text)
        if args.out:
            Path(args.out).write_text(text)
        return 0
    df = run(args.cases.split(","), [float(d) for d in args.doses.split(",")], parse_seeds(args.seeds),
             parse_seeds(args.md_seeds))
    command = "python " + shlex.join(["experiments/benchmarks/calibration.py", *(argv if argv is not None else sys.argv[1:])])
    text = markdown(df, command, time.perf_counter() - t0)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.csv:
        df.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
