"""The two validation experiments (``validation_cspbi3``, ``validation_mixed_halide``): MD → image at the
paper's dose → the paper's analysis, once per noise seed of the experiment's sweep; measured θ3/L maps
beside the MD truth; core/shell and Br-rich/I-only differences with 95 % intervals over the seeds.

Run through ``experiments/<name>/run.py`` (writes ``experiments/<name>/results.md``, ``results.csv``,
``maps.png``).

Definitions (all on the projected [001] octahedra of the image frame):

- shell = octahedra whose ``shell`` index is 0 (the outermost layer; ``metric.octahedral.shell_depth_cells``
  is 1 in these configs), core = the rest. Measured: the image's own octahedra (non-edge, finite θ3)
  with the image's shell labels; truth: every truth octahedron with the truth's labels.
- L = mean(L1, L2), the X–Pb–X length [Å].
- Br-rich = truth ``br_fraction`` ≥ 0.5 of the four in-plane X columns, I-only = 0; measured on the
  found octahedra matched to truth (the image does not tell Br from I; the truth labels which
  octahedra to average), truth on the same matched octahedra.
- Interval: mean ± t(0.975, n−1)·sd/√n over the noise seeds. "Propagated" is the mean over seeds of
  the standard error of a group mean from the per-octahedron propagated uncertainties
  (``theta3_err_deg``): √Σσ²/n.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import expkit

BR_RICH_MIN = expkit.accuracy.BR_RICH_MIN  # the accuracy benchmark's definition of Br-rich


def _L(df: pd.DataFrame) -> np.ndarray:
    return np.nanmean(np.c_[df["L1_A"].to_numpy(float), df["L2_A"].to_numpy(float)], axis=1)


def _complete(octs: pd.DataFrame) -> pd.DataFrame:
    use = octs[~octs["edge"].astype(bool)] if "edge" in octs else octs
    return use[np.isfinite(use["theta3_deg"].to_numpy(float))]


def _diff(values: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    if not a.any() or not b.any():
        return math.nan
    return float(np.nanmean(values[a]) - np.nanmean(values[b]))


def _prop_se(err: np.ndarray, mask: np.ndarray) -> float:
    e = err[mask]
    e = e[np.isfinite(e)]
    return float(math.sqrt((e**2).sum()) / len(e)) if len(e) else math.nan


def scores(result) -> dict[str, float]:
    """The validation figures of one analysed image (see the module docstring)."""
    out: dict[str, float] = {}
    found = _complete(result.tables["octahedra"])
    truth = result.truth.octahedra
    truth = truth[np.isfinite(truth["theta3_deg"].to_numpy(float))]
    out["octahedra_found"], out["octahedra_true"] = float(len(found)), float(len(truth))
    for tag, df in (("found", found), ("true", truth)):
        sh = df["shell"].to_numpy() == 0
        th, L = df["theta3_deg"].to_numpy(float), _L(df)
        out[f"theta3_shell_{tag}"] = float(np.nanmean(th[sh])) if sh.any() else math.nan
        out[f"theta3_core_{tag}"] = float(np.nanmean(th[~sh])) if (~sh).any() else math.nan
        out[f"core_minus_shell_theta3_{tag}"] = _diff(th, ~sh, sh)
        out[f"L_shell_{tag}"] = float(np.nanmean(L[sh])) if sh.any() else math.nan
        out[f"L_core_{tag}"] = float(np.nanmean(L[~sh])) if (~sh).any() else math.nan
        out[f"core_minus_shell_L_{tag}"] = _diff(L, ~sh, sh)
        out[f"n_shell_{tag}"], out[f"n_core_{tag}"] = float(sh.sum()), float((~sh).sum())
    if "theta3_err_deg" in found:
        sh = found["shell"].to_numpy() == 0
        err = found["theta3_err_deg"].to_numpy(float)
        out["theta3_shell_prop_se"], out["theta3_core_prop_se"] = _prop_se(err, sh), _prop_se(err, ~sh)
    # the accuracy benchmark's own scores (θ error = mean |Δθ1|, |Δθ2|; Br-rich − I-only θ3), for comparison
    out.update({f"bench_{k}": v for k, v in expkit.accuracy.octahedra_scores(result, 0.6).items()})
    f, t = expkit.matched_octahedra(result)
    out["octahedra_matched"] = float(len(f))
    if len(f):
        out["theta3_mae_matched"] = float(np.nanmean(np.abs(f["theta3_deg"].to_numpy(float) - t["theta3_deg"].to_numpy(float))))
        out["L_mae_matched_pm"] = float(np.nanmean(np.abs(_L(f) - _L(t))) * 100)
    if "br_fraction" in t and np.nanmax(t["br_fraction"].to_numpy(float), initial=0.0) > 0:
        br = t["br_fraction"].to_numpy(float)
        rich, pure = br >= BR_RICH_MIN, br == 0
        out["n_br_rich"], out["n_i_only"] = float(rich.sum()), float(pure.sum())
        for tag, df in (("found", f), ("true", t)):
            th, L = df["theta3_deg"].to_numpy(float), _L(df)
            out[f"br_theta3_{tag}"] = float(np.nanmean(th[rich])) if rich.any() else math.nan
            out[f"i_theta3_{tag}"] = float(np.nanmean(th[pure])) if pure.any() else math.nan
            out[f"br_minus_i_theta3_{tag}"] = _diff(th, rich, pure)
            out[f"br_L_{tag}"] = float(np.nanmean(L[rich])) if rich.any() else math.nan
            out[f"i_L_{tag}"] = float(np.nanmean(L[pure])) if pure.any() else math.nan
            out[f"br_minus_i_L_{tag}"] = _diff(L, rich, pure)
        if "theta3_err_deg" in f:
            err = f["theta3_err_deg"].to_numpy(float)
            out["br_theta3_prop_se"], out["i_theta3_prop_se"] = _prop_se(err, rich), _prop_se(err, pure)
    return out


def maps_figure(result, path: Path, title: str) -> None:
    """θ3 and L maps, measured (left) beside the MD truth (right), one marker per octahedron."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = _complete(result.tables["octahedra"])
    truth = result.truth.octahedra
    truth = truth[np.isfinite(truth["theta3_deg"].to_numpy(float))]
    fig, axes = plt.subplots(2, 2, figsize=(8.5, 8), constrained_layout=True)
    for row, (q, label, fn) in enumerate((("theta3", "θ3 [deg]", lambda d: d["theta3_deg"].to_numpy(float)),
                                          ("L", "L = (L1+L2)/2 [Å]", _L))):
        vals = [fn(found), fn(truth)]
        allv = np.concatenate([v[np.isfinite(v)] for v in vals])
        lo, hi = np.percentile(allv, [2, 98]) if len(allv) else (0, 1)
        for col, (df, v, name) in enumerate(((found, vals[0], "measured (image)"), (truth, vals[1], "MD truth"))):
            ax = axes[row, col]
            sc = ax.scatter(df["x_A"], df["y_A"], c=v, s=110, marker="s", cmap="viridis", vmin=lo, vmax=hi)
            sh = df["shell"].to_numpy() == 0
            ax.scatter(df["x_A"][~sh], df["y_A"][~sh], s=8, c="w", marker="o")
            ax.set_title(f"{label}: {name}")
            ax.set_aspect("equal")
            ax.invert_yaxis()
            ax.set_xlabel("x [Å]")
            ax.set_ylabel("y [Å]")
            fig.colorbar(sc, ax=ax, shrink=0.8)
    fig.suptitle(title + " (white dots: core octahedra)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: (label, score key, digits, signed) of the results table
ROWS_COMMON = [
    ("octahedra found / true (complete)", ("octahedra_found", "octahedra_true"), 0, False),
    ("θ3 shell [deg]", ("theta3_shell_found", "theta3_shell_true"), 2, False),
    ("θ3 core [deg]", ("theta3_core_found", "theta3_core_true"), 2, False),
    ("θ3 core − shell [deg]", ("core_minus_shell_theta3_found", "core_minus_shell_theta3_true"), 2, True),
    ("L shell [Å]", ("L_shell_found", "L_shell_true"), 3, False),
    ("L core [Å]", ("L_core_found", "L_core_true"), 3, False),
    ("L core − shell [Å]", ("core_minus_shell_L_found", "core_minus_shell_L_true"), 3, True),
]
ROWS_MIXED = [
    ("θ3 Br-rich [deg] (matched)", ("br_theta3_found", "br_theta3_true"), 2, False),
    ("θ3 I-only [deg] (matched)", ("i_theta3_found", "i_theta3_true"), 2, False),
    ("θ3 Br-rich − I-only [deg]", ("br_minus_i_theta3_found", "br_minus_i_theta3_true"), 2, True),
    ("L Br-rich [Å] (matched)", ("br_L_found", "br_L_true"), 3, False),
    ("L I-only [Å] (matched)", ("i_L_found", "i_L_true"), 3, False),
    ("L Br-rich − I-only [Å]", ("br_minus_i_L_found", "br_minus_i_L_true"), 3, True),
]


def results_markdown(name: str, rows: pd.DataFrame, *, command: str, wall_s: float, jobs: list[list[str]],
                     cfg: dict, mixed: bool) -> str:
    ok = rows[rows["ok"]]
    src = cfg["source"]
    lines = [f"# {name}: results", "",
             f"Command: `{command}` ({len(jobs)} analyses, {len(ok)} ok, {wall_s:.0f} s wall on the shared 2-core machine).",
             "",
             f"Input: `source=simulated` {src['structure']['n_cells']}-cell cube, br_fraction "
             f"{src['structure']['br_fraction']} ({src['structure']['mixing']}), ReaxFF MD {src['md']['n_steps']} steps at "
             f"{src['md']['temperature_K']} K, {src['imaging']['mode']} {src['imaging']['signal']} at "
             f"{src['imaging']['pixel_size_A']} Å/px ({src['imaging']['max_snapshots']} snapshots), "
             f"{src['noise']['dose_e_per_A2']} e/Å², noise seeds {', '.join(j[0].split('=')[1] for j in jobs if j)}; "
             f"analysis: {cfg['denoiser']['name']} → {cfg['locator']['name']} → {cfg['classifier']['name']} → "
             f"{cfg['network']['name']}. MLflow experiment `{cfg['tracking']['experiment']}`.",
             "", "Mean ± 95 % interval over the seeds (t-distribution). Measured = from the image; truth = the MD's "
             "projected octahedra (truth does not depend on the noise seed).", "",
             "| quantity | measured | truth | measured − truth |", "|---|---|---|---|"]
    for label, (kf, kt), d, signed in ROWS_COMMON + (ROWS_MIXED if mixed else []):
        if kf not in ok or kt not in ok:
            continue
        dd = ok[kf] - ok[kt]
        lines.append(f"| {label} | {expkit.fmt_ci(ok[kf], d, signed)} | {expkit.fmt_ci(ok[kt], d, signed)} | "
                     f"{expkit.fmt_ci(dd, d, True)} |")
    lines.append("")
    extra = []
    if "theta3_mae_matched" in ok:
        extra.append(f"θ3 error on matched octahedra: {expkit.fmt_ci(ok['theta3_mae_matched'])}° (mean |Δθ3|); "
                     f"L error {expkit.fmt_ci(ok['L_mae_matched_pm'], 1)} pm; detection F1 "
                     f"{expkit.fmt_ci(ok['detection_f1'], 3)}.")
    if "theta3_shell_prop_se" in ok:
        sd = ok["theta3_shell_found"].std(ddof=1), ok["theta3_core_found"].std(ddof=1)
        extra.append(f"Propagated standard error of the mean θ3 (from theta3_err_deg): shell "
                     f"{np.nanmean(ok['theta3_shell_prop_se']):.2f}°, core {np.nanmean(ok['theta3_core_prop_se']):.2f}°; "
                     f"seed-to-seed sd: shell {sd[0]:.2f}°, core {sd[1]:.2f}°.")
    if mixed and "br_theta3_prop_se" in ok:
        extra.append(f"Propagated standard error of the mean θ3: Br-rich {np.nanmean(ok['br_theta3_prop_se']):.2f}°, "
                     f"I-only {np.nanmean(ok['i_theta3_prop_se']):.2f}° (n = {ok['n_br_rich'].mean():.0f} Br-rich, "
                     f"{ok['n_i_only'].mean():.0f} I-only matched octahedra per image).")
    fails = rows[~rows["ok"]]
    if len(fails):
        extra.append(f"{len(fails)} failed: " + "; ".join(f"{j}: {e}" for j, e in zip(fails['job'], fails['error'])))
    lines += extra + ["", "![maps](maps.png)", "", "`maps.png`: seed 0, measured beside the MD truth.", ""]
    return "\n".join(lines)


def main(name: str, argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=f"the {name} experiment (conf/experiment/{name}.yaml)")
    ap.add_argument("--out", default=str(expkit.EXPERIMENTS / name), help="folder for results.md/.csv and maps.png")
    ap.add_argument("--tracking-uri", default=None, help="MLflow store (default: the project's sqlite:///mlruns.db)")
    ap.add_argument("--seeds", default=None, help="comma-separated noise seeds instead of the config's sweep")
    ap.add_argument("--experiment", default=name, help=f"the experiment config (default {name}; e.g. {name}_full)")
    args = ap.parse_args(argv)
    folder, name = name, args.experiment
    jobs = expkit.sweep_jobs(name)
    if args.seeds:
        jobs = [[f"source.noise.seed={s}"] for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mixed = "mixed" in name
    t_all = time.perf_counter()
    rows, cfg0 = [], None
    with tempfile.TemporaryDirectory(prefix=f"octascope-{name}-") as tmp:
        for n, job in enumerate(jobs, 1):
            t0 = time.perf_counter()
            row = {"job": " ".join(job), "ok": False, "error": ""}
            try:
                result, cfg = expkit.run_job(name, job, workdir=Path(tmp), tracking_uri=args.tracking_uri,
                                             extra=["figure_formats=[]"])
                cfg0 = cfg0 or cfg
                row.update({k: result.scalars.get(k, math.nan) for k in ("detection_f1", "theta_mae_deg")})
                row.update(scores(result))
                row["ok"] = True
                if n == 1:
                    maps_figure(result, out / "maps.png", f"{name}, {job[0] if job else ''}")
            except Exception as exc:  # a failed analysis is a row, not the end
                row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
            row["time_s"] = time.perf_counter() - t0
            rows.append(row)
            print(f"[{n}/{len(jobs)}] {' '.join(job)}: " + ("ok" if row["ok"] else row["error"]) + f" ({row['time_s']:.1f} s)",
                  flush=True)
    wall = time.perf_counter() - t_all
    df = pd.DataFrame(rows)
    df.to_csv(out / "results.csv", index=False)
    if cfg0 is None:
        cfg0, _ = expkit.compose_experiment(name)
    command = "python " + shlex.join([f"experiments/{folder}/run.py", *(argv if argv is not None else sys.argv[1:])])
    text = results_markdown(name, df, command=command, wall_s=wall, jobs=jobs, cfg=cfg0, mixed=mixed)
    (out / "results.md").write_text(text)
    print(text)
    return 0
