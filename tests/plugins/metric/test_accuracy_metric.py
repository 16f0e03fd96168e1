"""Metric `accuracy` on detections with known errors."""

import numpy as np
import pandas as pd
import pytest

from octascope.core.model import Image, Result, Truth, make_columns
from octascope.core.model import OctahedralGeometry
from octascope_plugins.metric.accuracy import AccuracyMetric, match_points


def _grid_truth(n=10, a=3.125):
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    x, y = (i.ravel() * a + 5), (j.ravel() * a + 5)
    species = np.where((i.ravel() % 2 == 0) & (j.ravel() % 2 == 0), "Pb",
                       np.where((i.ravel() + j.ravel()) % 2 == 1, "X", "Cs"))
    shell = np.minimum(np.minimum(i, n - 1 - i), np.minimum(j, n - 1 - j)).ravel() // 2
    return pd.DataFrame({"x_A": x, "y_A": y, "species": species, "shell": shell})


def _result(found: pd.DataFrame) -> Result:
    img = Image(np.random.default_rng(0).random((64, 64)), pixel_size_A=1.0)
    return Result(image=img, columns=found)


def test_detection_and_rmse_with_known_errors():
    t = _grid_truth()
    rng = np.random.default_rng(3)
    shift = rng.normal(0, 0.1, size=(len(t), 2))  # 10 pm per axis -> ~14.1 pm RMSE
    keep = np.ones(len(t), bool)
    keep[[0, 1, 2, 3, 4]] = False  # five missed (outer row, shell 0)
    fx, fy = t.x_A.to_numpy() + shift[:, 0], t.y_A.to_numpy() + shift[:, 1]
    spurious = np.array([[100.0, 100.0], [0.0, 60.0]])
    found = make_columns(np.r_[fx[keep], spurious[:, 0]], np.r_[fy[keep], spurious[:, 1]], 1.0,
                         species=np.r_[t.species.to_numpy()[keep], ["X", "X"]])
    found.loc[0, "species"] = "Cs" if found.loc[0, "species"] != "Cs" else "X"  # one misclassified
    out = AccuracyMetric().compute(_result(found), Truth(columns=t))
    s = out.scalars
    assert s["detection_recall"] == pytest.approx(95 / 100)
    assert s["detection_precision"] == pytest.approx(95 / 97)
    assert s["detection_f1"] == pytest.approx(2 * 95 / 197)
    expected = np.sqrt((shift[keep] ** 2).sum(axis=1).mean()) * 100
    assert s["rmse_pm_all"] == pytest.approx(expected, rel=1e-9)
    assert 10 < s["rmse_pm_Pb"] < 20
    assert s["species_accuracy"] == pytest.approx(94 / 95)
    # outer cell (shell 0): all 5 misses are there
    n_outer = int((t.shell == 0).sum())
    assert s["detection_recall_outer"] == pytest.approx((n_outer - 5) / n_outer)


def test_beyond_tolerance_is_a_miss_not_an_error():
    t = _grid_truth(4)
    found = make_columns(t.x_A + 0.7, t.y_A, 1.0, species=t.species)
    s = AccuracyMetric(match_tolerance_A=0.6).compute(_result(found), Truth(columns=t)).scalars
    assert s["detection_f1"] == 0
    s = AccuracyMetric(match_tolerance_A=0.8).compute(_result(found), Truth(columns=t)).scalars
    assert s["detection_f1"] == 1 and s["rmse_pm_all"] == pytest.approx(70)


def test_matching_is_one_to_one():
    f = np.array([[0.0, 0.0], [0.1, 0.0]])
    t = np.array([[0.05, 0.0]])
    fi, ti = match_points(f, t, 0.6)
    assert len(fi) == 1 and ti.tolist() == [0]


def test_tilt_errors_against_truth_octahedra():
    t = _grid_truth(4)
    octs_true = pd.DataFrame({"x_A": [5.0, 11.25], "y_A": [5.0, 5.0], "theta1_deg": [8.0, 8.0],
                              "theta2_deg": [8.0, 8.0], "theta3_deg": [8.0, 8.0], "L1_A": [6.3, 6.3], "L2_A": [6.3, 6.3]})
    measured = octs_true.assign(theta1_deg=[9.0, 7.0], theta3_deg=[8.5, 8.5], L1_A=[6.32, 6.32], edge=False)
    res = _result(make_columns(t.x_A, t.y_A, 1.0, species=t.species))
    res.geometry = OctahedralGeometry(measured)  # the pipeline's geometry: no octahedral metric needed
    s = AccuracyMetric().compute(res, Truth(columns=t, octahedra=octs_true)).scalars
    assert s["theta1_mae_deg"] == pytest.approx(1.0)
    assert s["theta1_bias_deg"] == pytest.approx(0.0)
    assert s["theta3_mae_deg"] == pytest.approx(0.5)
    assert s["L1_mae_pm"] == pytest.approx(2.0)


def test_no_truth_no_output():
    t = _grid_truth(4)
    out = AccuracyMetric().compute(_result(make_columns(t.x_A, t.y_A, 1.0)), None)
    assert not out.scalars and not out.tables
