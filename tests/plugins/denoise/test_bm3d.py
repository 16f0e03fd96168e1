"""BM3D denoiser: lowers the error against a known clean image, estimates sigma, bad input."""

import numpy as np
import pytest

import octascope
from octascope.core.errors import PluginParameterError
from octascope.input.synthetic import make_synthetic


@pytest.fixture(scope="module")
def noisy():
    # 3x3 cells at 0.25 Å/px: ~ 80x80 px, Poisson noise at 300 e/Å²
    return make_synthetic(n_cells=(3, 3), pixel_size_A=0.25, dose_e_per_A2=300.0, seed=1)


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


def test_bm3d_lowers_error_and_keeps_calibration(noisy):
    image, truth = noisy
    original = image.data.copy()
    out = octascope.get_registry().create("denoiser", "bm3d").denoise(image)
    assert out.shape == image.shape and out.pixel_size_A == image.pixel_size_A
    assert out.data.dtype == np.float32
    before, after = rmse(image.data, truth.clean), rmse(out.data, truth.clean)
    assert after < 0.6 * before, (before, after)
    # the estimated sigma is recorded and is near the true noise level (Poisson: within a factor 2)
    sigma = out.metadata["denoiser"]["sigma"]
    assert out.metadata["denoiser"]["sigma_estimated"] is True
    assert 0.5 * before < sigma < 1.5 * before
    assert np.array_equal(image.data, original)  # input untouched


def test_bm3d_sigma_matters(noisy):
    image, truth = noisy
    reg = octascope.get_registry()
    tiny = reg.create("denoiser", "bm3d", sigma=1e-4).denoise(image)
    # a negligible sigma leaves the noise in: error stays close to the raw error
    assert rmse(tiny.data, truth.clean) > 0.9 * rmse(image.data, truth.clean)


def test_bm3d_removes_known_white_noise():
    """A flat image plus white Gaussian noise of known σ: BM3D at that σ must leave < σ/4 of error,
    and the estimated σ must be within 10 % of the true one (both fail for an identity or a weak filter)."""
    from octascope.core.model import Image

    sigma = 0.05
    rng = np.random.default_rng(0)
    clean = np.full((64, 64), 0.5)
    clean[:, 32:] = 0.8  # one edge, so "keep the mean" alone does not pass
    image = Image(data=(clean + rng.normal(0.0, sigma, clean.shape)).astype(np.float32), pixel_size_A=0.2)
    noise_rms = rmse(image.data, clean)
    assert noise_rms == pytest.approx(sigma, rel=0.05)
    reg = octascope.get_registry()
    given = reg.create("denoiser", "bm3d", sigma=sigma).denoise(image)
    assert rmse(given.data, clean) < noise_rms / 4, rmse(given.data, clean)
    estimated = reg.create("denoiser", "bm3d").denoise(image)
    assert estimated.metadata["denoiser"]["sigma"] == pytest.approx(sigma, rel=0.1)
    assert rmse(estimated.data, clean) < noise_rms / 4


def test_bm3d_bad_parameters():
    reg = octascope.get_registry()
    with pytest.raises(PluginParameterError, match="sigma"):
        reg.create("denoiser", "bm3d", sigma=-1.0)
    with pytest.raises(PluginParameterError, match="profile"):
        reg.create("denoiser", "bm3d", profile="fancy")
    with pytest.raises(PluginParameterError, match="threads"):
        reg.create("denoiser", "bm3d", threads=-1)


def test_bm3d_profile_carries_the_threads():
    from octascope_plugins.denoise.bm3d import bm3d_profile

    for name in ("np", "refilter", "vn", "high", "deb"):
        assert bm3d_profile(name, 1).num_threads == 1
    assert type(bm3d_profile("refilter", 0)).__name__ == "BM3DProfileRefilter"
