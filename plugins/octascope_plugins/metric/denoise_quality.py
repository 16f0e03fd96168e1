"""Denoising quality against the clean image: PSNR, SSIM, and the downstream effect."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from octascope.errors import InputError, PluginError
from octascope.model import MetricOutput, Result, Truth

#: accuracy-metric scalars repeated under ``denoise_`` names (the downstream effect of denoising)
DOWNSTREAM = ("rmse_pm_all", "rmse_pm_Pb", "rmse_pm_X", "rmse_pm_Cs", "detection_f1",
              "theta1_mae_deg", "theta2_mae_deg", "theta3_mae_deg", "L1_mae_pm", "L2_mae_pm")


class DenoiseQualityMetric:
    """PSNR and SSIM of the denoised (and, for reference, the raw) image against ``truth.clean``.

    PSNR = 10·log10(R² / MSE) [dB] and SSIM (:func:`skimage.metrics.structural_similarity`,
    7x7 window) use the data range R of the clean image (max − min) unless ``data_range`` is
    given, so raw and denoised images are scored on the same scale. When the denoiser returned
    a per-pixel variance (S2SRED's Monte Carlo variance), the fraction of pixels whose error lies
    within two standard deviations tells whether that uncertainty is calibrated (≈0.95 if
    Gaussian and calibrated). Downstream effect: the accuracy metric's position RMSE and tilt
    errors, when it ran earlier in the same analysis, are repeated as ``denoise_<name>``.
    Without truth or without a clean image the output is empty.

    Parameters
    ----------
    data_range : float, optional
        Intensity range R for PSNR/SSIM [image units]; ``None`` uses the clean image's range.
    """

    name: ClassVar[str] = "denoise-quality"

    def __init__(self, *, data_range: float | None = None):
        if data_range is not None and not data_range > 0:
            raise PluginError(f"denoise-quality data_range must be > 0 (image units) or null, got {data_range}")
        self.data_range = data_range

    def compute(self, result: Result, truth: Truth | None) -> MetricOutput:
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity

        if truth is None or truth.clean is None:
            return MetricOutput()
        clean = np.asarray(truth.clean, dtype=np.float64)
        raw = np.asarray(result.image.data, dtype=np.float64)
        den_image = result.denoised if result.denoised is not None else result.image
        den = np.asarray(den_image.data, dtype=np.float64)
        if clean.shape != raw.shape:
            raise InputError(f"truth.clean has shape {clean.shape} but the image {raw.shape}; give the clean image on the same pixel grid")
        rng = float(self.data_range) if self.data_range is not None else float(clean.max() - clean.min())
        rng = rng if rng > 0 else 1.0
        s: dict[str, float] = {"denoise_data_range": rng}
        for label, img in (("raw", raw), ("denoise", den)):
            s[f"{label}_psnr_db"] = float(peak_signal_noise_ratio(clean, img, data_range=rng))
            s[f"{label}_ssim"] = float(structural_similarity(clean, img, data_range=rng))
            s[f"{label}_rmse"] = float(np.sqrt(np.mean((img - clean) ** 2)))
        s["denoise_psnr_gain_db"] = s["denoise_psnr_db"] - s["raw_psnr_db"]
        if den_image.variance is not None:
            std = np.sqrt(np.asarray(den_image.variance, dtype=np.float64))
            s["denoise_mc_std_mean"] = float(std.mean())
            s["denoise_coverage_2sigma"] = float(np.mean(np.abs(den - clean) <= 2 * std))
        for key in DOWNSTREAM:
            if key in result.scalars:
                s[f"denoise_{key}"] = float(result.scalars[key])
        denoiser = result.plugins.get("denoiser", "unknown") if result.plugins else "unknown"
        table = pd.DataFrame([{"denoiser": denoiser, **s}])
        return MetricOutput(tables={"denoise_quality": table}, scalars=s)
