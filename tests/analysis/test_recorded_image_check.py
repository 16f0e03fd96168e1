"""Columns found on a denoised image are judged on the recorded image too (issue 20).

A denoiser with a lattice prior (ABSF) continues a particle's lattice one step past its edge; there
the recorded image is noise, the denoised one shows weak maxima on lattice sites next to real
columns, and the site-candidate rule (at 1,000 e/Å² the threshold itself) took them for columns. The
stub denoiser below adds exactly such maxima one lattice step outside the particle to the recorded
image, at site-candidate strength and at significant strength.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

import octascope
from octascope.analysis.noise_spectrum import band_pass, estimate_noise_spectrum, significance_at
from octascope.input.synthetic import SyntheticSpec, make_synthetic
from octascope_plugins.metric.accuracy import match_points

SPEC = SyntheticSpec(n_cells=(6, 6), rotation_deg=8.0, particle_angle_deg=7.0, seed=1)
#: between the site floor (2.5) and the significance threshold (>= 3, ~4.5 here); above the threshold
GHOST_Z = (3.5, 8.0)


def _bumps(shape, pixel_size_A, xy_A, sigma_A=0.45):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] * pixel_size_A
    out = np.zeros(shape)
    for x, y in xy_A:
        out += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma_A**2))
    return out


def _ghost_places(truth):
    """One column spacing past the outermost row of columns on one side of the particle [Å]."""
    xy = truth.columns[["x_A", "y_A"]].to_numpy(float)
    u = np.array([np.cos(np.deg2rad(SPEC.particle_angle_deg)), np.sin(np.deg2rad(SPEC.particle_angle_deg))])
    s = xy @ u
    d = np.sort(np.linalg.norm(xy[:, None] - xy[None], axis=-1), axis=1)[:, 1]
    spacing = float(np.median(d))
    outer = xy[s >= s.max() - 0.5]
    return outer + spacing * u


@pytest.fixture(scope="module", params=GHOST_Z)
def scene(request):
    image, truth = make_synthetic(SPEC)
    ghosts = _ghost_places(truth)
    data = np.asarray(image.data, float)
    ps = image.pixel_size_A
    unit = _bumps(data.shape, ps, ghosts)
    response = float(band_pass(unit, ps, inner_sigma_A=0.25, outer_sigma_A=0.8)[0].max())
    _, transfer = band_pass(data, ps, inner_sigma_A=0.25, outer_sigma_A=0.8)
    sigma = estimate_noise_spectrum(data, ps).filtered_sigma(transfer)
    ghosted = (data + request.param * sigma / response * unit).astype(np.float32)

    class Ghosts:
        """A 'denoiser' whose prior continues the lattice past the particle's edge."""

        name: ClassVar[str] = "ghosts"

        def denoise(self, img):
            return img.replace(data=ghosted)

    return image, truth, ghosts, Ghosts()


def _found_at(result, places):
    found = result.columns[["x_A", "y_A"]].to_numpy(float)
    fi, _ = match_points(found, places, 0.6)
    return len(fi)


def test_significance_at_measures_the_recorded_image(scene):
    image, truth, ghosts, denoiser = scene
    ps = image.pixel_size_A
    kw = dict(inner_sigma_A=0.25, outer_sigma_A=0.8, radius_A=0.5)
    noise = estimate_noise_spectrum(image.data, ps)
    denoised = denoiser.denoise(image).data
    z_rec = significance_at(image.data, ps, ghosts[:, 0] / ps, ghosts[:, 1] / ps, noise=noise, **kw)
    z_den = significance_at(denoised, ps, ghosts[:, 0] / ps, ghosts[:, 1] / ps,
                            noise=estimate_noise_spectrum(denoised, ps), **kw)
    cols = truth.columns
    pb = cols[cols["species"] == "Pb"][["x_A", "y_A"]].to_numpy(float) / ps
    z_pb = significance_at(image.data, ps, pb[:, 0], pb[:, 1], noise=noise, **kw)
    assert np.median(z_rec) < 2.0  # vacuum: noise only
    assert np.median(z_den) > 2.5  # the stub's maxima are at least site-candidate strong
    assert np.median(z_pb) > 5.0  # real columns are significant on the recorded image
    assert np.all(significance_at(image.data, ps, np.array([-50.0]), np.array([-50.0]), noise=noise, **kw) == -np.inf)


@pytest.mark.slow
def test_denoiser_lattice_continuation_is_not_taken_for_columns(scene):
    image, truth, ghosts, denoiser = scene
    checked = octascope.analyze(image, denoiser=denoiser, truth=truth, progress=None)
    unchecked = octascope.analyze(image, denoiser=denoiser, truth=truth, progress=None,
                                  locator=("gaussian", {"recorded_significance": None}))
    # without the check the ghosts are columns (the test bites) ...
    assert _found_at(unchecked, ghosts) >= 0.5 * len(ghosts)
    # ... with it, they are dropped and the real columns stay
    assert _found_at(checked, ghosts) <= 0.1 * len(ghosts)
    assert checked.n_unsupported_by_recorded >= 0.5 * len(ghosts)
    assert checked.scalars["detection_recall"] >= unchecked.scalars["detection_recall"] - 0.01


def test_undenoised_image_is_not_rechecked():
    image, truth = make_synthetic(SPEC)
    result = octascope.analyze(image, truth=truth, progress=None)
    assert result.n_unsupported_by_recorded == 0


def test_weak_evidence_on_the_recorded_image_makes_a_site_candidate_on_the_rim():
    """Where the noise is measured on the frame's empty area (a particle in a wide frame), a column
    found on a denoised image carries the recorded image's evidence: one the recorded image shows
    above the 2σ floor but below the threshold is a site candidate, and on the rim the site test
    (a false discovery rate over the empty rim sites) drops it. The stub lifts the rim places to 8σ
    on the 'denoised' image while the recorded one shows them at 2.7σ (plus its noise: 1.5-5.3σ at
    the 13 places; one reaches the recorded image's own threshold and may stay)."""
    from octascope.analysis.region import frame_noise_spectrum

    spec = SyntheticSpec(n_cells=(6, 6), rotation_deg=8.0, particle_angle_deg=7.0, seed=1, margin_A=40.0)
    image, truth = make_synthetic(spec)
    assert frame_noise_spectrum(image).measured_on == "empty area"
    xy = truth.columns[["x_A", "y_A"]].to_numpy(float)
    u = np.array([np.cos(np.deg2rad(7.0)), np.sin(np.deg2rad(7.0))])
    s = xy @ u
    spacing = float(np.median(np.sort(np.linalg.norm(xy[:, None] - xy[None], axis=-1), axis=1)[:, 1]))
    ghosts = xy[s >= s.max() - 0.5] + spacing * u
    data = np.asarray(image.data, float)
    ps = image.pixel_size_A
    unit = _bumps(data.shape, ps, ghosts)
    response = float(band_pass(unit, ps, inner_sigma_A=0.25, outer_sigma_A=0.8)[0].max())
    _, transfer = band_pass(data, ps, inner_sigma_A=0.25, outer_sigma_A=0.8)
    sigma = frame_noise_spectrum(image).filtered_sigma(transfer)
    recorded = image.replace(data=(data + 2.7 * sigma / response * unit).astype(np.float32))
    lifted = (np.asarray(recorded.data, float) + 5.3 * sigma / response * unit).astype(np.float32)

    class Lifts:
        name: ClassVar[str] = "lifts"

        def denoise(self, img):
            return img.replace(data=lifted)

    z = significance_at(recorded.data, ps, ghosts[:, 0] / ps, ghosts[:, 1] / ps, inner_sigma_A=0.25,
                        outer_sigma_A=0.8, radius_A=0.5, noise=frame_noise_spectrum(recorded))
    assert (z > 2.0).mean() > 0.8, z  # above the recorded floor: the floor alone keeps them
    clear = int((z >= 4.5).sum())  # at the threshold on the recorded image itself: evidence enough
    assert clear <= 2, z
    with_test = octascope.analyze(recorded, denoiser=Lifts(), truth=truth, progress=None)
    without = octascope.analyze(recorded, denoiser=Lifts(), truth=truth, progress=None,
                                classifier=("lattice", {"site_fdr": 0.0}))
    assert _found_at(without, ghosts) >= 0.4 * len(ghosts)  # those a Pb site does not rule out (too weak for Pb)
    assert _found_at(with_test, ghosts) <= clear
    assert with_test.scalars["detection_recall"] >= without.scalars["detection_recall"] - 0.01
