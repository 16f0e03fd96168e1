"""Experiment configs that cannot lie: every file in conf/experiment/ composes, every job of its sweep
passes the run checks, and it resolves to the input it says (source kind, dose, image); one name for
the pixel size; the comparison table from the MLflow store; determinism of a run on the CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

import expkit  # noqa: E402

from octascope.app.run import build_stages  # noqa: E402
from octascope.app.config import validate_config  # noqa: E402
from octascope.core.registry import get_registry  # noqa: E402
from octascope.input.sources import check_source_config  # noqa: E402

#: what each experiment says it analyses: source kind, the doses its sweep covers [e/Å²], the noise
#: seeds, the image (keys of the source that identify it) and the MLflow experiment
EXPECTED = {
    "denoiser_comparison": dict(kind="synthetic", doses={300.0}, image={"spec.n_cells": [10, 10]},
                                mlflow="denoiser-comparison"),
    "locator_comparison": dict(kind="synthetic", doses={2000.0}, image={"spec.n_cells": [8, 8]},
                               mlflow="locator-comparison"),
    "method_comparison": dict(kind="simulated", doses={100.0, 300.0, 1000.0}, seeds={0, 1, 2},
                              image={"structure.br_fraction": 0.0, "structure.n_cells": 6, "imaging.max_snapshots": 10},
                              mlflow="method-comparison"),
    "method_comparison_deep": dict(kind="simulated", doses={300.0}, seeds={0, 1, 2},
                                   image={"structure.br_fraction": 0.0, "structure.n_cells": 6, "imaging.max_snapshots": 10},
                                   mlflow="method-comparison-deep"),
    "method_comparison_deep_defaults": dict(kind="simulated", doses={300.0}, seeds={0, 1, 2},
                                            image={"structure.br_fraction": 0.0, "structure.n_cells": 6,
                                                   "imaging.max_snapshots": 10},
                                            mlflow="method-comparison-deep-defaults"),
    "method_comparison_full": dict(kind="simulated", doses={100.0, 300.0, 1000.0}, seeds={0, 1, 2, 3, 4},
                                   image={"structure.br_fraction": 0.0, "structure.n_cells": 6},
                                   mlflow="method-comparison-full"),
    "ablation_sofs": dict(kind="simulated", doses={300.0}, seeds={0, 1, 2}, image={"structure.br_fraction": 0.0},
                          mlflow="ablation-sofs"),
    "ablation_locator": dict(kind="simulated", doses={300.0}, seeds={0, 1, 2}, image={"structure.br_fraction": 0.0},
                             mlflow="ablation-locator"),
    "ablation_shell_depth": dict(kind="simulated", doses={300.0}, seeds={0, 1, 2},
                                 image={"structure.br_fraction": 0.0}, mlflow="ablation-shell-depth"),
    "ablation_s2sred": dict(kind="simulated", doses={300.0}, seeds={0, 1, 2}, image={"structure.br_fraction": 0.0},
                            mlflow="ablation-s2sred"),
    "validation_cspbi3": dict(kind="simulated", doses={220.0}, seeds={0, 1, 2, 3, 4},
                              image={"structure.br_fraction": 0.0, "structure.mixing": "uniform"},
                              mlflow="validation-cspbi3"),
    "validation_cspbi3_full": dict(kind="simulated", doses={220.0}, seeds={0, 1, 2, 3, 4},
                                   image={"structure.n_cells": 15, "md.n_steps": 1900000, "imaging.mode": "multislice",
                                          "imaging.max_snapshots": 16}, mlflow="validation-cspbi3-full"),
    "validation_mixed_halide": dict(kind="simulated", doses={220.0}, seeds={0, 1, 2, 3, 4},
                                    image={"structure.br_fraction": 0.1667, "structure.mixing": "paper"},
                                    mlflow="validation-mixed-halide"),
    "validation_mixed_halide_full": dict(kind="simulated", doses={220.0}, seeds={0, 1, 2, 3, 4},
                                         image={"structure.n_cells": 15, "structure.br_fraction": 0.1667,
                                                "structure.mixing": "paper", "md.n_steps": 1900000, "md.mpi_ranks": 64,
                                                "imaging.mode": "multislice", "imaging.max_snapshots": 16},
                                         mlflow="validation-mixed-halide-full"),
}


def _get(d, dotted):
    for part in dotted.split("."):
        d = d[part]
    return d


def _pending(job):
    """Config options a sweep names that another branch brings (skipped until it lands)."""
    out = []
    for ov in job:
        key, _, value = ov.partition("=")
        group = key.lstrip("+")
        if group in ("denoiser", "locator", "classifier", "network") and not (ROOT / "conf" / group / f"{value}.yaml").exists():
            out.append(ov)
    return out


def _axis_jobs(name):
    """Jobs that cover every value of every sweep axis (each axis varied with the others at their first value)."""
    _, hydra_node = expkit.compose_experiment(name)
    jobs = expkit.sweep_jobs(name)
    first = jobs[0]
    out = {tuple(first), tuple(jobs[-1])}
    for i in range(len(first)):
        for job in jobs:
            if all(job[k] == first[k] for k in range(len(first)) if k != i):
                out.add(tuple(job))
    return [list(j) for j in out], jobs


def test_every_experiment_file_is_declared():
    names = {p.stem for p in expkit.experiment_files()}
    assert names == set(EXPECTED), "add the new experiment's input to EXPECTED (what it analyses)"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_experiment_resolves_to_its_input(name):
    want = EXPECTED[name]
    reg = get_registry(load_entrypoints=False)
    jobs, all_jobs = _axis_jobs(name)
    doses, seeds, checked = set(), set(), 0
    for job in all_jobs:  # what the sweep covers (no composition needed)
        for ov in job:
            if ov.startswith("source.noise.dose_e_per_A2="):
                doses.add(float(ov.split("=")[1]))
            if ov.startswith("source.noise.seed="):
                seeds.add(int(ov.split("=")[1]))
    for job in jobs:
        if _pending(job):
            continue
        cfg, _ = expkit.compose_experiment(name, job)
        validate_config(cfg)
        check_source_config(cfg["source"])
        build_stages(cfg, reg)  # every stage parameter is one its plugin takes
        src = cfg["source"]
        assert src["kind"] == want["kind"], f"{name} {job}: source kind {src['kind']}"
        dose = (src.get("spec") or {}).get("dose_e_per_A2") if src["kind"] == "synthetic" else src["noise"]["dose_e_per_A2"]
        if not any(o.startswith("source.noise.dose_e_per_A2=") for o in job):
            doses.add(float(dose))
        for key, value in want["image"].items():
            assert _get(src, key) == pytest.approx(value) if isinstance(value, float) else _get(src, key) == value, \
                f"{name} {job}: source.{key} = {_get(src, key)!r}, expected {value!r}"
        assert cfg["tracking"]["experiment"] == want["mlflow"]
        checked += 1
    assert checked, f"{name}: no job could be checked"
    assert doses == want["doses"], f"{name}: doses {sorted(doses)}"
    if "seeds" in want:
        assert seeds == want["seeds"]


def test_experiment_values_win_over_config_yaml():
    """An experiment file's figure_formats/progress are what the run gets (config.yaml's _self_ came last
    once, silently overriding them)."""
    cfg, _ = expkit.compose_experiment("method_comparison")
    assert cfg["figure_formats"] == [] and cfg["progress"] is False
    cfg, _ = expkit.compose_experiment("denoiser_comparison")
    assert cfg["figure_formats"] == ["png"]
    cfg, _ = expkit.compose_experiment("method_comparison", ["figure_formats=[svg]"])
    assert cfg["figure_formats"] == ["svg"]  # the command line still wins


def test_pixel_size_has_one_name_for_every_source():
    """``pixel_size_A`` is the one name: at the top for the sources that read a file, in the generator's
    block for the generated ones; the top-level key given to a generated source is refused with the
    place it belongs (never silently ignored)."""
    import yaml

    from octascope.core.errors import ConfigError

    where = {"example": "pixel_size_A", "file": "pixel_size_A", "synthetic": "spec.pixel_size_A",
             "simulated": "imaging.pixel_size_A", "field": "imaging.pixel_size_A"}
    for path in sorted((ROOT / "conf" / "source").glob("*.yaml")):
        node = yaml.safe_load(path.read_text())

        def keys(d, prefix=""):
            for k, v in d.items():
                yield prefix + k
                if isinstance(v, dict):
                    yield from keys(v, prefix + k + ".")

        names = [k for k in keys(node) if "pixel" in k.lower() or k.lower().endswith(("sampling", "px_size"))
                 and k != "imaging.sampling_A"]
        kind = node["kind"]
        assert where[kind] in names, f"{path.name}: no {where[kind]}"
        assert all(n.rsplit(".", 1)[-1] == "pixel_size_A" for n in names), f"{path.name}: pixel size names {names}"
    for kind, place in (("synthetic", "source.spec.pixel_size_A"), ("simulated", "source.imaging.pixel_size_A")):
        cfg, _ = expkit.compose_experiment("validation_cspbi3" if kind == "simulated" else "denoiser_comparison")
        src = dict(cfg["source"], pixel_size_A=0.1)
        with pytest.raises(ConfigError, match=place.replace(".", r"\.")):
            check_source_config(src)


def test_sofs_ablation_sets_the_network_like_the_classifier():
    cfg, _ = expkit.compose_experiment("ablation_sofs", ["classifier.branching=1", "classifier.depth_limit=15"])
    assert (cfg["network"]["branching"], cfg["network"]["depth_limit"]) == (1, 15)


def test_sweep_jobs_follow_hydra_basic_sweeper():
    jobs = expkit.sweep_jobs("method_comparison")
    assert len(jobs) == 3 * 2 * 3 * 3
    assert jobs[0] == ["denoiser=none", "+experiment/pipeline=lattice_nearest", "source.noise.dose_e_per_A2=100.0",
                       "source.noise.seed=0"]
    cfg, _ = expkit.compose_experiment("method_comparison", ["+experiment/pipeline=sofs"])
    assert (cfg["classifier"]["name"], cfg["network"]["name"]) == ("sofs", "sofs")
    cfg, _ = expkit.compose_experiment("method_comparison", ["+experiment/pipeline=lattice_nearest"])
    assert (cfg["classifier"]["name"], cfg["network"]["name"]) == ("lattice", "nearest")


def _synthetic_cfg(seed):
    cfg, _ = expkit.compose_experiment("denoiser_comparison", [
        "denoiser=absf", "source.spec.n_cells=[6,6]", f"source.spec.seed={seed}", "source.spec.dose_e_per_A2=500.0",
        "figure_formats=[]", "progress=false", "tracking.enabled=false"])
    return cfg


def test_same_seed_and_config_give_identical_numbers_on_the_cpu(tmp_path):
    import pandas as pd

    from octascope.app.run import run_from_config

    results = [run_from_config(_synthetic_cfg(3), tmp_path / f"r{i}")[0] for i in range(2)]
    a, b = results
    for name in ("columns", "octahedra"):
        ta = a.tables[name] if name in a.tables else getattr(a, name)
        tb = b.tables[name] if name in b.tables else getattr(b, name)
        pd.testing.assert_frame_equal(pd.DataFrame(ta).reset_index(drop=True), pd.DataFrame(tb).reset_index(drop=True),
                                      check_exact=True)
    sa = {k: v for k, v in a.scalars.items() if "time" not in k}
    sb = {k: v for k, v in b.scalars.items() if "time" not in k}
    assert sa.keys() == sb.keys()
    for k in sa:
        assert (sa[k] == sb[k]) or (sa[k] != sa[k] and sb[k] != sb[k]), k  # equal, or both NaN
    other = run_from_config(_synthetic_cfg(4), tmp_path / "other")[0]  # another noise seed: other numbers
    assert other.scalars.get("rmse_pm_all") != a.scalars.get("rmse_pm_all")


def test_compare_prints_the_table_from_the_store(tmp_path, capsys):
    import mlflow

    from octascope.results.compare import main as compare_main
    from octascope.results.tracking import tracked_run

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    for den, f1s in (("none", (0.8, 0.9)), ("absf", (0.95, 0.97))):
        for seed, f1 in enumerate(f1s):
            with tracked_run(tracking_uri=uri, experiment="cmp-test", run_name=f"{den} {seed}"):
                mlflow.log_params({"denoiser.name": den, "source.noise.seed": seed, "source.noise.dose_e_per_A2": 300.0})
                mlflow.log_metrics({"detection_f1": f1, "theta_mae_deg": 1.0 + seed})
    assert compare_main(["--experiment", "cmp-test", "--tracking-uri", uri, "--metrics", "detection_f1,theta_mae_deg"]) == 0
    out = capsys.readouterr().out
    assert "| denoiser.name | runs | detection_f1 | theta_mae_deg |" in out
    assert "| absf | 2 | 0.960 ± 0.014 | 1.50 ± 0.71 |" in out
    assert "| none | 2 | 0.850 ± 0.071 |" in out


def test_run_records_code_and_package_versions():
    from octascope.results.tracking import code_version, package_versions

    v = package_versions()
    assert {"numpy", "scipy", "hydra-core", "mlflow"} <= {k.removeprefix("package.") for k in v}
    assert all(isinstance(x, str) and x for x in v.values())
    assert "octascope.version" in code_version()


def test_method_comparison_deep_runs_the_reduced_deep_denoisers_on_one_pipeline():
    jobs = expkit.sweep_jobs("method_comparison_deep")
    assert len(jobs) == 4 * 3
    seen = {}
    for job in jobs[::3]:
        cfg, _ = expkit.compose_experiment("method_comparison_deep", job)
        assert (cfg["classifier"]["name"], cfg["network"]["name"]) == ("lattice", "nearest")
        d = cfg["denoiser"]
        net = d["steps"][-1] if d["name"] == "chain" else d
        seen[job[0].split("=")[1]] = (net["name"], net["n_iterations"])
    assert seen == {"s2sred": ("s2sred", 100), "absf_s2sred": ("s2sred", 100), "dip": ("dip", 100),
                    "dip_small": ("dip", 267)}


def test_core_shell_errors_split_matched_octahedra_by_truth_shell():
    import pandas as pd

    truth = pd.DataFrame({"x_A": [0.0, 6.0, 12.0, 18.0], "y_A": [0.0, 0.0, 0.0, 0.0], "shell": [0, 1, 1, 0]})
    acc = pd.DataFrame({"octahedron_x_A": [6.0, 12.0, 18.0], "octahedron_y_A": [0.0, 0.0, 0.0],
                        "theta1_deg_error": [1.0, -3.0, 2.0], "theta2_deg_error": [1.0, 1.0, -4.0],
                        "theta3_deg_error": [0.5, 0.5, 1.0], "L1_A_error": [0.01, 0.01, 0.02],
                        "L2_A_error": [-0.01, 0.03, 0.02]})
    s = expkit.core_shell_errors(acc, truth, shell_depth_cells=1)
    assert s["theta_mae_deg_core"] == pytest.approx(1.5)     # |1|, |-3|, |1|, |1|
    assert s["theta_mae_deg_shell"] == pytest.approx(3.0)    # |2|, |-4|
    assert s["L_mae_pm_core"] == pytest.approx(1.5)
    assert (s["n_octahedra_core"], s["n_octahedra_shell"]) == (2, 1)
    assert (s["octahedra_recall_core"], s["octahedra_recall_shell"]) == (1.0, 0.5)
    with pytest.raises(ValueError, match="not at a truth octahedron"):
        expkit.core_shell_errors(acc.assign(octahedron_x_A=acc["octahedron_x_A"] + 0.3), truth)


def _mpi_available():
    try:
        from octascope.sim.md import load_lammps
        from octascope.sim.mpi import mpirun_command

        load_lammps()
        mpirun_command()
        return True
    except Exception:
        return False


@pytest.mark.slow
@pytest.mark.lammps
@pytest.mark.skipif(not _mpi_available(), reason="needs LAMMPS (lammps[mpi]) and an mpirun")
def test_md_runs_under_mpirun_with_two_ranks_from_the_md_config(tmp_path):
    """md.mpi_ranks=2 (as in a config's source.md) runs LAMMPS on 2 MPI ranks through the cached MD step;
    2 s (load 3) to 16 s (load 8) for 64 atoms x 20 steps on the shared 2-core machine (mpirun start-up): slow.
    pytest -m slow tests/experiments/test_experiment_configs.py -k mpirun"""
    from octascope.sim.md import MDOptions
    from octascope.sim.simulation import md_step, structure_key
    from octascope.sim.structure import build_nanocube

    assert "mpi_ranks" not in MDOptions().key_params()  # serial cache keys are unchanged
    atoms = build_nanocube(n_cells=2)
    md = dict(n_steps=20, equilibration_steps=0, snapshot_every=10, minimize_steps=0, mpi_ranks=2)
    key, traj, hit = md_step(atoms, structure_key({"n_cells": 2}), md, cache_dir=str(tmp_path), progress=False)
    assert not hit
    assert traj.info["n_ranks"] == 2 and traj.info["mpi_ranks"] == 2
    assert traj.positions.shape == (2, len(atoms), 3) and np.isfinite(traj.positions).all()
    key1, _, hit1 = md_step(atoms, structure_key({"n_cells": 2}), md, cache_dir=str(tmp_path), progress=False)
    assert hit1 and key1 == key


def test_paper_cluster_presets_are_the_papers_md_on_mpi_ranks():
    from octascope.sim.__main__ import load_params

    for preset, br in (("paper_cluster", 0.0), ("paper_cluster_mixed_halide", 0.1667)):
        p = load_params(str(ROOT / "conf" / "simulation" / f"{preset}.yaml"), [])
        assert p["structure"]["n_cells"] == 15 and p["structure"]["br_fraction"] == br
        assert p["md"]["n_steps"] + p["md"]["equilibration_steps"] == 2_000_000 and p["md"]["timestep_fs"] == 1.0
        assert p["md"]["mpi_ranks"] == 64 and p["md"]["box_A"] == 200.0
        assert p["imaging"]["mode"] == "multislice" and p["imaging"]["pixel_size_A"] == 0.168
    cfg, _ = expkit.compose_experiment("validation_cspbi3_full")
    check_source_config(cfg["source"])
    assert cfg["source"]["md"]["mpi_ranks"] == 64
