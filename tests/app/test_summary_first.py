"""The command's numbers come first: the summary is printed when the analysis ends, before the figures
are built and drawn and before the MLflow store is touched; figures nobody writes are never built."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from octascope.core.model import Image, LazyFigures, Result, make_columns


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from octascope.app.cli import _register_resolvers, conf_dir

    _register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def _figure():
    from octascope.results.figures import new_figure

    fig, axes = new_figure(1)
    axes[0].plot([0, 1], [0, 1])
    return fig


def test_lazy_figures_are_built_when_read_and_not_for_no_format(tmp_path):
    from octascope.results.outputs import write_outputs

    built = []

    def build():
        built.append(1)
        return {"line": _figure()}

    img = Image(np.random.default_rng(0).random((32, 32)).astype(np.float32), pixel_size_A=0.2)
    cols = make_columns([1.0, 2.0], [3.0, 4.0], 0.2, species=["Pb", "X"], amplitude=[1, 0.5])
    result = Result(image=img, denoised=img, columns=cols)
    result.figures.update(LazyFigures(build))
    assert built == []  # collecting a metric's figures builds nothing
    write_outputs(result, tmp_path / "none", figure_formats=())
    assert built == [] and not list((tmp_path / "none").glob("*.png"))
    files = write_outputs(result, tmp_path / "png", figure_formats=("png",))
    assert built == [1] and files["line.png"].stat().st_size > 1000
    assert list(result.figures) == ["line"] and built == [1]  # built once
    result.figures.update(LazyFigures(build))
    result.figures.clear()
    assert len(result.figures) == 0 and built == [1]  # cleared before being built


@pytest.mark.slow  # ~6 s: a whole run with figures and a new MLflow store
def test_numbers_print_before_figures_and_store(tmp_path):
    from octascope.app.run import run_from_config

    db = tmp_path / "mlruns.db"
    cfg = _compose(["source=synthetic", "source.spec.n_cells=[5,5]", "progress=false", "figure_formats=[png]",
                    f"tracking.tracking_uri=sqlite:///{db}"])
    out = tmp_path / "run"
    seen = {}

    def on_result(result):
        seen["files"] = sorted(p.name for p in out.glob("*")) if out.exists() else []
        seen["store"] = db.exists()
        seen["n_octahedra"] = len(result.octahedra)
        seen["figures_built"] = not result.figures._pending  # the metrics' figures still unbuilt

    result, files = run_from_config(cfg, out, on_result=on_result)
    assert seen["n_octahedra"] == len(result.octahedra) > 0
    assert seen["files"] == [] and seen["store"] is False and seen["figures_built"] is False
    assert (out / "summary.json").exists() and (out / "theta_maps.png").exists()
    con = sqlite3.connect(db)
    try:
        ((status,),) = con.execute("select status from runs").fetchall()
    finally:
        con.close()
    assert status == "FINISHED" and files["mlflow_run_id"]


def test_common_figure_formats_are_checked_without_matplotlib():
    import subprocess
    import sys

    from matplotlib.backend_bases import FigureCanvasBase

    from octascope.results.outputs import ALWAYS_WRITABLE

    assert ALWAYS_WRITABLE <= set(FigureCanvasBase.get_supported_filetypes())  # never accepts what it cannot write
    code = ("import sys\nfrom octascope.results.outputs import check_figure_formats\n"
            "assert check_figure_formats(['png', '.SVG']) == ('png', 'svg')\nprint('matplotlib' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
