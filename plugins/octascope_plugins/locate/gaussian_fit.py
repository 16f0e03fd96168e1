"""The batched Gaussian fit of all columns: rounds of Levenberg-Marquardt with restarts and
neighbour subtraction, uncertainties, and the column table.

Overlapping neighbours are handled by iterative neighbour subtraction: after each round the
current model of every column is rendered (:func:`.neighbours.others_on_patches`), and each
column is refitted on its patch minus the model of all the other columns. The solver is
:mod:`.lm_solver`, the patches :mod:`.patches`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from octascope.core.model import make_columns
from octascope.core.devices import select_device

from octascope_plugins.locate.ellipse import ellipse_from_covariance
from octascope_plugins.locate.gaussian_options import GaussianOptions
from octascope_plugins.locate.lm_solver import _A, _B, _L11, _L22, _X, _Y, N_PARAMS, covariance, levenberg_marquardt, model
from octascope_plugins.locate.neighbours import others_on_patches
from octascope_plugins.locate.patches import Patches

if TYPE_CHECKING:
    import torch



def resolve_device(device: str) -> "torch.device":
    """The torch device of the locator (see :func:`octascope.core.devices.select_device`)."""
    return select_device(device, "locator 'gaussian'")


@dataclass
class GaussianFit:
    """Per-column results of :func:`fit_gaussians` (numpy arrays, pixel units).

    ``cxx``, ``cxy``, ``cyy`` are the covariance entries of the fitted Gaussian [px²];
    ``x_err``, ``y_err`` the 1-sigma position uncertainties [px]; ``residual`` the RMS residual
    relative to the amplitude; ``edge`` marks patches cut by the image border; ``ok`` marks
    successful fits (failed ones keep their start position and NaN shape).
    """

    x: np.ndarray
    y: np.ndarray
    amplitude: np.ndarray
    background: np.ndarray
    cxx: np.ndarray
    cxy: np.ndarray
    cyy: np.ndarray
    x_err: np.ndarray
    y_err: np.ndarray
    residual: np.ndarray
    edge: np.ndarray
    ok: np.ndarray
    iterations: int


def _initial_params(patches: Patches, x0, y0, sigma_init_px: float, background_radius_px: int):
    """Start parameters: background the 10th percentile within ``background_radius_px`` [px] of the
    patch centre, amplitude the patch maximum above it, width ``sigma_init_px`` [px], round."""
    import torch

    vals = torch.where(patches.weight > 0, patches.values, torch.full_like(patches.values, float("nan")))
    peak = torch.nan_to_num(vals, nan=-float("inf")).amax(dim=1)
    if background_radius_px < patches.radius:
        vals = torch.where(patches.r2[None, :] <= background_radius_px**2, vals, torch.full_like(vals, float("nan")))
    bg = torch.nanquantile(vals, 0.1, dim=1)
    p = torch.zeros((x0.shape[0], N_PARAMS), dtype=patches.values.dtype, device=x0.device)
    p[:, _A] = (peak - bg).clamp_min(1e-12)
    p[:, _B] = bg
    p[:, _X], p[:, _Y] = x0, y0
    p[:, _L11] = 1.0 / sigma_init_px
    p[:, _L22] = 1.0 / sigma_init_px
    return p


def _ok(p: "torch.Tensor", centre_x, centre_y, radius_px: int, sigma_max_px: float) -> "torch.Tensor":
    """A fit is usable when the peak is positive, stays inside its patch and has sane widths."""
    import torch

    inside = (p[:, _X] - centre_x) ** 2 + (p[:, _Y] - centre_y) ** 2 <= radius_px**2
    # widths: the inverse Cholesky diagonal bounds sigma along the axes
    det = (p[:, _L11] * p[:, _L22]).abs()
    sane = (det > 1.0 / sigma_max_px**2) & (p[:, _L11].abs() < 10) & (p[:, _L22].abs() < 10)
    return inside & sane & (p[:, _A] > 0) & torch.isfinite(p).all(1)


def fit_gaussians(
    data: np.ndarray,
    x_px: np.ndarray,
    y_px: np.ndarray,
    options: "GaussianOptions",
    *,
    pixel_size_A: float,
    progress: "Callable[[int, int], None] | None" = None,
) -> GaussianFit:
    """Fit an elliptical 2-D Gaussian + constant background to every column, all at once.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image, columns bright (the grid the fit runs on, binned or not).
    x_px, y_px : numpy.ndarray
        Start positions (e.g. centre of mass) on that grid [px].
    options : GaussianOptions
        The locator's options; the lengths in it [Å] are converted to pixels of ``data`` with
        ``pixel_size_A`` (see :meth:`~octascope_plugins.locate.gaussian.GaussianOptions.fit_px`):
        ``patch_radius_A`` (fitting patch), ``max_sigma_A`` (widest usable fit),
        ``background_radius_A`` (start-background window, at most the patch), ``neighbour_radius_A`` (neighbour
        rendering), ``sigma_init_A``, ``restart_shift_A``; and ``neighbour_rounds`` (refits after
        the first, each on the patch minus the current model of all other columns; 0 = no
        neighbour handling), ``max_iterations``, ``tolerance`` [1], ``max_residual`` [1] (fits
        whose RMS misfit beyond the pixel noise, relative to the peak height, exceeds it are
        restarted; the noise variance is estimated from adjacent-pixel residual differences, so
        fits already at the noise floor are not restarted in vain), ``max_restarts`` (attempts
        per round, all run together; the best usable one is kept when it lowers the cost),
        ``seed`` and ``device``.
    pixel_size_A : float
        Pixel size of ``data`` [Å].
    progress : callable, optional
        Called as ``progress(rounds_done, rounds_total)`` after each fitting round.

    Returns
    -------
    GaussianFit
        Per-column parameters, covariances and uncertainties [px].
    """
    import torch

    o = options
    dev = resolve_device(o.device)
    dtype = torch.float64
    n = len(x_px)
    if n == 0:
        empty = np.zeros(0)
        return GaussianFit(empty, empty, empty, empty, empty, empty, empty, empty, empty, empty,
                           np.zeros(0, bool), np.zeros(0, bool), 0)
    neighbour_rounds, max_iterations, tolerance = o.neighbour_rounds, o.max_iterations, o.tolerance
    max_residual, max_restarts = o.max_residual, o.max_restarts
    sigma_init_px = o.sigma_init_A / pixel_size_A
    restart_shift_px = o.restart_shift_A / pixel_size_A
    radius = o.fit_px(o.patch_radius_A, pixel_size_A)
    sigma_max = float(o.fit_px(o.max_sigma_A, pixel_size_A))
    bg_radius = min(o.fit_px(o.background_radius_A, pixel_size_A), radius)  # a window inside the patch
    render_radius = o.fit_px(o.neighbour_radius_A, pixel_size_A)
    rng = np.random.default_rng(o.seed)
    img = torch.as_tensor(np.asarray(data, dtype=np.float64), dtype=dtype, device=dev)
    start_x = torch.as_tensor(np.asarray(x_px, dtype=np.float64), dtype=dtype, device=dev)
    start_y = torch.as_tensor(np.asarray(y_px, dtype=np.float64), dtype=dtype, device=dev)
    p: torch.Tensor | None = None
    ok = torch.zeros(n, dtype=torch.bool, device=dev)
    iterations = 0
    for rnd in range(neighbour_rounds + 1):
        centre_x = start_x if p is None else torch.where(ok, p[:, _X], start_x)
        centre_y = start_y if p is None else torch.where(ok, p[:, _Y], start_y)
        patches = Patches(img, centre_x, centre_y, radius)
        cx_int, cy_int = torch.round(centre_x), torch.round(centre_y)
        target = patches.values
        if p is None:
            p = _initial_params(patches, start_x, start_y, sigma_init_px, bg_radius)
        else:
            target = target - others_on_patches(p, ok, patches, img, render_radius) * patches.weight
            # failed fits start again from their start position on the cleaned patch
            if bool((~ok).any()):
                p[~ok] = _initial_params(patches.subset(~ok, target), start_x[~ok], start_y[~ok], sigma_init_px, bg_radius)
        p, cost, it = levenberg_marquardt(p, patches.x, patches.y, target, patches.weight,
                                          max_iterations=max_iterations, tolerance=tolerance)
        iterations += it
        n_pix = patches.weight.sum(1).clamp_min(1)
        if max_restarts > 0:
            rel = _misfit(p, patches, target, cost, n_pix)
            ok = _ok(p, cx_int, cy_int, radius, sigma_max)
            bad = (~ok | (rel > max_residual)).nonzero().ravel()
            if bad.numel():
                # all restarts of all bad columns in one batched fit (a fixed cost per LM call
                # dominates when few columns restart); the best usable one that lowers the cost wins
                nb = bad.numel()
                shift = torch.as_tensor(rng.uniform(-1, 1, size=(max_restarts * nb, 2)) * restart_shift_px,
                                        dtype=dtype, device=dev)
                rep = bad.repeat(max_restarts)
                q = _initial_params(patches.subset(rep, target), start_x[rep] + shift[:, 0],
                                    start_y[rep] + shift[:, 1], sigma_init_px, bg_radius)
                q, qcost, it = levenberg_marquardt(q, patches.x[rep], patches.y[rep], target[rep], patches.weight[rep],
                                                    max_iterations=max_iterations, tolerance=tolerance)
                iterations += it
                q_ok = _ok(q, cx_int[rep], cy_int[rep], radius, sigma_max)
                qcost = torch.where(q_ok, qcost, torch.full_like(qcost, float("inf"))).view(max_restarts, nb)
                best_cost, best = qcost.min(0)
                q_best = q.view(max_restarts, nb, N_PARAMS)[best, torch.arange(nb, device=dev)]
                take = torch.isfinite(best_cost) & (~ok[bad] | (best_cost < cost[bad]))
                idx = bad[take]
                p[idx], cost[idx] = q_best[take], best_cost[take]
        ok = _ok(p, cx_int, cy_int, radius, sigma_max)
        if progress is not None:
            progress(rnd + 1, neighbour_rounds + 1)
    assert p is not None  # the loop above runs at least once (options.neighbour_rounds >= 0)

    # Position uncertainties from the final round. Shot noise is heteroscedastic (largest on the
    # column, where the position information is), so the plain residual-variance x (J^T J)^-1
    # underestimates it; the sandwich form (J^T J)^-1 J^T diag(r^2) J (J^T J)^-1 (with the
    # n / (n - 7) small-sample factor) reduces to it for uniform noise and stays calibrated otherwise.
    f, jac = model(p, patches.x, patches.y, jacobian=True)
    jac_t = jac.transpose(1, 2)
    jtj = (jac * patches.weight[:, None, :]) @ jac_t
    inv, info = torch.linalg.inv_ex(jtj)
    r2 = patches.weight * (target - f) ** 2
    meat = (jac * r2[:, None, :]) @ jac_t
    cov = inv @ meat @ inv * (n_pix / (n_pix - N_PARAMS).clamp_min(1))[:, None, None]
    x_err = torch.sqrt(cov[:, _X, _X].clamp_min(0))
    y_err = torch.sqrt(cov[:, _Y, _Y].clamp_min(0))
    bad_cov = info != 0
    x_err[bad_cov] = float("nan")
    y_err[bad_cov] = float("nan")
    cxx, cxy, cyy = covariance(p)

    def out(t):
        return t.detach().cpu().numpy().astype(np.float64)

    okn = out(ok).astype(bool)
    # a patch cut by the border can pull a centre off the image: that is no column of this image
    h, w = np.shape(data)
    fx, fy = out(p[:, _X]), out(p[:, _Y])
    with np.errstate(invalid="ignore"):
        okn &= (fx >= -0.5) & (fx <= w - 0.5) & (fy >= -0.5) & (fy <= h - 0.5)
    nan = np.where(okn, 1.0, np.nan)
    return GaussianFit(
        x=np.where(okn, out(p[:, _X]), np.asarray(x_px, float)),
        y=np.where(okn, out(p[:, _Y]), np.asarray(y_px, float)),
        amplitude=out(p[:, _A]) * nan,
        background=out(p[:, _B]) * nan,
        cxx=out(cxx) * nan, cxy=out(cxy) * nan, cyy=out(cyy) * nan,
        x_err=out(x_err) * nan, y_err=out(y_err) * nan,
        residual=out(torch.sqrt(cost / n_pix) / p[:, _A].abs().clamp_min(1e-30)) * nan,
        edge=out(patches.edge).astype(bool),
        ok=okn,
        iterations=iterations,
    )


def _misfit(p, patches: Patches, target, cost, n_pix):
    """RMS misfit beyond the pixel noise, relative to the peak height (N,).

    White noise makes the variance of adjacent-pixel residual differences twice the residual
    variance, while a smooth misfit barely changes between neighbours; so
    ``var(r) - var(r_i - r_i+1) / 2`` estimates the misfit part alone, whatever the (local,
    signal-dependent) noise level.
    """
    f, _ = model(p, patches.x, patches.y, jacobian=False)
    r = (target - f) * patches.weight
    both = patches.weight[:, patches.pair_a] * patches.weight[:, patches.pair_b]
    diff2 = (both * (r[:, patches.pair_a] - r[:, patches.pair_b]) ** 2).sum(1) / (2 * both.sum(1).clamp_min(1))
    excess = (cost / n_pix - diff2).clamp_min(0)
    return excess.sqrt() / p[:, _A].abs().clamp_min(1e-30)


def drop_duplicates(x: np.ndarray, y: np.ndarray, score: np.ndarray, min_separation: float) -> np.ndarray:
    """Indices to keep so that no two kept points are closer than ``min_separation``.

    Of each close pair the point with the higher ``score`` is kept (NaN scores lose).
    """
    n = len(x)
    if n == 0 or min_separation <= 0:
        return np.arange(n)
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(min_separation, output_type="ndarray")
    if len(pairs) == 0:
        return np.arange(n)
    neighbours: dict[int, list[int]] = {}
    for i, j in pairs.tolist():
        neighbours.setdefault(i, []).append(j)
        neighbours.setdefault(j, []).append(i)
    rank = np.nan_to_num(np.asarray(score, dtype=float), nan=-np.inf)
    removed = np.zeros(n, dtype=bool)
    for i in sorted(neighbours, key=lambda k: -rank[k]):
        if not removed[i]:
            removed[neighbours[i]] = True
    return np.flatnonzero(~removed)


def fit_to_columns(fit: GaussianFit, pixel_size_A: float, min_separation_A: float,
                   significance: np.ndarray | None = None, threshold: float | None = None) -> pd.DataFrame:
    """Column table (see :data:`octascope.core.model.COLUMN_FIELDS`) from a :class:`GaussianFit`.

    Extra field ``fit_ok`` marks columns whose Gaussian fit succeeded (the others keep their
    centre-of-mass position and have NaN shape fields); ``significance`` is the candidate's
    detection significance [1] when given, and ``significant`` whether it reaches ``threshold``
    (the others are site candidates, see :func:`~octascope_plugins.locate.peaks.find_candidates`).
    """
    major, minor, rot = ellipse_from_covariance(fit.cxx, fit.cxy, fit.cyy)
    keep = drop_duplicates(fit.x, fit.y, np.where(fit.ok, fit.amplitude, np.nan), min_separation_A / pixel_size_A)
    with np.errstate(invalid="ignore", divide="ignore"):
        ellipticity = major / minor
    table = make_columns(
        fit.x[keep], fit.y[keep], pixel_size_A,
        amplitude=fit.amplitude[keep], background=fit.background[keep],
        sigma_major_A=major[keep] * pixel_size_A, sigma_minor_A=minor[keep] * pixel_size_A,
        rotation_deg=rot[keep], ellipticity=ellipticity[keep], residual=fit.residual[keep],
        x_err_A=fit.x_err[keep] * pixel_size_A, y_err_A=fit.y_err[keep] * pixel_size_A,
        edge=fit.edge[keep], fit_ok=fit.ok[keep],
        **({} if significance is None else {"significance": np.asarray(significance, float)[keep]}),
    )
    if significance is not None:
        table["significant"] = table["significance"] >= (-np.inf if threshold is None else threshold)
        table.attrs["significance_threshold"] = threshold
    return table
