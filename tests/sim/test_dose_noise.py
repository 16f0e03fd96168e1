"""octascope.sim.noise: dose noise on the CoM field (variance at a dose), scan distortions, errors."""

from __future__ import annotations

import numpy as np
import pytest

from octascope.core.errors import InputError
from octascope.sim.imaging import Frame, SimulatedImage, integrate_gradient
from octascope.sim.noise import apply_noise, com_noise_sigma, distort_positions, inverse_count_mean, noisy_com


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


K_ALPHA = 1.5188  # 29.9 mrad / 0.019687 Å at 300 kV [1/Å]


def _poisson_inverse_mean(n):
    """E[1/M; M >= 1] for M ~ Poisson(n), summed here independently of the module."""
    from scipy.stats import poisson

    m = np.arange(1, 400)
    return float(np.sum(poisson.pmf(m, n) / m))


def test_sigma_formula():
    # icom: the CoM of M ~ Poisson(N) counted electrons: Var = k_alpha²/4 · E[1/M]; N = 1000 * 0.04 = 40
    s = com_noise_sigma(signal="icom", dose_e_per_A2=1000.0, pixel_size_A=0.2)
    assert s == pytest.approx(K_ALPHA / 2 * np.sqrt(_poisson_inverse_mean(40.0)), rel=1e-3)
    assert s == pytest.approx(K_ALPHA / (2 * np.sqrt(40.0)), rel=0.02)  # ≈ k_alpha / (2 sqrt(N))
    # idpc: pi k_alpha / (2 sqrt 2) x (n+ - n-)/N with n± ~ Poisson(N/4): sigma = pi k_alpha / (4 sqrt(N))
    s_dpc = com_noise_sigma(signal="idpc", dose_e_per_A2=1000.0, pixel_size_A=0.2)
    assert s_dpc == pytest.approx(np.pi * K_ALPHA / (4 * np.sqrt(40.0)), rel=1e-3)
    # an inner hole of half the disc radius keeps 3/4 of the electrons on the segments
    s_ring = com_noise_sigma(signal="idpc", dose_e_per_A2=1000.0, pixel_size_A=0.2, detector_inner_mrad=29.9 / 2)
    assert s_ring == pytest.approx(s_dpc * np.sqrt(0.75), rel=1e-6)
    with pytest.raises(InputError, match="detector_outer_mrad"):
        com_noise_sigma(signal="idpc", dose_e_per_A2=1000.0, pixel_size_A=0.2, detector_outer_mrad=20.0)


def test_inverse_count_mean():
    for n in (0.5, 3.0, 18.75, 200.0):
        assert inverse_count_mean(n) == pytest.approx(_poisson_inverse_mean(n), rel=1e-9)
    arr = np.array([[0.0, 0.5], [18.75, 200.0]])
    got = inverse_count_mean(arr)
    assert got[0, 0] == 0.0
    assert got[1, 1] == pytest.approx(_poisson_inverse_mean(200.0), rel=1e-4)
    assert got[1, 0] == pytest.approx(_poisson_inverse_mean(18.75), rel=1e-4)
    assert inverse_count_mean(1e4) == pytest.approx(1e-4, rel=2e-4)


def _vacuum(signal, n=128, p=0.25, detector=None, info=None):
    base = {"energy_eV": 300e3, "semiangle_mrad": 29.9}
    return SimulatedImage(com=np.zeros((2, n, n)), image=np.zeros((n, n)), pixel_size_A=p, signal=signal,
                          frame=Frame((0.0, 0.0), 0.0, n * p), info={**base, **(info or {})}, detector=detector)


@pytest.mark.parametrize("counted", [False, True])
def test_absolute_noise_scale_in_vacuum(counted):
    """The variance of each noisy CoM component on a vacuum field equals the counting formula within 5 %:
    Gaussian (weak-phase images) and counted from the detector signals (multislice images)."""
    n, p, dose = 128, 0.25, 300.0
    n_e = dose * p**2  # 18.75 electrons per probe position
    expected = {"icom": K_ALPHA**2 / 4 * _poisson_inverse_mean(n_e), "idpc": np.pi**2 * K_ALPHA**2 / (16 * n_e)}
    for signal in ("icom", "idpc"):
        detector = None
        if counted and signal == "idpc":  # four equally lit quadrants, each a quarter of the beam
            detector = np.full((4, n, n), 0.25)
        elif counted:  # a uniform disc: all captured, <k_x²> = <k_y²> = k_alpha²/4
            detector = np.stack([np.ones((n, n)), np.full((n, n), K_ALPHA**2 / 4), np.full((n, n), K_ALPHA**2 / 4),
                                 np.zeros((n, n))])
        sim = _vacuum(signal, n, p, detector, {"detector_vacuum": [0.25] * 4} if counted else None)
        com = noisy_com(sim, dose_e_per_A2=dose, seed=3)
        for c in com:
            assert c.var() == pytest.approx(expected[signal], rel=0.05), (signal, counted)
            assert abs(c.mean()) < 4 * np.sqrt(expected[signal] / c.size)
        assert abs(np.corrcoef(com[0].ravel(), com[1].ravel())[0, 1]) < 0.03
    # apply_noise integrates exactly this field
    sim = _vacuum("idpc", n, p)
    np.testing.assert_allclose(apply_noise(sim, dose_e_per_A2=dose, seed=3),
                               integrate_gradient(*noisy_com(sim, dose_e_per_A2=dose, seed=3), p), atol=1e-5)


def test_counted_idpc_follows_the_segments():
    """Poisson segment counts: the mean is the clean DPC, the variance (S+ + S-)/N per component."""
    n, p, dose = 64, 0.25, 1000.0
    n_e = dose * p**2
    from octascope.sim.imaging import dpc_com_scale

    seg = np.stack([np.full((n, n), 0.30), np.full((n, n), 0.25), np.full((n, n), 0.20), np.full((n, n), 0.15)])
    vac = [0.25, 0.25, 0.25, 0.25]
    scale = dpc_com_scale(300e3, 29.9)
    sim = _vacuum("idpc", n, p, seg, {"detector_vacuum": vac})
    sim.com = scale * np.stack([seg[0] - seg[2], seg[1] - seg[3]])
    draws = np.stack([noisy_com(sim, dose_e_per_A2=dose, seed=s) for s in range(8)])
    assert draws[:, 0].mean() == pytest.approx(scale * 0.10, rel=0.02)
    assert draws[:, 1].mean() == pytest.approx(scale * 0.10, rel=0.02)
    assert draws[:, 0].var() == pytest.approx(scale**2 * 0.50 / n_e, rel=0.05)
    assert draws[:, 1].var() == pytest.approx(scale**2 * 0.40 / n_e, rel=0.05)


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
