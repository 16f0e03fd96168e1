"""Images the analysis cannot handle are refused with one line, never answered with confident numbers."""

from __future__ import annotations

import numpy as np
import pytest

import octascope
from octascope.core.errors import InputError
from octascope.analysis.plausibility import check_lattice, classification_flags
from octascope.input.sources import load_example


@pytest.fixture(scope="module")
def example():
    return load_example()


def test_inverted_contrast_is_refused(example):
    image, _ = example
    with pytest.raises(InputError, match="dark"):
        octascope.analyze(image.replace(data=-image.data), progress=None)


def test_wrong_pixel_size_is_refused(example):
    image, _ = example
    with pytest.raises(InputError, match="pixel size"):
        octascope.analyze(image.replace(pixel_size_A=0.1), progress=None)  # the file says 0.2 Å/px


def test_pure_noise_has_no_crystal():
    rng = np.random.default_rng(0)
    noise = octascope.Image(rng.normal(size=(256, 256)).astype(np.float32), pixel_size_A=0.2)
    with pytest.raises(InputError, match="no crystal lattice"):
        octascope.analyze(noise, progress=None)


@pytest.mark.parametrize("basis, match", [
    ([[4.08, 0.0], [0.0, 4.08]], "not a lead-halide perovskite"),   # e.g. gold, or a wrong calibration
    ([[6.2, 0.0], [0.0, 8.8]], "not square"),                       # a [110] projection
    ([[6.2, 0.0], [1.8, 6.0]], "not square"),                       # sheared: off zone axis
])
def test_lattice_checks(basis, match):
    with pytest.raises(InputError, match=match):
        check_lattice(np.array(basis), pixel_size_A=0.2)
    check_lattice(np.array([[6.2, 0.1], [-0.1, 6.25]]), pixel_size_A=0.2)  # CsPbI3 passes


def test_classification_flags():
    sp = np.array(["Pb"] * 10 + ["X"] * 20 + ["Cs"] * 10)
    assert classification_flags(sp, np.r_[np.full(10, 1.0), np.full(30, 0.5)]) == []
    assert "only 1.02x" in classification_flags(sp, np.r_[np.full(10, 0.51), np.full(30, 0.5)])[0]
    many_unknown = np.where(np.arange(40) % 2 == 0, "unknown", sp)
    assert any("no perovskite site" in f for f in classification_flags(many_unknown, np.ones(40)))


def test_partial_octahedra_carry_no_tilt(example):
    image, _ = example
    r = octascope.analyze(image, progress=None, metrics=["octahedral"])
    t = r.tables["octahedra"]
    partial = ~t["complete"] | t["edge"]
    assert t.loc[partial, ["theta1_deg", "theta2_deg", "theta3_deg", "L1_A", "L2_A"]].isna().all().all()
    assert t.loc[~partial, "theta3_deg"].notna().all()


def test_region_drops_vacuum_columns_and_is_written(example, tmp_path):
    from octascope.results.outputs import write_outputs

    image, truth = example
    r = octascope.analyze(image, truth=truth, progress=None)
    assert r.region is not None and 0 < r.region.fraction < 1
    # the metric figures are test_outputs_tracking's subject; saving them took ~6 of this test's 8 s
    r.figures.clear()
    files = write_outputs(r, tmp_path, figure_formats=("png",))
    import imageio.v3 as iio

    mask = iio.imread(files["crystal_mask"])
    assert mask.shape == image.shape and set(np.unique(mask)) <= {0, 255}
    assert "crystal_region.png" in files
    import json

    summary = json.loads(files["summary"].read_text())
    assert summary["trusted"] is True and summary["flags"] == []
    assert summary["region"]["columns_outside_dropped"] == r.n_outside_region


def test_user_polygon_region(example):
    image, truth = example
    w, h = image.extent_A
    half = [[0, 0], [w / 2, 0], [w / 2, h], [0, h]]  # left half of the image only
    r = octascope.analyze(image, truth=truth, progress=None, region={"mode": "polygon", "polygon_A": half})
    assert r.region.source == "polygon"
    assert (r.columns["x_A"] <= w / 2 + 0.5).all() and r.n_outside_region > 20


def test_cli_keeps_early_results_when_a_late_stage_refuses(in_tmp, capsys, example):
    """A wrong pixel size is found only once the lattice is known (after the classifier): the run
    stops with one line and exit 2, and the columns found so far stay for the user to look at."""
    from cli_run import run_cli

    image, _ = example
    np.save(in_tmp / "qd.npy", image.data)
    code, _, err_text = run_cli(["source.path=qd.npy", "source.pixel_size_A=0.1", "progress=false",
                                 "tracking.enabled=false"], capsys)
    err = err_text.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pixel size" in err[0]
    (run_dir,) = {p.parent for p in in_tmp.glob("outputs/**/columns.csv")}
    assert (run_dir / "error.txt").exists() and (run_dir / "network_overlay.png").exists()
    assert not (run_dir / "summary.json").exists()  # incomplete: no numbers to trust
