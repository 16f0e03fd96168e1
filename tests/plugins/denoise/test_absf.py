"""ABSF: background subtraction lowers the error; band stop removes an injected scan-line frequency."""

import numpy as np
import pytest

import octascope
from octascope.core.errors import PluginError
from octascope.input.synthetic import make_synthetic

F0_PER_A = 0.2  # injected scan-line frequency along y [1/Å], inside the paper's 0.18-0.24 band


@pytest.fixture(scope="module")
def base():
    return make_synthetic(n_cells=(4, 4), pixel_size_A=0.25, dose_e_per_A2=300.0, seed=1)


@pytest.fixture(scope="module")
def striped(base):
    image, truth = base
    y_A = np.arange(image.shape[0]) * image.pixel_size_A
    lines = 0.05 * np.sin(2 * np.pi * F0_PER_A * y_A)[:, None] * np.ones((1, image.shape[1]))
    return image.replace(data=image.data + lines), truth


def amplitude_at(data, pixel_size_A, kx, ky):
    """|FFT| at the grid point nearest (kx, ky) [1/Å]."""
    ny, nx = data.shape
    F = np.abs(np.fft.fft2(data))
    return F[int(round(ky * ny * pixel_size_A)) % ny, int(round(kx * nx * pixel_size_A)) % nx]


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


def test_band_stop_removes_injected_scan_frequency(striped):
    image, truth = striped
    absf = octascope.get_registry().create("denoiser", "absf", background_subtraction=False)
    out = absf.denoise(image)
    notches = np.asarray(out.metadata["denoiser"]["notches_per_A"])
    assert notches.shape == (1, 2)
    # found within one Fourier pixel of the injected frequency
    df = 1.0 / (image.shape[0] * image.pixel_size_A)
    assert abs(notches[0, 0]) < df / 2 and abs(notches[0, 1] - F0_PER_A) < df
    ps = image.pixel_size_A
    before = amplitude_at(image.data, ps, 0.0, F0_PER_A)
    after = amplitude_at(out.data, ps, 0.0, F0_PER_A)
    assert after < 1e-3 * before
    # the Pb-Pb lattice reflection (1/a along x) is kept within 2 %
    a = 6.25
    lat_before = amplitude_at(image.data, ps, 1 / a, 0.0)
    assert amplitude_at(out.data, ps, 1 / a, 0.0) == pytest.approx(lat_before, rel=0.02)
    # and the stripes are gone: the error against the clean image drops
    assert rmse(out.data, truth.clean) < 0.95 * rmse(image.data, truth.clean)


def test_lattice_reflections_are_not_taken_for_scan_noise(base):
    image, _ = base
    # widen the search band over the 1/a and sqrt(2)/a lattice reflections
    out = octascope.get_registry().create("denoiser", "absf", search_band_per_A=(0.1, 0.4)).denoise(image)
    assert out.metadata["denoiser"]["notches_per_A"] == []


def test_background_subtraction_lowers_error(base):
    image, truth = base
    out = octascope.get_registry().create("denoiser", "absf", band_stop=False).denoise(image)
    assert rmse(out.data, truth.clean) < 0.85 * rmse(image.data, truth.clean)
    assert out.data.mean() == pytest.approx(image.data.mean(), rel=1e-4)  # mean level kept
    assert out.metadata["denoiser"]["cycles_run"] <= 20


def test_explicit_frequencies_go_through_the_pixel_size(striped):
    image, _ = striped
    reg = octascope.get_registry()
    a = reg.create("denoiser", "absf", background_subtraction=False, stop_frequencies_per_A=[[0.0, F0_PER_A]]).denoise(image)
    # same pixels, twice the pixel size: the same stripes are at half the spatial frequency
    coarse = image.replace(pixel_size_A=2 * image.pixel_size_A)
    b = reg.create("denoiser", "absf", background_subtraction=False, stop_frequencies_per_A=[[0.0, F0_PER_A / 2]]).denoise(coarse)
    np.testing.assert_allclose(a.data, b.data, atol=1e-6)
    wrong = reg.create("denoiser", "absf", background_subtraction=False, stop_frequencies_per_A=[[0.0, F0_PER_A]]).denoise(coarse)
    assert amplitude_at(wrong.data, image.pixel_size_A, 0.0, F0_PER_A) > 0.5 * amplitude_at(image.data, image.pixel_size_A, 0.0, F0_PER_A)


def test_absf_bad_parameters():
    reg = octascope.get_registry()
    with pytest.raises(PluginError, match="search_band_per_A"):
        reg.create("denoiser", "absf", search_band_per_A=(0.3, 0.2))
    with pytest.raises(PluginError, match="step_px"):
        reg.create("denoiser", "absf", step_px=1)
