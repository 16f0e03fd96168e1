"""BM3D denoiser: lowers the error against a known clean image, estimates sigma, bad input."""

import numpy as np
import pytest

import octascope
from octascope.errors import PluginError
from octascope.synthetic import make_synthetic


@pytest.fixture(scope="module")
def noisy():
    # 3x3 cells at 0.25 Å/px: ~ 80x80 px, Poisson noise at 300 e/Å²
    return make_synthetic(n_cells=(3, 3), pixel_size_A=0.25, dose_e_per_A2=300.0, seed=1)


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


def test_bm3d_lowers_error_and_keeps_calibration(noisy):
    image, truth = noisy
    out = octascope.get_registry().create("denoiser", "bm3d").denoise(image)
    assert out.shape == image.shape and out.pixel_size_A == image.pixel_size_A
    assert out.data.dtype == np.float32
    before, after = rmse(image.data, truth.clean), rmse(out.data, truth.clean)
    assert after < 0.6 * before, (before, after)
    # the estimated sigma is recorded and is near the true noise level (Poisson: within a factor 2)
    sigma = out.metadata["denoiser"]["sigma"]
    assert out.metadata["denoiser"]["sigma_estimated"] is True
    assert 0.5 * before < sigma < 1.5 * before
    assert np.array_equal(image.data, noisy[0].data)  # input untouched


def test_bm3d_sigma_matters(noisy):
    image, truth = noisy
    reg = octascope.get_registry()
    tiny = reg.create("denoiser", "bm3d", sigma=1e-4).denoise(image)
    # a negligible sigma leaves the noise in: error stays close to the raw error
    assert rmse(tiny.data, truth.clean) > 0.9 * rmse(image.data, truth.clean)


def test_bm3d_bad_parameters():
    reg = octascope.get_registry()
    with pytest.raises(PluginError, match="sigma"):
        reg.create("denoiser", "bm3d", sigma=-1.0)
    with pytest.raises(PluginError, match="profile"):
        reg.create("denoiser", "bm3d", profile="fancy")
