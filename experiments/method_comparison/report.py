"""The method comparison's table and figure, from the MLflow store (no re-analysis):

    octascope experiment=method_comparison                  # the runs (54 jobs; hydra/launcher=local_parallel for 2 at once)
    octascope experiment=method_comparison_deep             # S2SRED, ABSF -> S2SRED, DIP reduced, on a sub-grid (12 jobs)
    octascope experiment=method_comparison_deep_defaults    # the same sub-grid with the denoisers' CPU defaults (9 jobs)
    python experiments/method_comparison/report.py          # results.md + results.csv + f1_theta_vs_dose.png here

``--experiment method-comparison-full`` after ``octascope experiment=method_comparison_full``. Several
``--experiment`` are merged into one table (the default: method-comparison, method-comparison-deep and
method-comparison-deep-defaults, those present).

The θ error in the core and the shell is computed here from each run's ``accuracy_octahedra.csv``
artifact (matched octahedra at their true positions, with their errors) and the source's truth
octahedra (``shell``: octahedra layers from the particle edge), loaded once from the simulation cache:
shell = the outermost layer (``--shell-depth 1``), core = the rest.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from octascope.results.compare import comparison_table, runs_frame, to_markdown
from octascope.results.tracking import resolve_tracking_uri

HERE = Path(__file__).resolve().parent
BY = ["source.noise.dose_e_per_A2", "denoiser.name", "locator.name", "classifier.name", "network.name"]
METRICS = ["detection_f1", "detection_f1_outer", "rmse_pm_Pb", "rmse_pm_X", "rmse_pm_Cs", "species_accuracy",
           "theta_mae_deg", "theta_mae_deg_core", "theta_mae_deg_shell", "octahedra_recall_core", "octahedra_recall_shell",
           "L1_mae_pm", "L2_mae_pm", "octahedra_recall", "time_s/total"]
#: the per-denoiser table at 300 e/Å² (all six denoisers ran there)
HEADLINE = ["detection_f1", "rmse_pm_X", "species_accuracy", "theta_mae_deg", "theta_mae_deg_core", "theta_mae_deg_shell",
            "L1_mae_pm", "octahedra_recall", "time_s/denoise", "time_s/total"]
#: MLflow experiment -> the experiment config whose source gives the truth octahedra
CONFIGS = {"method-comparison": "method_comparison", "method-comparison-deep": "method_comparison_deep",
           "method-comparison-deep-defaults": "method_comparison_deep_defaults",
           "method-comparison-full": "method_comparison_full"}


def add_core_shell(df: pd.DataFrame, config: str, shell_depth: int) -> pd.DataFrame:
    """``metrics.<core/shell metric>`` columns (:func:`expkit.core_shell_errors`) from each run's artifacts."""
    sys.path.insert(0, str(HERE.parent))
    import expkit

    truth = expkit.truth_octahedra(config)
    rows = []
    for uri in df["artifact_uri"]:
        acc = expkit.run_artifact(uri, "accuracy_octahedra.csv")
        rows.append({} if acc is None else expkit.core_shell_errors(acc, truth, shell_depth))
    extra = pd.DataFrame(rows, index=df.index).add_prefix("metrics.")
    return pd.concat([df.drop(columns=[c for c in extra if c in df]), extra], axis=1)


def label_denoisers(df: pd.DataFrame, experiment: str = "") -> pd.DataFrame:
    """``params.denoiser.name`` as a reader reads it: a chain as its steps (``absf→s2sred``); the
    networks with their iteration budget (``≤`` with an early stop) and, for DIP, the encoder/decoder
    widths, e.g. ``s2sred (100 it)``, ``dip (≤267 it, 16/32)``; runs of an experiment ``*-defaults``
    as ``(CPU defaults)`` — so a reduced run never passes for the defaults."""
    df = df.copy()

    def one(r):
        name = r.get("params.denoiser.name")
        prefix = "params.denoiser."
        if name == "chain":
            steps = [r.get(f"params.denoiser.steps.{i}.name") for i in range(8)]
            steps = [x for x in steps if isinstance(x, str)]
            if not steps:  # steps given by name: the list's string form
                steps = [x.strip(" '\"") for x in str(r.get("params.denoiser.steps", "")).strip("[]").split(",") if x.strip()]
            base = "→".join(steps)
            prefix = f"params.denoiser.steps.{len(steps) - 1}."
            net = steps[-1] if steps else ""
        else:
            base = net = name
        if experiment.endswith("-defaults") and net in ("dip", "s2sred"):
            return f"{base} (CPU defaults)"
        it = r.get(prefix + "n_iterations")
        if net not in ("dip", "s2sred") or not isinstance(it, str):
            return base
        stop = "≤" if str(r.get(prefix + "early_stop")) == "True" else ""
        width = f", {r.get(prefix + 'encoder_width')}/{r.get(prefix + 'decoder_width')}" if net == "dip" else ""
        return f"{base} ({stop}{it} it{width})"

    if len(df):
        df["params.denoiser.name"] = df.apply(one, axis=1)
    return df


def figure(df: pd.DataFrame, path: Path, dose: float = 300.0) -> None:
    """F1 and θ error vs dose per method; θ error in core and shell of every denoiser at ``dose``
    (lattice + nearest, the pipeline all denoisers ran with)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = df.copy()
    df["dose"] = pd.to_numeric(df["params.source.noise.dose_e_per_A2"])
    df["pipeline"] = df["params.classifier.name"] + "+" + df["params.network.name"]
    df["method"] = df["params.denoiser.name"] + " / " + df["params.locator.name"] + " / " + df["pipeline"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6), layout="constrained")
    colours = plt.get_cmap("tab20").colors
    for ax, (m, label) in zip(axes, (("metrics.detection_f1", "detection F1"), ("metrics.theta_mae_deg", "θ error [deg]"))):
        ax.set_prop_cycle(color=colours)
        for method, g in df.groupby("method"):
            s = g.groupby("dose")[m].agg(["mean", "std"]).sort_index()
            ax.errorbar(s.index, s["mean"], yerr=s["std"], marker="o", capsize=3, label=method,
                        linestyle="-" if "lattice" in method else "--")
        ax.set_xscale("log")
        ax.set_xlabel("dose [e/Å²]")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=7)
    sub = df[(df["dose"] == dose) & (df["pipeline"] == "lattice+nearest")]
    ax = axes[2]
    if len(sub) and "metrics.theta_mae_deg_core" in sub:
        g = sub.groupby("params.denoiser.name")
        names = list(g.groups)
        x = np.arange(len(names))
        for k, (col, lab) in enumerate((("metrics.theta_mae_deg_core", "core"), ("metrics.theta_mae_deg_shell", "shell (outermost layer)"))):
            ax.bar(x + (k - 0.5) * 0.38, g[col].mean().reindex(names), 0.38, yerr=g[col].std().reindex(names),
                   capsize=3, label=lab)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("θ error [deg]")
        ax.set_title(f"{dose:g} e/Å², lattice + nearest", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", action="append", default=None,
                    help="MLflow experiment(s) to merge (default: method-comparison, -deep and -deep-defaults if present)")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--shell-depth", type=int, default=1, help="shell = truth octahedra layers < this from the edge")
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args(argv)
    import mlflow

    from octascope.results.tracking import resolve_tracking_uri as _uri

    mlflow.set_tracking_uri(_uri(args.tracking_uri))
    names = args.experiment or [n for n in ("method-comparison", "method-comparison-deep", "method-comparison-deep-defaults")
                                if n == "method-comparison" or mlflow.get_experiment_by_name(n) is not None]
    frames, failed, walls, failed_rows = [], 0, [], []
    for name in names:
        d = runs_frame(name, args.tracking_uri)
        f = runs_frame(name, args.tracking_uri, "FAILED")
        failed += len(f)
        if len(f):
            f = label_denoisers(f, name)
            for key, g in f.groupby([f"params.{b}" for b in BY], dropna=False):
                failed_rows.append(f"- `{name}`: " + ", ".join(str(k) for k in key) + f": {len(g)} failed (noise seeds "
                                   + ", ".join(sorted(g["params.source.noise.seed"].astype(str))) + ")")
        if not len(d):
            walls.append(f"`{name}`: no finished run")
            continue
        s, e = pd.to_datetime(d["start_time"]).min(), pd.to_datetime(d["end_time"]).max()
        walls.append(f"`{name}`: {len(d)} runs, first start {s:%Y-%m-%d %H:%M:%S} UTC, last end {e:%H:%M:%S} UTC "
                     f"({(e - s).total_seconds():.0f} s wall)")
        frames.append(label_denoisers(add_core_shell(d, CONFIGS.get(name, name.replace("-", "_")), args.shell_depth), name))
    df = pd.concat(frames, ignore_index=True)
    den = [c for c in df if c.startswith("metrics.time_s/denoiser/")]  # one name per denoiser plugin
    df["metrics.time_s/denoise"] = df[den].sum(axis=1, min_count=1).fillna(0.0) if den else 0.0
    args.experiment = ", ".join(names)
    out = Path(args.out)
    table = comparison_table(df, BY, METRICS)
    table.to_csv(out / "results.csv", index=False)
    dose300 = df[(pd.to_numeric(df["params.source.noise.dose_e_per_A2"]) == 300.0) & (df["params.classifier.name"] == "lattice")]
    head = comparison_table(dose300, ["denoiser.name"], HEADLINE) if len(dose300) else None
    figure(df, out / "f1_theta_vs_dose.png")
    cmd = "python " + shlex.join(["experiments/method_comparison/report.py", *(argv if argv is not None else sys.argv[1:])])
    text = "\n".join([
        f"# {args.experiment}: results", "",
        f"Regenerate: `{cmd}` (reads the FINISHED runs of the MLflow experiment(s) `{args.experiment}` in "
        f"`{resolve_tracking_uri(args.tracking_uri)}`).", "",
        f"{len(df)} finished runs, {failed} failed; " + "; ".join(walls) + ". Mean ± sd over the noise seeds; "
        "time_s/total = the analysis alone (no simulation: cached). Core/shell: shell = truth octahedra "
        f"< {args.shell_depth} layer(s) from the particle edge, core = the rest; theta_mae_deg_* = mean |Δθ1|, |Δθ2| of "
        "the matched octahedra there, octahedra_recall_* = matched / truth octahedra there.", "",
        to_markdown(table), "",
        *(["Failed runs (the reason is in each run's log; MLflow keeps the status and the run folder, tag "
           "`octascope.output_dir`):", "", *failed_rows, ""] if failed_rows else []),
        *([f"## Every denoiser at 300 e/Å², lattice classifier + nearest network ({len(dose300)} runs)", "",
           to_markdown(head), ""] if head is not None else []),
        "![F1 and θ error vs dose; θ error in core and shell at 300 e/Å²](f1_theta_vs_dose.png)", ""])
    (out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
