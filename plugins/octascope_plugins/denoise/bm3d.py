"""BM3D (block-matching and 3-D collaborative filtering) through the ``bm3d`` package."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from octascope.errors import PluginError
from octascope.model import Image

from ._common import check_finite, estimate_noise_sigma, finish

PROFILES = ("np", "refilter", "vn", "high", "deb")


class BM3DDenoiser:
    """BM3D with the noise level estimated from the image when not given.

    Parameters
    ----------
    sigma : float, optional
        Standard deviation of the (assumed white, Gaussian) noise [image units]. ``None``
        estimates it from the finest wavelet band (:func:`skimage.restoration.estimate_sigma`).
        For Poisson noise this is an average over the image: bright columns are noisier.
    sigma_scale : float
        Factor applied to ``sigma`` (given or estimated) before filtering [1]; > 1 smooths more.
    profile : str
        ``bm3d`` parameter profile: ``np`` (normal), ``refilter``, ``vn``, ``high`` or ``deb``.
    """

    name: ClassVar[str] = "bm3d"

    def __init__(self, *, sigma: float | None = None, sigma_scale: float = 1.0, profile: str = "np"):
        if sigma is not None and not sigma > 0:
            raise PluginError(f"bm3d sigma must be > 0 (image units) or null to estimate it, got {sigma}")
        if not sigma_scale > 0:
            raise PluginError(f"bm3d sigma_scale must be > 0, got {sigma_scale}")
        if profile not in PROFILES:
            raise PluginError(f"bm3d profile '{profile}' is unknown; use one of {', '.join(PROFILES)}")
        self.sigma = sigma
        self.sigma_scale = sigma_scale
        self.profile = profile

    def denoise(self, image: Image) -> Image:
        import bm3d

        data = np.asarray(image.data, dtype=np.float64)
        check_finite(data, "bm3d")
        sigma = self.sigma if self.sigma is not None else estimate_noise_sigma(data)
        sigma_used = float(sigma) * self.sigma_scale
        if sigma_used <= 0:  # a noise-free (e.g. constant) image: nothing to remove
            out = data
        else:
            out = bm3d.bm3d(data, sigma_psd=sigma_used, profile=self.profile)
        settings = {
            "name": self.name,
            "sigma": sigma_used,
            "sigma_estimated": self.sigma is None,
            "sigma_scale": self.sigma_scale,
            "profile": self.profile,
        }
        return finish(image, np.asarray(out).reshape(data.shape), settings)
