"""Covariances of linear estimators under a noise power spectrum, and the locator's position
covariance under integrated (iDPC-like) and white noise."""

from __future__ import annotations

import numpy as np
import pytest

from octascope.analysis.noise_covariance import autocovariance, channel_spectra, estimator_covariance, neighbour_pairs
from octascope.analysis.noise_spectrum import NoiseSpectrum

R = 3
OFFSETS = np.array([(ox, oy) for oy in range(-R, R + 1) for ox in range(-R, R + 1) if ox * ox + oy * oy <= R * R])


def _spectrum(shape=(64, 64)) -> NoiseSpectrum:
    k = np.linspace(0, 4, 200)
    return NoiseSpectrum(k_A=k, power=1.0 / (k**2 + 0.05), pixel_size_A=0.2, shape=shape)


@pytest.mark.parametrize("channels", [("image",), ("dx", "dy")])
def test_estimator_covariance_is_the_double_sum(channels):
    """Own and pair covariances equal Σ_m Σ_n h_i[m] h_j[n] A(c_j + o_n − c_i − o_m) summed directly."""
    rng = np.random.default_rng(0)
    h = w = 64
    c = len(channels)
    centres = np.array([[20, 20], [24, 21], [20, 27], [40, 40]])
    infl = rng.normal(size=(4, c, 2, len(OFFSETS)))
    pairs = np.array([[0, 1], [0, 2], [1, 2], [1, 0]])
    acov = autocovariance(channel_spectra(_spectrum((h, w)), (h, w), channels))
    own, pair = estimator_covariance(infl, OFFSETS, centres, pairs, acov)

    def direct(i: int, j: int) -> np.ndarray:
        out = np.zeros((2, 2))
        for a in range(c):
            for b in range(c):
                for m, o in enumerate(OFFSETS):
                    lag = centres[j] + OFFSETS - centres[i] - o
                    out += np.outer(infl[i, a, :, m], (infl[j, b] * acov[a, b, lag[:, 1] % h, lag[:, 0] % w]).sum(-1))
        return out

    for i in range(4):
        np.testing.assert_allclose(own[i], direct(i, i), rtol=1e-10, atol=1e-12)
    for p, (i, j) in enumerate(pairs):
        np.testing.assert_allclose(pair[p], direct(i, j), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pair[0], pair[3].T, rtol=1e-10)  # Cov(r_i, r_j) = Cov(r_j, r_i)ᵀ


def test_spectrum_convention_matches_sampled_noise():
    """Noise drawn with the spectrum (variance = mean power) has the covariances computed from it."""
    rng = np.random.default_rng(1)
    shape = (64, 64)
    spec = _spectrum(shape)
    amp = np.sqrt(spec.power_on_grid(shape))
    infl = rng.normal(size=(2, 1, 2, len(OFFSETS)))
    infl -= infl.mean(-1, keepdims=True)  # a fit with a background parameter: weights sum to zero
    centres = np.array([[20, 20], [23, 21]])
    own, pair = estimator_covariance(infl, OFFSETS, centres, np.array([[0, 1]]),
                                     autocovariance(channel_spectra(spec, shape)))
    draws = []
    for _ in range(3000):
        e = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=shape)) * amp))
        draws.append([infl[i, 0, 0] @ e[centres[i, 1] + OFFSETS[:, 1], centres[i, 0] + OFFSETS[:, 0]] for i in (0, 1)])
    draws = np.array(draws)
    # sampling error of a variance from 3000 draws ≈ 2.6 %
    np.testing.assert_allclose(draws.var(0), [own[0, 0, 0], own[1, 0, 0]], rtol=0.1)
    assert abs(np.cov(draws.T)[0, 1] - pair[0, 0, 0]) < 4 * np.sqrt(own[0, 0, 0] * own[1, 0, 0] / 3000)


def test_neighbour_pairs():
    x, y = np.array([0.0, 1.0, 5.0, np.nan]), np.array([0.0, 0.0, 0.0, 0.0])
    assert neighbour_pairs(x, y, 1.5).tolist() == [[0, 1]]
    assert len(neighbour_pairs(x, y, 0.0)) == 0


def _lattice_image(noise: str, seed: int, *, size: int = 112, ps: float = 0.2):
    """Round Gaussian columns (σ 0.45 Å, 3.15 Å apart, two heights) plus noise: ``integrated``
    (white CoM noise integrated, iDPC's 1/k²) or ``white``."""
    from octascope.sim.imaging import integrate_gradient

    yy, xx = np.mgrid[:size, :size].astype(float)
    rng = np.random.default_rng(seed)
    xy = np.array([(x, y) for x in np.arange(4, size * ps - 4, 3.15) for y in np.arange(4, size * ps - 4, 3.15)])
    xy = xy + np.random.default_rng(99).uniform(-0.3, 0.3, xy.shape)  # fixed, not on the pixel grid
    amp = np.where(np.arange(len(xy)) % 2 == 0, 1.0, 0.5)
    img = np.zeros((size, size))
    for (x, y), a in zip(xy / ps, amp):
        img += a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * (0.45 / ps) ** 2))
    if noise == "integrated":
        img = img + integrate_gradient(rng.normal(0, 0.6, img.shape), rng.normal(0, 0.6, img.shape), ps)
    else:
        img = img + rng.normal(0, 0.08, img.shape)
    return img, xy


@pytest.mark.parametrize("noise", ["integrated", "white"])
def test_locator_position_errors_are_calibrated(noise):
    """Over noise draws the position errors divided by the reported 1σ have an sd within 0.85-1.15
    (the calibration target; ≈ 700 z-scores, sampling error of the sd ≈ 3 %), and
    the noise model the locator chooses is the one the noise has."""
    from octascope.core.model import Image
    from octascope_plugins.locate.gaussian import GaussianLocator

    loc = GaussianLocator(device="cpu")
    z = []
    for seed in range(12):
        img, xy = _lattice_image(noise, seed)
        cols = loc.refine(Image(img.astype(np.float32), pixel_size_A=0.2), xy[:, 0] / 0.2, xy[:, 1] / 0.2)
        assert cols.attrs["noise_model"] == ("spectrum" if noise == "integrated" else "white")
        err = cols[["x_A", "y_A"]].to_numpy() - xy
        z.append((err / cols[["x_err_A", "y_err_A"]].to_numpy())[cols["fit_ok"].to_numpy()].ravel())
    z = np.concatenate(z)
    assert 0.85 < np.std(z) < 1.15, np.std(z)
    assert 0.62 < np.mean(np.abs(z) < 1) < 0.74


def test_locator_reports_neighbour_covariances():
    """The pair table names neighbouring columns by column_id; its correlations are small but
    defined, and the x-y correlation of each column is in [-1, 1]."""
    from octascope.analysis.uncertainty import pop_position_covariance
    from octascope.core.model import Image
    from octascope_plugins.locate.gaussian import GaussianLocator

    img, xy = _lattice_image("integrated", 0)
    cols = GaussianLocator(device="cpu", covariance_radius_A=3.5).refine(Image(img.astype(np.float32), pixel_size_A=0.2),
                                                                         xy[:, 0] / 0.2, xy[:, 1] / 0.2)
    pairs = pop_position_covariance(cols)
    assert pairs is not None and len(pairs) > 0
    assert "position_covariance" not in cols.attrs
    assert set(pairs.a) | set(pairs.b) <= set(cols["column_id"])
    d = np.hypot(*(cols.set_index("column_id").loc[pairs.a, ["x_A", "y_A"]].to_numpy()
                   - cols.set_index("column_id").loc[pairs.b, ["x_A", "y_A"]].to_numpy()).T)
    assert d.max() < 3.5
    ex = cols.set_index("column_id")["x_err_A"]
    corr = pairs.cov[:, 0, 0] / (ex.loc[pairs.a].to_numpy() * ex.loc[pairs.b].to_numpy())
    assert np.all(np.abs(corr) < 0.5)
    assert np.all(np.abs(cols["xy_corr"].dropna()) <= 1)


def test_large_patches_by_fft_equal_the_direct_sum(monkeypatch):
    """The FFT path (patches of many pixels) gives the direct sum's covariances."""
    import octascope.analysis.noise_covariance as nc

    rng = np.random.default_rng(3)
    shape = (96, 96)
    infl = rng.normal(size=(3, 2, 2, len(OFFSETS)))
    centres = np.array([[30, 30], [36, 33], [31, 41]])
    pairs = np.array([[0, 1], [0, 2], [1, 2]])
    acov = autocovariance(channel_spectra(_spectrum(shape), shape, ("dx", "dy")))
    own, pair = estimator_covariance(infl, OFFSETS, centres, pairs, acov)
    monkeypatch.setattr(nc, "DIRECT_MAX_PIXELS", 0)
    own_f, pair_f = estimator_covariance(infl, OFFSETS, centres, pairs, acov)
    np.testing.assert_allclose(own_f, own, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pair_f, pair, rtol=1e-9, atol=1e-12)
