"""Denoising quality against the clean image: PSNR, SSIM, and the downstream effect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from octascope.core.errors import InputError
from octascope.analysis.octahedral_geometry import metric_input
from octascope.core.model import MetricInput, MetricOutput, Result, Truth
from octascope.core.params import Options, Plugin, param, require

#: accuracy-metric scalars repeated under ``denoise_`` names (the downstream effect of denoising)
DOWNSTREAM = ("rmse_pm_all", "rmse_pm_Pb", "rmse_pm_X", "rmse_pm_Cs", "detection_f1",
              "theta1_mae_deg", "theta2_mae_deg", "theta3_mae_deg", "L1_mae_pm", "L2_mae_pm")


@dataclass(frozen=True, kw_only=True)
class DenoiseQualityOptions(Options):
    data_range: float | None = param(None, unit="image units",
                                     doc="intensity range R for PSNR/SSIM; null: the clean image's range")

    def check(self) -> None:
        require(self.data_range is None or self.data_range > 0,
                f"data_range must be > 0 (image units) or null, got {self.data_range}")


class DenoiseQualityMetric(Plugin):
    """PSNR and SSIM of the denoised (and, for reference, the raw) image against ``truth.clean``.

    PSNR = 10·log10(R² / MSE) [dB] and SSIM (:func:`skimage.metrics.structural_similarity`,
    7x7 window) use the data range R of the clean image (max − min) unless ``data_range`` is
    given, so raw and denoised images are scored on the same scale. When the denoiser returned
    a per-pixel variance (S2SRED's Monte Carlo variance), the fraction of pixels whose error lies
    within two standard deviations tells whether that uncertainty is calibrated (≈0.95 if
    Gaussian and calibrated). Downstream effect: the accuracy metric's position RMSE and tilt
    errors, when it ran earlier in the same analysis, are repeated as ``denoise_<name>``.
    Without truth or without a clean image the output is empty.
    """

    name: ClassVar[str] = "denoise-quality"

    Options = DenoiseQualityOptions
    options: DenoiseQualityOptions
    requires: ClassVar[tuple[str, ...]] = ()  # truth.clean when given; empty output otherwise
    #: repeats the accuracy metric's errors when it runs in the same analysis
    after: ClassVar[tuple[str, ...]] = ("accuracy",)

    def compute(self, data: MetricInput | Result, truth: Truth | None = None) -> MetricOutput:
        # lazy: scikit-image (a few ms to import), not loaded at start-up
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity

        data = metric_input(data, truth)
        truth = data.truth
        if truth is None or truth.clean is None:
            return MetricOutput()
        clean = np.asarray(truth.clean, dtype=np.float64)
        raw = np.asarray(data.image.data, dtype=np.float64)
        den_image = data.denoised
        den = np.asarray(den_image.data, dtype=np.float64)
        if clean.shape != raw.shape:
            raise InputError(f"truth.clean has shape {clean.shape} but the image {raw.shape}; give the clean image on the same pixel grid")
        rng = float(self.options.data_range) if self.options.data_range is not None else float(clean.max() - clean.min())
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
        upstream = data.previous["accuracy"].scalars if "accuracy" in data.previous else {}
        for key in DOWNSTREAM:
            if key in upstream:
                s[f"denoise_{key}"] = float(upstream[key])
        denoiser = data.plugins.get("denoiser", "unknown") if data.plugins else "unknown"
        table = pd.DataFrame([{"denoiser": denoiser, **s}])
        summary = {k: s[k] for k in ("raw_psnr_db", "denoise_psnr_db", "denoise_psnr_gain_db", "raw_ssim", "denoise_ssim")}
        return MetricOutput(tables={"denoise_quality": table}, scalars=s, summary=summary)
