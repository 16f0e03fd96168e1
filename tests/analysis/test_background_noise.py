"""The noise of a wide field is measured where the frame shows no lattice.

A frame of several disordered particles puts the particles' diffuse signal into every frequency
ring, so the ring-median noise estimate of the whole frame reads high and a column detector built
on it misses weak columns. The scene here: iDPC-like noise (power ∝ 1/k²) of known level, and
two particles of jittered, uneven columns covering about a third of the frame.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from octascope.analysis.noise_spectrum import (NoiseSpectrum, band_pass, estimate_noise_spectrum, false_peak_probability,
                                               gaussian_transfer, noise_spectrum_outside, peak_roughness,
                                               radial_frequency_A)
from octascope.analysis.region import background_noise_spectrum, frame_noise_spectrum
from octascope.core.model import Image

PIXEL_A = 0.168


def idpc_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power ∝ 1/(k² + k0²), scaled to standard deviation ``sigma``."""
    k = radial_frequency_A(shape, PIXEL_A)
    f = np.fft.fft2(rng.standard_normal(shape)) / np.sqrt(k**2 + 0.02**2)
    n = np.real(np.fft.ifft2(f))
    return sigma * (n - n.mean()) / n.std()


def particles(shape: tuple[int, int], centres_A, radius_A: float, rng: np.random.Generator) -> np.ndarray:
    """Square lattices (3.1 Å) of Gaussian columns (σ 0.45 Å) in disks, positions jittered by
    0.25 Å and heights by 30 %: a disordered particle's diffuse signal. The columns stand ≈ 14
    band-passed noise σ high (the benchmark field's median column: 18)."""
    h, w = shape
    img = np.zeros(shape)
    for cx, cy in centres_A:
        g = np.arange(-radius_A, radius_A + 1e-9, 3.1)
        x, y = np.meshgrid(g, g)
        inside = x**2 + y**2 <= radius_A**2
        x, y = x[inside] + cx, y[inside] + cy
        x, y = (x + rng.normal(0, 0.25, x.size)) / PIXEL_A, (y + rng.normal(0, 0.25, y.size)) / PIXEL_A
        a = 4.0 * (1 + 0.3 * rng.standard_normal(x.size))
        ix, iy = np.floor(x).astype(int), np.floor(y).astype(int)
        fx, fy = x - ix, y - iy
        for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            np.add.at(img, (iy + dy, ix + dx), a * wgt)
    k = radial_frequency_A(shape, PIXEL_A)
    return np.real(np.fft.ifft2(np.fft.fft2(img) * np.exp(-2 * np.pi**2 * 0.45**2 * k**2)))


@pytest.fixture(scope="module")
def field():
    rng = np.random.default_rng(7)
    shape = (1024, 1024)  # 172 Å
    noise = idpc_noise(shape, 0.02, rng)
    crystal = particles(shape, [(50.0, 55.0), (118.0, 112.0)], 38.0, rng)
    return crystal + noise, noise


def band_sigma(data: np.ndarray) -> tuple[float, np.ndarray]:
    filtered, transfer = band_pass(data, PIXEL_A, inner_sigma_A=0.25, outer_sigma_A=0.8)
    return float(filtered.std()), transfer


def test_noise_of_a_wide_field_is_measured_off_the_particles(field):
    """The band-passed noise σ — what the column detector's threshold is made of — within 5 % of
    the truth from the lattice-free tiles (≈ 20 tiles of 143² px: sampling error ≈ 1 %), while the
    whole-frame ring median, which the scene is built to mislead, reads over 15 % high (1.22×)."""
    data, noise = field
    true_sigma, transfer = band_sigma(noise)
    whole = estimate_noise_spectrum(data, PIXEL_A).filtered_sigma(transfer)
    background = background_noise_spectrum(data, PIXEL_A).filtered_sigma(transfer)
    assert whole > 1.15 * true_sigma
    assert background == pytest.approx(true_sigma, rel=0.05)


def test_a_particle_that_fills_the_image_keeps_the_whole_image_estimate():
    """Too few lattice-free tiles (here none): the whole image's ring median, unchanged."""
    rng = np.random.default_rng(3)
    shape = (346, 346)
    data = particles(shape, [(29.0, 29.0)], 26.0, rng) + idpc_noise(shape, 0.02, rng)
    whole = estimate_noise_spectrum(data, PIXEL_A)
    np.testing.assert_array_equal(background_noise_spectrum(data, PIXEL_A).power, whole.power)


def test_tiles_touching_the_excluded_area_are_not_used():
    """A loud signal confined to the excluded part does not reach the estimate; one tile fewer
    than ``min_tiles`` free gives no estimate."""
    rng = np.random.default_rng(5)
    shape = (512, 1024)  # tiles of 24 Å = 143 px: a centred grid of 3 × 7, the first at column 11
    noise = idpc_noise(shape, 0.02, rng)
    loud = noise.copy()
    loud[:, :256] += 5.0 * rng.standard_normal((512, 256))
    exclude = np.zeros(shape, bool)
    exclude[:, :256] = True  # tile columns 11-154 and 154-297 touch it: 3 × 5 tiles free
    _, transfer = band_sigma(noise)
    whole = estimate_noise_spectrum(noise, PIXEL_A)  # the shape below the tiles' resolution: the same for both
    est = noise_spectrum_outside(loud, PIXEL_A, exclude, min_tiles=15, whole=whole)
    ref = noise_spectrum_outside(noise, PIXEL_A, exclude, min_tiles=15, whole=whole)
    assert est is not None and ref is not None
    assert est.filtered_sigma(transfer) == pytest.approx(ref.filtered_sigma(transfer), rel=1e-9)
    assert noise_spectrum_outside(noise, PIXEL_A, exclude, min_tiles=16) is None


def test_counting_noise_keeps_the_whole_image_estimate():
    """HAADF-like counts (Poisson: the noise grows with the signal, and is white): the empty area's
    noise would understate the particles', so the whole image's estimate is kept."""
    rng = np.random.default_rng(11)
    shape = (1024, 1024)
    intensity = 0.05 + particles(shape, [(50.0, 55.0), (118.0, 112.0)], 38.0, rng) / 4.0
    counts = rng.poisson(np.clip(intensity, 0, None) * 20.0).astype(float)
    whole = estimate_noise_spectrum(counts, PIXEL_A)
    assert abs(whole.slope()) < 0.5  # white
    np.testing.assert_array_equal(background_noise_spectrum(counts, PIXEL_A).power, whole.power)
    haadf = Image(counts, PIXEL_A, signal="haadf")
    np.testing.assert_array_equal(frame_noise_spectrum(haadf).power, whole.power)


def test_idpc_images_are_measured_off_the_particles_whatever_their_noise_colour(field):
    """An image that says it is iDPC/iCoM has detector-difference noise, the same everywhere, even
    when it is white (a synthetic image): its frame noise is the lattice-free tiles'."""
    data, noise = field
    white = np.random.default_rng(2).normal(0.0, 0.02, data.shape)
    image = Image(data - noise + white, PIXEL_A, signal="idpc")
    true_sigma, transfer = band_sigma(white)
    assert frame_noise_spectrum(image).filtered_sigma(transfer) == pytest.approx(true_sigma, rel=0.05)
    assert estimate_noise_spectrum(image.data, PIXEL_A).filtered_sigma(transfer) > 1.1 * true_sigma


def test_only_a_spectrum_measured_on_empty_area_says_how_rough_the_search_noise_is(field):
    """The site candidates' test needs significances on the noise's true scale: the lattice-free
    tiles' estimate gives the candidate search's λ, the whole image's (a particle filling the
    frame, which overstates the noise near it) gives none."""
    from octascope_plugins.locate.peaks import CandidateSearch

    data, _ = field
    search = CandidateSearch()
    measured = background_noise_spectrum(data, PIXEL_A)
    assert measured.measured_on == "empty area"
    _, transfer = band_sigma(data)
    assert search.roughness(data, PIXEL_A, measured) == pytest.approx(peak_roughness(measured, transfer), rel=1e-12)
    assert 2.0 < search.roughness(data, PIXEL_A, measured) < 10.0  # between a 0.25 Å blur's 8 and the band's

    rng = np.random.default_rng(3)
    filled = particles((346, 346), [(29.0, 29.0)], 26.0, rng) + idpc_noise((346, 346), 0.02, rng)
    assert background_noise_spectrum(filled, PIXEL_A).measured_on == "whole image"
    assert np.isnan(search.roughness(filled, PIXEL_A))


@pytest.mark.parametrize("sigma_A", [0.3, 0.5])
def test_peak_roughness_of_blurred_white_noise(sigma_A):
    """White noise blurred by a Gaussian of σ has a Gaussian autocorrelation of variance 2σ²:
    λ = 1 / (2σ²) exactly."""
    white = NoiseSpectrum(k_A=np.array([0.0, 10.0]), power=np.ones(2), pixel_size_A=0.1, shape=(512, 512))
    lam = peak_roughness(white, gaussian_transfer((512, 512), 0.1, sigma_A))
    assert lam == pytest.approx(1.0 / (2.0 * sigma_A**2), rel=1e-6)


def test_false_peak_probability_matches_the_noise_maxima_in_a_disc():
    """The probability that noise alone puts a maximum of u or more within 1.1 Å of a point (the
    site tolerance), from the band-passed noise's λ, against 4,624 disjoint discs of simulated
    band-passed white noise. The Euler-characteristic formula is an upper bound close to the truth
    at these heights (measured ratios 1.24 at 2.5σ, 1.14 at 3σ): it must not fall below the
    measured frequency (a site test would then keep more noise than it says) by more than the
    sampling error (3 sd), nor exceed it by more than 35 % (it would drop real columns needlessly)."""
    rng = np.random.default_rng(1)
    shape, ps, radius_A = (1536, 1536), 0.1, 1.1
    white = NoiseSpectrum(k_A=np.array([0.0, 10.0]), power=np.ones(2), pixel_size_A=ps, shape=shape)
    filtered, transfer = band_pass(rng.standard_normal(shape), ps, inner_sigma_A=0.25, outer_sigma_A=0.8)
    z = filtered / white.filtered_sigma(transfer)
    r = radius_A / ps
    ri = int(np.ceil(r))
    yy, xx = np.mgrid[-ri:ri + 1, -ri:ri + 1]
    disc_max = ndimage.maximum_filter(z, footprint=xx**2 + yy**2 <= r * r)
    centres = np.arange(20, shape[0] - 20, 22)  # 2.2 Å apart: disjoint discs
    maxima = disc_max[np.ix_(centres, centres)].ravel()
    lam = peak_roughness(white, transfer)
    for u in (2.5, 3.0, 3.5):
        measured = float((maxima >= u).mean())
        sd = np.sqrt(measured * (1 - measured) / maxima.size)
        predicted = float(false_peak_probability(u, lam, radius_A))
        assert measured - 3 * sd <= predicted <= 1.35 * (measured + 3 * sd), (u, measured, predicted)
