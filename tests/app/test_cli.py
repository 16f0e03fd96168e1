"""The `octascope` command: a small end-to-end run, plugin listing, and every bad input giving a
one-line error, a non-zero exit, no traceback and no output files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_run import run_cli

FAST = ["source=synthetic", "source.spec.n_cells=[5,5]", "tracking.enabled=false", "progress=false", "figure_formats=[]"]


@pytest.mark.slow  # 6-8 s: whole command runs (imports, figures, MLflow)
def test_end_to_end_run_writes_outputs_and_mlflow(in_tmp, capsys):
    code, out, err = run_cli(["source=synthetic", "source.spec.n_cells=[8,8]", "progress=false", "figure_formats=[png]"], capsys)
    assert code == 0, err
    assert "columns: Pb 64, X 144, Cs 81" in out
    assert "detection F1 1.000" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{in_tmp.resolve() / 'mlruns.db'}" in out
    run_dirs = list((in_tmp / "outputs").glob("*/*"))
    assert len(run_dirs) == 1
    names = {p.name for p in run_dirs[0].iterdir()}
    assert {"columns.csv", "octahedra.csv", "lattice.csv", "summary.json", "config.yaml"} <= names
    summary = json.loads((run_dirs[0] / "summary.json").read_text())
    assert summary["accuracy"]["detection_f1"] == 1.0
    assert abs(summary["tilt"]["theta3_deg_mean_core"] - 9.0) < 1.0
    assert (in_tmp / "mlruns.db").exists()


def test_plugins_listing(capsys):
    code, out, _ = run_cli(["plugins"], capsys)
    assert code == 0
    for stage, name in [("denoiser", "none"), ("locator", "gaussian"), ("classifier", "lattice"),
                        ("network", "nearest"), ("metric", "accuracy")]:
        assert any(line.split()[:2] == [stage, name] for line in out.splitlines())
    code, out, _ = run_cli(["plugins", "locator"], capsys)
    assert code == 0 and "denoiser" not in out


def test_plugins_listing_shows_parameters_with_defaults_and_units(capsys):
    code, out, _ = run_cli(["plugins", "metric"], capsys)
    assert code == 0
    lines = [line.strip() for line in out.splitlines()]
    assert "match_tolerance_A  float = 0.6 [Å]" in " ".join(lines)
    assert any(line.startswith("shell_depth_cells") and "= 3 [unit cells]" in line for line in lines)
    code, out, _ = run_cli(["plugins", "denoiser"], capsys)
    assert code == 0 and any(line.strip().startswith("step_px") and "[Fourier px]" in line for line in out.splitlines())


def _npy(path, data):
    np.save(path, data)
    return str(path)


def _bad_inputs(tmp):
    rng = np.random.default_rng(0)
    img = rng.random((64, 64)).astype(np.float32)
    nan = img.copy()
    nan[3, 4] = np.nan
    (tmp / "particle.xyz").write_text("not an image")
    return {
        "missing file": (["source.path=nope.tif"], "not found"),
        "unsupported format": ([f"source.path={tmp / 'particle.xyz'}"], "unsupported image format"),
        "3-D stack": ([f"source.path={_npy(tmp / 'stack.npy', np.stack([img] * 3))}", "source.pixel_size_A=0.2"], "source.frame"),
        "NaN pixels": ([f"source.path={_npy(tmp / 'nan.npy', nan)}", "source.pixel_size_A=0.2"], "NaN"),
        "constant image": ([f"source.path={_npy(tmp / 'flat.npy', np.full((64, 64), 3.0))}", "source.pixel_size_A=0.2"], "constant"),
        "no lattice": ([f"source.path={_npy(tmp / 'noise.npy', rng.normal(size=(160, 160)))}", "source.pixel_size_A=0.2"], "lattice"),
        "missing pixel size": ([f"source.path={_npy(tmp / 'nocal.npy', img)}"], "source.pixel_size_A"),
        "zero pixel size": ([f"source.path={_npy(tmp / 'zero.npy', img)}", "source.pixel_size_A=0"], "pixel size"),
        "unknown plugin": (["denoiser.name=nope"], "known denoisers: "),
    }


@pytest.mark.parametrize("case", ["missing file", "unsupported format", "3-D stack", "NaN pixels", "constant image",
                                  "no lattice", "missing pixel size", "zero pixel size", "unknown plugin"])
def test_bad_input_one_line_error_no_output(case, in_tmp, capsys):
    args, needle = _bad_inputs(in_tmp)[case]
    code, out, err = run_cli([*args, *FAST], capsys)
    assert code == 2
    lines = [l for l in err.strip().splitlines() if l]
    assert len(lines) == 1 and lines[0].startswith("octascope: error: "), err
    assert needle in lines[0]
    assert "Traceback" not in err + out
    assert not (in_tmp / "outputs").exists() or not any((in_tmp / "outputs").rglob("*"))


def test_console_command_failure_has_no_traceback(in_tmp):
    exe = Path(sys.executable).with_name("octascope")
    proc = subprocess.run([str(exe), "source.path=missing.emd", *FAST], capture_output=True, text=True, cwd=in_tmp)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"octascope: error: image file not found: missing.emd; check source.path"
    assert not (in_tmp / "outputs").exists()


def test_unknown_group_option_fails(in_tmp, capsys):
    code, out, err = run_cli(["denoiser=nope", *FAST], capsys)
    assert code != 0
    assert "denoiser" in err


def test_multirun_sweep_one_mlflow_run_per_job(in_tmp, capsys):
    from mlflow.tracking import MlflowClient

    code, out, err = run_cli(["--multirun", "classifier.site_tolerance_frac=0.2,0.3", "source=synthetic", "source.spec.n_cells=[5,5]",
                              "progress=false", "figure_formats=[]", "metric=[accuracy]"], capsys)
    assert code == 0, err
    jobs = sorted(p for p in (in_tmp / "multirun").glob("*/*/*") if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    assert all((p / "columns.csv").exists() for p in jobs)
    client = MlflowClient(tracking_uri="sqlite:///mlruns.db")
    runs = client.search_runs([client.get_experiment_by_name("octascope").experiment_id])
    assert sorted(r.data.params["classifier.site_tolerance_frac"] for r in runs) == ["0.2", "0.3"]
    assert sorted(r.data.tags["hydra.job.num"] for r in runs) == ["0", "1"]
    assert all(r.data.metrics["detection_f1"] == 1.0 for r in runs)
