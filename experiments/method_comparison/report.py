"""The method comparison's table and figure, from the MLflow store (no re-analysis):

    octascope experiment=method_comparison                  # the runs (36 jobs; hydra/launcher=local_parallel for 2 at once)
    python experiments/method_comparison/report.py          # results.md + results.csv + f1_theta_vs_dose.png here

``--experiment method-comparison-full`` after ``octascope experiment=method_comparison_full``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from octascope.compare import comparison_table, runs_frame, to_markdown
from octascope.tracking import resolve_tracking_uri

HERE = Path(__file__).resolve().parent
BY = ["source.noise.dose_e_per_A2", "denoiser.name", "locator.name", "classifier.name", "network.name"]
METRICS = ["detection_f1", "detection_f1_outer", "rmse_pm_Pb", "rmse_pm_X", "rmse_pm_Cs", "species_accuracy",
           "theta_mae_deg", "L1_mae_pm", "L2_mae_pm", "octahedra_recall", "time_s/total"]


def figure(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = df.copy()
    df["dose"] = pd.to_numeric(df["params.source.noise.dose_e_per_A2"])
    df["method"] = (df["params.denoiser.name"] + " / " + df["params.locator.name"] + " / "
                    + df["params.classifier.name"] + "+" + df["params.network.name"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, (m, label) in zip(axes, (("metrics.detection_f1", "detection F1"), ("metrics.theta_mae_deg", "θ error [deg]"))):
        for method, g in df.groupby("method"):
            s = g.groupby("dose")[m].agg(["mean", "std"]).sort_index()
            ax.errorbar(s.index, s["mean"], yerr=s["std"], marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("dose [e/Å²]")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default="method-comparison")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args(argv)
    df = runs_frame(args.experiment, args.tracking_uri)
    failed = runs_frame(args.experiment, args.tracking_uri, "FAILED")
    out = Path(args.out)
    table = comparison_table(df, BY, METRICS)
    table.to_csv(out / "results.csv", index=False)
    figure(df, out / "f1_theta_vs_dose.png")
    start = pd.to_datetime(df["start_time"]).min()
    end = pd.to_datetime(df["end_time"]).max()
    cmd = "python " + shlex.join(["experiments/method_comparison/report.py", *(argv if argv is not None else sys.argv[1:])])
    text = "\n".join([
        f"# {args.experiment}: results", "",
        f"Regenerate: `{cmd}` (reads the FINISHED runs of MLflow experiment `{args.experiment}` in "
        f"`{resolve_tracking_uri(args.tracking_uri)}`).", "",
        f"{len(df)} finished runs, {len(failed)} failed; first start {start:%Y-%m-%d %H:%M:%S} UTC, last end "
        f"{end:%H:%M:%S} UTC ({(end - start).total_seconds():.0f} s wall for the sweep). Mean ± sd over the noise seeds; "
        "time_s/total = the analysis alone (no simulation: cached).", "",
        to_markdown(table), "", "![F1 and θ error vs dose](f1_theta_vs_dose.png)", ""])
    (out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
