"""Helpers shared by the denoisers: intensity normalisation and noise estimation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from octascope.core.errors import InputError
from octascope.core.model import Image
from octascope.core.params import Options, param, require
from octascope.analysis.noise_spectrum import estimate_noise_spectrum
from octascope.core.devices import DEVICES


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
    # lazy: skimage.restoration (~0.4 s to import), only when the noise is estimated
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(np.asarray(data, dtype=np.float64)))


def finish(image: Image, denoised: np.ndarray, settings: dict[str, Any], variance: np.ndarray | None = None) -> Image:
    """The denoised copy of ``image``: same calibration, settings recorded in ``metadata['denoiser']``."""
    return image.replace(
        data=np.asarray(denoised, dtype=np.float32),
        variance=None if variance is None else np.asarray(variance, dtype=np.float32),
        metadata={**image.metadata, "denoiser": settings},
    )


@dataclass(frozen=True, kw_only=True)
class TrainingOptions(Options):
    """Parameters every single-image network denoiser (``dip``, ``s2sred``) shares: the run, not the method."""

    n_iterations: int = param(300, doc="most training iterations (network steps)")
    learning_rate: float = param(1e-3, doc="Adam learning rate")
    cpu_work_budget: float | None = param(
        None, unit="Mpx·iterations",
        doc="on the CPU, at most this many megapixel-iterations (pixels one iteration trains on x iterations): "
            "n_iterations is cut to budget / pixels per iteration; null = no cap; ignored on CUDA")
    seed: int = param(0, doc="seed of everything random: same seed, same output on the CPU")
    device: str = param("auto", doc="auto (CUDA when present), cpu, cuda or cuda:N; CUDA absent -> CPU with a warning")
    amp: bool = param(True, doc="mixed precision on CUDA (bfloat16 where supported, else float16); ignored on the CPU")
    cpu_threads: int | None = param(
        None, doc="torch CPU threads during the call; null = the free cores, max(1, round(cpu_count - 1-min load "
            "average)); 0 = torch's own setting")
    progress: bool = param(True, doc="show a progress bar with the loss")
    checkpoint_path: str | None = param(
        None, doc="file the training state is saved to every checkpoint_every iterations; resumed when it matches")
    checkpoint_every: int = param(100, doc="checkpoint interval [iterations]")

    def check(self) -> None:
        require(self.n_iterations >= 0, f"n_iterations must be >= 0, got {self.n_iterations}")
        require(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        require(self.cpu_work_budget is None or self.cpu_work_budget > 0,
                f"cpu_work_budget must be > 0 (Mpx·iterations) or null, got {self.cpu_work_budget}")
        require(self.device in DEVICES or self.device.startswith("cuda:"),
                f"device '{self.device}' is unknown; use auto, cpu, cuda or cuda:N")
        require(self.cpu_threads is None or self.cpu_threads >= 0, f"cpu_threads must be >= 0 or null, got {self.cpu_threads}")
        require(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")

    def iterations_for(self, pixels_per_iteration: int, on_cpu: bool) -> int:
        """Iterations to run: ``n_iterations``, cut on the CPU to ``cpu_work_budget`` / pixels per iteration.

        The cost of a training iteration is proportional to the pixels it trains on, so a fixed
        budget in megapixel-iterations is a (nearly) fixed CPU time whatever the image size:
        a larger image gets fewer iterations. At least one iteration runs when n_iterations > 0.
        """
        n = self.n_iterations
        if on_cpu and self.cpu_work_budget is not None and n > 0:
            n = min(n, max(1, int(self.cpu_work_budget * 1e6 // max(1, pixels_per_iteration))))
        return n


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


def estimate_noise_psd(data: np.ndarray, *, k_fit: tuple[float, float] = (0.3, 0.7),
                       white_ratio: float = 1.3) -> tuple[np.ndarray, dict[str, float]]:
    """Noise power spectrum of the image, modelled as ``a / k² + b`` (integrated plus white noise).

    iDPC and iCoM images are integrals of a measured gradient: their shot noise has a power
    spectrum ∝ 1/k² (amplitude ∝ 1/k), most of its power at low and middle spatial
    frequencies; HAADF and ABF noise is white (``a = 0``). The ring medians are those of
    :func:`octascope.analysis.noise_spectrum.estimate_noise_spectrum` (one estimator of the noise power for
    the platform and the denoisers; rings one FFT sample wide, unsmoothed, of the image's periodic
    component). Above ``k_fit[0]`` [cycles/px] the
    signal of atomic columns (σ ≳ 1.5 px) has died out, so the median power of each ring there is
    noise; ``a`` and ``b`` are fitted to those rings by least squares (relative errors) and the
    model is extended to all frequencies.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image [image units].
    k_fit : tuple of float
        Ring range used for the fit [cycles/px]; rings above Nyquist along an axis (0.5) are
        the corners of the spectrum and still count.
    white_ratio : float
        The 1/k² term is fitted only when the mean power of the lowest third of the rings is at
        least this factor above that of the highest third [1]; otherwise the noise is white. For
        1/k² noise the ratio is ≈ 2.4 over the default band (plus white noise: less), for white
        noise 1 within a few per cent on images of 64² px and more.

    Returns
    -------
    psd : numpy.ndarray
        Noise power ``E|FFT(noise)|²`` per frequency, unnormalised ``numpy.fft.fft2`` order and
        units (the ``sigma_psd`` convention of the ``bm3d`` package; white noise of standard
        deviation σ has ``psd = σ² · H · W``); the k = 0 entry repeats the lowest ring's value.
    info : dict
        ``a`` [power · (cycles/px)²], ``b`` [power], ``sigma_total`` (RMS noise of the model
        over all non-zero frequencies [image units]) and ``sigma_white`` (RMS of the white part
        ``b`` alone [image units]).
    """

    y = np.asarray(data, dtype=np.float64)
    h, w = y.shape
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.fftfreq(w)[None, :]
    k = np.sqrt(ky**2 + kx**2)
    step = 1.0 / min(h, w)
    # ring medians / ln 2 of the platform's estimate (periodic component, rings one sample wide, no
    # smoothing), in cycles/px (pixel size 1) and unnormalised FFT units (x H·W)
    rings = estimate_noise_spectrum(y, 1.0, ring_width_samples=1.0, smooth_rings=1)
    sel = (rings.k_A >= k_fit[0]) & (rings.k_A <= k_fit[1])
    centres_a, medians_a = rings.k_A[sel], rings.power[sel] * (h * w)
    third = max(1, len(centres_a) // 3)
    if len(centres_a) < 3 or not np.all(np.isfinite(medians_a)) or medians_a.max() <= 0:
        power = np.abs(np.fft.fft2(y - y.mean())) ** 2
        a, b = 0.0, float(max(np.mean(power[k > 0]), 0.0))
    elif np.mean(medians_a[:third]) < white_ratio * np.mean(medians_a[-third:]):
        # flat across the band: white noise (a free 1/k² term would only fit the scatter of the
        # ring medians, and its extrapolation to low k would inflate the total noise)
        a, b = 0.0, float(np.mean(medians_a))
    else:
        design = np.column_stack([1.0 / centres_a**2, np.ones_like(centres_a)]) / medians_a[:, None]
        (a, b), *_ = np.linalg.lstsq(design, np.ones_like(centres_a), rcond=None)
        if a < 0:  # white: refit b alone
            a, b = 0.0, float(np.mean(medians_a))
        elif b < 0:  # pure 1/k²
            a, b = float(np.sum(medians_a / centres_a**2) / np.sum(1.0 / centres_a**4)), 0.0
    k_safe = np.where(k > 0, k, 1.0)
    psd = a / k_safe**2 + b
    psd[0, 0] = a / max(step, 1e-12) ** 2 + b
    n = h * w
    total = float(np.sum(psd) - psd[0, 0]) / n**2
    return psd, {"a": float(a), "b": float(b), "sigma_total": float(np.sqrt(max(total, 0.0))),
                 "sigma_white": float(np.sqrt(max(b, 0.0) / n))}


def bm3d_compat() -> None:
    """Let the ``bm3d`` package's correlated-noise path run on NumPy 2.

    ``bm3d`` hands a PSD to ``bm4d``, whose ``trapz2d`` calls ``numpy.trapz``, removed in NumPy
    2.0 (renamed ``numpy.trapezoid``, same function). Restore the old name when it is missing;
    nothing else in NumPy changes.
    """
    if not hasattr(np, "trapz") and hasattr(np, "trapezoid"):
        np.trapz = np.trapezoid  # type: ignore[attr-defined]
