"""Column candidates (significant local maxima) and centre-of-mass refinement, vectorised.

These are the first two steps of the Atomap procedure (Nord et al. 2017) as used in the method
paper — local maxima, then centre of mass in a small circular aperture — with two changes that
make them work at the paper's dose: windows are in Å (the paper's 7 × 7 px neighbourhood and 3 px
aperture at 0.168 Å/px are ≈1.2 Å and 0.5 Å), and a maximum counts only when it is significant
under the noise the image really has (correlated 1/k noise for iDPC, see
:mod:`octascope.analysis.noise_spectrum`), not above a fraction of the dynamic range. Both locators share
them, so a comparison of the fitters starts from the same positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scipy import ndimage
from scipy.spatial import cKDTree

from octascope.core.params import Options, param, require
from octascope.analysis.noise_spectrum import (NoiseSpectrum, band_pass, band_pass_transfer, peak_roughness,
                                               significance_threshold)
from octascope.analysis.region import background_noise_spectrum


def find_candidates(
    data: np.ndarray,
    pixel_size_A: float,
    options: "CandidateSearch | None" = None,
    *,
    noise: NoiseSpectrum | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Column candidates: local maxima of a band-passed image that are significant under the
    image's own noise.

    The image is band-passed by a difference of Gaussians (``detection_sigma_A`` minus
    ``background_sigma_A``): the inner blur is matched to a column and suppresses pixel noise, the
    outer one removes the background and the slow, cloudy part of iDPC noise. The noise of the
    band-passed image is computed from the image's noise power spectrum
    (:func:`octascope.analysis.noise_spectrum.estimate_noise_spectrum`), which handles the correlated 1/k
    noise of iDPC/iCoM and the white noise of HAADF alike; in a frame with enough empty area it is
    measured there (:func:`octascope.analysis.region.background_noise_spectrum`), since the
    particles of a wide field add their own signal to every frequency ring. A candidate is a maximum within
    ``search_radius_A`` whose band-passed value is significant: above the height that noise alone
    exceeds ``expected_false`` times in the whole image
    (:func:`octascope.analysis.noise_spectrum.significance_threshold`, so a larger field of view needs a
    slightly higher threshold), and never below ``min_significance``. Maxima between
    ``site_significance`` and that threshold are returned too, as *site candidates*: a lone one is
    not evidence of a column, but one that sits on a lattice site next to significant columns is
    (that is one test at a known place, not a search over the image; see
    :func:`octascope_plugins.sites.site_registry.index_columns`). All lengths are in Å, so
    the result does not depend on the sampling. The threshold assumes Gaussian noise; a strongly
    skewed noise (HAADF at a few counts per pixel) lets a few more noise peaks through.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image, columns bright.
    pixel_size_A : float
        Pixel size [Å].
    options : CandidateSearch, optional
        ``detection_sigma_A`` (σ of the inner, column-matched Gaussian [Å]), ``background_sigma_A``
        (σ of the outer, background Gaussian [Å], well below the column spacing ≈3.1 Å),
        ``min_significance`` (floor of the threshold [noise std]), ``expected_false`` (noise peaks
        expected above the threshold in the whole image [1]), ``site_significance`` (smallest
        significance of a site candidate [noise std]; ``None`` returns significant maxima only) and
        ``search_radius_A`` (radius within which a candidate must be the maximum [Å]); defaults
        when not given.
    noise : NoiseSpectrum, optional
        The image's noise spectrum (:func:`~octascope.analysis.region.background_noise_spectrum`
        when not given).

    Returns
    -------
    x_px, y_px : numpy.ndarray
        Candidate positions (pixel centres, as floats) [px].
    significance : numpy.ndarray
        Band-passed height over its noise standard deviation [1].
    threshold : float
        The significance above which a candidate counts on its own [1].
    """
    o = options if options is not None else CandidateSearch()
    data = np.asarray(data, dtype=np.float64)
    noise = noise or background_noise_spectrum(data, pixel_size_A)
    filtered, transfer = band_pass(data, pixel_size_A, inner_sigma_A=o.detection_sigma_A,
                                   outer_sigma_A=o.background_sigma_A)
    # a noise-free image still has float32 rounding (~1e-7 of its scale): nothing below that is a peak
    scale = max(float(np.abs(data).max()), 1e-30)
    sigma = max(noise.filtered_sigma(transfer), 1e-6 * scale)
    z = filtered / sigma
    threshold = o.threshold(noise, transfer)
    r = max(1.0, o.search_radius_A / pixel_size_A)
    ri = int(np.floor(r))
    yy, xx = np.mgrid[-ri:ri + 1, -ri:ri + 1]
    footprint = xx**2 + yy**2 <= r * r
    lowest = threshold if o.site_significance is None else min(threshold, o.site_significance)
    keep = (z == ndimage.maximum_filter(z, footprint=footprint, mode="nearest")) & (z >= lowest)
    # plateaus give several equal maxima: keep one per connected group
    labels, n = ndimage.label(keep)
    if n == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0), threshold
    centres = np.asarray(ndimage.center_of_mass(keep, labels, np.arange(1, n + 1)), dtype=float).reshape(-1, 2)
    yx = np.rint(centres).astype(int)
    return yx[:, 1].astype(float), yx[:, 0].astype(float), z[yx[:, 0], yx[:, 1]], threshold


def refine_com(
    data: np.ndarray,
    x_px: np.ndarray,
    y_px: np.ndarray,
    *,
    radius_px: float = 3.0,
    iterations: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Centre-of-mass refinement in a circular aperture, all columns at once.

    Each iteration takes the intensity above the aperture's minimum within ``radius_px`` of the
    current centre and moves the centre to its centre of mass.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image.
    x_px, y_px : numpy.ndarray
        Start positions [px].
    radius_px : float
        Aperture radius [px].
    iterations : int
        Number of centre-of-mass steps.

    Returns
    -------
    x_px, y_px : numpy.ndarray
        Refined positions [px].
    """
    data = np.asarray(data, dtype=np.float64)
    x = np.asarray(x_px, dtype=np.float64).copy()
    y = np.asarray(y_px, dtype=np.float64).copy()
    if x.size == 0:
        return x, y
    h, w = data.shape
    r = int(np.ceil(radius_px)) + 1
    off = np.arange(-r, r + 1)
    for _ in range(iterations):
        cx, cy = np.rint(x).astype(int), np.rint(y).astype(int)
        gx = cx[:, None, None] + off[None, None, :]
        gy = cy[:, None, None] + off[None, :, None]
        inside = (gx >= 0) & (gx < w) & (gy >= 0) & (gy < h)
        aperture = inside & ((gx - x[:, None, None]) ** 2 + (gy - y[:, None, None]) ** 2 <= radius_px**2)
        vals = data[np.clip(gy, 0, h - 1), np.clip(gx, 0, w - 1)]
        floor = np.where(aperture, vals, np.inf).min(axis=(1, 2), keepdims=True)
        mass = np.where(aperture, vals - floor, 0.0)
        total = mass.sum(axis=(1, 2))
        ok = total > 0
        x = np.where(ok, (mass * gx).sum(axis=(1, 2)) / np.where(ok, total, 1.0), x)
        y = np.where(ok, (mass * gy).sum(axis=(1, 2)) / np.where(ok, total, 1.0), y)
        x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    return x, y


@dataclass(frozen=True, kw_only=True)
class CandidateSearch(Options):
    """Options of the candidate search shared by the locators, and the search they configure.

    :func:`find_candidates`, then :func:`refine_com`, with every window in Å, so the result does
    not depend on the sampling. The locators' options inherit these fields (one declaration, one
    set of YAML keys for both locators); ``options.find(...)`` / ``options(...)`` run the search.
    """

    detection_sigma_A: float = param(0.25, unit="Å", doc="σ of the column-matched blur of the candidate search")
    background_sigma_A: float = param(0.8, unit="Å", doc="σ of the background blur subtracted in the candidate search "
                                                          "(removes the slow 1/k iDPC noise)")
    min_significance: float = param(3.0, unit="noise std", doc="floor of the candidate threshold, in noise standard "
                                                               "deviations of the band-passed image")
    expected_false: float = param(0.5, doc="noise peaks expected above the candidate threshold in the whole image "
                                           "(sets the threshold)")
    site_significance: float | None = param(2.5, unit="noise std", doc="smallest significance of a site candidate (kept "
                                            "only on a lattice site next to significant columns); None: significant only")
    recorded_significance: float | None = param(
        2.0, unit="noise std", doc="a column found on a denoised image is kept only where the recorded image shows it "
                                   "at least this significant (a filter's prior, e.g. ABSF continuing the lattice past "
                                   "a particle's edge, is no evidence); None: not checked")
    search_radius_A: float = param(1.0, unit="Å", doc="a candidate is the maximum within this radius "
                                                      "(paper: 7 × 7 px at 0.168 Å/px)")
    com_radius_A: float = param(0.5, unit="Å", doc="centre-of-mass aperture radius (paper: 3 px at 0.168 Å/px)")
    site_reach_A: float = param(8.0, unit="Å", doc="site candidates farther than this from every significant candidate "
                                                   "are dropped before any fit")
    # site_reach_A: the classifiers keep a site candidate only one lattice step (≤ 1.6 a/2 plus the
    # site tolerance, < 7 Å for any lead-halide perovskite) from a significant column. On a 2048²
    # image of a 10 nm particle in vacuum this drops ~1,400 of ~2,500 candidates (vacuum noise maxima).

    def check(self) -> None:
        for key in ("detection_sigma_A", "background_sigma_A", "search_radius_A", "com_radius_A", "site_reach_A"):
            require(getattr(self, key) > 0, f"{key} must be > 0 Å, got {getattr(self, key)}")
        require(self.min_significance >= 0 and self.expected_false > 0,
                f"min_significance must be >= 0 and expected_false > 0, got {self.min_significance} and {self.expected_false}")
        require(self.background_sigma_A > self.detection_sigma_A,
                f"background_sigma_A ({self.background_sigma_A}) must exceed detection_sigma_A ({self.detection_sigma_A})")

    def __call__(self, data: np.ndarray, pixel_size_A: float,
                 noise: NoiseSpectrum | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Candidates of an image after the centre-of-mass step (see :meth:`find`).

        Parameters
        ----------
        data : numpy.ndarray
            2-D image, columns bright.
        pixel_size_A : float
            Pixel size [Å].
        noise : NoiseSpectrum, optional
            The image's noise spectrum (estimated when not given).

        Returns
        -------
        x_px, y_px : numpy.ndarray
            Positions after centre of mass [px].
        significance : numpy.ndarray
            Detection significance [1].
        threshold : float
            Significance above which a candidate counts on its own [1].
        """
        x, y, z, threshold = self.find(data, pixel_size_A, noise)
        x, y = refine_com(data, x, y, radius_px=self.com_radius_A / pixel_size_A)
        return x, y, z, threshold

    def threshold(self, noise: NoiseSpectrum, transfer: np.ndarray) -> float:
        """The significance above which a maximum counts on its own [noise std]: where noise alone
        exceeds it ``expected_false`` times in the image after the filter ``transfer``
        (:func:`~octascope.analysis.noise_spectrum.significance_threshold`), never below
        ``min_significance``."""
        return max(self.min_significance, significance_threshold(noise, transfer, expected_false=self.expected_false))

    def roughness(self, data: np.ndarray, pixel_size_A: float, noise: NoiseSpectrum | None = None) -> float:
        """λ of the search's band-passed noise [1/Å²] (:func:`~octascope.analysis.noise_spectrum.peak_roughness`):
        what a classifier needs to judge a site candidate (a locator records it in its table's
        ``attrs["peak_roughness_per_A2"]``). The band-pass is the search's (its transfer function only).

        NaN for the whole image's estimate (``noise.measured_on``): it overstates the noise near a
        particle that fills the image (the significances are understated; on the simulated 3.8 nm
        cube at 100 e/Å², noise maxima in the vacuum reach 2.5σ within 1.1 Å of a point 8 % of the
        time, not the 19 % its spectrum predicts), and the site test would drop the weak columns
        of a small particle that the fixed floor keeps. The noise measured on the frame's empty
        area has the true scale."""
        noise = noise or background_noise_spectrum(np.asarray(data, dtype=np.float64), pixel_size_A)
        if noise.measured_on == "whole image":
            return float("nan")
        return peak_roughness(noise, band_pass_transfer(np.shape(data), pixel_size_A, inner_sigma_A=self.detection_sigma_A,
                                                        outer_sigma_A=self.background_sigma_A))

    def find(self, data: np.ndarray, pixel_size_A: float,
             noise: NoiseSpectrum | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """:func:`find_candidates` with these options (no centre-of-mass step), less the site
        candidates farther than ``site_reach_A`` [Å] from every significant one.

        Parameters and returns as :meth:`__call__` (positions are pixel centres [px]).
        """
        x, y, z, threshold = find_candidates(data, pixel_size_A, self, noise=noise)
        keep = near_significant(x, y, z >= threshold, self.site_reach_A / pixel_size_A)
        return x[keep], y[keep], z[keep], threshold


def near_significant(x_px: np.ndarray, y_px: np.ndarray, significant: np.ndarray, reach_px: float) -> np.ndarray:
    """Mask of candidates that are significant or within ``reach_px`` of a significant one."""
    significant = np.asarray(significant, bool)
    keep = significant.copy()
    weak = np.flatnonzero(~significant)
    if weak.size and significant.any():
        d, _ = cKDTree(np.column_stack([x_px[significant], y_px[significant]])).query(
            np.column_stack([x_px[weak], y_px[weak]]), distance_upper_bound=reach_px)
        keep[weak] = np.isfinite(d)
    return keep
