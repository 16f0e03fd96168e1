"""Helpers shared by the denoisers: intensity normalisation and noise estimation."""

from __future__ import annotations

from typing import Any

import numpy as np

from octascope.errors import InputError
from octascope.model import Image


def check_finite(data: np.ndarray, who: str) -> None:
    """Raise :class:`InputError` when ``data`` holds NaN or Inf pixels."""
    if not np.all(np.isfinite(data)):
        n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise InputError(
            f"{who}: image has {n_bad} NaN/Inf pixels; replace them (numpy.nan_to_num or inpainting) before denoising"
        )


def normalise(data: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Map an image linearly onto [0, 1].

    Returns
    -------
    scaled : numpy.ndarray
        ``(data - offset) / scale`` as float64.
    offset, scale : float
        The minimum and the range of ``data`` [image units]; ``scale`` is 1 for a flat image.
    """
    data = np.asarray(data, dtype=np.float64)
    lo, hi = float(data.min()), float(data.max())
    scale = hi - lo if hi > lo else 1.0
    return (data - lo) / scale, lo, scale


def estimate_noise_sigma(data: np.ndarray) -> float:
    """Standard deviation of additive white noise, estimated from the image itself.

    Uses the robust median absolute deviation of the finest diagonal wavelet band
    (Donoho & Johnstone), as implemented by :func:`skimage.restoration.estimate_sigma`.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image [image units].

    Returns
    -------
    float
        Noise standard deviation [image units].
    """
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(np.asarray(data, dtype=np.float64)))


def finish(image: Image, denoised: np.ndarray, settings: dict[str, Any], variance: np.ndarray | None = None) -> Image:
    """The denoised copy of ``image``: same calibration, settings recorded in ``metadata['denoiser']``."""
    return image.replace(
        data=np.asarray(denoised, dtype=np.float32),
        variance=None if variance is None else np.asarray(variance, dtype=np.float32),
        metadata={**image.metadata, "denoiser": settings},
    )


def check_training_params(who: str, *, n_iterations: int, learning_rate: float, device: str) -> None:
    """Validate the parameters every single-image network denoiser shares (no torch import)."""
    from octascope.errors import PluginError
    from octascope.torch_runtime import check_device_name

    if int(n_iterations) < 0:
        raise PluginError(f"{who} n_iterations must be >= 0, got {n_iterations}")
    if not learning_rate > 0:
        raise PluginError(f"{who} learning_rate must be > 0, got {learning_rate}")
    check_device_name(device, who)


def estimate_noise_rms(data: np.ndarray) -> float:
    """Root-mean-square noise level from the finest diagonal Haar band.

    ``d = (a - b - c + e) / 2`` over non-overlapping 2x2 blocks has the variance of white
    noise and hardly any signal for images sampled finer than their features, so
    ``sqrt(mean(d²))`` estimates the mean noise variance even when it varies across the
    image (Poisson noise), where the median-based :func:`estimate_noise_sigma` reports the
    noise of the typical (dim) pixel instead.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image [image units], at least 2x2.

    Returns
    -------
    float
        RMS noise [image units].
    """
    y = np.asarray(data, dtype=np.float64)
    h, w = (y.shape[0] // 2) * 2, (y.shape[1] // 2) * 2
    y = y[:h, :w]
    d = (y[0::2, 0::2] - y[0::2, 1::2] - y[1::2, 0::2] + y[1::2, 1::2]) / 2
    return float(np.sqrt(np.mean(d**2)))
