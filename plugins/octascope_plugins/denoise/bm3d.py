"""BM3D (block-matching and 3-D collaborative filtering) through the ``bm3d`` package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from octascope.core.model import Image
from octascope.core.params import Options, Plugin, param, require

from octascope_plugins.denoise._common import bm3d_compat, check_finite, estimate_noise_psd, estimate_noise_sigma, finish

if TYPE_CHECKING:
    import bm3d


@dataclass(frozen=True, kw_only=True)
class BM3DOptions(Options):
    """Parameters of :class:`BM3DDenoiser`."""

    sigma: float | None = param(
        None, unit="image units",
        doc="standard deviation of white Gaussian noise; null = estimate from the image (noise_model)")
    sigma_scale: float = param(1.0, doc="factor on sigma (given or estimated); > 1 smooths more; "
                                        "with noise_model=fitted the spectrum is scaled by its square")
    profile: Literal["np", "refilter", "vn", "high", "deb"] = param("np", doc="bm3d package parameter profile")
    threads: int = param(1, doc="threads of the bm3d package; 1: the same output for the same image every time; "
                                "0: all cores, faster, but its aggregation adds in a varying order, so the output "
                                "changes from run to run (in the last digits, more where block matching then differs)")
    noise_model: Literal["white", "fitted"] = param(
        "white", doc="noise estimate when sigma is null: white (finest wavelet band; HAADF/ABF) or fitted "
                     "(power spectrum a/k² + b fitted to the image, a correlated-noise PSD; iDPC/iCoM)")

    def check(self) -> None:
        require(self.sigma is None or self.sigma > 0,
                f"sigma must be > 0 (image units) or null to estimate it, got {self.sigma}")
        require(self.sigma_scale > 0, f"sigma_scale must be > 0, got {self.sigma_scale}")
        require(self.threads >= 0, f"threads must be >= 0 (0: all cores), got {self.threads}")


def bm3d_profile(name: str, threads: int) -> "bm3d.BM3DProfile":
    """The ``bm3d`` package's parameter profile ``name`` with ``threads`` threads."""
    # lazy: bm3d (~0.3 s to import), only for denoiser=bm3d
    import bm3d

    profile = {"np": bm3d.BM3DProfile, "refilter": bm3d.BM3DProfileRefilter, "vn": bm3d.BM3DProfileVN,
               "high": bm3d.BM3DProfileHigh, "deb": bm3d.BM3DProfileDeb}[name]()
    profile.num_threads = threads
    return profile


class BM3DDenoiser(Plugin):
    """BM3D with the noise level estimated from the image when not given.

    With ``sigma`` null the noise is estimated (``noise_model``): ``white`` — one σ from the
    finest wavelet band (:func:`skimage.restoration.estimate_sigma`), right for HAADF/ABF shot
    noise (for Poisson noise an average over the image: bright columns are noisier);
    ``fitted`` — the noise power spectrum ``a/k² + b`` fitted to the image
    (:func:`~octascope_plugins.denoise._common.estimate_noise_psd`) and given to BM3D as a
    correlated-noise PSD, right for iDPC/iCoM images, whose integrated noise is 1/k in
    amplitude (the finest band sees only a third of it there). On simulated iDPC images
    ``fitted`` removed the low-frequency noise (PSNR +6 dB) and gave the lowest tilt error at
    300 e/Å² (0.56° vs 0.65° raw) but washed the halide columns out at 100 e/Å²
    (experiments/benchmarks/results/denoise-lowdose.md).

    Parameters are those of :class:`BM3DOptions`.
    """

    name: ClassVar[str] = "bm3d"
    Options = BM3DOptions
    options: BM3DOptions

    def denoise(self, image: Image) -> Image:
        # lazy: bm3d (~0.3 s to import), only for denoiser=bm3d
        import bm3d

        o = self.options
        data = np.asarray(image.data, dtype=np.float64)
        check_finite(data, "bm3d")
        psd_info: dict = {}
        noise: float | np.ndarray  # a σ, or a noise power spectrum (bm3d's sigma_psd takes either)
        if o.sigma is None and o.noise_model == "fitted":
            psd, psd_info = estimate_noise_psd(data)
            bm3d_compat()
            noise = psd * o.sigma_scale**2
            sigma_used = psd_info["sigma_total"] * o.sigma_scale
        else:
            sigma = o.sigma if o.sigma is not None else estimate_noise_sigma(data)
            sigma_used = float(sigma) * o.sigma_scale
            noise = sigma_used
        if sigma_used <= 0:  # a noise-free (e.g. constant) image: nothing to remove
            out = data
        else:
            out = bm3d.bm3d(data, sigma_psd=noise, profile=bm3d_profile(o.profile, o.threads))
        settings = {
            "name": self.name,
            **o.to_dict(),
            "sigma": sigma_used,
            "sigma_estimated": o.sigma is None,
            "noise_model": o.noise_model if o.sigma is None else "white",
            **{f"psd_{k}": v for k, v in psd_info.items()},
        }
        return finish(image, np.asarray(out).reshape(data.shape), settings)
