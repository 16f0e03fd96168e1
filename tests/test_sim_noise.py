"""octascope.sim.noise: dose noise on the CoM field (variance at a dose), scan distortions, errors."""

from __future__ import annotations

import numpy as np
import pytest

from octascope.core.errors import InputError
from octascope.sim.imaging import Frame, SimulatedImage, integrate_gradient
from octascope.sim.noise import apply_noise, com_noise_sigma, distort_positions


def _blob_image(n=128, p=0.2, centres=((12.8, 12.8),), width=0.5, signal="icom"):
    y, x = np.mgrid[0:n, 0:n] * p
    f = sum(np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width**2)) for cx, cy in centres)
    kx = np.fft.fftfreq(n, d=p)[None, :]
    ky = np.fft.fftfreq(n, d=p)[:, None]
    ff = np.fft.fft2(f)
    com = np.stack([np.fft.ifft2(2j * np.pi * kx * ff).real, np.fft.ifft2(2j * np.pi * ky * ff).real])
    return SimulatedImage(com=com, image=integrate_gradient(com[0], com[1], p), pixel_size_A=p, signal=signal,
                          frame=Frame((0.0, 0.0), 0.0, n * p), info={"energy_eV": 300e3, "semiangle_mrad": 29.9})


def test_integrate_gradient_recovers_field():
    sim = _blob_image()
    y, x = np.mgrid[0:128, 0:128] * 0.2
    f = np.exp(-((x - 12.8) ** 2 + (y - 12.8) ** 2) / 0.5)
    assert np.abs(sim.image - (f - f[:3].mean())).max() < 1e-3  # border mean set to 0, f ~ 0 there


def test_sigma_formula():
    # icom: k_alpha / (2 sqrt(N)); k_alpha = 29.9 mrad / 0.019687 Å = 1.5188 1/Å, N = 1000 * 0.04 = 40
    s = com_noise_sigma(signal="icom", dose_e_per_A2=1000.0, pixel_size_A=0.2)
    assert s == pytest.approx(1.5188 / (2 * np.sqrt(40.0)), rel=1e-3)
    s_dpc = com_noise_sigma(signal="idpc", dose_e_per_A2=1000.0, pixel_size_A=0.2)
    assert s_dpc == pytest.approx(np.pi * 1.5188 / (4 * np.sqrt(80.0)), rel=1e-3)


def test_noise_mean_and_variance_at_dose():
    sim = _blob_image(n=128)
    n, p = 128, 0.2
    kx = np.fft.fftfreq(n, d=p)[None, :]
    ky = np.fft.fftfreq(n, d=p)[:, None]
    k2 = (kx**2 + ky**2).ravel()[1:]
    for dose in (200.0, 5000.0):
        sigma = com_noise_sigma(signal="icom", dose_e_per_A2=dose, pixel_size_A=p)
        expected_var = sigma**2 / (4 * np.pi**2 * n * n) * np.sum(1.0 / k2)  # white gradient noise, integrated
        diffs = [apply_noise(sim, dose_e_per_A2=dose, seed=s) - sim.image for s in range(6)]
        var = np.mean([d.var() for d in diffs])
        assert var == pytest.approx(expected_var, rel=0.15)
        # unbiased: the mean difference over realisations is small against the noise
        mean_map = np.mean(diffs, axis=0)
        assert abs(mean_map.mean()) < 3 * np.sqrt(expected_var / 6)
    a = apply_noise(sim, dose_e_per_A2=1000.0, seed=1)
    b = apply_noise(sim, dose_e_per_A2=1000.0, seed=1)
    np.testing.assert_array_equal(a, b)


def test_line_offsets_jitter_and_drift():
    sim = _blob_image(n=128, centres=((12.8, 12.8),))
    off = apply_noise(sim, dose_e_per_A2=None, line_offset_rel=1.0, seed=2) - sim.image
    row_means = off.mean(axis=1)
    assert np.allclose(off, row_means[:, None], atol=1e-5)  # constant along each line
    assert row_means.std() == pytest.approx(sim.image.std(), rel=0.3)
    drift = (3.0, 0.0)
    img = apply_noise(sim, dose_e_per_A2=None, drift_A=drift)
    r, c = np.unravel_index(np.argmax(img), img.shape)
    predicted = distort_positions(np.array([[12.8, 12.8]]), shape=img.shape, pixel_size_A=0.2, drift_A=drift)[0]
    assert predicted[0] == pytest.approx(12.8 - 3.0 * 0.5, abs=0.05)  # half-way down the frame
    assert abs(c * 0.2 - predicted[0]) <= 0.2 and abs(r * 0.2 - predicted[1]) <= 0.2
    jit = apply_noise(sim, dose_e_per_A2=None, jitter_px=2.0, seed=0)
    assert np.abs(jit - sim.image).max() > 0.1 * sim.image.max()


def test_bad_dose_raises():
    sim = _blob_image(n=32)
    for dose in (0.0, -5.0):
        with pytest.raises(InputError, match="dose"):
            apply_noise(sim, dose_e_per_A2=dose)
