"""Noise spectrum estimated from the image: white (HAADF) and integrated 1/k (iDPC) noise, used by bm3d/s2sred/dip."""

from __future__ import annotations

import numpy as np
import pytest

from octascope.core.errors import PluginError
from octascope.core.model import Image
from octascope_plugins.denoise._common import estimate_noise_psd, estimate_noise_rms

N = 256


def integrated_noise(rng, n=N, sigma_grad=1.0):
    """iCoM-like noise: white noise on both gradient components, integrated in Fourier space (PSD ∝ 1/k²)."""
    gx, gy = rng.normal(0, sigma_grad, (2, n, n))
    k = np.fft.fftfreq(n)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    k2 = kx**2 + ky**2
    k2[0, 0] = 1.0
    f = (np.fft.fft2(gx) * -1j * kx + np.fft.fft2(gy) * -1j * ky) / (2 * np.pi * k2)
    f[0, 0] = 0.0
    out = np.real(np.fft.ifft2(f))
    return out - out.mean()


def lattice(n=N, spacing_px=16.0, sigma_px=2.0, amp=1.0):
    y, x = np.mgrid[0:n, 0:n].astype(float)
    img = np.zeros((n, n))
    for cy in np.arange(spacing_px / 2, n, spacing_px):
        for cx in np.arange(spacing_px / 2, n, spacing_px):
            img += amp * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma_px**2))
    return img


def test_white_noise_is_white_with_the_right_sigma():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.1, (N, N))
    psd, info = estimate_noise_psd(noise)
    # the 1/k² part is negligible where it matters: at k = 0.1 it is below 5 % of the white part
    assert info["a"] / 0.1**2 < 0.05 * info["b"]
    assert info["sigma_total"] == pytest.approx(0.1, rel=0.05)
    assert psd.shape == noise.shape


@pytest.mark.parametrize("with_signal", [False, True])
def test_integrated_noise_total_sigma_is_recovered(with_signal):
    rng = np.random.default_rng(1)
    noise = integrated_noise(rng)
    noise *= 0.05 / noise.std()
    data = noise + (lattice(amp=0.2) if with_signal else 0.0)
    _, info = estimate_noise_psd(data)
    assert info["sigma_total"] == pytest.approx(noise.std(), rel=0.12)
    # the finest-band (white-noise) estimate sees only a fraction of such noise: why a model is needed
    assert estimate_noise_rms(noise) < 0.6 * noise.std()


@pytest.mark.slow
def test_bm3d_fitted_noise_model_beats_white_on_integrated_noise():
    from octascope.core.registry import get_registry

    rng = np.random.default_rng(2)
    clean = lattice(n=128, amp=0.3)
    noise = integrated_noise(rng, n=128)
    noise *= 0.06 / noise.std()
    image = Image(data=(clean + noise).astype(np.float32), pixel_size_A=0.2)
    reg = get_registry(load_entrypoints=False)
    white = reg.create("denoiser", "bm3d").denoise(image)
    fitted = reg.create("denoiser", "bm3d", noise_model="fitted").denoise(image)
    err = {k: float(np.sqrt(np.mean((v.data - clean) ** 2))) for k, v in (("white", white), ("fitted", fitted))}
    assert err["fitted"] < err["white"]
    assert fitted.metadata["denoiser"]["psd_sigma_total"] == pytest.approx(0.06, rel=0.2)
    with pytest.raises(PluginError, match="noise_model"):
        reg.create("denoiser", "bm3d", noise_model="pink")


def test_dip_and_s2sred_parameters():
    from octascope.core.registry import get_registry

    reg = get_registry(load_entrypoints=False)
    with pytest.raises(PluginError, match="noise_estimate"):
        reg.create("denoiser", "dip", noise_estimate="guess")
    assert reg.create("denoiser", "s2sred").options.red_sigma == pytest.approx(15 / 255)  # the paper's value by default
    assert reg.create("denoiser", "s2sred", red_sigma=None).options.red_sigma is None  # noise spectrum from the image
    with pytest.raises(PluginError, match="red_sigma"):
        reg.create("denoiser", "s2sred", red_sigma=0.0)


@pytest.mark.slow
def test_s2sred_records_the_fitted_red_sigma():
    from octascope.core.registry import get_registry

    rng = np.random.default_rng(3)
    data = (lattice(n=48, amp=0.5) + rng.normal(0, 0.05, (48, 48))).astype(np.float32)
    image = Image(data=data, pixel_size_A=0.2)
    den = get_registry(load_entrypoints=False).create(
        "denoiser", "s2sred", red_sigma=None, n_iterations=2, patch_px=None, encoder_width=4, decoder_width=8, n_mc_passes=2,
        red_every=1, device="cpu", progress=False, cpu_threads=1)
    out = den.denoise(image)
    used = out.metadata["denoiser"]["red_sigma_used"]
    # white noise 0.05 on an image whose [0, 1] scale is its range
    assert used == pytest.approx(0.05 / float(data.max() - data.min()), rel=0.25)
