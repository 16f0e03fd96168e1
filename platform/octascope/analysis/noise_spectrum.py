"""The noise of an image, estimated from the image itself, as a power spectrum.

Why a spectrum
--------------
HAADF noise is (nearly) white, but iDPC and iCoM images are integrals of measured gradients: the
shot noise of the gradients becomes noise with a power spectrum ∝ 1/k² (amplitude ∝ 1/k), strong
at low spatial frequencies ("clouds" in the vacuum). A single per-pixel σ from pixel differences
measures only the high-frequency part and underestimates iDPC noise many times over; a detection
threshold built on it takes hundreds of noise blobs for columns. With the noise power spectrum the
standard deviation of *any* linear filter's output is known exactly (Parseval), so a candidate can
be judged by its significance under the noise the image really has.

Estimate
--------
The image is made periodic with Moisan's periodic-plus-smooth decomposition (no edge cross in the
spectrum, no window that would weight the centre), its power spectrum is taken, and in each ring of
spatial frequency the *median* power is used: Bragg peaks and the particle's own lattice signal are
sharp and occupy a small part of a ring, so the median follows the smooth noise floor. The median of
an exponentially distributed power (a Gaussian field's |F(k)|²) is ln 2 × its mean, hence the 1/ln 2.
What is not periodic — an amorphous support, the diffuse shape of the particle — counts as noise,
which is what a column detector should do with it.

Frames with empty area
----------------------
The ring median holds when the lattice is a small part of each ring. In a wide field of several
particles it is not: each particle's finite, distorted lattice spreads its signal over whole rings
(on the 2048² benchmark field at 300 e/Å² the band-passed noise read 0.024 against 0.014 true;
tiles holding a particle 0.024-0.029, tiles without 0.017), and a threshold built on it misses the
weak columns of small particles. Where enough of the frame shows no lattice,
:func:`noise_spectrum_outside` measures the noise there instead: the mean periodogram of the
tiles that hold no crystal (the mean, not the median: tiles without lattice hold noise and support
only). :func:`octascope.analysis.region.background_noise_spectrum` chooses between the two.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import numpy as np
import scipy.fft
from scipy import ndimage
from scipy.special import ndtr


def periodic_component(data: np.ndarray) -> np.ndarray:
    """Periodic part of an image (Moisan 2011, periodic-plus-smooth decomposition).

    Parameters
    ----------
    data : numpy.ndarray
        2-D image.

    Returns
    -------
    numpy.ndarray
        ``data`` minus the smooth component that carries the jumps between opposite borders
        (same mean), float64; shared with later calls on the same pixels: do not modify it.
    """
    return memo_by_pixels("periodic", data, (), lambda: _periodic_component(data))


def _periodic_component(data: np.ndarray) -> np.ndarray:
    """:func:`periodic_component` of an image or of a stack of images (the last two axes)."""
    u = np.asarray(data, dtype=np.float64)
    h, w = u.shape[-2:]
    v = np.zeros_like(u)
    v[..., 0, :] += u[..., -1, :] - u[..., 0, :]
    v[..., -1, :] += u[..., 0, :] - u[..., -1, :]
    v[..., :, 0] += u[..., :, -1] - u[..., :, 0]
    v[..., :, -1] += u[..., :, 0] - u[..., :, -1]
    cy = np.cos(2 * np.pi * np.fft.fftfreq(h))[:, None]
    cx = np.cos(2 * np.pi * np.fft.rfftfreq(w))[None, :]
    denom = 2 * cx + 2 * cy - 4
    denom[0, 0] = 1.0
    # real transforms: the input is real, so half the spectrum holds it all (half the time and memory)
    s_hat = scipy.fft.rfft2(v) / denom
    s_hat[..., 0, 0] = 0.0
    return u - scipy.fft.irfft2(s_hat, s=(h, w))


def full_power(half_spectrum: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """|F|² on the full FFT grid of ``shape`` from a real input's ``rfft2`` (the last axis holding
    columns 0 … w // 2): the other columns are the mirror image, |F(-k)| = |F(k)|."""
    h, w = shape
    p = np.abs(half_spectrum) ** 2
    out = np.empty(p.shape[:-1] + (w,), dtype=p.dtype)
    n = p.shape[-1]
    out[..., :n] = p
    cols = np.arange(n, w)
    rows = (-np.arange(h)) % h
    out[..., n:] = p[..., rows, :][..., (w - cols)]
    return out


def radial_frequency_A(shape: tuple[int, int], pixel_size_A: float) -> np.ndarray:
    """|k| of every sample of a 2-D FFT grid of ``shape`` [1/Å] (read-only: shared between calls)."""
    return _radial_frequency_A((int(shape[0]), int(shape[1])), float(pixel_size_A))


# the noise spectrum, band-pass, significance threshold and ring medians of one frame ask for the
# same grids ~10 times (0.3 s at 2048²); geometry only, so kept for the last few shapes
@functools.lru_cache(maxsize=4)
def _radial_frequency_A(shape: tuple[int, int], pixel_size_A: float) -> np.ndarray:
    ky = np.fft.fftfreq(shape[0], d=pixel_size_A)[:, None]
    kx = np.fft.fftfreq(shape[1], d=pixel_size_A)[None, :]
    k = np.sqrt(kx**2 + ky**2)
    k.setflags(write=False)
    return k


@dataclass(frozen=True)
class NoiseSpectrum:
    """Radially symmetric noise power spectrum of one image.

    ``k_A`` are ring centres [1/Å] and ``power`` the noise power per FFT sample in each ring,
    normalised so that the noise variance of the image is ``mean(power(|k|))`` over the FFT grid
    [image units²]. Use :meth:`filtered_sigma` for the noise of a filtered image. ``measured_on``
    says where: ``"whole image"`` (:func:`estimate_noise_spectrum`, which also counts a particle's
    non-periodic signal, so near a particle it overstates the noise) or ``"empty area"``
    (:func:`noise_spectrum_outside`).
    """

    k_A: np.ndarray
    power: np.ndarray
    pixel_size_A: float
    shape: tuple[int, int]
    measured_on: str = "whole image"

    def power_on_grid(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Noise power at every sample of the FFT grid of ``shape`` (default: the image's)."""
        shape = shape or self.shape
        k = radial_frequency_A(shape, self.pixel_size_A)
        p = np.interp(k, self.k_A, self.power, left=self.power[0], right=self.power[-1])
        # power per sample scales with the number of samples (variance = mean over the grid)
        return p

    @property
    def sigma(self) -> float:
        """Standard deviation of the noise per pixel [image units]."""
        return float(np.sqrt(self.power_on_grid().mean()))

    def filtered_sigma(self, transfer: np.ndarray) -> float:
        """Noise standard deviation after a linear filter [image units].

        Parameters
        ----------
        transfer : numpy.ndarray
            The filter's transfer function on the full FFT grid of the image (``np.fft.fft2``
            layout).
        """
        return float(np.sqrt(np.mean(np.abs(transfer) ** 2 * self.power_on_grid(transfer.shape))))

    def slope(self, k_lo_A: float = 0.15, k_hi_A: float = 1.0) -> float:
        """Log-log slope of the noise power between two frequencies [1]: ≈ 0 for white (HAADF)
        noise, ≈ -2 for integrated-gradient (iDPC/iCoM) noise."""
        sel = (self.k_A >= k_lo_A) & (self.k_A <= k_hi_A) & (self.power > 0)
        if sel.sum() < 3:
            return float("nan")
        return float(np.polyfit(np.log(self.k_A[sel]), np.log(self.power[sel]), 1)[0])


_T = TypeVar("_T")
_MEMO: dict[tuple, Any] = {}  # kind is part of the key: a hit has the type its compute() returns
_MEMO_SIZE = 8


def memo_by_pixels(kind: str, data: np.ndarray, key: tuple, compute: Callable[[], _T]) -> _T:
    """The last few results of ``compute()`` for identical pixels: the locator and the pipeline's
    crystal-region step ask for the same spectrum and band-pass of the same image (≈3 s at 2048²).
    Keyed by a hash of the pixels, so a changed image is never served a stale result; results
    are shared, not copied (callers do not modify them)."""
    arr = np.ascontiguousarray(data)
    full = (kind, arr.shape, arr.dtype.str, hashlib.blake2b(arr.view(np.uint8).data, digest_size=16).digest()) + key
    if full in _MEMO:
        return _MEMO[full]
    out = compute()
    if len(_MEMO) >= _MEMO_SIZE:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[full] = out
    return out


def estimate_noise_spectrum(data: np.ndarray, pixel_size_A: float, *, ring_width_samples: float = 1.5,
                            smooth_rings: int = 5) -> NoiseSpectrum:
    """Estimate the noise power spectrum of an image from the image (see module docstring).

    Parameters
    ----------
    data : numpy.ndarray
        2-D image.
    pixel_size_A : float
        Pixel size [Å].
    ring_width_samples : float
        Width of the frequency rings in units of the coarser FFT sample spacing [1].
    smooth_rings : int
        Running median over this many rings of the log power, to steady the estimate.

    Returns
    -------
    NoiseSpectrum
    """
    return memo_by_pixels("noise", data, (float(pixel_size_A), float(ring_width_samples), int(smooth_rings)),
                 lambda: _estimate_noise_spectrum(data, pixel_size_A, ring_width_samples, smooth_rings))


@functools.lru_cache(maxsize=4)
def _ring_order(shape: tuple[int, int], pixel_size_A: float,
                ring_width_samples: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Pixel order sorted by frequency ring, ring starts and ends, ring ids (geometry only: kept for
    the last few shapes, read-only)."""
    h, w = shape
    k = radial_frequency_A((h, w), pixel_size_A)
    dk = ring_width_samples / (min(h, w) * pixel_size_A)
    ring = np.floor(k / dk).astype(np.int64).ravel()
    order = np.argsort(ring, kind="stable")
    ring_sorted = ring[order]
    starts = np.flatnonzero(np.r_[True, np.diff(ring_sorted) > 0])
    ends = np.r_[starts[1:], len(ring_sorted)]
    rings = ring_sorted[starts]
    for a in (order, starts, ends, rings):
        a.setflags(write=False)
    return order, starts, ends, rings, dk


def _estimate_noise_spectrum(data: np.ndarray, pixel_size_A: float, ring_width_samples: float,
                             smooth_rings: int) -> NoiseSpectrum:
    u = periodic_component(data)
    u = u - u.mean()
    h, w = u.shape
    power = full_power(scipy.fft.rfft2(u), (h, w)) / (h * w)
    order, starts, ends, rings, dk = _ring_order((h, w), pixel_size_A, ring_width_samples)
    p_sorted = power.ravel()[order]
    # median per ring: the two middle elements of each ring (a partition per ring, not a full sort)
    med = np.empty(len(starts))
    for r, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
        lo, hi = (b - a - 1) // 2, (b - a) // 2
        seg = np.partition(p_sorted[a:b], (lo, hi))
        med[r] = 0.5 * (seg[lo] + seg[hi])
    med = med / np.log(2.0)
    k_centre = (rings + 0.5) * dk
    # ring 0 holds the DC term (removed): use the next ring's value
    if len(med) > 1:
        med[0] = med[1]
    logp = np.log(np.maximum(med, np.finfo(float).tiny))
    if smooth_rings > 1 and len(logp) >= smooth_rings:
        logp = ndimage.median_filter(logp, size=smooth_rings, mode="nearest")
    return NoiseSpectrum(k_A=k_centre, power=np.exp(logp), pixel_size_A=float(pixel_size_A), shape=(h, w))


def tile_grid(shape: tuple[int, int], pixel_size_A: float, tile_A: float) -> tuple[int, int, int, int, int]:
    """The centred grid of square tiles of ``tile_A`` [Å] on an image of ``shape``: tile side [px],
    tiles along y and x, offsets of the first tile [px]; no tiles when a side is under 8 px."""
    h, w = shape
    t = int(round(tile_A / pixel_size_A))
    ny, nx = (h // t, w // t) if t >= 8 else (0, 0)
    return t, ny, nx, (h - ny * t) // 2, (w - nx * t) // 2


def noise_spectrum_outside(data: np.ndarray, pixel_size_A: float, exclude: np.ndarray, *, tile_A: float = 24.0,
                           min_tiles: int = 8, whole: NoiseSpectrum | None = None) -> NoiseSpectrum | None:
    """Noise power spectrum of the part of an image that ``exclude`` does not cover.

    The image is cut into square tiles of ``tile_A``; the periodograms of the tiles that hold no
    excluded pixel (each tile made periodic, :func:`periodic_component`) are averaged and reduced
    to a ring mean. Below two of the tiles' frequency samples the tiles cannot resolve the
    spectrum; there it follows the whole image's estimate (``whole``), scaled to meet the tiles'.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image.
    pixel_size_A : float
        Pixel size [Å].
    exclude : numpy.ndarray
        Boolean mask of ``data``'s shape: the pixels not to use (crystal, with a margin).
    tile_A : float
        Tile side [Å]: several column spacings, so that the band a column detector uses is
        resolved (≈ 0.04 Å⁻¹ per sample at 24 Å).
    min_tiles : int
        Fewest free tiles that make an estimate [1].
    whole : NoiseSpectrum, optional
        The whole image's estimate (:func:`estimate_noise_spectrum`; computed when not given).

    Returns
    -------
    NoiseSpectrum or None
        On the whole image's frequency rings and shape; ``None`` when fewer than ``min_tiles``
        tiles are free.
    """
    u = np.asarray(data, dtype=np.float64)
    h, w = u.shape
    t, ny, nx, oy, ox = tile_grid((h, w), pixel_size_A, tile_A)
    if ny * nx < min_tiles:
        return None
    used = np.asarray(exclude, bool)[oy:oy + ny * t, ox:ox + nx * t].reshape(ny, t, nx, t).any(axis=(1, 3))
    free = np.argwhere(~used)
    if len(free) < min_tiles:
        return None
    tiles = _periodic_component(
        u[oy:oy + ny * t, ox:ox + nx * t].reshape(ny, t, nx, t).transpose(0, 2, 1, 3)[free[:, 0], free[:, 1]])
    tiles -= tiles.mean(axis=(1, 2), keepdims=True)
    power = full_power(scipy.fft.rfft2(tiles), (t, t)).sum(axis=0) / (len(tiles) * t * t)
    order, starts, ends, rings, dk = _ring_order((t, t), pixel_size_A, 1.0)
    ring_mean = np.add.reduceat(power.ravel()[order], starts) / (ends - starts)
    if len(ring_mean) > 1:
        ring_mean[0] = ring_mean[1]
    whole = whole or estimate_noise_spectrum(data, pixel_size_A)
    logp = np.interp(whole.k_A, (rings + 0.5) * dk, np.log(np.maximum(ring_mean, np.finfo(float).tiny)))
    low = whole.k_A < 2.0 / (t * pixel_size_A)
    if low.any() and not low.all():
        join = int(np.argmax(~low))
        logp[low] = np.log(whole.power[low]) - np.log(whole.power[join]) + logp[join]
    return NoiseSpectrum(k_A=whole.k_A, power=np.exp(logp), pixel_size_A=float(pixel_size_A), shape=(h, w),
                         measured_on="empty area")


def gaussian_transfer(shape: tuple[int, int], pixel_size_A: float, sigma_A: float) -> np.ndarray:
    """Transfer function of a Gaussian blur of ``sigma_A`` [Å] on the FFT grid of ``shape``."""
    k = radial_frequency_A(shape, pixel_size_A)
    return np.exp(-2.0 * np.pi**2 * sigma_A**2 * k**2)


def band_pass(data: np.ndarray, pixel_size_A: float, *, inner_sigma_A: float,
              outer_sigma_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Difference-of-Gaussians band-pass of an image, done in Fourier space.

    Returns the filtered image (the blur at ``inner_sigma_A`` minus the blur at
    ``outer_sigma_A``, so flat background and slow noise vanish) and the filter's transfer
    function (for :meth:`NoiseSpectrum.filtered_sigma`). The arrays are shared with later calls
    on the same pixels: do not modify them.
    """
    return memo_by_pixels("band_pass", data, (float(pixel_size_A), float(inner_sigma_A), float(outer_sigma_A)),
                 lambda: _band_pass(data, pixel_size_A, inner_sigma_A, outer_sigma_A))


def band_pass_transfer(shape: tuple[int, int], pixel_size_A: float, *, inner_sigma_A: float,
                       outer_sigma_A: float) -> np.ndarray:
    """Transfer function of :func:`band_pass` on the FFT grid of ``shape`` (no image needed)."""
    shape = (int(shape[0]), int(shape[1]))
    return gaussian_transfer(shape, pixel_size_A, inner_sigma_A) - gaussian_transfer(shape, pixel_size_A, outer_sigma_A)


def _band_pass(data: np.ndarray, pixel_size_A: float, inner_sigma_A: float,
               outer_sigma_A: float) -> tuple[np.ndarray, np.ndarray]:
    u = periodic_component(data)
    shape = u.shape
    transfer = band_pass_transfer(shape, pixel_size_A, inner_sigma_A=inner_sigma_A, outer_sigma_A=outer_sigma_A)
    # the transfer depends on |k| only: its first w // 2 + 1 columns are the real transform's
    half = transfer[:, :shape[1] // 2 + 1]
    return scipy.fft.irfft2(scipy.fft.rfft2(u) * half, s=shape), transfer


def significance_threshold(noise: NoiseSpectrum, transfer: np.ndarray, *, expected_false: float = 0.5) -> float:
    """Height (in noise standard deviations) that noise alone exceeds ``expected_false`` times in
    the whole image after a filter: the multiple-testing threshold for a peak search.

    Uses the expected Euler characteristic of the excursion set of a smooth 2-D Gaussian field
    (Adler; Worsley et al. 1996), which at high thresholds counts its local maxima:
    E = A · λ / (2π)^{3/2} · u · exp(−u²/2), with A the image area and λ the variance of the
    field's derivative over the field's variance (from the filtered noise spectrum). A larger
    image, or a rougher noise, needs a higher threshold.

    Parameters
    ----------
    noise : NoiseSpectrum
        The image's noise spectrum.
    transfer : numpy.ndarray
        The filter's transfer function on the image's FFT grid.
    expected_false : float
        Noise peaks above the threshold expected in the whole image [1].

    Returns
    -------
    float
        The threshold u [noise standard deviations].
    """
    h, w = transfer.shape
    p = noise.pixel_size_A
    lam = peak_roughness(noise, transfer)
    if not np.isfinite(lam):
        return float("inf")
    area = h * w * p * p
    scale = area * lam / (2 * np.pi) ** 1.5
    lo, hi = 1.0, 40.0
    for _ in range(60):  # E(u) decreases for u > 1: bisection
        mid = 0.5 * (lo + hi)
        if scale * mid * np.exp(-0.5 * mid * mid) > expected_false:
            lo = mid
        else:
            hi = mid
    return float(hi)


#: column-table attribute in which a locator records λ of its candidate search's filtered noise [1/Å²]
PEAK_ROUGHNESS_ATTR = "peak_roughness_per_A2"


def peak_roughness(noise: NoiseSpectrum, transfer: np.ndarray) -> float:
    """λ of the filtered noise: the variance of its derivative along one axis over its variance [1/Å²].

    The one number of a smooth, isotropic Gaussian field's shape that sets how many local maxima
    it has per area (:func:`significance_threshold`, :func:`false_peak_probability`).

    Parameters
    ----------
    noise : NoiseSpectrum
        The image's noise spectrum.
    transfer : numpy.ndarray
        The filter's transfer function on the image's FFT grid.

    Returns
    -------
    float
        λ [1/Å²]; NaN when the filtered noise has no power.
    """
    h, w = transfer.shape
    p = noise.pixel_size_A
    weight = np.abs(transfer) ** 2 * noise.power_on_grid(transfer.shape)
    var = weight.mean()
    if not var > 0:
        return float("nan")
    kx = np.fft.fftfreq(w, d=p)[None, :]
    ky = np.fft.fftfreq(h, d=p)[:, None]
    return float(0.5 * ((2 * np.pi) ** 2 * (kx**2 + ky**2) * weight).mean() / var)


def false_peak_probability(significance: np.ndarray, roughness_per_A2: float, radius_A: float) -> np.ndarray:
    """Probability that noise alone reaches ``significance`` somewhere in a disc: the p-value of a
    maximum found by looking at one known place with a tolerance of ``radius_A``.

    The expected Euler characteristic of the excursion set above u of a smooth, unit-variance 2-D
    Gaussian field in a disc of radius r (Adler & Taylor's Gaussian kinematic formula; at the
    heights that matter an upper bound of the probability and close to it):
    Φ̄(u) + π r · √λ / (2π) · e^(−u²/2) + π r² · λ / (2π)^{3/2} · u · e^(−u²/2). A disc holds several
    independent noise samples, so a peak at 2.5σ found within 1 Å of a site is far weaker evidence
    than the one-sample tail Φ̄(2.5) = 0.6 % says (≈ 25 % for the candidate search's band-pass).

    Parameters
    ----------
    significance : numpy.ndarray
        Heights u of the maxima [noise standard deviations].
    roughness_per_A2 : float
        λ of the filtered noise [1/Å²] (:func:`peak_roughness`).
    radius_A : float
        Radius of the disc looked in [Å].

    Returns
    -------
    numpy.ndarray
        The probabilities, at most 1.
    """
    u = np.asarray(significance, float)
    lam = float(roughness_per_A2)
    tail = np.exp(-0.5 * u * u)
    ec = (ndtr(-u) + np.pi * radius_A * np.sqrt(lam) / (2 * np.pi) * tail
          + np.pi * radius_A**2 * lam / (2 * np.pi) ** 1.5 * u * tail)
    return np.clip(ec, 0.0, 1.0)


def significance_at(data: np.ndarray, pixel_size_A: float, x_px: np.ndarray, y_px: np.ndarray, *,
                    inner_sigma_A: float, outer_sigma_A: float, radius_A: float,
                    noise: NoiseSpectrum) -> np.ndarray:
    """Significance of given places of an image: the highest band-passed value within ``radius_A``
    of each, over the band-passed noise's standard deviation under the image's own noise spectrum.

    The same measure as a candidate search's (:func:`band_pass` and
    :meth:`NoiseSpectrum.filtered_sigma`), taken at known places. It is how a place found on a
    *denoised* image is judged on the image as recorded, whose noise this module's model describes:
    a denoiser's output also carries its prior (a periodicity filter continues the lattice past a
    particle's edge), which no noise model of the output can tell from a column.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image, columns bright.
    pixel_size_A : float
        Pixel size [Å].
    x_px, y_px : numpy.ndarray
        Places [px].
    inner_sigma_A, outer_sigma_A : float
        σ of the band-pass's inner and outer Gaussian [Å] (:func:`band_pass`).
    radius_A : float
        Radius searched around each place [Å] (at least the pixel itself).
    noise : NoiseSpectrum
        The image's noise spectrum, the one its candidate search used
        (:func:`octascope.analysis.region.frame_noise_spectrum`).

    Returns
    -------
    numpy.ndarray
        Significance of each place [noise std]; ``-inf`` for places off the image.
    """
    data = np.asarray(data, dtype=np.float64)
    x = np.asarray(x_px, dtype=np.float64)
    y = np.asarray(y_px, dtype=np.float64)
    out = np.full(x.shape, -np.inf)
    if x.size == 0:
        return out
    filtered, transfer = band_pass(data, pixel_size_A, inner_sigma_A=inner_sigma_A, outer_sigma_A=outer_sigma_A)
    scale = max(float(np.abs(data).max()), 1e-30)
    z = filtered / max(noise.filtered_sigma(transfer), 1e-6 * scale)
    h, w = z.shape
    r = max(0.0, radius_A / pixel_size_A)
    ri = int(np.ceil(r))
    off = np.arange(-ri, ri + 1)
    cx, cy = np.rint(x).astype(int), np.rint(y).astype(int)
    gx = cx[:, None, None] + off[None, None, :]
    gy = cy[:, None, None] + off[None, :, None]
    near = (gx - x[:, None, None]) ** 2 + (gy - y[:, None, None]) ** 2 <= max(r, 0.5) ** 2
    near |= (gx == cx[:, None, None]) & (gy == cy[:, None, None])
    near &= (gx >= 0) & (gx < w) & (gy >= 0) & (gy < h)
    vals = np.where(near, z[np.clip(gy, 0, h - 1), np.clip(gx, 0, w - 1)], -np.inf)
    return vals.max(axis=(1, 2))
