"""Per-column position uncertainty and its linearised propagation to bond geometry.

Error model
-----------
Each column position ``(x, y)`` is treated as an independent Gaussian random variable with a
diagonal covariance ``diag(var_x, var_y)`` [Å²]; different columns are uncorrelated. Two sources
add up:

1. the locator's fit: ``x_err_A``, ``y_err_A`` (1-sigma, from the least-squares covariance);
2. the denoiser's Monte Carlo variance ``v`` (``Image.variance``, per pixel, of the *denoised*
   image), when present. The residual of a fit to a denoised image does not see this spread
   (the image looks clean), so it is added. A Gaussian peak of height ``A`` fitted to an image
   with white noise of variance ``v`` per pixel has the Cramér-Rao position variance
   ``2 v / (π A²)`` [px²] along each axis, independent of the peak width (Fisher information
   ``∫ (∂f/∂x0)² / v = π A² / (2 v)``). ``v`` is averaged over the 3 × 3 pixels at the column
   centre. The model ignores the spatial correlation of the denoiser's variance, so it is a lower
   bound when neighbouring pixels co-vary.

A missing source counts as zero; a column with neither gives NaN.

Propagation is first order (Jacobians), vectorised over octahedra; see
:func:`combination_variance`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from octascope.core.model import Image


def column_position_variance(columns: pd.DataFrame, denoised: Image | None = None) -> np.ndarray:
    """Variance of every column position [Å²].

    Parameters
    ----------
    columns : pandas.DataFrame
        Column table (``x_err_A``, ``y_err_A``, and ``x_px``, ``y_px``, ``amplitude`` for the
        denoiser term).
    denoised : Image, optional
        The image the columns were fitted on; its ``variance`` map (if any) adds the Monte Carlo term.

    Returns
    -------
    numpy.ndarray
        (N, 2) array of ``(var_x, var_y)`` [Å²]; NaN where no uncertainty information exists.
    """
    n = len(columns)
    fit = np.full((n, 2), np.nan)
    for k, name in enumerate(("x_err_A", "y_err_A")):
        if name in columns:
            fit[:, k] = columns[name].to_numpy(float) ** 2
    mc = denoiser_position_variance(columns, denoised) if denoised is not None else np.full(n, np.nan)
    have_any = np.isfinite(fit) | np.isfinite(mc)[:, None]
    total = np.nan_to_num(fit) + np.nan_to_num(mc)[:, None]
    return np.where(have_any, total, np.nan)


def denoiser_position_variance(columns: pd.DataFrame, denoised: Image) -> np.ndarray:
    """Position variance from the denoiser's Monte Carlo variance map [Å²] (same along x and y).

    Uses ``2 v / (π A²)`` [px²] with ``v`` the mean variance of the 3 × 3 pixels at the column
    centre and ``A`` the fitted amplitude (see the module docstring). NaN when the image has no
    variance map or the column lacks an amplitude.
    """
    n = len(columns)
    if denoised.variance is None or n == 0 or "amplitude" not in columns:
        return np.full(n, np.nan)
    var = np.asarray(denoised.variance, dtype=float)
    h, w = var.shape
    cx = np.rint(columns["x_px"].to_numpy(float))
    cy = np.rint(columns["y_px"].to_numpy(float))
    ok = np.isfinite(cx) & np.isfinite(cy)
    cx = np.where(ok, cx, 0).astype(int)
    cy = np.where(ok, cy, 0).astype(int)
    offs = np.array([-1, 0, 1])
    rr = np.clip(cy[:, None, None] + offs[None, :, None], 0, h - 1)
    cc = np.clip(cx[:, None, None] + offs[None, None, :], 0, w - 1)
    v = var[rr, cc].mean(axis=(1, 2))
    amp = columns["amplitude"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_px2 = 2.0 * v / (np.pi * amp**2)
    var_px2 = np.where(ok & (amp > 0), var_px2, np.nan)
    return var_px2 * denoised.pixel_size_A**2


def angle_gradient(b: np.ndarray) -> np.ndarray:
    """Gradient of the polar angle of vectors ``b`` with respect to ``b`` [rad/Å].

    ``d atan2(b_y, b_x) / d b = (-b_y, b_x) / |b|²``; the same holds for the angle measured from
    any fixed reference direction.
    """
    r2 = (b**2).sum(-1, keepdims=True)
    return np.stack([-b[..., 1], b[..., 0]], axis=-1) / r2


def length_gradient(b: np.ndarray) -> np.ndarray:
    """Gradient of ``|b|`` with respect to ``b`` (unit vector along ``b``) [1]."""
    return b / np.linalg.norm(b, axis=-1, keepdims=True)


def combination_variance(grad: np.ndarray, weights: np.ndarray, var_centre: np.ndarray, var_ends: np.ndarray) -> np.ndarray:
    """Variance of ``Q = Σ_k w_k q_k(b_k)`` with bonds ``b_k = X_k - P`` sharing the centre ``P``.

    Parameters
    ----------
    grad : numpy.ndarray
        (n, K, 2) gradients ``∂q_k / ∂b_k``.
    weights : numpy.ndarray
        (n, K) weights ``w_k`` (0 for absent bonds).
    var_centre : numpy.ndarray
        (n, 2) position variance of the shared centre ``P`` [Å²].
    var_ends : numpy.ndarray
        (n, K, 2) position variance of the bond ends ``X_k`` [Å²].

    Returns
    -------
    numpy.ndarray
        (n,) first-order variance of ``Q`` (units of ``q`` squared). ``∂Q/∂X_k = w_k g_k`` and
        ``∂Q/∂P = -Σ_k w_k g_k``; positions are independent.
    """
    wg = np.nan_to_num(weights[..., None] * grad)  # (n, K, 2); zero where the bond is absent
    present = weights != 0
    ends = np.where(present[..., None], wg**2 * var_ends, 0.0).sum(axis=(1, 2))
    centre = (wg.sum(axis=1) ** 2 * var_centre).sum(-1)
    return ends + centre
