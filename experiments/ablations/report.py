"""The ablations' tables from the MLflow store (no re-analysis): results.md beside this file.

    octascope experiment=ablation_sofs && octascope experiment=ablation_locator && octascope experiment=ablation_shell_depth
    python experiments/ablations/report.py
    octascope experiment=ablation_s2sred                               # S2SRED with its CPU defaults, RED on/off
    python experiments/ablations/report.py --only ablation-s2sred      # results-s2sred.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from octascope.results.compare import auto_by, comparison_table, runs_frame, to_markdown
from octascope.results.tracking import resolve_tracking_uri

HERE = Path(__file__).resolve().parent
ACCURACY = ["detection_f1", "rmse_pm_X", "species_accuracy", "theta_mae_deg", "L1_mae_pm", "octahedra_recall", "time_s/total"]
ABLATIONS = {
    "ablation-sofs": ("SOFS branching B and depth limit α (classifier and network alike)", ACCURACY),
    "ablation-locator": ("Locator residual threshold and neighbour subtraction (rounds; 0 = off)", ACCURACY),
    "ablation-shell-depth": ("Shell depth [unit cells]", ["theta3_deg_mean_core", "theta3_deg_mean_shell",
                                                          "n_octahedra_complete", "theta_mae_deg"]),
    "ablation-s2sred": ("S2SRED (CPU defaults of conf/denoiser/s2sred.yaml): RED on/off", ACCURACY[:-1] + ["time_s/denoiser/s2sred", "time_s/total"]),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--only", action="append", default=None, choices=sorted(ABLATIONS),
                    help="these ablations only, into results-<names>.md (default: all but ablation-s2sred, into results.md)")
    args = ap.parse_args(argv)
    names = args.only or [n for n in ABLATIONS if n != "ablation-s2sred"]
    cmd = "python experiments/ablations/report.py" + "".join(f" --only {n}" for n in args.only or [])
    parts = ["# Ablations: results", "",
             f"Regenerate: `{cmd}` (FINISHED runs in `{resolve_tracking_uri(args.tracking_uri)}`). "
             "Mean ± sd over the noise seeds.", ""]
    for name in names:
        title, metrics = ABLATIONS[name]
        df = runs_frame(name, args.tracking_uri)
        by = [b for b in auto_by(df) if not b.startswith("network.")] or auto_by(df)
        start, end = pd.to_datetime(df["start_time"]).min(), pd.to_datetime(df["end_time"]).max()
        parts += [f"## {title}", "", f"MLflow experiment `{name}`: {len(df)} runs, "
                  f"{(end - start).total_seconds():.0f} s from first start to last end.", "",
                  to_markdown(comparison_table(df, by, metrics)), ""]
    text = "\n".join(parts)
    (HERE / ("results-" + "-".join(n.removeprefix("ablation-") for n in args.only) + ".md" if args.only else "results.md")).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
