"""Position covariances of a shared-profile fit, from one influence template per profile group.

A least-squares fit of a column's ``A, B, x0, y0`` with a known profile is, to first order in the
noise, linear: ``δx_i = h_i · ε`` with ``h_i`` the column's *influence* (rows x0, y0 of
``(JᵀJ)⁻¹Jᵀ`` on its patch). With the profile shared by a group, the influence of every member is
the same function up to its amplitude: ``h_i(r) = T_g(r - r_i) / A_i``, with ``T_g`` the influence
of a unit column of group g centred on its patch (:func:`group_templates`). Under stationary noise
of autocovariance ``a`` the covariance of two members is therefore a function of their displacement
only::

    Cov(δr_i, δr_j) = C_gh(r_j - r_i) / (A_i A_j),   C_gh(D) = Σ_m Σ_n T_g[m] T_h[n] a(D + o_n - o_m)

computed once per pair of groups on a grid of integer displacements by FFT
(:func:`template_cross_covariance`, ``C = IFFT(P T̂_g conj(T̂_h))`` with ``P`` the noise power on
that grid) and read at each pair's displacement by bilinear interpolation. That replaces the
double sum over the pixels of every pair (M² per pair, :func:`octascope.analysis.noise_covariance.estimator_covariance`)
by a lookup; what it leaves out is the sub-pixel placement of a column on its patch's pixels (the
patch is a disk around the rounded centre; not measured separately: the locator's calibration
tests, ``tests/analysis/test_noise_covariance.py``, run through this path). For columns at whole pixels
the two are equal (``tests/plugins/locate/test_shared_profile.py``). Columns whose patch is cut by the
image border have another influence and keep the direct sum.
"""

from __future__ import annotations

import numpy as np

from octascope.analysis.noise_covariance import autocovariance, channel_spectra, estimator_covariance, neighbour_pairs
from octascope.analysis.noise_spectrum import NoiseSpectrum, estimate_noise_spectrum

from octascope_plugins.locate.lm_solver import N_POSITION, _X, _Y, model
from octascope_plugins.locate.patches import disk_offsets

#: the residual's noise spectrum is estimated on at most this many pixels square around its centre
#: (the noise is stationary; a 2048² spectrum costs seconds)
NOISE_CROP_PX = 512


def centre_crop(data: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` × ``size`` pixels of ``data`` (all of a smaller axis)."""
    h, w = data.shape
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return data[y0:y0 + size, x0:x0 + size]


def acov_grid(shape: tuple[int, int], patch_radius_px: int, pair_radius_px: float) -> tuple[int, int]:
    """Grid of the noise autocovariance: long enough for every lag of a pair (|lag| < half the
    grid), at most the image and :data:`NOISE_CROP_PX`, whose longest wavelength covers the patches."""
    need = 2 * (int(np.ceil(pair_radius_px)) + 2 + 3 * patch_radius_px) + 2
    side = max(need, min(NOISE_CROP_PX, max(shape)))
    return side, side


def residual_noise(residual: np.ndarray, pixel_size_A: float, noise_model: str) -> tuple[NoiseSpectrum, str]:
    """The noise spectrum of the fit's residual (the image minus the model of all columns; its
    central :data:`NOISE_CROP_PX` square) and the noise model it implies: ``noise_model`` as given,
    or for ``auto`` ``spectrum`` when the noise power falls faster than 1/k (log-log slope < −1
    between 0.15 and 1 Å⁻¹), ``white`` otherwise."""
    noise = estimate_noise_spectrum(centre_crop(residual, NOISE_CROP_PX), pixel_size_A)
    if noise_model == "auto":
        slope = noise.slope()
        noise_model = "spectrum" if np.isfinite(slope) and slope < -1.0 else "white"
    return noise, noise_model


def group_templates(shapes: np.ndarray, radius_px: int) -> np.ndarray:
    """Influence template of every profile group: rows x0, y0 of ``(JᵀJ)⁻¹Jᵀ`` of a unit-amplitude
    column at the centre of a full disk patch, its ``A, B, x0, y0`` free (:mod:`.lm_solver` Jacobian).

    Parameters
    ----------
    shapes : numpy.ndarray
        (G, 3) ``l11, l21, l22`` of the groups [1/px].
    radius_px : int
        Patch radius [px] (offsets as :func:`.patches.disk_offsets`).

    Returns
    -------
    numpy.ndarray
        (G, 2, M) templates [px per image unit].
    """
    ox, oy, _, _ = disk_offsets(radius_px)
    g = len(shapes)
    p = np.zeros((g, 7))
    p[:, 0] = 1.0
    p[:, 4:] = np.asarray(shapes, float)
    xs = np.broadcast_to(ox.astype(np.float64)[None, :], (g, len(ox)))
    ys = np.broadcast_to(oy.astype(np.float64)[None, :], (g, len(oy)))
    _, jac = model(p, xs, ys, jacobian=True)
    jac = jac[:, :N_POSITION]
    infl = np.linalg.solve(jac @ jac.swapaxes(1, 2), jac)
    return infl[:, _X:_Y + 1]


def _odd_fast_len(n: int) -> int:
    """The smallest odd number >= ``n`` with no prime factor above 7 (a fast FFT length, odd so a
    grid of lags is symmetric about zero)."""
    k = n + (1 - n % 2)
    while True:
        m = k
        for f in (3, 5, 7):
            while m % f == 0:
                m //= f
        if m == 1:
            return k
        k += 2


def template_cross_covariance(templates: np.ndarray, radius_px: int, acov: np.ndarray,
                              reach_px: float) -> np.ndarray:
    """``C_gh(D)`` of every pair of groups on a grid of integer displacements (module docstring).

    Parameters
    ----------
    templates : numpy.ndarray
        (G, 2, M) from :func:`group_templates`.
    radius_px : int
        Their patch radius [px].
    acov : numpy.ndarray
        (H, W) noise autocovariance (lag 0 at [0, 0]); lags up to ``reach_px`` + 2 ``radius_px``
        must lie within half of it.
    reach_px : float
        Longest displacement needed [px].

    Returns
    -------
    numpy.ndarray
        (G, G, 2, 2, S, S) with ``[g, h, a, b, dy % S, dx % S]`` the covariance of component a
        (x0, y0) of a unit column of group g at 0 with component b of one of group h at (dx, dy)
        [px² per image unit²]; S odd.
    """
    h, w = acov.shape
    s = _odd_fast_len(2 * (int(np.ceil(reach_px)) + 2 + 2 * radius_px) + 1)
    if s // 2 >= min(h, w) // 2 + 1:
        raise ValueError(f"the autocovariance grid ({h} x {w}) is too small for lags of {s // 2} px")
    lag = np.fft.fftfreq(s, d=1.0 / s).astype(np.int64)
    window = acov[lag[:, None] % h, lag[None, :] % w]  # the autocovariance at lags -S/2 .. S/2 (S odd: symmetric)
    power = np.real(np.fft.fft2(window))
    ox, oy, _, _ = disk_offsets(radius_px)
    g = templates.shape[0]
    grid = np.zeros((g, 2, s, s))
    grid[:, :, oy % s, ox % s] = templates
    t_hat = np.fft.fft2(grid)
    prod = power * t_hat[:, None, :, None] * np.conj(t_hat[None, :, None, :])
    return np.real(np.fft.ifft2(prod))


def _bilinear(table: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``table`` (..., S, S) of integer lags [dy % S, dx % S], bilinearly interpolated at the
    displacements (dx, dy) [px] -> (P, ...)."""
    s = table.shape[-1]
    x0, y0 = np.floor(dx), np.floor(dy)
    fx, fy = (dx - x0)[:, None, None], (dy - y0)[:, None, None]
    ix, iy = x0.astype(np.int64) % s, y0.astype(np.int64) % s
    jx, jy = (ix + 1) % s, (iy + 1) % s

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return np.moveaxis(table[..., yy, xx], -1, 0)

    return ((1 - fx) * (1 - fy) * at(iy, ix) + fx * (1 - fy) * at(iy, jx)
            + (1 - fx) * fy * at(jy, ix) + fx * fy * at(jy, jx))


def shared_profile_covariance(*, ok: np.ndarray, x: np.ndarray, y: np.ndarray, amplitude: np.ndarray,
                              group: np.ndarray, shapes: np.ndarray, radius_px: int, centres: np.ndarray,
                              edge: np.ndarray, influence: np.ndarray, white: np.ndarray, residual: np.ndarray,
                              pixel_size_A: float, noise_model: str, covariance_radius_A: float
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Position covariance of every column of a shared-profile fit and of neighbouring columns [px²].

    Interior columns from the group templates (module docstring); columns whose patch is cut by the
    border (``edge``), and their pairs, from the direct sum over their own ``influence``.
    ``noise_model`` as for the locator: ``spectrum`` takes the noise covariance from the power
    spectrum of the residual, ``white`` keeps each column's own residual sandwich ``white`` and
    scales the spectrum's pair covariances to the two columns' levels, ``auto`` chooses
    (:func:`residual_noise`).

    Parameters
    ----------
    ok : numpy.ndarray
        (N,) bool, usable fits.
    x, y : numpy.ndarray
        (N,) fitted positions [px].
    amplitude : numpy.ndarray
        (N,) fitted amplitudes [image units].
    group : numpy.ndarray
        (N,) profile group of every column.
    shapes : numpy.ndarray
        (G, 3) ``l11, l21, l22`` of the groups [1/px].
    radius_px : int
        Patch radius [px].
    centres : numpy.ndarray
        (N, 2) integer patch centres (cx, cy) [px].
    edge : numpy.ndarray
        (N,) bool, patches cut by the image border.
    influence : numpy.ndarray
        (N, 2, M) every column's own influence (read for the edge columns and their pairs).
    white : numpy.ndarray
        (N, 2, 2) every column's white-noise sandwich [px²].
    residual : numpy.ndarray
        (H, W) the image minus the model of all columns.
    pixel_size_A : float
        Pixel size of the fit grid [Å].
    noise_model : str
        ``auto``, ``spectrum`` or ``white``.
    covariance_radius_A : float
        Columns closer than this get their pair covariance [Å].

    Returns
    -------
    own : numpy.ndarray
        (N, 2, 2) (NaN for unusable fits).
    pairs : numpy.ndarray
        (P, 2) indices of neighbouring usable fits.
    pair_cov : numpy.ndarray
        (P, 2, 2) their covariances.
    noise_model : str
        ``spectrum`` or ``white``.
    """
    noise, mode = residual_noise(residual, pixel_size_A, noise_model)
    amp = np.asarray(amplitude, float)
    edge = np.asarray(edge, bool)
    usable = np.asarray(ok, bool) & np.isfinite(amp) & (amp > 0)
    usable &= ~edge | np.isfinite(influence).all(axis=(1, 2))
    radius = covariance_radius_A / pixel_size_A
    idx = np.flatnonzero(usable)
    pairs = idx[neighbour_pairs(x[usable], y[usable], radius)] if len(idx) else np.zeros((0, 2), np.int64)
    own = np.full((len(x), 2, 2), np.nan)
    pair_cov = np.zeros((len(pairs), 2, 2))
    if not len(idx):
        return own, pairs, pair_cov, mode
    acov = autocovariance(channel_spectra(noise, acov_grid(np.shape(residual), radius_px, radius)))[0, 0]
    table = template_cross_covariance(group_templates(shapes, radius_px), radius_px, acov, radius + 1)
    g = np.asarray(group, np.int64)
    spec_own = np.full((len(x), 2, 2), np.nan)
    spec_own[idx] = table[g[idx], g[idx], :, :, 0, 0] / amp[idx, None, None] ** 2
    if len(pairs):
        _template_pair_covariance(pair_cov, table, g, pairs, x, y, amp)
    cut = usable & edge
    if cut.any():  # the border cuts these patches: their own influence, the direct sum
        _edge_covariance(spec_own, pair_cov, cut, pairs, influence, centres, radius_px, acov)
    if mode == "spectrum":
        own[idx] = spec_own[idx]
        return own, pairs, pair_cov, mode
    own[idx] = white[idx]
    return own, pairs, _white_scaled(pair_cov, pairs, white, spec_own), mode


def _template_pair_covariance(pair_cov: np.ndarray, table: np.ndarray, g: np.ndarray, pairs: np.ndarray,
                              x: np.ndarray, y: np.ndarray, amp: np.ndarray) -> None:
    """Fill ``pair_cov`` (P, 2, 2) [px²] of the (non-empty) ``pairs`` from the group templates'
    cross-covariance ``table``, interpolated at each pair's separation and divided by the two amplitudes."""
    i, j = pairs[:, 0], pairs[:, 1]
    # one table lookup per pair of groups present
    gi, gj = g[i], g[j]
    for a, b in {(int(u), int(v)) for u, v in zip(gi.tolist(), gj.tolist())}:
        sel = np.flatnonzero((gi == a) & (gj == b))
        vals = _bilinear(table[a, b], x[j[sel]] - x[i[sel]], y[j[sel]] - y[i[sel]])
        pair_cov[sel] = vals / (amp[i[sel]] * amp[j[sel]])[:, None, None]


def _edge_covariance(spec_own: np.ndarray, pair_cov: np.ndarray, cut: np.ndarray, pairs: np.ndarray,
                     influence: np.ndarray, centres: np.ndarray, radius_px: int, acov: np.ndarray) -> None:
    """Overwrite, in ``spec_own`` (N, 2, 2) and ``pair_cov`` (P, 2, 2) [px²], the covariances of the
    columns whose patch the border cuts (``cut``) and of their pairs, by the direct sum over their own
    ``influence``: the group templates assume a whole patch."""
    at_edge = cut[pairs[:, 0]] | cut[pairs[:, 1]] if len(pairs) else np.zeros(0, bool)
    involved = np.unique(np.concatenate([np.flatnonzero(cut), pairs[at_edge].ravel()]))
    pos = np.full(len(cut), -1)
    pos[involved] = np.arange(len(involved))
    ox, oy, _, _ = disk_offsets(radius_px)
    e_own, e_pair = estimator_covariance(influence[involved][:, None], np.column_stack([ox, oy]),
                                         np.asarray(centres, np.int64)[involved], pos[pairs[at_edge]],
                                         acov[None, None])
    spec_own[involved[cut[involved]]] = e_own[cut[involved]]
    pair_cov[at_edge] = e_pair


def _white_scaled(pair_cov: np.ndarray, pairs: np.ndarray, white: np.ndarray, spec_own: np.ndarray) -> np.ndarray:
    """The spectrum's pair covariances [px²] scaled to the two columns' levels of the ``white`` noise
    model: each column's level is √(trace white / trace spectrum)."""
    with np.errstate(invalid="ignore"):
        level = np.sqrt(np.clip(np.einsum("nii->n", white), 0, None) / np.maximum(np.einsum("nii->n", spec_own), 1e-300))
    if len(pairs):
        pair_cov = pair_cov * (level[pairs[:, 0]] * level[pairs[:, 1]])[:, None, None]
    return pair_cov
