"""Choose the default denoiser from accuracy-benchmark tables (issue 20), by a written rule (docs/denoisers.md says which steps came when).

Usage::

    python experiments/benchmarks/denoiser_decision.py results/accuracy-decision-single.csv \\
        results/accuracy-decision-field-none.csv results/accuracy-decision-field-absf.csv \\
        --labels default=none,best=absf --calibration none=results/calibration-decision-none.csv \\
        --calibration absf=results/calibration-decision-absf.csv --out results/denoiser-decision.md

(the commands that write those tables: docs/denoisers.md, "Which denoiser is the default").

Rule (docs/denoisers.md, "Which denoiser is the default"):

1. Rows: every image x dose of the tables but ``clean`` (the realistic set: weak-phase and
   multislice, vacuum and carbon, single particles and the field, 1,000-100 e/Å²), each the mean
   over its noise seeds. A failed analysis counts as F1 0, coverage 0 and the worst θ error.
2. Measures: detection F1, octahedra coverage (matched complete octahedra / true) and θ error
   (mean |Δθ1|, |Δθ2|). In every row the candidates are ranked on each measure (1 = best, ties share).
3. Guards: a candidate violates one for each single-particle row and measure on which it is worse
   than the other candidate by more than that row's seed spread (the larger of the two seed
   standard deviations), and for each field dose at which its frame precision is below 0.99.
4. Error bars: with ``--calibration`` (``calibration.py --cases static --csv``, per candidate), a
   candidate whose statistical z-scores of positions, θ1/θ2 or θ3 have an sd outside 0.85-1.15 or
   a fraction within 1σ outside 68 ± 6 % at any dose (the targets of docs/uncertainty.md) cannot
   be the default, whatever its accuracy: a number without an error bar that holds is not one a
   microscopist can defend.
5. The default is, among the candidates that pass step 4, the one with the fewest guard
   violations, then the best mean rank, then the simpler ``none``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

MEASURES = (("F1", "detection_f1", +1), ("coverage", "coverage", +1), ("θ err [deg]", "theta12_error_deg", -1))
FIELD = "field"
MIN_FIELD_PRECISION = 0.99
#: calibration targets of the static case (docs/uncertainty.md): sd(z) and the fraction within 1σ
SD_Z_RANGE = (0.85, 1.15)
COVER_1SIGMA_RANGE = (0.62, 0.74)
CALIBRATED_QUANTITIES = ("position", "θ1/θ2", "θ3")


def calibration_misses(path: str) -> list[str]:
    """The calibration targets a candidate's static-case table (``calibration.py --csv``) misses."""
    table = pd.read_csv(path)
    table = table[(table["image"] == "static") & table["quantity"].isin(CALIBRATED_QUANTITIES)]
    if table.empty:
        raise SystemExit(f"{path}: no static-case rows of {', '.join(CALIBRATED_QUANTITIES)}; run calibration.py "
                         "--cases static --csv FILE")
    out = []
    for _, r in table.iterrows():
        sd, cov = float(r["stat_sd_z"]), float(r["stat_cov1"])
        if not (SD_Z_RANGE[0] <= sd <= SD_Z_RANGE[1] and COVER_1SIGMA_RANGE[0] <= cov <= COVER_1SIGMA_RANGE[1]):
            out.append(f"{r['quantity']} at {float(r['dose']):g} e/Å²: sd(z) {sd:.2f}, {100 * cov:.0f} % within 1σ")
    return out


def load(paths: list[str], labels: dict[str, str]) -> pd.DataFrame:
    """All runs of the tables, ``candidate`` from the config label, failures scored worst."""
    runs = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    runs = runs[runs["dose"].astype(str) != "clean"].copy()
    runs["candidate"] = runs["config"].map(labels).fillna(runs["config"])
    runs["dose"] = runs["dose"].astype(str)
    ok = runs["ok"].astype(bool)
    true = runs.get("octahedra_true", pd.Series(np.nan, index=runs.index)).astype(float)
    matched = runs.get("octahedra_matched", pd.Series(np.nan, index=runs.index)).astype(float).fillna(0.0)
    runs["coverage"] = np.where(true > 0, matched / true, np.nan)
    runs.loc[~ok, "detection_f1"] = 0.0
    runs.loc[~ok, "coverage"] = 0.0
    runs.loc[~ok, "theta12_error_deg"] = np.inf
    runs.loc[ok & runs["theta12_error_deg"].isna(), "theta12_error_deg"] = np.inf  # no octahedra matched
    return runs


def rows(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and seed sd per image, dose and candidate."""
    g = runs.groupby(["image", "dose", "candidate"], sort=False)
    out = g.agg(**{f"{c}": (c, "mean") for _, c, _ in MEASURES},
                **{f"{c}_sd": (c, "std") for _, c, _ in MEASURES},
                precision=("detection_precision", "mean"), n=("seed", "size"), failed=("ok", lambda s: int((~s.astype(bool)).sum())))
    return out.reset_index()


def decide(table: pd.DataFrame, candidates: list[str], uncalibrated: dict[str, list[str]] | None = None
           ) -> tuple[pd.DataFrame, dict[str, float], dict[str, list[str]], str]:
    """Ranks per row, mean ranks, guard violations per candidate and the decision (among the
    candidates without a calibration miss in ``uncalibrated``, when any is without one)."""
    ranked = []
    for (image, dose), grp in table.groupby(["image", "dose"], sort=False):
        grp = grp.set_index("candidate").reindex(candidates)
        rec = {"image": image, "dose": dose}
        for name, col, sign in MEASURES:
            vals = grp[col].to_numpy(float)
            key = np.where(np.isnan(vals), -np.inf, sign * vals)
            ranks = pd.Series(-key).rank(method="average").to_numpy()
            for cand, v, sd, r in zip(candidates, vals, grp[f"{col}_sd"].to_numpy(float), ranks):
                rec[(cand, name)] = v
                rec[(cand, name, "sd")] = sd
                rec[(cand, name, "rank")] = r
        for cand in candidates:
            rec[(cand, "precision")] = grp.loc[cand, "precision"]
            rec[(cand, "failed")] = grp.loc[cand, "failed"]
            rec[(cand, "n")] = grp.loc[cand, "n"]
        ranked.append(rec)
    mean_rank = {c: float(np.mean([r[(c, m, "rank")] for r in ranked for m, _, _ in MEASURES])) for c in candidates}
    violations: dict[str, list[str]] = {c: [] for c in candidates}
    for r in ranked:
        for c in candidates:
            others = [o for o in candidates if o != c]
            if r["image"] == FIELD:
                if not r[(c, "precision")] >= MIN_FIELD_PRECISION:
                    violations[c].append(f"field {r['dose']}: precision {r[(c, 'precision')]:.3f} < {MIN_FIELD_PRECISION}")
                continue
            for o in others:
                for name, _, sign in MEASURES:
                    a, b = r[(c, name)], r[(o, name)]
                    spread = np.nanmax([r[(c, name, "sd")], r[(o, name, "sd")], 0.0])
                    if np.isinf(a) or np.isinf(b):
                        bad = bool(np.isinf(a) and not np.isinf(b))
                    else:
                        bad = bool(sign * (b - a) > spread)  # c worse than o beyond the spread
                    if bad:
                        violations[c].append(f"{r['image']} {r['dose']}: {name} {a:.3f} vs {o} {b:.3f} (spread {spread:.3f})")
    # fewest guard violations first (a candidate worse than another beyond the seed spread on more rows
    # loses even when no candidate is clean), then the mean rank, then the status quo
    eligible = [c for c in candidates if not (uncalibrated or {}).get(c)] or candidates
    order = sorted(eligible, key=lambda c: (len(violations[c]), mean_rank[c], c != "none"))
    choice = order[0]
    return pd.DataFrame(ranked), mean_rank, violations, choice


def fmt(v: float, sd: float, digits: int) -> str:
    if np.isinf(v):
        return "failed"
    if not np.isfinite(v):
        return "—"
    return f"{v:.{digits}f}" + (f" ± {sd:.{digits}f}" if np.isfinite(sd) else "")


def markdown(ranked: pd.DataFrame, candidates: list[str], mean_rank: dict[str, float],
             violations: dict[str, list[str]], choice: str, uncalibrated: dict[str, list[str]] | None = None) -> str:
    head = ["image", "dose"] + [f"{m} {c}" for m, _, _ in MEASURES for c in candidates] + [f"rank {c}" for c in candidates]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in ranked.iterrows():
        cells = [r["image"], r["dose"]]
        for name, _, _ in MEASURES:
            for c in candidates:
                cells.append(fmt(r[(c, name)], r[(c, name, "sd")], 2 if name.startswith("θ") else 3))
        for c in candidates:
            cells.append(f"{np.mean([r[(c, m, 'rank')] for m, _, _ in MEASURES]):.2f}")
        lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    lines.append("")
    lines.append("Mean rank over all rows and measures: " + ", ".join(f"{c} {mean_rank[c]:.3f}" for c in candidates) + ".")
    for c in candidates:
        v = violations[c]
        lines.append(f"- {c}: " + ("no row worse than its seed spread; field precision >= 0.99" if not v else
                                     f"{len(v)} guard violation(s): " + "; ".join(v)))
    for c, misses in (uncalibrated or {}).items():
        lines.append(f"- {c}, error bars: " + ("calibrated (static case, every dose given)" if not misses else
                                                 f"{len(misses)} calibration miss(es): " + "; ".join(misses)))
    lines.append(f"\n**Decision: `{choice}`.**")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="+", help="accuracy-benchmark .csv files (all runs)")
    parser.add_argument("--labels", default="default=none,best=absf", help="config label -> candidate name")
    parser.add_argument("--calibration", action="append", default=[], metavar="CANDIDATE=CSV",
                        help="a candidate's calibration table (calibration.py --cases static --csv); repeat per candidate")
    parser.add_argument("--out", default=None, help="markdown file (default: print only)")
    args = parser.parse_args(argv)
    labels = dict(kv.split("=", 1) for kv in args.labels.split(","))
    runs = load(args.csv, labels)
    candidates = list(dict.fromkeys(runs["candidate"]))
    uncalibrated = {c: calibration_misses(p) for c, p in (kv.split("=", 1) for kv in args.calibration)}
    ranked, mean_rank, violations, choice = decide(rows(runs), candidates, uncalibrated)
    text = markdown(ranked, candidates, mean_rank, violations, choice, uncalibrated)
    print(text)
    if args.out:
        Path(args.out).write_text(f"Command: `python {' '.join(sys.argv)}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
