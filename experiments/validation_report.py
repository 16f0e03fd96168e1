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
- Interval: mean ± t(0.975, n−1)·sd/√n over the noise seeds.
- Propagated 1σ (issue 19): every group mean and difference is a linear combination of the column
  positions, so its uncertainty is propagated from the image's own column covariance with the
  correlations kept (:class:`octascope.analysis.uncertainty.GeometryCovariance`): ``stat`` (the
  image's noise), ``sys`` (the columns' model error, shared by the octahedra of a group) and
  ``total`` (both). One image's verdict on a difference: resolved when |difference| ≥ 2 × its total
  1σ. "Covered": the truth lies within the total 1σ (2σ) of the measured value.
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


def _weights(n: int, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Weights over the n octahedra of the table of the mean of the finite ``values`` at ``rows``."""
    w = np.zeros(n)
    ok = rows[np.isfinite(values[rows])]
    if len(ok):
        w[ok] = 1.0 / len(ok)
    return w


def _errors(geo, quantity: str, w: np.ndarray, prefix: str) -> dict[str, float]:
    """``<prefix>_err_stat``, ``_err_sys``, ``_err_total`` of ``w @ quantity`` (NaN without a propagation)."""
    if geo is None or not np.any(w):
        return {f"{prefix}_err_{p}": math.nan for p in ("stat", "sys", "total")}
    return {f"{prefix}_err_{p}": geo.error(quantity, w, p) for p in ("stat", "sys", "total")}


def propagated(result, found_rows: dict[str, np.ndarray]) -> dict[str, float]:
    """Propagated 1σ of the group means and differences of one analysis (module docstring);
    ``found_rows``: group name -> row positions in the octahedra table."""
    octs = result.tables["octahedra"]
    geo = getattr(result.geometry, "covariance", None)
    if geo is not None and len(octs) != geo.n_octahedra:
        geo = None
    if geo is not None:
        geo = geo.derived("L_A", {"L1_A": 0.5, "L2_A": 0.5})
    n = len(octs)
    th, L = octs["theta3_deg"].to_numpy(float), _L(octs)
    w = {g: (_weights(n, r, th), _weights(n, r, L)) for g, r in found_rows.items()}
    out: dict[str, float] = {}
    for g, (wt, wl) in w.items():
        out.update(_errors(geo, "theta3_deg", wt, f"theta3_{g}"))
        out.update(_errors(geo, "L_A", wl, f"L_{g}"))
    for a, b, name in (("core", "shell", "core_minus_shell"), ("br", "i", "br_minus_i")):
        if a in w and b in w:
            out.update(_errors(geo, "theta3_deg", w[a][0] - w[b][0], f"{name}_theta3"))
            out.update(_errors(geo, "L_A", w[a][1] - w[b][1], f"{name}_L"))
    return out


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
    octs = result.tables["octahedra"]
    pos = np.flatnonzero(octs.index.isin(found.index))
    sh_all = octs["shell"].to_numpy() == 0
    rows = {"shell": pos[sh_all[pos]], "core": pos[~sh_all[pos]]}
    # the accuracy benchmark's own scores (θ error = mean |Δθ1|, |Δθ2|; Br-rich − I-only θ3), for comparison
    out.update({f"bench_{k}": v for k, v in expkit.accuracy.octahedra_scores(result, 0.6).items()})
    f, t = expkit.matched_octahedra(result)
    f_pos = _matched_positions(result)
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
        rows["br"], rows["i"] = f_pos[rich], f_pos[pure]
    out.update(propagated(result, rows))
    return out


def _matched_positions(result) -> np.ndarray:
    """Row positions in the octahedra table of the found octahedra :func:`expkit.matched_octahedra`
    returns, in its order."""
    from octascope_plugins.metric.accuracy import match_points

    octs = result.tables["octahedra"]
    use = np.flatnonzero((~octs["edge"].astype(bool).to_numpy() if "edge" in octs else np.ones(len(octs), bool))
                         & np.isfinite(octs["theta3_deg"].to_numpy(float)))
    to = result.truth.octahedra
    to = to[np.isfinite(to["theta3_deg"].to_numpy(float))]
    oi, _ = match_points(octs.iloc[use][["x_A", "y_A"]].to_numpy(float), to[["x_A", "y_A"]].to_numpy(float), 0.6)
    return use[oi]


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


#: (label, score prefix, measured key, truth key, digits, is a difference) of the propagated-uncertainty table
PROPAGATED_COMMON = [
    ("θ3 shell [deg]", "theta3_shell", "theta3_shell_found", "theta3_shell_true", 2, False),
    ("θ3 core [deg]", "theta3_core", "theta3_core_found", "theta3_core_true", 2, False),
    ("θ3 core − shell [deg]", "core_minus_shell_theta3", "core_minus_shell_theta3_found", "core_minus_shell_theta3_true", 2, True),
    ("L shell [Å]", "L_shell", "L_shell_found", "L_shell_true", 3, False),
    ("L core [Å]", "L_core", "L_core_found", "L_core_true", 3, False),
    ("L core − shell [Å]", "core_minus_shell_L", "core_minus_shell_L_found", "core_minus_shell_L_true", 3, True),
]
PROPAGATED_MIXED = [
    ("θ3 Br-rich [deg]", "theta3_br", "br_theta3_found", "br_theta3_true", 2, False),
    ("θ3 I-only [deg]", "theta3_i", "i_theta3_found", "i_theta3_true", 2, False),
    ("θ3 Br-rich − I-only [deg]", "br_minus_i_theta3", "br_minus_i_theta3_found", "br_minus_i_theta3_true", 2, True),
    ("L Br-rich [Å]", "L_br", "br_L_found", "br_L_true", 3, False),
    ("L I-only [Å]", "L_i", "i_L_found", "i_L_true", 3, False),
    ("L Br-rich − I-only [Å]", "br_minus_i_L", "br_minus_i_L_found", "br_minus_i_L_true", 3, True),
]


def propagated_markdown(ok: pd.DataFrame, mixed: bool) -> list[str]:
    """The table of each image's own uncertainties against the seed-to-seed scatter and the truth."""
    rows = [r for r in PROPAGATED_COMMON + (PROPAGATED_MIXED if mixed else []) if f"{r[1]}_err_total" in ok]
    if not rows:
        return []
    n = len(ok)
    lines = ["Uncertainties each image reports for itself (propagated from its column covariance, correlations kept; "
             "mean over the seeds): stat = the image's noise, sys = the columns' model error, total = both. "
             "Seed sd = the scatter of the measured value over the seeds (what stat should match). "
             "Covered = seeds whose truth lies within the total 1σ of the measured value; resolved = seeds whose "
             "measured difference is ≥ 2 × its total 1σ (significant at 2σ).", "",
             "| quantity | stat 1σ | seed sd | sys 1σ | total 1σ | covered (1σ) | covered (2σ) | resolved |",
             "|---|---|---|---|---|---|---|---|"]
    for label, prefix, kf, kt, d, diff in rows:
        stat, sys_, tot = (ok[f"{prefix}_err_{p}"].to_numpy(float) for p in ("stat", "sys", "total"))
        meas, true = ok[kf].to_numpy(float), ok[kt].to_numpy(float)
        z = (meas - true) / tot
        fin = np.isfinite(z)
        cover1, cover2 = int(np.sum(np.abs(z[fin]) <= 1)), int(np.sum(np.abs(z[fin]) <= 2))
        resolved = f"{int(np.sum(np.abs(meas[fin]) >= 2 * tot[fin]))}/{int(fin.sum())}" if diff else ""
        sd = np.nanstd(meas, ddof=1) if n > 1 else math.nan
        lines.append(f"| {label} | {np.nanmean(stat):.{d}f} | {sd:.{d}f} | {np.nanmean(sys_):.{d}f} | {np.nanmean(tot):.{d}f} "
                     f"| {cover1}/{int(fin.sum())} | {cover2}/{int(fin.sum())} | {resolved} |")
    return lines


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
    lines_p = propagated_markdown(ok, mixed)
    if lines_p:
        extra += ["", *lines_p]
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
