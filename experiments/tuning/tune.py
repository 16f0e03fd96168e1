"""Tune analysis settings against simulated truth: a Hydra app whose task returns an accuracy metric,
for Hydra's Optuna sweeper (hydra-optuna-sweeper) to maximise.

    python experiments/tuning/tune.py experiment=tune_locator_f1

The configuration is octascope's own (``conf/``) plus ``experiments/tuning/conf`` (the tuning
experiments, given to Hydra with ``--config-dir``); the command line is checked by octascope's
:func:`octascope.app.cli.check_command_line` first, so the hostile-input policy holds here as for the
``octascope`` command (an installed Hydra sweeper is allowed; the Optuna sweeper is one). Each trial
runs the analysis once per noise seed of ``tune.seeds`` (:func:`octascope.app.run.run_from_config`)
and returns the mean of ``tune.metric`` over them; a seed whose analysis fails counts as the worst
value (0 for a score in [0, 1]), so the search learns to avoid the setting. Every trial's settings
and numbers are appended to ``trials.jsonl`` in the sweep folder; Optuna's best is in
``optimization_results.yaml`` there.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: scores reported as the failure value when an analysis fails (bounded in [0, 1]; higher is better)
SCORES = ("detection_f1", "detection_f1_outer", "species_accuracy", "octahedra_recall")


def objective(cfg) -> float:  # noqa: ANN001 - a DictConfig
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from octascope.app.run import run_from_config
    from octascope.core.errors import OctascopeError

    container = OmegaConf.to_container(cfg, resolve=True)
    tune = container.pop("tune")
    metric, seeds = str(tune["metric"]), [int(s) for s in tune["seeds"]]
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    values, per_seed = [], {}
    for seed in seeds:
        run = copy.deepcopy(container)
        run["source"].setdefault("noise", {})["seed"] = seed
        folder = out / f"seed{seed}" if tune.get("keep_outputs") else Path(tempfile.mkdtemp(prefix="octascope-tune-"))
        try:
            result, _ = run_from_config(run, folder)
            value = float(result.scalars.get(metric, float("nan")))
            extra = {k: result.scalars.get(k) for k in ("detection_f1", "theta3_mae_deg", "octahedra_recall")}
        except OctascopeError as exc:
            value, extra = float("nan"), {"error": str(exc)}
        finally:
            if not tune.get("keep_outputs"):
                shutil.rmtree(folder, ignore_errors=True)
        if value != value:  # NaN: the analysis failed or the metric is undefined
            if metric not in SCORES:
                raise SystemExit(f"tune: {metric} undefined for seed {seed} and no failure value is known for it")
            value = 0.0
        values.append(value)
        per_seed[seed] = {metric: value, **extra}
    mean = sum(values) / len(values)
    overrides = list(hc.overrides.task)
    line = {"job": hc.job.num if hc.mode.name == "MULTIRUN" else None, "overrides": overrides, metric: mean,
            "per_seed": per_seed}
    sweep_dir = Path(hc.sweep.dir) if hc.mode.name == "MULTIRUN" else out
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / "trials.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
    print(f"tune: {' '.join(overrides)} -> {metric} {mean:.4f} "
          f"(seeds {', '.join(f'{s}: {v[metric]:.4f}' for s, v in per_seed.items())})", flush=True)
    return mean


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = ["--config-dir", str(HERE / "conf")]
    os.environ.setdefault("MPLBACKEND", "Agg")
    from omegaconf import OmegaConf

    from octascope.app.cli import check_command_line, conf_dir
    from octascope.core.errors import OctascopeError

    if not OmegaConf.has_resolver("octascope_run_id"):  # used by conf/config.yaml's run folder
        OmegaConf.register_new_resolver("octascope_run_id", lambda: uuid.uuid4().hex[:6], use_cache=True)
    try:
        # the run checks see the analysis configuration, without the tuning's own node (read here only)
        check_command_line([*flags, *argv, "~tune"])
    except OctascopeError as exc:
        print(f"tune: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    import hydra

    sys.argv = [sys.argv[0], *flags, *argv]
    hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(objective)()


if __name__ == "__main__":
    os.chdir(ROOT)  # the sweep folder (experiments/tuning/outputs/...) is relative to the repository
    main()
