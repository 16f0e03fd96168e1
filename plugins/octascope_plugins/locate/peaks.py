"""Column candidates (local maxima) and centre-of-mass refinement, vectorised over columns.

These are the first two steps of the Atomap procedure (Nord et al. 2017) as used in the method
paper: local maxima in a 7 x 7 neighbourhood of a lightly smoothed image, then centre of mass in
a circular aperture of radius 3 px. Both locators share them, so a comparison of the Gaussian
fitters starts from the same positions.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def estimate_noise_sigma(data: np.ndarray) -> float:
    """Robust standard deviation of the pixel noise [image units].

    The median absolute deviation of the differences between horizontally adjacent pixels,
    divided by sqrt(2): smooth signal (atomic columns spanning several pixels) barely moves the
    median, so this measures white (shot) noise.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image.

    Returns
    -------
    float
        Noise standard deviation [image units]; 0 for a noise-free image.
    """
    d = np.diff(np.asarray(data, dtype=np.float64), axis=1).ravel()
    mad = np.median(np.abs(d - np.median(d)))
    return float(1.4826 * mad / np.sqrt(2.0))


def find_candidates(
    data: np.ndarray,
    *,
    neighbourhood_px: int = 7,
    smooth_sigma_px: float = 1.0,
    threshold_sigma: float = 8.0,
    threshold_rel: float = 0.1,
    background_window_px: int = 15,
) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima that stand clearly above the noise and the local background.

    A pixel is a candidate when it is the maximum of its ``neighbourhood_px`` square in the
    smoothed image and its prominence (smoothed value minus the minimum of the smoothed image in
    a ``background_window_px`` square) exceeds both ``threshold_sigma`` times the noise of the
    smoothed image and ``threshold_rel`` times the smoothed image's dynamic range (0.1 to 99.9
    percentile). A flat image therefore gives no candidates and pure noise almost none.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image, columns bright.
    neighbourhood_px : int
        Side of the square in which a candidate must be the maximum [px].
    smooth_sigma_px : float
        Width of the Gaussian smoothing applied before the search [px]; 0 for none.
    threshold_sigma : float
        Minimum prominence in units of the smoothed noise standard deviation [1].
    threshold_rel : float
        Minimum prominence relative to the dynamic range of the smoothed image [1].
    background_window_px : int
        Side of the square over which the local background (minimum) is taken [px].

    Returns
    -------
    x_px, y_px : numpy.ndarray
        Candidate positions (integer pixel centres, as floats) [px].
    """
    data = np.asarray(data, dtype=np.float64)
    smooth = ndimage.gaussian_filter(data, smooth_sigma_px) if smooth_sigma_px > 0 else data
    noise = estimate_noise_sigma(data)
    # white noise std after Gaussian smoothing of width s: sigma / (2 sqrt(pi) s)
    noise_smooth = noise / (2.0 * np.sqrt(np.pi) * smooth_sigma_px) if smooth_sigma_px > 0 else noise
    lo, hi = np.percentile(smooth, [0.1, 99.9])
    threshold = max(threshold_sigma * noise_smooth, threshold_rel * (hi - lo))
    is_max = smooth == ndimage.maximum_filter(smooth, size=neighbourhood_px, mode="nearest")
    prominence = smooth - ndimage.minimum_filter(smooth, size=background_window_px, mode="nearest")
    keep = is_max & (prominence > threshold)
    # plateaus give several equal maxima: keep one per connected group
    labels, n = ndimage.label(keep)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    centres = np.asarray(ndimage.center_of_mass(keep, labels, np.arange(1, n + 1)), dtype=float).reshape(-1, 2)
    yx = np.rint(centres)
    return yx[:, 1].copy(), yx[:, 0].copy()


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
