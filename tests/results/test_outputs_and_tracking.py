"""Output files (names, public columns, atomic writes) and the MLflow run they are logged to."""

import json

import numpy as np
import pandas as pd
import pytest

from octascope.core.model import Image, Result, make_columns
from octascope.results.outputs import atomic_write, write_outputs
from octascope.results.tracking import flatten, log_run, tracked_run


def _result():
    img = Image(np.random.default_rng(0).random((32, 32)), pixel_size_A=0.2)
    cols = make_columns([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], 0.2, species=["Pb", "X", "Cs"], amplitude=[1, 0.4, 0.4])
    octs = pd.DataFrame({"shell": [0], "x_A": [0.2], "y_A": [0.8], "theta1_deg": [8.0], "theta2_deg": [8.0],
                         "theta3_deg": [8.0], "L1_A": [6.3], "L2_A": [6.3]})
    res = Result(image=img, denoised=img, columns=cols)
    res.tables["octahedra"] = octs
    res.tables["lattice"] = pd.DataFrame({"C1_A": [6.2]})
    res.scalars.update({"theta3_deg_mean_core": 8.0, "theta3_deg_mean_shell": 7.0, "nan_metric": float("nan")})
    # summary.json's "tilt" is the octahedral metric's own section, not picked from the scalars by name
    res.summaries["octahedral"] = {"tilt": {"theta3_deg_mean_core": 8.0, "theta3_deg_mean_shell": 7.0}}
    res.timings_s.update({"locator:gaussian": 0.5, "total": 0.6})
    return res


def test_output_files_and_public_columns(tmp_path):
    files = write_outputs(_result(), tmp_path, config={"denoiser": {"name": "none"}})
    names = {p.name for p in tmp_path.iterdir()}
    assert {"columns.csv", "octahedra.csv", "lattice.csv", "summary.json", "config.yaml"} <= names
    cols = pd.read_csv(tmp_path / "columns.csv")
    assert list(cols.columns[:9]) == ["x_A", "y_A", "x_px", "y_px", "species", "amplitude", "sigma_major_A",
                                      "sigma_minor_A", "ellipticity"]
    octs = pd.read_csv(tmp_path / "octahedra.csv")
    assert list(octs.columns[:8]) == ["x_A", "y_A", "theta1_deg", "theta2_deg", "theta3_deg", "L1_A", "L2_A", "shell"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counts"] == {"Pb": 1, "X": 1, "Cs": 1}
    assert summary["tilt"]["theta3_deg_mean_shell"] == 7.0
    assert summary["metrics"]["octahedral"]["tilt"]["theta3_deg_mean_core"] == 8.0
    assert summary["timings_s"]["locator:gaussian"] == 0.5
    assert summary["scalars"]["nan_metric"] is None  # NaN is not valid JSON
    assert not [n for n in names if n.endswith(".part")]
    assert files["columns"] == tmp_path / "columns.csv"


def test_atomic_write_leaves_nothing_on_crash(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")

    def crash(tmp):
        tmp.write_text("half a ta")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_mlflow_run_contents_and_failed_status(in_tmp):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{in_tmp / 'track.db'}"
    res = _result()
    out = in_tmp / "run"
    write_outputs(res, out)
    cfg = {"denoiser": {"name": "none"}, "locator": {"name": "gaussian", "patch_radius_A": 1.5}}
    with tracked_run(tracking_uri=uri, experiment="t") as run:
        log_run(params=cfg, scalars=res.scalars, timings_s=res.timings_s, artifact_dir=out)
    with pytest.raises(ZeroDivisionError):
        with tracked_run(tracking_uri=uri, experiment="t") as failed:
            1 / 0
    client = MlflowClient(tracking_uri=uri)
    r = client.get_run(run.info.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["locator.patch_radius_A"] == "1.5"
    assert r.data.metrics["theta3_deg_mean_core"] == 8.0
    assert r.data.metrics["time_s/locator/gaussian"] == 0.5
    assert "nan_metric" not in r.data.metrics
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"columns.csv", "octahedra.csv", "summary.json"} <= arts
    assert client.get_run(failed.info.run_id).info.status == "FAILED"


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}


def test_figures_drawn_by_several_processes(tmp_path):
    """save_figures shares the drawing among forked processes; every file arrives, failures are raised."""
    import os

    from matplotlib.figure import Figure

    from octascope.results.outputs import save_figures

    figs = {}
    for k in range(5):
        fig = Figure(figsize=(2, 2), layout="constrained")
        fig.subplots().plot([0, k])
        figs[f"f{k}"] = (fig, 50)
    written = save_figures(figs, tmp_path, ("png", "svg"), workers=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"f{k}.{e}" for k in range(5) for e in ("png", "svg"))
    assert set(written) == {p.name for p in tmp_path.iterdir()}
    if not hasattr(os, "fork"):
        return

    class Broken(Figure):
        def savefig(self, *a, **k):
            raise ValueError("cannot draw")

    figs["f1"] = (Broken(), 50)  # drawn by the second process (names are dealt round-robin)
    with pytest.raises(RuntimeError, match="cannot draw"):
        save_figures(figs, tmp_path / "again", ("png",), workers=2)


def test_remote_artifact_store_gets_one_upload(tmp_path, monkeypatch):
    """A non-file artifact store gets the folder in one log_artifacts call, hidden files left out."""
    import mlflow

    from octascope.results.tracking import log_artifacts_linked

    (tmp_path / "sub").mkdir()
    for name in ("a.csv", "sub/b.png", ".octascope-run"):
        (tmp_path / name).write_text("x")
    calls = []
    monkeypatch.setattr(mlflow, "get_artifact_uri", lambda: "s3://bucket/run/artifacts")
    monkeypatch.setattr(mlflow, "log_artifact", lambda *a, **k: calls.append(("one", a)))
    monkeypatch.setattr(mlflow, "log_artifacts", lambda d, *a, **k: calls.append(
        ("all", sorted(str(p.relative_to(d)) for p in __import__("pathlib").Path(d).rglob("*") if p.is_file()))))
    assert log_artifacts_linked(tmp_path) == 0
    assert calls == [("all", ["a.csv", "sub/b.png"])]
