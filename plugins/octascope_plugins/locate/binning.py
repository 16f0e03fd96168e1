"""Fitting on k × k binned pixels: the binned image, coordinates on the binned grid and back."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from octascope_plugins.locate.gaussian_fit import GaussianFit


def bin_image(data: np.ndarray, k: int) -> np.ndarray:
    """Mean of k × k pixel blocks (the last rows/columns that do not fill a block are dropped)."""
    h, w = (data.shape[0] // k) * k, (data.shape[1] // k) * k
    return np.asarray(data[:h, :w], dtype=np.float64).reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def to_binned(coord_px: np.ndarray, k: int) -> np.ndarray:
    """Pixel coordinate -> coordinate on the k × k binned grid (bin j covers pixels jk .. jk + k - 1,
    so its centre is at pixel jk + (k - 1) / 2)."""
    return (np.asarray(coord_px, float) - (k - 1) / 2) / k


def unbin_fit(fit: GaussianFit, k: int, start_x: np.ndarray, start_y: np.ndarray) -> GaussianFit:
    """A fit on the k × k binned grid in the original pixel frame (failed fits keep ``start_x/y``)."""

    back = (k - 1) / 2
    return replace(fit, x=np.where(fit.ok, fit.x * k + back, start_x), y=np.where(fit.ok, fit.y * k + back, start_y),
                   cxx=fit.cxx * k**2, cxy=fit.cxy * k**2, cyy=fit.cyy * k**2, x_err=fit.x_err * k, y_err=fit.y_err * k,
                   xy_cov=fit.xy_cov * k**2, pair_cov=fit.pair_cov * k**2)

