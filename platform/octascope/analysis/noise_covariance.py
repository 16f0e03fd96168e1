"""Covariance of linear estimators under an image's own (correlated) noise.

A least-squares fit of a column on its patch is, to first order in the noise ``ε``, a linear
estimator: ``δp = (JᵀWJ)⁻¹ JᵀW ε``. Its position rows are the column's *influence* ``h`` (two rows,
x and y, one weight per patch pixel). The covariance of two such estimates is

    Cov(δa_i, δb_j) = Σ_m Σ_n h_i[a, m] h_j[b, n] A(c_j + o_n − c_i − o_m)

with ``A`` the noise autocovariance, ``c`` the patch centres and ``o`` the patch offsets. White noise
makes ``A`` a delta, so only pixels shared by two patches couple them; the integrated noise of
iDPC/iCoM (power ∝ 1/k²) is correlated over a column's whole footprint and beyond, so neighbours
are correlated even when their patches do not overlap, and the white-noise formula
``σ²(JᵀJ)⁻¹`` misses most of the variance.

``A`` is the inverse FFT of the noise power spectrum estimated from the image
(:class:`octascope.analysis.noise_spectrum.NoiseSpectrum`); observables that are linear filters of the
image (the Fourier gradient fitted by :mod:`octascope.analysis.refine`) have the cross-spectra
``conj(T_c) T_c' P``. The double sum is evaluated directly (:func:`estimator_covariance`): a
column's own covariance needs only the lags within one patch (one M × M kernel for all columns), a
pair's the lags between two patches.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import fft as sfft
from scipy.spatial import cKDTree

from octascope.analysis.noise_spectrum import NoiseSpectrum

#: autocovariance values gathered at once for the pairs (bounded memory, float64)
_MAX_ELEMENTS = 2**22


def channel_spectra(noise: NoiseSpectrum, shape: tuple[int, int], channels: Sequence[str] = ("image",)) -> np.ndarray:
    """Cross-spectra ``conj(T_c) T_c' P`` of the noise of the observables on the FFT grid of
    ``shape`` (C, C, H, W), complex.

    ``channels``: ``"image"`` (the image itself), ``"dx"``, ``"dy"`` (its Fourier derivative along
    x and y per pixel, as :func:`octascope.analysis.refine._observables` takes it). The spectrum is
    that of the image's noise with ``noise.pixel_size_A`` as the grid's pixel size; its variance
    convention is :class:`NoiseSpectrum`'s (variance = mean over the grid).
    """
    p = noise.power_on_grid(shape)
    ky = np.fft.fftfreq(shape[0])[:, None] * np.ones((1, shape[1]))
    kx = np.fft.fftfreq(shape[1])[None, :] * np.ones((shape[0], 1))
    transfer = {"image": np.ones(shape, complex), "dx": 2j * np.pi * kx, "dy": 2j * np.pi * ky}
    c = len(channels)
    out = np.empty((c, c) + tuple(shape), complex)
    for a, ca in enumerate(channels):
        for b, cb in enumerate(channels):
            out[a, b] = np.conj(transfer[ca]) * transfer[cb] * p
    return out


def autocovariance(spectra: np.ndarray) -> np.ndarray:
    """The (cross-)autocovariance functions ``A_cc'(Δ) = E[ε_c(r) ε_c'(r + Δ)]`` of ``spectra``
    (C, C, H, W) on the same grid (lag 0 at [0, 0], negative lags wrapped)."""
    return np.real(np.fft.ifft2(spectra, axes=(-2, -1)))


def estimator_covariance(influence: np.ndarray, offsets: np.ndarray, centres: np.ndarray, pairs: np.ndarray,
                         acov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Covariance of linear position estimators under stationary noise (module docstring).

    Parameters
    ----------
    influence : numpy.ndarray
        (N, C, 2, M) weights of each column's x and y estimate on its patch pixels, per channel.
    offsets : numpy.ndarray
        (M, 2) integer patch offsets (ox, oy) [px].
    centres : numpy.ndarray
        (N, 2) integer patch centres (cx, cy) [px].
    pairs : numpy.ndarray
        (P, 2) column indices (i, j), i ≠ j, whose covariance is wanted; every lag between their
        patches must be shorter than half the autocovariance grid.
    acov : numpy.ndarray
        (C, C, H, W) from :func:`autocovariance`.

    Returns
    -------
    own : numpy.ndarray
        (N, 2, 2) covariance of every column's (x, y) [px²].
    pair : numpy.ndarray
        (P, 2, 2) ``Cov((x_i, y_i), (x_j, y_j))`` of each pair [px²].
    """
    n, c, _, m = influence.shape
    if m > DIRECT_MAX_PIXELS and _fft_window(offsets, centres, pairs) <= min(acov.shape[-2:]):
        return _estimator_covariance_fft(influence, offsets, centres, pairs, acov)
    h, w = acov.shape[-2:]
    off = np.asarray(offsets, np.int64)
    lag_x = off[None, :, 0] - off[:, None, 0]  # (M, M): o_n − o_m
    lag_y = off[None, :, 1] - off[:, None, 1]
    kernel = acov[:, :, lag_y % h, lag_x % w]  # (C, C, M, M): lags within one patch
    hk = np.einsum("icam,cdmn->idan", influence, kernel)
    own = np.einsum("idan,idbn->iab", hk, influence)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    pair = np.zeros((len(pairs), 2, 2))
    if not len(pairs):
        return own, pair
    # lag 0 moved to the grid's centre: a pair's lags d + o_n − o_m index it without wrapping
    centred = np.fft.fftshift(acov, axes=(-2, -1)).reshape(c, c, h * w)
    lag_flat = lag_y * w + lag_x  # (M, M)
    cen = np.asarray(centres, np.int64)
    d = cen[pairs[:, 1]] - cen[pairs[:, 0]]
    reach = np.abs(d).max(axis=1) + np.abs(off).max() * 2
    if reach.max(initial=0) >= min(h, w) // 2:
        raise ValueError(f"a pair's lags ({int(reach.max())} px) exceed half the autocovariance grid ({h} x {w})")
    base = (h // 2 + d[:, 1]) * w + (w // 2 + d[:, 0])
    chunk = max(1, int(_MAX_ELEMENTS // max(1, m * m)))
    for p0 in range(0, len(pairs), chunk):
        sl = slice(p0, p0 + chunk)
        i, j = pairs[sl, 0], pairs[sl, 1]
        idx = base[sl, None, None] + lag_flat[None]  # (k, M, M)
        acc = np.zeros((len(i), 2, 2))
        for a in range(c):
            for b in range(c):
                block = np.take(centred[a, b], idx)  # (k, M, M)
                acc += np.matmul(np.matmul(influence[i, a], block), np.swapaxes(influence[j, b], 1, 2))
        pair[sl] = acc
    return own, pair


#: patches of more pixels than this are convolved by FFT instead of summed directly (the direct sum
#: costs M² per column and per pair; a fit on unbinned pixels far finer than a column has M in the thousands)
DIRECT_MAX_PIXELS = 400


def _fft_window(offsets: np.ndarray, centres: np.ndarray, pairs: np.ndarray) -> int:
    """Side of the periodic window on which :func:`_estimator_covariance_fft` convolves: every lag
    d + o_n − o_m of a pair, read at d + o_n after a convolution over o_m, stays unwrapped."""
    off = np.abs(np.asarray(offsets, np.int64)).max() if len(offsets) else 0
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    cen = np.asarray(centres, np.int64)
    d = int(np.abs(cen[pairs[:, 1]] - cen[pairs[:, 0]]).max()) if len(pairs) else 0
    return int(sfft.next_fast_len(2 * (d + 3 * int(off)) + 2))


def _estimator_covariance_fft(influence: np.ndarray, offsets: np.ndarray, centres: np.ndarray, pairs: np.ndarray,
                              acov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`estimator_covariance` for large patches: each column's influence is convolved with the
    autocovariance on a periodic S × S window by FFT and read at its own and its neighbours' pixels."""
    n, c, _, m = influence.shape
    h, w = acov.shape[-2:]
    off = np.asarray(offsets, np.int64)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    cen = np.asarray(centres, np.int64)
    size = _fft_window(offsets, centres, pairs)
    lag = np.fft.fftfreq(size, d=1.0 / size).astype(np.int64)
    window_fft = np.fft.fft2(acov[:, :, lag[:, None] % h, lag[None, :] % w], axes=(-2, -1))
    flat = (off[:, 1] % size) * size + off[:, 0] % size
    own = np.zeros((n, 2, 2))
    pair = np.zeros((len(pairs), 2, 2))
    order = np.argsort(pairs[:, 0], kind="stable") if len(pairs) else np.zeros(0, np.int64)
    first = pairs[order, 0] if len(pairs) else np.zeros(0, np.int64)
    chunk = max(1, int(_MAX_ELEMENTS // (c * 2 * size * size)))
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        grid = np.zeros((i1 - i0, c, 2, size * size))
        grid[..., flat] = influence[i0:i1]
        g_hat = np.fft.fft2(grid.reshape(i1 - i0, c, 2, size, size), axes=(-2, -1))
        v = np.real(np.fft.ifft2(np.einsum("icaxy,cdxy->idaxy", g_hat, window_fft), axes=(-2, -1)))
        v = v.reshape(i1 - i0, c, 2, size * size)
        own[i0:i1] = np.einsum("icam,icbm->iab", v[..., flat], influence[i0:i1])
        lo, hi = np.searchsorted(first, i0), np.searchsorted(first, i1)
        if hi > lo:
            sel = order[lo:hi]
            i, j = pairs[sel, 0], pairs[sel, 1]
            dd = cen[j] - cen[i]
            idx = ((dd[:, 1, None] + off[None, :, 1]) % size) * size + (dd[:, 0, None] + off[None, :, 0]) % size
            got = np.take_along_axis(v[i - i0], np.broadcast_to(idx[:, None, None, :], (len(sel), c, 2, m)), axis=-1)
            pair[sel] = np.einsum("kcam,kcbm->kab", got, influence[j])
    return own, pair


def neighbour_pairs(x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """(P, 2) index pairs (i < j) of points closer than ``radius`` (same units), ignoring NaN points."""

    xy = np.column_stack([np.asarray(x, float), np.asarray(y, float)])
    ok = np.isfinite(xy).all(1)
    idx = np.flatnonzero(ok)
    if len(idx) < 2 or radius <= 0:
        return np.zeros((0, 2), int)
    p = cKDTree(xy[ok]).query_pairs(radius, output_type="ndarray")
    return idx[p].reshape(-1, 2) if len(p) else np.zeros((0, 2), int)
