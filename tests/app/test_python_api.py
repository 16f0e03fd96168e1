"""The Python API end to end on a synthetic particle with a set octahedral rotation."""

import subprocess
import sys

import numpy as np
import pytest

import octascope
from octascope.input.synthetic import SyntheticSpec, make_synthetic


@pytest.fixture(scope="module")
def analysed():
    image, truth = make_synthetic(SyntheticSpec(n_cells=(8, 8), rotation_deg=8.0, particle_angle_deg=12.0,
                                                dose_e_per_A2=2000.0, seed=4))
    return octascope.analyze(image, truth=truth, progress=None), truth


def test_tilt_recovered_within_tolerance(analysed):
    result, truth = analysed
    octs = result.tables["octahedra"]
    ok = octs[~octs.edge]
    assert len(ok) >= 60
    # set rotation 8.000°; at 2000 e/Å² and 0.2 Å/px the mean over the particle is within 0.3°
    assert ok.theta3_deg.mean() == pytest.approx(8.0, abs=0.3)
    assert ok.theta1_deg.mean() == pytest.approx(8.0, abs=0.4)
    assert ok.theta2_deg.mean() == pytest.approx(8.0, abs=0.4)
    assert result.scalars["theta3_mae_deg"] < 0.6
    # bond length L = a / cos(8°) = 6.3113 Å within 3 pm on average
    assert ok.L1_A.mean() == pytest.approx(6.25 / np.cos(np.deg2rad(8.0)), abs=0.03)


def test_detection_and_classification_accuracy(analysed):
    result, _ = analysed
    s = result.scalars
    assert s["detection_f1"] >= 0.99
    assert s["species_accuracy"] >= 0.99
    assert s["rmse_pm_all"] < 10.0


def test_stage_timings_and_plugins_recorded(analysed):
    result, _ = analysed
    assert set(result.plugins) >= {"denoiser", "locator", "classifier", "network", "metrics"}
    assert all(v >= 0 for v in result.timings_s.values())
    assert result.timings_s["total"] == pytest.approx(sum(v for k, v in result.timings_s.items() if k != "total"))


def test_stage_spec_forms_are_equivalent(small_synthetic):
    image, truth = small_synthetic
    reg = octascope.get_registry(load_entrypoints=False)
    a = octascope.analyze(image, classifier=("lattice", {"site_tolerance_frac": 0.3}), metrics=["accuracy"],
                          truth=truth, registry=reg, progress=None)
    b = octascope.analyze(image, classifier={"name": "lattice", "site_tolerance_frac": 0.3}, metrics=["accuracy"],
                          truth=truth, registry=reg, progress=None,
                          locator=reg.create("locator", "gaussian"))
    assert a.columns.species.tolist() == b.columns.species.tolist()
    assert a.scalars["rmse_pm_all"] == pytest.approx(b.scalars["rmse_pm_all"])


def test_library_runs_without_hydra():
    code = ("import sys, octascope\n"
            "from octascope.input.synthetic import make_synthetic, SyntheticSpec\n"
            "im, tr = make_synthetic(SyntheticSpec(n_cells=(4, 4)))\n"
            "r = octascope.analyze(im, truth=tr, progress=None, metrics=['accuracy'])\n"
            "assert 'hydra' not in sys.modules and 'omegaconf' not in sys.modules\n"
            "print(r.scalars['detection_f1'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(out) > 0.95


def test_geometry_is_a_stage_output_and_accuracy_alone_measures_tilt(small_synthetic):
    """θ and L come from the core (Result.geometry), so ``metrics=["accuracy"]`` reports tilt errors."""
    image, truth = small_synthetic
    r = octascope.analyze(image, metrics=["accuracy"], truth=truth, progress=None)
    assert r.geometry is not None and len(r.geometry) == len(r.octahedra)
    assert "octahedra" not in r.tables  # no octahedral metric ran
    if truth.octahedra is not None:
        assert "theta3_mae_deg" in r.scalars and np.isfinite(r.scalars["theta3_mae_deg"])
    assert r.summaries["accuracy"]["detection_f1"] == r.scalars["detection_f1"]


def test_metrics_see_a_read_only_view(small_synthetic):
    """A metric that scribbles on its input changes nothing of the result."""
    from octascope.core.model import MetricOutput

    class Vandal:
        name, requires, after = "vandal", ("columns", "geometry"), ()

        def compute(self, data, truth):
            data.columns["species"] = "unknown"
            data.geometry.table["theta3_deg"] = 99.0
            return MetricOutput(summary={"ok": True})

    image, truth = small_synthetic
    r = octascope.analyze(image, metrics=[Vandal(), "octahedral"], truth=truth, progress=None)
    assert (r.columns.species != "unknown").any()
    assert not (r.geometry.table["theta3_deg"] == 99.0).any()
    assert not (r.tables["octahedra"]["theta3_deg"] == 99.0).any()
    assert r.summaries["vandal"] == {"ok": True}


def test_metric_requirements_are_checked(small_synthetic):
    class NeedsTruth:
        name, requires, after = "needs-truth", ("truth",), ()

        def compute(self, data, truth):
            raise AssertionError("not reached")

    image, _ = small_synthetic
    with pytest.raises(octascope.InputError, match="needs truth"):
        octascope.analyze(image, metrics=[NeedsTruth()], progress=None)
