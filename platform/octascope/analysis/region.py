"""Where the crystal is, and what lattice it shows: Bragg peaks and a crystal/vacuum mask.

A quantum dot sits on vacuum or on an amorphous support. Both give a featureless (or diffuse)
power spectrum, while the crystal gives Bragg peaks. The crystal region is therefore where the
*Bragg-filtered* image — the image kept only near the Bragg peaks — has more local energy than the
noise would give it. Both the peaks and the threshold are judged against the image's own noise
power spectrum (:mod:`octascope.analysis.noise_spectrum`), so the mask needs no per-image tuning, and the
same peaks tell the lattice spacing and its symmetry (used by the plausibility checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import scipy.fft
from scipy import ndimage

from octascope.analysis.noise_spectrum import (NoiseSpectrum, estimate_noise_spectrum, memo_by_pixels, noise_spectrum_outside,
                                               periodic_component, radial_frequency_A, tile_grid)
from octascope.core.errors import InputError, PluginParameterError
from octascope.core.model import BraggPeaks, CrystalRegion, Image
from octascope.core.params import Options, options_from, param, require


@dataclass(frozen=True, kw_only=True)
class RegionOptions(Options):
    """How the crystal region is found: the ``region`` group of the run configuration.

    :func:`find_region` and :func:`crystal_region` read them; the configuration check builds them
    before the image is read, and ``conf/config.yaml`` lists every one with its default.
    """

    mode: Literal["auto", "file", "polygon", "none"] = param(
        "auto", doc="auto (where the Bragg-filtered image has more local energy than the noise gives it), file "
                    "(mask_path), polygon (polygon_A) or none (the whole image)")
    mask_path: str | None = param(None, doc="mask file of the image's shape for mode=file (.npy or an image; "
                                            "non-zero = crystal)")
    polygon_A: tuple[tuple[float, float], ...] | None = param(None, unit="Å", doc="polygon vertices [[x, y], ...] "
                                                                                  "(image frame) for mode=polygon")
    resolution_A: float = param(3.0, unit="Å", doc="real-space σ over which the local lattice energy is averaged")
    threshold: float = param(4.0, doc="local energy over the noise's expectation that marks crystal")
    edge_level: float = param(0.2, doc="fraction of the interior energy at which the boundary is drawn")
    min_area_A2: float = param(150.0, unit="Å²", doc="smallest crystal region kept (~ four pseudocubic unit cells)")
    margin_A: float = param(2.5, unit="Å", doc="growth of the mask beyond the threshold contour")
    max_peaks: int = param(96, doc="strongest Bragg peaks used at most (all orientation groups together: "
                                   "several particles of a frame need more than one lattice's)")

    def check(self) -> None:
        require(self.mode != "file" or bool(self.mask_path), "mode=file needs region.mask_path=<mask file>")
        require(self.mode != "polygon" or (self.polygon_A is not None and len(self.polygon_A) >= 3),
                "mode=polygon needs region.polygon_A=[[x,y],...] in Å, at least three vertices")
        for key in ("resolution_A", "threshold"):
            require(getattr(self, key) > 0, f"{key} must be > 0, got {getattr(self, key)}")
        for key in ("edge_level", "min_area_A2", "margin_A"):
            require(getattr(self, key) >= 0, f"{key} must be >= 0, got {getattr(self, key)}")
        require(self.max_peaks >= 1, f"max_peaks must be >= 1, got {self.max_peaks}")


def region_options(options: RegionOptions | None = None, params: dict[str, Any] | None = None) -> RegionOptions:
    """``options``, or :class:`RegionOptions` built from the keyword form ``params`` (not both)."""
    if options is not None and params:
        raise PluginParameterError("region: give a RegionOptions or keyword parameters, not both")
    return options if options is not None else options_from(RegionOptions, params or {}, "region")


def find_bragg_peaks(data: np.ndarray, pixel_size_A: float, *, noise: NoiseSpectrum | None = None,
                     min_spacing_A: float = 1.5, max_spacing_A: float = 12.0, min_snr: float = 4.0,
                     smooth_samples: float = 1.0) -> BraggPeaks:
    """Peaks of the power spectrum that stand ``min_snr`` times above the noise power.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image.
    pixel_size_A : float
        Pixel size [Å].
    noise : NoiseSpectrum, optional
        The image's noise spectrum (estimated when not given).
    min_spacing_A, max_spacing_A : float
        Range of lattice-plane spacings searched, i.e. |k| from 1/max to 1/min [Å].
    min_snr : float
        Smoothed power over noise power that a peak must exceed [1]. The power of noise at one
        frequency is exponentially distributed; averaged over the ~12 samples of a σ = 1 sample
        smoothing kernel (a Gamma variable of shape ≈12.6, mean 1) it exceeds 4 with a probability
        of ~1e-9 per sample, i.e. practically never in a whole spectrum.
    smooth_samples : float
        Gaussian smoothing of the power spectrum [FFT samples], so a peak broadened by a small
        crystal counts with all its samples.

    Returns
    -------
    BraggPeaks
        Sorted by decreasing ``snr``; one peak of each ±k pair (the one with ky > 0, or kx > 0).
    """
    noise = noise or estimate_noise_spectrum(data, pixel_size_A)
    u = periodic_component(data)
    u = u - u.mean()
    h, w = u.shape
    # single precision: the power is compared with min_snr times the noise, 7 digits are plenty (and 2-3x faster)
    power = np.abs(scipy.fft.fft2(u.astype(np.float32))) ** 2 / (h * w)
    ratio = np.fft.fftshift(power / np.maximum(noise.power_on_grid((h, w)), np.finfo(float).tiny))
    k = np.fft.fftshift(radial_frequency_A((h, w), pixel_size_A))
    # only the searched band matters: cut the centred spectrum to the band's box plus the filters'
    # reach (the smoothing's 4 σ + the 3 x 3 maximum), where it is whole (else the wrapped filters)
    my = int(np.ceil(h * pixel_size_A / min_spacing_A)) + int(np.ceil(4 * smooth_samples)) + 2
    mx = int(np.ceil(w * pixel_size_A / min_spacing_A)) + int(np.ceil(4 * smooth_samples)) + 2
    cut = 2 * my + 1 < h and 2 * mx + 1 < w
    y0, x0 = (h // 2 - my, w // 2 - mx) if cut else (0, 0)
    if cut:
        ratio, k = ratio[y0:h // 2 + my + 1, x0:w // 2 + mx + 1], k[y0:h // 2 + my + 1, x0:w // 2 + mx + 1]
    mode = "nearest" if cut else "wrap"
    if smooth_samples > 0:
        ratio = ndimage.gaussian_filter(ratio, smooth_samples, mode=mode)
    band = (k >= 1.0 / max_spacing_A) & (k <= 1.0 / min_spacing_A)
    is_max = ratio == ndimage.maximum_filter(ratio, size=3, mode=mode)
    iy, ix = np.nonzero(is_max & band & (ratio > min_snr))
    ky = (iy + y0 - h // 2) / (h * pixel_size_A)
    kx = (ix + x0 - w // 2) / (w * pixel_size_A)
    upper = (ky > 0) | ((ky == 0) & (kx > 0))
    order = np.argsort(-ratio[iy[upper], ix[upper]])
    return BraggPeaks(kx_A=kx[upper][order], ky_A=ky[upper][order], snr=ratio[iy[upper], ix[upper]][order])


def _peak_amplitudes(u_hat: np.ndarray, pixel_size_A: float, peaks: BraggPeaks,
                     width_A: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Local amplitude of every Bragg peak on a coarse grid, and the noise each window passes.

    The image's spectrum ``u_hat`` (``np.fft.fft2`` of the periodic component, mean removed) is
    cut to a Gaussian window (σ = ``width_A`` [1/Å]) around each peak; moved to zero frequency and
    transformed back on the window's own (coarse) grid, it gives the complex amplitude ``c(x)`` of
    that lattice fringe, and the fringe pair ±k contributes ``2|c|²`` to the local energy of the
    Bragg-filtered image (cross terms between peaks oscillate and average out). A window spans
    ±4σ, so the coarse grid has a few samples per σ_r = 1/(2πσ) and every peak costs a small FFT.

    Returns
    -------
    power : numpy.ndarray
        (n_peaks, by, bx) ``2|c|²`` on the coarse grid [image units²].
    noise : numpy.ndarray
        (n_peaks,) the noise variance each ± window pair passes (Parseval) [image units²]; multiply
        by the noise power spectrum outside (here: its per-window sum is taken by the caller).
    step_A : float
        Spacing of the coarse grid along x and y (the field divided by the grid size) [Å].
    """
    h, w = u_hat.shape
    ry, rx = (int(np.ceil(4 * width_A * n * pixel_size_A)) for n in (h, w))
    by, bx = (min(n, max(16, scipy.fft.next_fast_len(2 * r + 1))) for n, r in ((h, ry), (w, rx)))
    # offsets in FFT order (0, 1, ..., -1): the window comes out ready for the inverse FFT
    oy, ox = np.fft.ifftshift(np.arange(by) - by // 2), np.fft.ifftshift(np.arange(bx) - bx // 2)
    boxes = np.empty((len(peaks), by, bx), dtype=u_hat.dtype)
    win2 = np.empty((len(peaks), by, bx))
    for k, (px, py) in enumerate(zip(peaks.kx_A, peaks.ky_A)):
        cy, cx = int(round(py * h * pixel_size_A)), int(round(px * w * pixel_size_A))
        ky = (cy + oy) / (h * pixel_size_A) - py
        kx = (cx + ox) / (w * pixel_size_A) - px
        g = np.exp(-ky**2 / (2 * width_A**2))[:, None] * np.exp(-kx**2 / (2 * width_A**2))[None, :]
        boxes[k] = u_hat[np.ix_((cy + oy) % h, (cx + ox) % w)] * g
        win2[k] = g**2
    c = scipy.fft.ifft2(boxes, axes=(-2, -1), overwrite_x=True) * (by * bx) / (h * w)
    power = 2.0 * np.abs(c) ** 2
    return power, win2, (h * pixel_size_A / by + w * pixel_size_A / bx) / 2


def orientation_groups(peaks: BraggPeaks, tolerance_deg: float = 2.5) -> list[np.ndarray]:
    """Bragg peaks grouped by lattice orientation: the angle modulo 45° (the {100} and {110} peaks
    of one [001] lattice fall together). Greedy by strength: the strongest peak not yet grouped
    seeds a group, which takes every ungrouped peak within ``tolerance_deg`` of the seed's angle, so
    peaks of several particles never chain into one group."""
    ang = np.mod(np.degrees(np.arctan2(peaks.ky_A, peaks.kx_A)), 45.0)
    free = np.ones(len(ang), bool)
    groups = []
    for seed in np.argsort(-np.asarray(peaks.snr)):
        if not free[seed]:
            continue
        near = free & (np.abs((ang - ang[seed] + 22.5) % 45.0 - 22.5) <= tolerance_deg)
        groups.append(np.flatnonzero(near))
        free &= ~near
    return groups


def crystal_region(data: np.ndarray, pixel_size_A: float, options: RegionOptions | None = None, *,
                   noise: NoiseSpectrum | None = None, peaks: BraggPeaks | None = None, **params: Any) -> CrystalRegion:
    """Automatic crystal mask from the local energy of the Bragg-filtered image.

    The image is filtered to Gaussian windows around its Bragg peaks; the squared result, averaged
    over ``resolution_A``, is the local lattice energy, computed per orientation group of peaks
    (one group per particle lattice in a frame of differently rotated particles) from each
    fringe's local amplitude on a coarse grid (:func:`_peak_amplitudes`). Noise alone gives an
    expected energy of mean(|mask|² × noise power) (Parseval), and a pixel belongs to the crystal
    where the local energy of some group exceeds ``threshold`` times that *and* ``edge_level``
    times the energy typical of the crystal's interior (the 90th percentile above the noise
    threshold, per connected crystal): the
    energy of a strong crystal falls off smoothly over ~``resolution_A``, and the second bound puts
    the boundary where a crystal edge convolved with the filter has fallen to about a quarter,
    not far out in the tail where it first meets the noise. Components smaller than
    ``min_area_A2`` are dropped, holes filled, and the mask grown by ``margin_A`` so the outermost
    columns (half of whose neighbourhood is vacuum) stay inside.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image.
    pixel_size_A : float
        Pixel size [Å].
    options : RegionOptions, optional
        Read here: ``resolution_A`` (real-space σ of the energy average [Å]; the Fourier windows
        have σ_k = 1 / (2π · resolution_A)), ``threshold`` [1], ``edge_level`` [1],
        ``min_area_A2`` [Å²], ``margin_A`` [Å] and ``max_peaks``; the defaults when neither it nor
        ``params`` is given.
    noise : NoiseSpectrum, optional
        The image's noise spectrum (estimated when not given).
    peaks : BraggPeaks, optional
        Bragg peaks (found when not given).
    **params
        The keyword form of ``options``.

    Returns
    -------
    CrystalRegion
        An all-False mask when the image shows no Bragg peaks.
    """
    o = region_options(options, params)
    resolution_A, threshold, edge_level, max_peaks = o.resolution_A, o.threshold, o.edge_level, o.max_peaks
    noise = noise or estimate_noise_spectrum(data, pixel_size_A)
    peaks = peaks if peaks is not None else find_bragg_peaks(data, pixel_size_A, noise=noise)
    shape = np.shape(data)
    if len(peaks) == 0:
        return CrystalRegion(mask=np.zeros(shape, bool), energy_snr=np.zeros(shape), threshold=threshold,
                             peaks=peaks, source="auto", info={"reason": "no Bragg peaks above the noise"})
    use = BraggPeaks(peaks.kx_A[:max_peaks], peaks.ky_A[:max_peaks], peaks.snr[:max_peaks])
    snr, step, n_groups = _lattice_snr(data, pixel_size_A, use, noise, resolution_A)
    mask = snr > threshold
    mask = _edge_level_per_crystal(mask, snr, edge_level)
    mask = _fill_holes(mask)
    labels, n = ndimage.label(mask)
    if n:
        areas = np.bincount(labels.ravel(), minlength=n + 1)[1:] * pixel_size_A**2
        keep = np.concatenate([[False], areas >= o.min_area_A2])
        mask = keep[labels]
    if o.margin_A > 0 and mask.any():
        mask = _grow(mask, o.margin_A / pixel_size_A)
    return CrystalRegion(mask=mask, energy_snr=snr.astype(np.float32), threshold=threshold, peaks=use, source="auto",
                         info={"n_peaks": len(use), "n_orientations": n_groups, "grid_step_A": step})


#: signals whose noise is additive and the same everywhere: the integral of the detector segments'
#: difference signals (iDPC, iCoM)
STATIONARY_NOISE_SIGNALS = ("idpc", "icom")


def frame_noise_spectrum(image: Image) -> NoiseSpectrum:
    """The noise spectrum the analysis of ``image`` uses: :func:`background_noise_spectrum`, told
    that the noise is the same everywhere when the image says it is iDPC or iCoM (otherwise it
    judges from the spectrum's slope)."""
    stationary = True if image.signal in STATIONARY_NOISE_SIGNALS else None
    return background_noise_spectrum(image.data, image.pixel_size_A, stationary=stationary)


def background_noise_spectrum(data: np.ndarray, pixel_size_A: float, *, stationary: bool | None = None,
                              margin_A: float = 8.0, tile_A: float = 24.0, min_tiles: int = 8) -> NoiseSpectrum:
    """The noise of an image, measured where it shows no lattice when enough of it does not.

    A wide field of several particles has empty area (support or vacuum); where the noise is the
    same everywhere (below), the noise there is the noise of the whole frame, while
    the ring-median estimate over the whole frame also holds the particles' own diffuse signal
    (:mod:`octascope.analysis.noise_spectrum`, "Frames with empty area"). The automatic crystal
    region (default options, grown by ``margin_A`` so the columns' tails stay out) marks the
    lattice; when at least ``min_tiles`` tiles of ``tile_A`` lie wholly outside it, their noise
    spectrum is returned (:func:`~octascope.analysis.noise_spectrum.noise_spectrum_outside`),
    otherwise — a particle that fills the image — the whole image's
    (:func:`~octascope.analysis.noise_spectrum.estimate_noise_spectrum`). Only for noise that is
    the same everywhere (``stationary``; by default judged from the spectrum: power falling faster
    than 1/k, log-log slope < −1 between 0.15 and 1 Å⁻¹, is iDPC/iCoM's, the integral of the
    detector segments' difference signals): the white counting noise of HAADF or ABF grows with
    the signal, so the empty area's would understate the particles' noise, and such an image keeps
    the whole image's estimate.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image.
    pixel_size_A : float
        Pixel size [Å].
    stationary : bool, optional
        Whether the noise is the same everywhere (True: iDPC/iCoM; False: counting noise); ``None``
        judges from the slope of the whole image's spectrum.
    margin_A : float
        Distance kept from the crystal region [Å].
    tile_A : float
        Tile side [Å].
    min_tiles : int
        Fewest lattice-free tiles that make an estimate [1].

    Returns
    -------
    NoiseSpectrum
    """
    def compute() -> NoiseSpectrum:
        whole = estimate_noise_spectrum(data, pixel_size_A)
        _, ny, nx, _, _ = tile_grid(np.shape(data), pixel_size_A, tile_A)
        same_everywhere = whole.slope() < -1.0 if stationary is None else stationary
        if not same_everywhere or ny * nx < min_tiles:  # a particle that fills the image: no crystal region needed
            return whole
        mask = crystal_region(data, pixel_size_A, noise=whole).mask
        if mask.any() and margin_A > 0:
            mask = _grow(mask, margin_A / pixel_size_A)
        return noise_spectrum_outside(data, pixel_size_A, mask, tile_A=tile_A, min_tiles=min_tiles, whole=whole) or whole

    return memo_by_pixels("background_noise", data, (stationary, float(pixel_size_A), float(margin_A), float(tile_A), int(min_tiles)),
                          compute)


def _lattice_snr(data: np.ndarray, pixel_size_A: float, peaks: BraggPeaks, noise: NoiseSpectrum,
                 resolution_A: float) -> tuple[np.ndarray, float, int]:
    """Local Bragg-filtered energy over the noise's expectation of it (computed on a coarse grid,
    returned on the image's pixels): for each orientation group of peaks (one particle's lattice, :func:`orientation_groups`), the summed
    local power of its fringes smoothed over ``resolution_A`` over the noise the same windows pass;
    the maximum over the groups (so each particle is judged on its own lattice)."""
    width = 1.0 / (2.0 * np.pi * resolution_A)
    u = periodic_component(data)
    # zero padding of ~4 real-space σ: a fringe's amplitude must not wrap around to the far border
    # (at least; up to the next fast FFT length, so a frame of awkward size costs no slow FFT)
    pad = int(np.ceil(4 * resolution_A / pixel_size_A))
    h0, w0 = np.shape(data)
    fh, fw = scipy.fft.next_fast_len(h0 + 2 * pad, real=True), scipy.fft.next_fast_len(w0 + 2 * pad, real=True)
    u_hat = scipy.fft.fft2(np.pad(u - u.mean(), ((pad, fh - h0 - pad), (pad, fw - w0 - pad))))
    power, win2, step = _peak_amplitudes(u_hat, pixel_size_A, peaks, width)
    h, w = u_hat.shape
    # noise through each ± window pair: mean over the full grid of |W|² P (Parseval)
    p_grid = noise.power_on_grid((h, w))
    noise_energy = np.empty(len(peaks))
    by, bx = power.shape[1:]
    oy, ox = np.fft.ifftshift(np.arange(by) - by // 2), np.fft.ifftshift(np.arange(bx) - bx // 2)  # as win2's
    for k, (px, py) in enumerate(zip(peaks.kx_A, peaks.ky_A)):
        cy, cx = int(round(py * h * pixel_size_A)), int(round(px * w * pixel_size_A))
        noise_energy[k] = 2.0 * float((win2[k] * p_grid[np.ix_((cy + oy) % h, (cx + ox) % w)]).sum()) / (h * w)
    best = np.zeros((by, bx))
    groups = orientation_groups(peaks)
    for g in groups:
        energy = ndimage.gaussian_filter(power[g].sum(0), resolution_A / step, mode="wrap")
        best = np.maximum(best, energy / max(float(noise_energy[g].sum()), np.finfo(float).tiny))
    full = upsample_periodic(best, (h, w))
    return full[pad:pad + h0, pad:pad + w0], step, len(groups)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes`` (4-connected background), by labelling: the background
    components that do not touch the border are holes (one labelling pass instead of an iterated
    dilation over the whole frame)."""
    labels, n = ndimage.label(~mask)
    if n == 0:
        return mask
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    hole = np.ones(n + 1, bool)
    hole[border] = False
    hole[0] = False
    return mask | hole[labels]


def _grow(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """Pixels within ``radius_px`` of ``mask`` (Euclidean): the distance transform on the mask's
    bounding box grown by the radius only, not on the whole frame."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    r = int(np.ceil(radius_px)) + 1
    h, w = mask.shape
    y0, y1 = max(0, rows[0] - r), min(h, rows[-1] + r + 1)
    x0, x1 = max(0, cols[0] - r), min(w, cols[-1] + r + 1)
    out = np.zeros_like(mask)
    # the box's own border is at least radius + 1 from the mask: padding it with background keeps the distances
    out[y0:y1, x0:x1] = ndimage.distance_transform_edt(~mask[y0:y1, x0:x1]) <= radius_px
    return out


def _interpolation_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights of periodic linear interpolation from ``n_in`` samples (sample j at
    position j) to ``n_out`` samples at positions i·n_in/n_out."""
    pos = np.arange(n_out) * (n_in / n_out)
    lo = np.floor(pos).astype(int)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo % n_in] += 1 - frac
    m[np.arange(n_out), (lo + 1) % n_in] += frac
    return m


def upsample_periodic(coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A periodic map sampled on a coarse grid (sample (r, c) at the fine pixel (r·H/h, c·W/w)),
    linearly interpolated to the fine grid ``shape`` (H, W)."""
    return _interpolation_matrix(shape[0], coarse.shape[0]) @ coarse @ _interpolation_matrix(shape[1], coarse.shape[1]).T


def _edge_level_per_crystal(mask: np.ndarray, energy: np.ndarray, edge_level: float) -> np.ndarray:
    """Keep, in each connected crystal of the threshold mask, the pixels above ``edge_level`` times
    that crystal's own interior energy (its 90th percentile): a frame's particles differ in
    thickness and size, so a weak particle is cut at its own edge, not at a stronger neighbour's."""
    if not mask.any():
        return mask
    labels, n = ndimage.label(mask)
    interior = np.asarray(ndimage.labeled_comprehension(energy, labels, np.arange(1, n + 1),
                                                        lambda v: np.percentile(v, 90), float, 0.0))
    level = np.concatenate([[np.inf], edge_level * interior])
    return mask & (energy > level[labels])


def region_from_mask_file(path: str, shape: tuple[int, int]) -> CrystalRegion:
    """A user-drawn crystal region from a mask file (``.npy``, or an image that imageio reads:
    non-zero pixels are crystal) of the image's shape."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"region mask file {str(p)!r} does not exist; give region.mask_path=<file of the image's shape>")
    if p.suffix.lower() == ".npy":
        m = np.load(p, allow_pickle=False)
    else:
        import imageio.v3 as iio  # lazy: not loaded at start-up; only for a mask drawn as an image

        m = np.asarray(iio.imread(p))
        if m.ndim == 3:
            m = m[..., :3].max(-1)
    if m.shape != tuple(shape):
        raise InputError(f"region mask {p.name} has shape {m.shape}, the image {tuple(shape)}; draw it on the same image")
    return CrystalRegion(mask=np.asarray(m) != 0, source="file", info={"path": str(p)})


def region_from_polygon(polygon_A: Sequence[Sequence[float]] | np.ndarray, shape: tuple[int, int], pixel_size_A: float) -> CrystalRegion:
    """A user-drawn crystal region from a polygon of (x, y) vertices [Å, image frame]."""
    from matplotlib.path import Path as MplPath  # lazy: matplotlib is not loaded at start-up; only for a drawn polygon

    verts = np.asarray(polygon_A, dtype=float)
    if verts.ndim != 2 or verts.shape[1] != 2 or len(verts) < 3:
        raise InputError("region.polygon_A needs at least three [x, y] vertices in Å, e.g. [[10,10],[60,10],[60,60]]")
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    pts = np.column_stack([xx.ravel(), yy.ravel()]) * pixel_size_A
    mask = MplPath(verts).contains_points(pts).reshape(h, w)
    return CrystalRegion(mask=mask, source="polygon", info={"polygon_A": verts.tolist()})


def find_region(data: np.ndarray, pixel_size_A: float, options: RegionOptions | None = None, *,
                noise: NoiseSpectrum | None = None, **params: Any) -> CrystalRegion:
    """The crystal region of an image: automatic (:func:`crystal_region`), from a mask file, from a
    polygon in Å, or the whole image (``mode="none"``).

    Parameters
    ----------
    data : numpy.ndarray
        2-D image.
    pixel_size_A : float
        Pixel size [Å].
    options : RegionOptions, optional
        ``mode`` and its parameters (default: automatic).
    noise : NoiseSpectrum, optional
        The image's noise spectrum, for ``auto``.
    **params
        The keyword form of ``options``.
    """

    o = region_options(options, params)
    shape = np.shape(data)
    if o.mode == "auto":
        return crystal_region(data, pixel_size_A, o, noise=noise)
    if o.mode == "none":
        return CrystalRegion(mask=np.ones(shape, bool), source="none")
    if o.mode == "file":
        if not o.mask_path:
            raise InputError("region.mode=file needs region.mask_path=<mask file>")
        return region_from_mask_file(o.mask_path, shape)
    if o.polygon_A is None:
        raise InputError("region.mode=polygon needs region.polygon_A=[[x,y],...] in Å")
    return region_from_polygon(o.polygon_A, shape, pixel_size_A)
