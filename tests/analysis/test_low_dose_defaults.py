"""The default pipeline on low-dose simulated iDPC images of a particle in vacuum (the
method paper images at ≈220 e/Å²). A 3.8 nm CsPbI3 cube (6 octahedra per edge, Pbnm start
structure without MD, so the truth is exact), weak-phase iDPC at 0.2 Å/px with shot noise on the
measured CoM, so the noise is integrated and correlated (1/k) as in a real iDPC image, not white."""

from __future__ import annotations

import numpy as np
import pytest

import octascope
from octascope.analysis.region import crystal_region
from octascope.analysis.noise_spectrum import estimate_noise_spectrum

pytest.importorskip("abtem")


def simulated(dose, seed=0, n_cells=6, angle_deg=0.0, support=None):
    from octascope.sim.simulation import simulate

    sim = simulate(structure=dict(n_cells=n_cells), run_md=False,
                   imaging=dict(pixel_size_A=0.2, margin_A=10.0, scan_rotation_deg=angle_deg),
                   support=support, noise=dict(dose_e_per_A2=dose, seed=seed), progress=False)
    return sim.image, sim.truth


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    import os

    d = tmp_path_factory.mktemp("simcache")
    old = os.environ.get("OCTASCOPE_CACHE")
    os.environ["OCTASCOPE_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("OCTASCOPE_CACHE", None)
    else:
        os.environ["OCTASCOPE_CACHE"] = old


# Targets of the issue for the default command, no mask, no tuning: at 300 e/Å² F1 ≥ 0.98, species
# accuracy ≥ 0.99, θ error ≤ 0.7°; at 1,000 e/Å² F1 ≥ 0.99, θ error ≤ 0.5°.
@pytest.mark.parametrize("dose, min_f1, max_theta_err", [(1000.0, 0.99, 0.5), (300.0, 0.98, 0.7)])
def test_default_pipeline_at_low_dose(cache_dir, dose, min_f1, max_theta_err):
    image, truth = simulated(dose)
    r = octascope.analyze(image, truth=truth, progress=None)
    s = r.scalars
    assert s["detection_f1"] >= min_f1
    assert s["species_accuracy"] >= 0.99
    assert s["octahedra_recall"] == 1.0
    assert s["theta_mae_deg"] <= max_theta_err
    assert r.flags == []


def test_rotated_particle_at_paper_dose(cache_dir):
    image, truth = simulated(300.0, angle_deg=17.0, seed=1)
    r = octascope.analyze(image, truth=truth, progress=None, classifier="sofs", network="sofs")
    assert r.scalars["detection_f1"] >= 0.98 and r.scalars["species_accuracy"] >= 0.99


@pytest.mark.slow
def test_particle_on_amorphous_carbon(cache_dir):
    """3 nm of amorphous carbon under the particle (a TEM grid): its random contrast has no Bragg
    peaks, so no carbon blob becomes a column; the 300 e/Å² targets hold."""
    image, truth = simulated(300.0, seed=1, support=dict(thickness_A=30.0))
    r = octascope.analyze(image, truth=truth, progress=None)
    s = r.scalars
    assert s["detection_f1"] >= 0.98 and s["species_accuracy"] >= 0.99 and s["theta_mae_deg"] <= 0.7


def test_vacuum_noise_is_correlated_and_outside_the_region(cache_dir):
    """The image's own noise spectrum shows iDPC's 1/k² power (a white-noise estimate would not),
    and the automatic crystal region holds every true column but little of the vacuum."""
    image, truth = simulated(300.0)
    ns = estimate_noise_spectrum(image.data, image.pixel_size_A)
    assert -2.4 < ns.slope() < -1.6  # integrated white gradient noise: power ∝ k^-2
    clean_noise = image.data - truth.clean
    assert ns.sigma == pytest.approx(float(clean_noise.std()), rel=0.3)
    reg = crystal_region(image.data, image.pixel_size_A)
    t = truth.columns
    assert reg.contains(t.x_px, t.y_px).all()
    particle_area = np.ptp(t.x_A) * np.ptp(t.y_A)
    assert reg.fraction * np.prod(image.extent_A) < 2.0 * particle_area


def test_100_e_per_A2_runs(cache_dir):
    image, truth = simulated(100.0, seed=2)
    r = octascope.analyze(image, truth=truth, progress=None)
    assert r.scalars["detection_f1"] > 0.9  # below the paper's dose: reported, not a target
