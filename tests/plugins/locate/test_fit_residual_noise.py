"""The noise of an image a particle fills, measured on what the fitted columns leave.

A particle filling the image leaves no empty area to measure the noise on, and the whole image's
ring median counts the particle's disordered, non-periodic signal as noise. The scene: a square
particle of jittered, uneven columns (the diffuse signal of a real one) filling the frame, plus
iDPC-like noise of known level (power ∝ 1/k²).
"""

from __future__ import annotations

import numpy as np
import pytest

from octascope.analysis.noise_spectrum import band_pass, estimate_noise_spectrum, radial_frequency_A
from octascope.core.model import Image, make_columns
from octascope_plugins.locate.gaussian import GaussianLocator
from octascope_plugins.locate.residual import fit_residual_noise, render_columns

PIXEL_A = 0.2


def test_render_columns_draws_each_fitted_gaussian():
    """An elliptical Gaussian (σ 0.5 / 0.3 Å, major axis at 30°) drawn where the table puts it;
    failed fits (NaN shape) are not drawn."""
    cols = make_columns([20.3, 40.0], [25.6, 40.0], PIXEL_A, amplitude=[2.0, 5.0], sigma_major_A=[0.5, np.nan],
                        sigma_minor_A=[0.3, np.nan], rotation_deg=[30.0, np.nan])
    img = render_columns(cols, (60, 70), PIXEL_A, radius_A=2.4)
    yy, xx = np.mgrid[0:60, 0:70]
    dx, dy = xx - 20.3, yy - 25.6
    c, s = np.cos(np.radians(30.0)), np.sin(np.radians(30.0))
    u, v = (dx * c + dy * s) * PIXEL_A, (-dx * s + dy * c) * PIXEL_A
    expected = 2.0 * np.exp(-0.5 * ((u / 0.5) ** 2 + (v / 0.3) ** 2)) * ((xx - 20) ** 2 + (yy - 26) ** 2 <= 12**2)
    np.testing.assert_allclose(img, expected, atol=1e-12)


def _filling_particle(seed: int = 4, noise_sigma: float = 0.02):
    rng = np.random.default_rng(seed)
    shape = (346, 346)
    g = np.arange(6.0, 64.0, 3.1)
    x, y = np.meshgrid(g, g)
    x, y = x.ravel() + rng.normal(0, 0.2, x.size), y.ravel() + rng.normal(0, 0.2, x.size)
    amp = 0.3 * (1 + 0.3 * rng.standard_normal(x.size))
    crystal = render_columns(make_columns(x / PIXEL_A, y / PIXEL_A, PIXEL_A, amplitude=amp,
                                          sigma_major_A=np.full(x.size, 0.45), sigma_minor_A=np.full(x.size, 0.45),
                                          rotation_deg=np.zeros(x.size)), shape, PIXEL_A, radius_A=2.4)
    k = radial_frequency_A(shape, PIXEL_A)
    n = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal(shape)) / np.sqrt(k**2 + 0.02**2)))
    noise = noise_sigma * (n - n.mean()) / n.std()
    return crystal + noise, noise


def test_the_residual_of_the_fit_has_the_noise_the_image_was_given():
    """The band-passed noise σ (what the candidate threshold is made of) from the fit's residual
    within 10 % of the noise added (the fit also absorbs a little noise, and misses a little
    signal); the whole image's estimate reads it more than 10 % high."""
    data, noise = _filling_particle()
    _, transfer = band_pass(noise, PIXEL_A, inner_sigma_A=0.25, outer_sigma_A=0.8)
    true = band_pass(noise, PIXEL_A, inner_sigma_A=0.25, outer_sigma_A=0.8)[0].std()
    cols = GaussianLocator(device="cpu").locate(Image(data, PIXEL_A, signal="idpc"))
    residual = fit_residual_noise(data, cols, PIXEL_A, radius_A=2.4)
    assert residual.measured_on == "fit residual"
    assert residual.filtered_sigma(transfer) == pytest.approx(true, rel=0.10)
    assert estimate_noise_spectrum(data, PIXEL_A).filtered_sigma(transfer) > 1.10 * true


def test_noise_from_fit_searches_again_under_the_residual_noise():
    """With ``noise_from_fit`` the candidates' significances are on the residual noise's scale (the
    same peaks stand higher by the ratio of the two noise estimates) and the table says how rough
    that noise is; by default the whole image's estimate stands (no roughness: no site test)."""
    from octascope.analysis.noise_spectrum import PEAK_ROUGHNESS_ATTR

    data, _ = _filling_particle()
    image = Image(data, PIXEL_A, signal="idpc")
    plain = GaussianLocator(device="cpu").locate(image)
    again = GaussianLocator(device="cpu", noise_from_fit=True).locate(image)
    assert np.isnan(plain.attrs[PEAK_ROUGHNESS_ATTR]) and again.attrs[PEAK_ROUGHNESS_ATTR] > 0
    _, transfer = band_pass(data, PIXEL_A, inner_sigma_A=0.25, outer_sigma_A=0.8)
    ratio = (estimate_noise_spectrum(data, PIXEL_A).filtered_sigma(transfer)
             / fit_residual_noise(data, plain, PIXEL_A, radius_A=2.4).filtered_sigma(transfer))
    assert ratio > 1.1
    strongest = lambda t: np.sort(t.significance.to_numpy())[-50:]  # noqa: E731
    np.testing.assert_allclose(strongest(again) / strongest(plain), ratio, rtol=0.02)
