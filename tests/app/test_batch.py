"""Sessions (octascope source.path='frames/*.npy'), run names, the command's help and version,
`octascope runs` and `octascope compare` defaults (issue 22 items 1, 3, 4)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from cli_run import run_cli


def _frames(folder: Path, seeds: tuple[int, ...] = (0, 1), bad: bool = False) -> list[Path]:
    from octascope.input.synthetic import SyntheticSpec, make_synthetic

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for s in seeds:
        image, _truth = make_synthetic(SyntheticSpec(n_cells=(6, 6), rotation_deg=8.0, particle_angle_deg=7.0, seed=s))
        np.save(folder / f"p{s:02d}.npy", image.data)
        out.append(folder / f"p{s:02d}.npy")
    if bad:
        (folder / "broken.npy").write_bytes(b"not an array")
        out.append(folder / "broken.npy")
    return out


# ------------------------------------------------------------------------------------------------
# which files a session takes, and when a frame is done
# ------------------------------------------------------------------------------------------------

def test_folder_takes_image_files_directly_inside_glob_may_recurse(tmp_path):
    from octascope.app.batch import expand_frames, is_batch_path
    from octascope.core.errors import InputError

    (tmp_path / "sub").mkdir()
    for name in ("a.npy", "b.TIF", "c.emd", "notes.txt", "a.truth_columns.csv", ".hidden.npy", "sub/d.npy"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in expand_frames(str(tmp_path))] == ["a.npy", "b.TIF", "c.emd"]
    assert [p.name for p in expand_frames(str(tmp_path / "*.npy"))] == ["a.npy"]
    assert [p.name for p in expand_frames(str(tmp_path / "**" / "*.npy"))] == ["a.npy", "d.npy"]
    assert is_batch_path(str(tmp_path)) and is_batch_path("x/*.emd") and not is_batch_path(str(tmp_path / "a.npy"))
    (tmp_path / "in_a[1].npy").write_bytes(b"x")  # an existing file with glob characters: one image
    (tmp_path / "store.zspy").mkdir()  # a zarr store is an image, not a session
    assert not is_batch_path(str(tmp_path / "in_a[1].npy")) and not is_batch_path(str(tmp_path / "store.zspy"))
    with pytest.raises(InputError, match="no image files"):
        expand_frames(str(tmp_path / "*.dm4"))


def test_frame_key_follows_input_and_analysis_settings_only():
    from octascope.app.batch import frame_key

    cfg = {"source": {"kind": "file", "path": "a.npy", "pixel_size_A": 0.2}, "denoiser": {"name": "none"},
           "tracking": {"enabled": True}, "progress": True}
    key = frame_key("sha256:aa", cfg)
    assert frame_key("sha256:aa", dict(cfg, source={**cfg["source"], "path": "elsewhere/b.npy"})) == key
    assert frame_key("sha256:aa", dict(cfg, tracking={"enabled": False}, progress=False)) == key
    assert frame_key("sha256:bb", cfg) != key
    assert frame_key("sha256:aa", dict(cfg, denoiser={"name": "bm3d"})) != key
    assert frame_key("sha256:aa", dict(cfg, source={**cfg["source"], "pixel_size_A": 0.25})) != key


def test_batch_options_are_checked_and_conf_mirrors_them():
    import yaml

    from octascope.app.batch import BatchOptions, batch_options
    from octascope.app.cli import conf_dir
    from octascope.core.errors import ConfigError

    conf = yaml.safe_load((conf_dir() / "config.yaml").read_text())["batch"]
    assert conf == {f.name: f.default for f in BatchOptions.__dataclass_fields__.values()}
    assert batch_options({"batch": {"workers": "3"}}).workers == 3
    with pytest.raises(ConfigError, match="batch.workers|workers"):
        batch_options({"batch": {"workers": 0}})


# ------------------------------------------------------------------------------------------------
# a session end to end: a failing frame, session.csv against the runs' own files, MLflow, re-run
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_session_runs_every_frame_records_failures_and_skips_done_frames(in_tmp, capsys):
    import mlflow

    _frames(in_tmp / "frames", (0, 1), bad=True)
    uri = f"sqlite:///{in_tmp / 'store.db'}"
    args = ["source.path=frames/*.npy", "source.pixel_size_A=0.2", "figure_formats=[]", "batch.workers=1",
            f"tracking.tracking_uri={uri}"]
    code, out, err = run_cli(args, capsys)
    assert code == 1, err  # one frame failed; the others ran
    assert "broken.npy: FAILED" in err and "p00.npy: ok" in err and "p01.npy: ok" in err
    (session,) = [p.parent for p in in_tmp.glob("outputs/*/*/session.csv")]
    table = pd.read_csv(session / "session.csv")
    record = json.loads((session / "session.json").read_text())
    assert (record["frames"], record["ok"], record["failed"], record["skipped"]) == (3, 2, 1, 0)
    assert list(table["status"]) == ["failed", "ok", "ok"]  # sorted by path: broken, p00, p01
    for _, row in table[table.status == "ok"].iterrows():
        folder = Path(row.output_dir)
        assert folder.parent == session / "frames"
        particles = pd.read_csv(folder / "particles.csv").set_index("particle")
        summary = json.loads((folder / "summary.json").read_text())
        p = particles.loc[int(row.particle)]
        for col in ("theta3_deg_shell", "theta3_deg_shell_total_err", "theta1_deg_shell", "n_octahedra", "verdict"):
            assert row[col] == pytest.approx(p[col]) if not isinstance(p[col], str) else row[col] == p[col]
        assert row.n_octahedra == summary["n_octahedra"]
        assert str(row.frame_flags) in ("nan", "; ".join(summary["flags"]))
        assert row.input_sha256 == json.loads((folder / ".octascope-frame.json").read_text())["input_sha256"].split(":")[1]
    # MLflow: one parent, a child per analysed frame, named after the file
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("octascope")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("octascope.kind") == "session"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and sorted(r.info.run_name for r in children) == ["p00", "p01"]
    assert set(table.loc[table.status == "ok", "mlflow_run_id"]) == {r.info.run_id for r in children}
    # the same command again: every good frame is skipped, the broken one tried again; no new runs
    (in_tmp / "frames" / "broken.npy").unlink()
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert err.count("done before, skipped") == 2
    second = max(in_tmp.glob("outputs/*/*/session.json"), key=lambda p: p.parent.name)
    rec2 = json.loads(second.read_text())
    assert (rec2["ok"], rec2["skipped"]) == (0, 2) and rec2["mlflow_parent_run_id"] is None
    assert len(client.search_runs([exp.experiment_id])) == len(runs)
    t2 = pd.read_csv(second.parent / "session.csv")
    assert list(t2["output_dir"]) == list(table.loc[table.status == "ok", "output_dir"])


def test_session_rows_copy_particles_csv_and_flags(tmp_path):
    from octascope.app.batch import SESSION_COLUMNS, session_rows, write_session_table

    run = tmp_path / "frames" / "a"
    run.mkdir(parents=True)
    pd.DataFrame({"particle": [1, 2], "verdict": ["analysed", "refused"], "trusted": [True, False],
                  "reasons": ["", "off axis"], "n_octahedra": [36, 0], "theta3_deg_core": [9.1, np.nan],
                  "theta3_deg_core_total_err": [0.3, np.nan]}).to_csv(run / "particles.csv", index=False)
    (run / "summary.json").write_text(json.dumps({"flags": ["low dose"], "n_octahedra": 36}))
    rows = session_rows("a.npy", {"status": "ok", "output_dir": str(run), "mlflow_run_id": "r1",
                                  "input_sha256": "sha256:ff", "source": "a.npy"})
    rows += session_rows("b.npy", {"status": "failed", "error": "cannot read b.npy", "source": "b.npy"})
    written = write_session_table(rows, tmp_path)
    table = pd.read_csv(tmp_path / "session.csv")
    assert list(written.columns) == SESSION_COLUMNS and len(written) == len(table)
    assert list(table.columns) == SESSION_COLUMNS
    assert list(table["particle"].fillna(0).astype(int)) == [1, 2, 0]
    assert table.loc[0, "theta3_deg_core"] == pytest.approx(9.1) and table.loc[1, "reasons"] == "off axis"
    assert list(table["frame_flags"].fillna("")) == ["low dose", "low dose", ""]
    assert table.loc[2, "error"] == "cannot read b.npy" and table.loc[0, "input_sha256"] == "ff"


def test_session_through_slurm_launcher_composes_and_lists_the_jobs(in_tmp, capsys):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    _frames(in_tmp / "frames", (0, 1))
    code, out, err = run_cli(["source.path=frames", "source.pixel_size_A=0.2", "hydra/launcher=slurm",
                              "hydra.launcher.partition=gpu", "batch.dry_run=true"], capsys)
    assert code == 0, err
    assert "would submit 2 job(s) through SlurmLauncher" in out and "partition=gpu" in out
    assert "source.path='" in out and "p00.npy" in out and "p01.npy" in out and "--multirun" in out
    assert "#SBATCH --partition=gpu" in out and "#SBATCH --array=0-1%" in out and "#SBATCH --time=240" in out
    assert not list(in_tmp.glob("outputs/*/*/*"))  # nothing written


def test_sweep_results_are_collected_with_the_frames_done_before(tmp_path):
    """Through a launcher only the frames not done before become jobs, numbered in frame order:
    job j is the j-th frame to do. The session table still lists every frame, the earlier ones as
    ``skipped`` with their earlier folders, and the session page is written."""
    from octascope.app.batch import Session, collect_sweep

    session = tmp_path / "session"
    earlier = tmp_path / "earlier"
    for folder, n_oct in ((earlier, 7), (session / "frames" / "0", 8), (session / "frames" / "1", 9)):
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"flags": [], "n_octahedra": n_oct}))
    frames = [tmp_path / f"f{i}.npy" for i in range(4)]
    for f in frames:
        f.write_bytes(f.name.encode())
    done = [{"output_dir": str(earlier), "source": str(frames[0]), "input_sha256": "aa"}, None, None, None]
    plan = Session(frames, [session / "frames" / str(i) for i in range(4)], ["aa", "bb", "cc", "dd"],
                   ["k0", "k1", "k2", "k3"], done)
    cfg = {"tracking": {"enabled": False}, "batch": {"index_dir": str(tmp_path / "index")}}
    record = collect_sweep(plan, session, cfg, {2: "cannot read f3.npy"}, 1.0)

    table = pd.read_csv(session / "session.csv")
    assert list(table["frame"]) == [str(f) for f in frames]
    assert list(table["status"]) == ["skipped", "ok", "ok", "failed"]
    assert list(table["n_octahedra"].fillna(-1)) == [7, 8, 9, -1]
    assert table.loc[3, "error"] == "cannot read f3.npy"
    assert (record["ok"], record["skipped"], record["failed"]) == (2, 1, 1)
    assert (session / "session.html").is_file()


@pytest.mark.slow
def test_session_through_a_real_slurm_cluster(in_tmp, capsys):
    """A session submitted as a SLURM job array (hydra/launcher=slurm) where a SLURM controller
    answers on this machine: every frame analysed by a job, the session table complete, and a
    re-run with one more frame submits that frame only."""
    import shutil
    import subprocess

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    if shutil.which("sinfo") is None or subprocess.run(["sinfo", "-h", "-t", "idle,mix", "-o", "%P"],
                                                       capture_output=True, text=True).stdout.strip() == "":
        pytest.skip("no SLURM controller with an idle node on this machine")
    partition = subprocess.run(["sinfo", "-h", "-t", "idle,mix", "-o", "%P"], capture_output=True,
                               text=True).stdout.split()[0].rstrip("*")
    _frames(in_tmp / "frames", (0, 1))
    args = ["source.path=frames/*.npy", "source.pixel_size_A=0.2", "hydra/launcher=slurm",
            f"hydra.launcher.partition={partition}", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4",
            "hydra.launcher.timeout_min=20", "figure_formats=[]"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "through the launcher: 2 analysed, 0 done before, 0 failed" in out
    _frames(in_tmp / "frames", (2,))
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "through the launcher: 1 analysed, 2 done before, 0 failed" in out
    session = sorted(in_tmp.glob("outputs/*/*/session.csv"))[-1]
    table = pd.read_csv(session)
    assert sorted(table["status"]) == ["ok", "skipped", "skipped"]
    assert (session.parent / "frames" / ".submitit").is_dir() and (session.parent / "session.html").is_file()


def test_session_refuses_multirun(in_tmp, capsys):
    _frames(in_tmp / "frames", (0,))
    code, _out, err = run_cli(["--multirun", "source.path=frames/*.npy", "denoiser=none,bm3d"], capsys)
    assert code == 2 and "cannot be swept" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------------------
# run names, runs, compare
# ------------------------------------------------------------------------------------------------

def test_run_name_from_stem_and_non_default_settings():
    from octascope.results.tracking import run_name, unique_run_name

    assert run_name("particle03", {"denoiser": {"name": "bm3d"}, "locator": {"name": "gaussian"}}) == "particle03_bm3d"
    assert run_name("a b", {"locator": {"name": "atomap"}, "refine": {"enabled": True}}) == "a-b_atomap_refine"
    taken = SimpleNamespace(search_runs=lambda *a, **k: [SimpleNamespace(info=SimpleNamespace(run_name=n))
                                                         for n in ("p", "p-2")])
    assert unique_run_name("p", "0", taken) == "p-3" and unique_run_name("q", "0", taken) == "q"


def test_runs_table_shows_input_status_tilt_and_folder(tmp_path):
    from octascope.app.cli import runs_table

    run = SimpleNamespace(info=SimpleNamespace(run_id="abcdef123456", run_name="particle03_bm3d", status="FINISHED",
                                               start_time=0),
                          data=SimpleNamespace(tags={"octascope.source": "/data/particle03.emd",
                                                     "octascope.output_dir": str(tmp_path)},
                                               metrics={"theta3_deg_mean_core": 8.93, "theta3_deg_mean_core_err": 0.24,
                                                        "theta3_deg_mean_shell": 6.5, "theta3_deg_mean_shell_err": 0.7}))
    header, line = runs_table([run], lambda f: True).splitlines()
    for col in ("name", "input", "status", "tilt", "output folder"):
        assert col in header
    assert "particle03.emd" in line and "FINISHED" in line and "core 8.9 ± 0.2°" in line and str(tmp_path) in line


def test_compare_defaults_to_structure_without_truth_and_accuracy_with():
    from octascope.results.compare import ACCURACY_METRICS, STRUCTURAL_METRICS, comparison_table, default_metrics

    df = pd.DataFrame({"params.denoiser.name": ["none", "bm3d"], "metrics.theta3_deg_mean_core": [8.91, 8.84],
                       "metrics.theta3_deg_mean_core_err": [0.24, 0.22], "metrics.n_octahedra": [100.0, 98.0]})
    assert default_metrics(df) == STRUCTURAL_METRICS
    table = comparison_table(df, ["denoiser.name"], ["theta3_deg_mean_core", "n_octahedra"])
    assert list(table["theta3_deg_mean_core"]) == ["8.84 ± 0.22", "8.91 ± 0.24"] and list(table["n_octahedra"]) == ["98", "100"]
    assert default_metrics(df.assign(**{"metrics.detection_f1": [0.99, np.nan]})) == ACCURACY_METRICS


def test_metrics_are_rounded_and_fewer():
    from octascope.results.tracking import NOT_LOGGED, round_metric

    assert round_metric(8.885326575740250) == 8.88533 and round_metric(0.0009222897847246) == 0.00092229
    assert NOT_LOGGED.search("C1_A_std") and NOT_LOGGED.search("theta1_deg_std_core")
    assert not NOT_LOGGED.search("theta3_deg_mean_core") and not NOT_LOGGED.search("detection_f1")


# ------------------------------------------------------------------------------------------------
# the command's face
# ------------------------------------------------------------------------------------------------

def test_help_describes_commands_and_examples_in_under_60_lines(capsys):
    code, out, _err = run_cli(["--help"], capsys)
    assert code == 0 and len(out.splitlines()) < 60
    for word in ("plugins", "runs", "compare", "python -m octascope.sim", "--hydra-help", "--cfg job"):
        assert word in out
    examples = out.split("examples:")[1].split("options:")[0]
    assert sum(1 for line in examples.splitlines() if line.strip().startswith("octascope")) >= 5
    assert "powered by Hydra" not in out


def test_version_names_octascope_and_plugin_distributions(capsys):
    from octascope.core.registry import package_version

    code, out, _err = run_cli(["--version"], capsys)
    assert code == 0 and out.splitlines()[0] == f"octascope {package_version('octascope')}"
    assert "plugins from octascope" in out and "Hydra" not in out


@pytest.mark.parametrize("sub", ["plugins", "runs", "compare"])
def test_every_subcommand_has_help(sub, capsys):
    code, out, err = run_cli([sub, "--help"], capsys)
    assert code == 0, err
    assert out.startswith(f"usage: octascope {sub}") and "unknown stage" not in out + err


def test_hydra_help_stays_reachable(capsys):
    code, out, _err = run_cli(["--hydra-help"], capsys)
    assert code == 0 and "Hydra" in out
