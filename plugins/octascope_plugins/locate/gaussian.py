"""Batched elliptical 2-D Gaussian fitting of all columns at once (the ``gaussian`` locator).

Every column is fitted on its own circular patch, but all patches are stacked into tensors of
shape (N, M) (N columns, M pixels per patch) and the Levenberg-Marquardt iterations run on the
whole stack: batched model and Jacobian, batched normal equations (N, 7, 7) solved together.
This is the Atomap refinement (one SciPy least-squares fit per column) done in a few dozen
tensor operations, on the GPU when there is one.

Model of one column (pixel coordinates, x along axis 1, y along axis 0)::

    f(x, y) = B + A * exp(-0.5 * ((l11*dx + l21*dy)**2 + (l22*dy)**2)),  dx = x - x0, dy = y - y0

``L = [[l11, 0], [l21, l22]]`` is the Cholesky factor of the inverse covariance, so any
positive-definite ellipse is reachable and a round column has no degenerate rotation parameter.
The widths and rotation are read from the covariance ``(L L^T)^-1``.

Overlapping neighbours are handled by iterative neighbour subtraction: after each round the
current model of every column is rendered, and each column is refitted on its patch minus the
model of all the other columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from octascope.errors import PluginError
from octascope.model import Image, make_columns
from octascope.torch_runtime import cpu_threads, select_device

from .ellipse import ellipse_from_covariance
from .peaks import CandidateSearch

if TYPE_CHECKING:
    import torch

N_PARAMS = 7  # A, B, x0, y0, l11, l21, l22
_A, _B, _X, _Y, _L11, _L21, _L22 = range(N_PARAMS)


def resolve_device(device: str) -> "torch.device":
    """The torch device of the locator (see :func:`octascope.torch_runtime.select_device`)."""
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


_OFFSETS: dict[int, tuple] = {}


def _disk_offsets(radius_px: int):
    """Pixel offsets (ox, oy) of a disk of ``radius_px`` and its horizontal neighbour pairs (cached)."""
    if radius_px not in _OFFSETS:
        off = np.arange(-radius_px, radius_px + 1)
        oy, ox = np.meshgrid(off, off, indexing="ij")
        disk = (ox**2 + oy**2 <= radius_px**2 + 1e-9).ravel()
        ox, oy = ox.ravel()[disk], oy.ravel()[disk]
        key = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(ox.tolist(), oy.tolist()))}
        pairs = [(k, key[(a + 1, b)]) for (a, b), k in key.items() if (a + 1, b) in key]
        _OFFSETS[radius_px] = (ox, oy, np.array([a for a, _ in pairs], dtype=np.int64),
                               np.array([b for _, b in pairs], dtype=np.int64))
    return _OFFSETS[radius_px]


class _Patches:
    """Pixel coordinates and values of the circular patch around each column."""

    def __init__(self, img: "torch.Tensor", x0: "torch.Tensor", y0: "torch.Tensor", radius_px: int):
        import torch

        h, w = img.shape
        ox, oy, pair_a, pair_b = _disk_offsets(radius_px)
        # pairs of horizontally adjacent patch pixels, for a noise estimate from the residual
        self.pair_a = torch.as_tensor(pair_a, device=img.device)
        self.pair_b = torch.as_tensor(pair_b, device=img.device)
        cx, cy = torch.round(x0).long(), torch.round(y0).long()
        ox_t = torch.as_tensor(ox, device=img.device)
        oy_t = torch.as_tensor(oy, device=img.device)
        self.x = cx.to(img.dtype)[:, None] + ox_t.to(img.dtype)[None, :]
        self.y = cy.to(img.dtype)[:, None] + oy_t.to(img.dtype)[None, :]
        # a disk pokes out of the image exactly when its bounding box does
        self.edge = (cx < radius_px) | (cx > w - 1 - radius_px) | (cy < radius_px) | (cy > h - 1 - radius_px)
        self.flat = (cy * w + cx)[:, None] + (oy_t * w + ox_t)[None, :]
        self.weight = torch.ones(self.x.shape, dtype=img.dtype, device=img.device)
        if bool(self.edge.any()):
            e = self.edge.nonzero().ravel()
            xi, yi = cx[e, None] + ox_t[None, :], cy[e, None] + oy_t[None, :]
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            self.flat[e] = yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)
            self.weight[e] = inside.to(img.dtype)
        self.values = img.reshape(-1)[self.flat] * self.weight
        self.shape = (h, w)
        self.radius = radius_px


def _model(p: "torch.Tensor", x: "torch.Tensor", y: "torch.Tensor", jacobian: bool):
    """Model values (N, M) and, optionally, the Jacobian (N, 7, M) (parameter axis before pixels)."""
    import torch

    dx = x - p[:, _X, None]
    dy = y - p[:, _Y, None]
    if not jacobian:  # in place: two temporaries in all
        w1 = dx.mul_(p[:, _L11, None]).addcmul_(dy, p[:, _L21, None])
        w2 = dy.mul_(p[:, _L22, None])
        g = w1.square_().addcmul_(w2, w2).mul_(-0.5).exp_()
        return g.mul_(p[:, _A, None]).add_(p[:, _B, None]), None
    w1 = torch.mul(dx, p[:, _L11, None]).addcmul_(dy, p[:, _L21, None])
    w2 = p[:, _L22, None] * dy
    g = torch.mul(w1, w1).addcmul_(w2, w2).mul_(-0.5).exp_()
    f = torch.addcmul(p[:, _B, None], p[:, _A, None], g)
    jac = torch.empty((p.shape[0], N_PARAMS) + g.shape[1:], dtype=g.dtype, device=g.device)
    jac[:, _B] = 1.0
    _fill_jacobian(jac, p, g, dx, dy, w1, w2)
    return f, jac


def _fill_jacobian(jac, p, g, dx, dy, w1, w2) -> None:
    """Write the analytic Jacobian of the model into ``jac[:, 0:7]`` (N, >=7, M).

    ``g`` is the Gaussian factor (rows 0 and the amplitude-proportional rows scale with it, so a
    weight folded into ``g`` carries over); row 1 (background) is left to the caller.
    """
    import torch

    jac[:, _A] = g
    u = g * -p[:, _A, None]  # -A g
    t1 = u * w1
    t2 = u * w2
    torch.mul(t1, -p[:, _L11, None], out=jac[:, _X])
    torch.mul(t1, -p[:, _L21, None], out=jac[:, _Y]).addcmul_(t2, -p[:, _L22, None])
    torch.mul(t1, dx, out=jac[:, _L11])
    torch.mul(t1, dy, out=jac[:, _L21])
    torch.mul(t2, dy, out=jac[:, _L22])


def _normal_matrix(p, x, y, tw, sw, buf, work) -> "torch.Tensor":
    """Augmented normal matrix (N, 8, 8) of the weighted problem at ``p``.

    ``buf`` (N, 8, M) receives the weighted Jacobian rows sqrt(w) dF/dp (row 1, the background
    row sqrt(w), must already be there) and, as row 7, the weighted residual sqrt(w) (t - f);
    ``buf @ buf^T`` then holds J^T W J in [:7, :7], J^T W r in [:7, 7] and the cost r^T W r
    in [7, 7], all from one batched matrix product. ``work`` (5, N, M) is scratch space, so the
    iterations allocate no large temporaries. ``sw`` may be None for all-ones weights.
    """
    import torch

    dx = torch.sub(x, p[:, _X, None], out=work[0])
    dy = torch.sub(y, p[:, _Y, None], out=work[1])
    w1 = torch.mul(dx, p[:, _L11, None], out=work[2]).addcmul_(dy, p[:, _L21, None])
    w2 = torch.mul(dy, p[:, _L22, None], out=work[3])
    e = torch.mul(w1, w1, out=work[4]).addcmul_(w2, w2).mul_(-0.5)
    g = torch.exp(e, out=buf[:, _A])
    if sw is not None:
        g.mul_(sw)
    u = torch.mul(g, -p[:, _A, None], out=work[4])  # -A g
    # weighted residual sqrt(w) * (t - B - A g)
    if sw is None:
        torch.sub(tw, p[:, _B, None], out=buf[:, N_PARAMS]).add_(u)
    else:
        torch.addcmul(tw, sw, -p[:, _B, None], out=buf[:, N_PARAMS]).add_(u)
    t1 = w1.mul_(u)  # -A g w1
    t2 = w2.mul_(u)  # -A g w2
    torch.mul(t1, -p[:, _L11, None], out=buf[:, _X])
    torch.mul(t1, -p[:, _L21, None], out=buf[:, _Y]).addcmul_(t2, -p[:, _L22, None])
    torch.mul(t1, dx, out=buf[:, _L11])
    torch.mul(t1, dy, out=buf[:, _L21])
    torch.mul(t2, dy, out=buf[:, _L22])
    return torch.bmm(buf, buf.transpose(1, 2))


def _levenberg_marquardt(
    p: "torch.Tensor", x: "torch.Tensor", y: "torch.Tensor", target: "torch.Tensor", weight: "torch.Tensor",
    *, max_iterations: int, tolerance: float,
) -> tuple["torch.Tensor", "torch.Tensor", int]:
    """Batched LM: minimise sum(weight * (target - model(p))**2) for every row of ``p``.

    Each iteration evaluates the model, analytic Jacobian and residual once, at the trial
    parameters, and forms J^T W J, J^T W r and the cost in one batched product; a rejected step
    keeps the normal equations of the current parameters. Columns that have converged are
    frozen and dropped from the working set, so later iterations only touch the rest.

    Returns the fitted parameters, the final cost per column and the iterations run.
    """
    import torch

    n, m = x.shape
    p = p.clone()
    if n == 0:
        return p, torch.zeros(0, dtype=p.dtype, device=p.device), 0
    sw = weight.sqrt()
    tw = target * sw
    buf = torch.empty((n, N_PARAMS + 1, m), dtype=p.dtype, device=p.device)
    buf[:, _B] = sw
    if bool((weight == 1).all()):
        sw = None  # no pixel outside the image: skip the weighting
    work = torch.empty((5, n, m), dtype=p.dtype, device=p.device)
    normal = _normal_matrix(p, x, y, tw, sw, buf, work)
    cost = normal[:, N_PARAMS, N_PARAMS].clone()
    cost_out = cost.clone()
    lam = torch.full((n,), 1e-3, dtype=p.dtype, device=p.device)
    idx = torch.arange(n, device=p.device)  # working set -> column
    active = torch.ones(n, dtype=torch.bool, device=p.device)
    pa, xa, ya, twa, swa = p, x, y, tw, sw
    it = 0
    for it in range(1, max_iterations + 1):
        jtj = normal[:, :N_PARAMS, :N_PARAMS]
        grad = normal[:, :N_PARAMS, N_PARAMS]
        diag = jtj.diagonal(dim1=1, dim2=2)
        floor = 1e-12 * diag.amax(dim=1, keepdim=True) + 1e-30
        damped = jtj + torch.diag_embed(lam[:, None] * (diag + floor))
        step, info = torch.linalg.solve_ex(damped, grad[..., None])
        step = step[..., 0]
        solved = (info == 0) & torch.isfinite(step).all(1) & active
        p_new = torch.where(solved[:, None], pa + step, pa)
        k = pa.shape[0]
        normal_new = _normal_matrix(p_new, xa, ya, twa, swa, buf[:k], work[:, :k])
        cost_new = normal_new[:, N_PARAMS, N_PARAMS]
        better = solved & torch.isfinite(cost_new) & (cost_new < cost)
        rel = (cost - cost_new) / cost.clamp_min(1e-300)
        pa = torch.where(better[:, None], p_new, pa)
        normal = torch.where(better[:, None, None], normal_new, normal)
        lam = torch.where(better, lam / 10, lam * 10).clamp(1e-12, 1e12)
        converged = (better & (rel < tolerance)) | (~better & (lam >= 1e12)) | (cost <= 0)
        cost = torch.where(better, cost_new, cost)
        active = active & ~converged
        n_active = int(active.sum())
        if n_active == 0:
            break
        if n_active <= 0.8 * pa.shape[0]:
            # write the frozen columns out and shrink the working set to the active ones
            done = ~active
            p[idx[done]] = pa[done]
            cost_out[idx[done]] = cost[done]
            keep = active.nonzero().ravel()
            idx, pa, cost, lam, normal = idx[keep], pa[keep], cost[keep], lam[keep], normal[keep]
            xa, ya, twa = xa[keep], ya[keep], twa[keep]
            active = active[keep]
            if swa is not None:
                swa = swa[keep]
                buf[:n_active, _B] = swa
    p[idx] = pa
    cost_out[idx] = cost
    return p, cost_out, it


def _initial_params(patches: _Patches, x0, y0, sigma_init_px: float):
    import torch

    vals = torch.where(patches.weight > 0, patches.values, torch.full_like(patches.values, float("nan")))
    bg = torch.nanquantile(vals, 0.1, dim=1)
    peak = torch.nan_to_num(vals, nan=-float("inf")).amax(dim=1)
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
    *,
    patch_radius_px: int,
    sigma_init_px: float,
    neighbour_rounds: int = 3,
    max_iterations: int = 100,
    tolerance: float = 1e-6,
    max_residual: float = 0.08,
    max_restarts: int = 2,
    restart_shift_px: float = 1.0,
    seed: int = 0,
    device: str = "auto",
    progress: "Callable[[int, int], None] | None" = None,
) -> GaussianFit:
    """Fit an elliptical 2-D Gaussian + constant background to every column, all at once.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image, columns bright.
    x_px, y_px : numpy.ndarray
        Start positions (e.g. centre of mass) [px].
    patch_radius_px : int
        Radius of the circular fitting patch [px].
    sigma_init_px : float
        Starting Gaussian width [px].
    neighbour_rounds : int
        Refits after the first, each on the patch minus the current model of all other
        columns (0 = no neighbour handling).
    max_iterations : int
        Levenberg-Marquardt iterations per fit at most.
    tolerance : float
        Stop when an accepted step lowers the cost by less than this fraction [1].
    max_residual : float
        Fits whose RMS misfit exceeds this fraction of the fitted peak height are restarted
        from the start position shifted at random by up to ``restart_shift_px`` [1]. The misfit
        is the residual RMS with the pixel noise removed in quadrature (the noise variance is
        estimated from adjacent-pixel residual differences in the patch), so fits that are
        already at the noise floor are not restarted in vain.
    max_restarts : int
        Restart attempts per round for each such fit, all run together in one batched fit; the
        best usable one is kept when it lowers the cost.
    restart_shift_px : float
        Largest random shift of a restart [px].
    seed : int
        Seed of the restart shifts.
    device : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda[:i]"``.
    progress : callable, optional
        Called as ``progress(rounds_done, rounds_total)`` after each fitting round.

    Returns
    -------
    GaussianFit
        Per-column parameters, covariances and uncertainties [px].
    """
    import torch

    dev = resolve_device(device)
    dtype = torch.float64
    n = len(x_px)
    if n == 0:
        empty = np.zeros(0)
        return GaussianFit(empty, empty, empty, empty, empty, empty, empty, empty, empty, empty,
                           np.zeros(0, bool), np.zeros(0, bool), 0)
    rng = np.random.default_rng(seed)
    img = torch.as_tensor(np.asarray(data, dtype=np.float64), dtype=dtype, device=dev)
    start_x = torch.as_tensor(np.asarray(x_px, dtype=np.float64), dtype=dtype, device=dev)
    start_y = torch.as_tensor(np.asarray(y_px, dtype=np.float64), dtype=dtype, device=dev)
    radius = int(patch_radius_px)
    sigma_max = float(radius)
    p = None
    ok = torch.zeros(n, dtype=torch.bool, device=dev)
    iterations = 0
    for rnd in range(neighbour_rounds + 1):
        centre_x = start_x if p is None else torch.where(ok, p[:, _X], start_x)
        centre_y = start_y if p is None else torch.where(ok, p[:, _Y], start_y)
        patches = _Patches(img, centre_x, centre_y, radius)
        cx_int, cy_int = torch.round(centre_x), torch.round(centre_y)
        target = patches.values
        if p is None:
            p = _initial_params(patches, start_x, start_y, sigma_init_px)
        else:
            target = target - _others(p, ok, patches, img) * patches.weight
            # failed fits start again from their start position on the cleaned patch
            if bool((~ok).any()):
                p[~ok] = _initial_params(_subset(patches, ~ok, target), start_x[~ok], start_y[~ok], sigma_init_px)
        p, cost, it = _levenberg_marquardt(p, patches.x, patches.y, target, patches.weight,
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
                shift = rng.uniform(-1, 1, size=(max_restarts * nb, 2)) * restart_shift_px
                shift = torch.as_tensor(shift, dtype=dtype, device=dev)
                rep = bad.repeat(max_restarts)
                q = _initial_params(_subset(patches, rep, target), start_x[rep] + shift[:, 0],
                                    start_y[rep] + shift[:, 1], sigma_init_px)
                q, qcost, it = _levenberg_marquardt(q, patches.x[rep], patches.y[rep], target[rep], patches.weight[rep],
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

    # Position uncertainties from the final round. Shot noise is heteroscedastic (largest on the
    # column, where the position information is), so the plain residual-variance x (J^T J)^-1
    # underestimates it; the sandwich form (J^T J)^-1 J^T diag(r^2) J (J^T J)^-1 (with the
    # n / (n - 7) small-sample factor) reduces to it for uniform noise and stays calibrated otherwise.
    f, jac = _model(p, patches.x, patches.y, jacobian=True)
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

    l11, l21, l22 = p[:, _L11], p[:, _L21], p[:, _L22]
    # covariance = (L L^T)^-1 with L lower triangular: closed form of the 2x2 inverse
    prec_xx, prec_xy, prec_yy = l11 * l11, l11 * l21, l21 * l21 + l22 * l22
    det = prec_xx * prec_yy - prec_xy * prec_xy
    cxx, cxy, cyy = prec_yy / det, -prec_xy / det, prec_xx / det

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


def _misfit(p, patches: _Patches, target, cost, n_pix):
    """RMS misfit beyond the pixel noise, relative to the peak height (N,).

    White noise makes the variance of adjacent-pixel residual differences twice the residual
    variance, while a smooth misfit barely changes between neighbours; so
    ``var(r) - var(r_i - r_i+1) / 2`` estimates the misfit part alone, whatever the (local,
    signal-dependent) noise level.
    """
    f, _ = _model(p, patches.x, patches.y, jacobian=False)
    r = (target - f) * patches.weight
    both = patches.weight[:, patches.pair_a] * patches.weight[:, patches.pair_b]
    diff2 = (both * (r[:, patches.pair_a] - r[:, patches.pair_b]) ** 2).sum(1) / (2 * both.sum(1).clamp_min(1))
    excess = (cost / n_pix - diff2).clamp_min(0)
    return excess.sqrt() / p[:, _A].abs().clamp_min(1e-30)


def _subset(patches: _Patches, idx, target) -> _Patches:
    sub = object.__new__(_Patches)
    sub.weight = patches.weight[idx]
    sub.values = target[idx]
    return sub


def _others(p: "torch.Tensor", ok: "torch.Tensor", patches: _Patches, img: "torch.Tensor") -> "torch.Tensor":
    """Model of all *other* columns on each column's patch (N, M), background excluded.

    Every column is rendered on a disk of twice the patch radius, so the tail of a neighbour
    whose centre lies outside a patch is still subtracted from it. Failed fits render nothing.
    """
    import torch

    h, w = patches.shape
    q = p.clone()
    q[:, _B] = 0
    q[~ok, _A] = 0
    own, _ = _model(q, patches.x, patches.y, jacobian=False)
    total = torch_zeros_like_image(img)
    good = (ok & torch.isfinite(q).all(1)).nonzero().ravel()
    if good.numel():
        # render into an image padded by the disk radius, so no pixel needs clipping
        radius = 2 * patches.radius
        ox, oy, _, _ = _disk_offsets(radius)
        ox = torch.as_tensor(ox, device=img.device)
        oy = torch.as_tensor(oy, device=img.device)
        qg = q[good]
        cx = torch.round(qg[:, _X]).clamp(-radius, w - 1 + radius)
        cy = torch.round(qg[:, _Y]).clamp(-radius, h - 1 + radius)
        pad, wp = 2 * radius, w + 4 * radius
        flat = ((cy.long() + pad) * wp + cx.long() + pad)[:, None] + (oy * wp + ox)[None, :]
        # model on (cx + ox, cy + oy): the offsets from the centre are ox - (x0 - cx)
        qg[:, _X] -= cx
        qg[:, _Y] -= cy
        ox, oy = ox.to(img.dtype)[None, :], oy.to(img.dtype)[None, :]
        padded = torch.zeros((h + 2 * pad) * wp, dtype=img.dtype, device=img.device)
        chunk = 256  # columns per pass: keeps the temporaries small and in cache
        for k in range(0, qg.shape[0], chunk):
            rendered, _ = _model(qg[k:k + chunk], ox, oy, jacobian=False)
            padded.index_add_(0, flat[k:k + chunk].ravel(), rendered.ravel())
        total = padded.view(h + 2 * pad, wp)[pad:pad + h, pad:pad + w].reshape(-1)
    return total[patches.flat] - own


def torch_zeros_like_image(img: "torch.Tensor") -> "torch.Tensor":
    """Flat zero buffer the size of ``img``."""
    import torch

    return torch.zeros(img.numel(), dtype=img.dtype, device=img.device)


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


class GaussianLocator:
    """Atomap-style column finding with a batched elliptical-Gaussian fit of all columns.

    Candidates are maxima (within ``search_radius_A``) of the band-passed image that are
    significant under the image's own noise spectrum (correlated iDPC noise included, see
    :func:`~octascope_plugins.locate.peaks.find_candidates`); each is moved to the centre of mass in
    a circular aperture of ``com_radius_A``, then all columns are fitted together with an elliptical 2-D Gaussian plus
    constant background by batched Levenberg-Marquardt (torch, GPU when present). Fits whose RMS
    residual exceeds ``max_residual`` of the peak height are restarted from a perturbed
    centre-of-mass start. Neighbouring columns are removed from each patch by iterative
    neighbour subtraction (``neighbour_rounds``) so their tails do not pull a column's centre.

    Parameters
    ----------
    detection_sigma_A : float
        σ of the column-matched blur of the candidate search [Å].
    background_sigma_A : float
        σ of the background blur subtracted in the candidate search [Å].
    min_significance : float
        Floor of the candidate threshold, in noise standard deviations of the band-passed image [1].
    expected_false : float
        Noise peaks expected above the candidate threshold in the whole image [1]; the threshold
        follows from it and the image's noise (multiple testing over the field of view).
    site_significance : float or None
        Smallest significance of a *site candidate*, kept by the classifier only where it sits on
        a lattice site next to significant columns [1]; ``None`` keeps significant candidates only.
    search_radius_A : float
        Radius within which a candidate must be the local maximum [Å] (paper: 7 × 7 px at
        0.168 Å/px ≈ 1.2 Å square).
    com_radius_A : float
        Radius of the centre-of-mass aperture [Å] (paper: 3 px at 0.168 Å/px ≈ 0.5 Å).
    patch_radius_A : float
        Radius of the circular patch each Gaussian is fitted on [Å]; about 0.4 of the shortest
        column spacing (Pb-X ≈ 3.1 Å), as Atomap's default mask, suits [001] perovskites
        (neighbour subtraction removes what of the neighbours' tails reaches into the patch).
    sigma_init_A : float
        Starting Gaussian width [Å].
    neighbour_rounds : int
        Refits with the model of all other columns subtracted (0 turns neighbour handling off).
    max_iterations : int
        Levenberg-Marquardt iterations per fit at most.
    tolerance : float
        Relative cost change at which a fit has converged [1] (paper: 1e-6).
    max_residual : float
        RMS misfit (residual beyond the pixel noise), relative to the peak height, above which
        a fit is restarted [1] (paper: 0.08).
    max_restarts : int
        Restart attempts per round (run together).
    restart_shift_A : float
        Largest random shift of a restart's start position [Å].
    fit_pixel_A : float
        Finest sampling the Gaussians are fitted at [Å]: on a finer image the fit runs on
        k × k binned pixels (k = ⌊fit_pixel_A / pixel size⌋; binning keeps every count, so the
        noise per Å² is unchanged), so the cost per column does not grow as the pixel size
        shrinks (a 1.2 Å patch is ~1,800 pixels at 0.05 Å/px, 200 after 3 × 3 binning). A bin of
        0.15 Å widens a 0.4 Å column by 0.3 % (b²/12 in variance) and moves no centre;
        0 fits on the image's own pixels.
    min_separation_A : float
        Fitted columns closer than this are merged (the weaker one dropped) [Å].
    seed : int
        Seed of the random restart shifts.
    device : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda[:i]"``.
    cpu_threads : int
        torch threads for a CPU fit. The batched solves are many small operations: on a 2-core
        machine one thread fitted the bundled example in 0.6 s and two threads, with the
        other core busy, in 27-38 s (threads spin-waiting on each other); 0 keeps torch's setting.
    """

    name: ClassVar[str] = "gaussian"

    def __init__(
        self,
        *,
        detection_sigma_A: float = 0.25,
        background_sigma_A: float = 0.8,
        min_significance: float = 3.0,
        expected_false: float = 0.5,
        site_significance: float | None = 2.5,
        search_radius_A: float = 1.0,
        com_radius_A: float = 0.5,
        patch_radius_A: float = 1.2,
        sigma_init_A: float = 0.5,
        neighbour_rounds: int = 3,
        max_iterations: int = 100,
        tolerance: float = 1e-6,
        max_residual: float = 0.08,
        max_restarts: int = 2,
        restart_shift_A: float = 0.2,
        fit_pixel_A: float = 0.15,
        min_separation_A: float = 1.0,
        seed: int = 0,
        device: str = "auto",
        cpu_threads: int = 1,
    ) -> None:
        positive = {
                    "patch_radius_A": patch_radius_A, "sigma_init_A": sigma_init_A,
                    "max_iterations": max_iterations, "tolerance": tolerance, "max_residual": max_residual}
        for key, value in positive.items():
            if not value > 0:
                raise PluginError(f"locator 'gaussian': {key} must be > 0, got {value}; give a positive value")
        for key, value in {"neighbour_rounds": neighbour_rounds, "max_restarts": max_restarts,
                           "min_separation_A": min_separation_A, "restart_shift_A": restart_shift_A,
                           "fit_pixel_A": fit_pixel_A}.items():
            if value < 0:
                raise PluginError(f"locator 'gaussian': {key} must be >= 0, got {value}")
        self.search = CandidateSearch(detection_sigma_A=float(detection_sigma_A),
                                      background_sigma_A=float(background_sigma_A),
                                      min_significance=float(min_significance), expected_false=float(expected_false),
                                      site_significance=None if site_significance is None else float(site_significance),
                                      search_radius_A=float(search_radius_A),
                                      com_radius_A=float(com_radius_A))
        self.patch_radius_A = float(patch_radius_A)
        self.sigma_init_A = float(sigma_init_A)
        self.neighbour_rounds = int(neighbour_rounds)
        self.max_iterations = int(max_iterations)
        self.tolerance = float(tolerance)
        self.max_residual = float(max_residual)
        self.max_restarts = int(max_restarts)
        self.restart_shift_A = float(restart_shift_A)
        self.fit_pixel_A = float(fit_pixel_A)
        self.min_separation_A = float(min_separation_A)
        self.seed = int(seed)
        self.device = str(device)
        resolve_device(self.device)
        if cpu_threads < 0:
            raise PluginError(f"locator 'gaussian': cpu_threads must be >= 0, got {cpu_threads}")
        self.cpu_threads = int(cpu_threads)

    def patch_radius_px(self, pixel_size_A: float) -> int:
        """Patch radius for a pixel size [px]: ``patch_radius_A`` in pixels, but at least 3 px —
        the fewest that leave a 29-pixel disk for the 7 parameters (the floor binds only above
        0.4 Å/px at the default 1.2 Å)."""
        return max(3, int(round(self.patch_radius_A / pixel_size_A)))

    def fit_bin(self, pixel_size_A: float) -> int:
        """Binning factor of the fit for a pixel size (1 = the image's own pixels), see ``fit_pixel_A``."""
        if self.fit_pixel_A <= 0:
            return 1
        return max(1, int(np.floor(self.fit_pixel_A / pixel_size_A + 1e-6)))

    def candidates(self, image: Image) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Candidate positions after centre-of-mass refinement [px], their significance and the
        significance threshold [1]."""
        return self.search(image.data, image.pixel_size_A)

    def refine(self, image: Image, x_px: np.ndarray, y_px: np.ndarray,
               significance: np.ndarray | None = None, threshold: float | None = None) -> pd.DataFrame:
        """Fit Gaussians from given start positions [px] and return the column table."""
        ps = image.pixel_size_A
        k = self.fit_bin(ps)
        data, fps = np.asarray(image.data), ps * k
        xs, ys = np.asarray(x_px, float), np.asarray(y_px, float)
        if k > 1:
            data, xs, ys = bin_image(data, k), to_binned(xs, k), to_binned(ys, k)
        on_cpu = resolve_device(self.device).type == "cpu"
        with cpu_threads(self.cpu_threads if on_cpu else None), _round_bar(len(xs), self.neighbour_rounds + 1) as bar:
            fit = fit_gaussians(
                data, xs, ys, patch_radius_px=self.patch_radius_px(fps), sigma_init_px=self.sigma_init_A / fps,
                neighbour_rounds=self.neighbour_rounds, max_iterations=self.max_iterations, tolerance=self.tolerance,
                max_residual=self.max_residual, max_restarts=self.max_restarts,
                restart_shift_px=self.restart_shift_A / fps, seed=self.seed, device=self.device, progress=bar,
            )
        if k > 1:
            fit = unbin_fit(fit, k, np.asarray(x_px, float), np.asarray(y_px, float))
        return fit_to_columns(fit, ps, self.min_separation_A, significance=significance, threshold=threshold)

    def locate(self, image: Image) -> pd.DataFrame:
        """Find and fit all columns of ``image``; see the class docstring."""
        x, y, z, threshold = self.candidates(image)
        return self.refine(image, x, y, z, threshold)


#: fits of at least this many columns show a progress bar (on CPU, ~1 ms per column and round)
PROGRESS_MIN_COLUMNS = 2000


class _round_bar:
    """A tqdm bar over the fitting rounds of a large fit (stderr); nothing for small ones."""

    def __init__(self, n_columns: int, n_rounds: int) -> None:
        self.n_columns, self.n_rounds, self.bar = n_columns, n_rounds, None

    def __enter__(self) -> "Callable[[int, int], None] | None":
        if self.n_columns < PROGRESS_MIN_COLUMNS:
            return None
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.n_rounds, unit="round", desc=f"fitting {self.n_columns:,} columns", leave=False)
        return lambda done, total: self.bar.update(done - self.bar.n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def bin_image(data: np.ndarray, k: int) -> np.ndarray:
    """Mean of k × k pixel blocks (the last rows/columns that do not fill a block are dropped)."""
    h, w = (data.shape[0] // k) * k, (data.shape[1] // k) * k
    return np.asarray(data[:h, :w], dtype=np.float64).reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def to_binned(coord_px: np.ndarray, k: int) -> np.ndarray:
    """Pixel coordinate -> coordinate on the k × k binned grid (bin j covers pixels jk .. jk + k - 1,
    so its centre is at pixel jk + (k - 1) / 2)."""
    return (np.asarray(coord_px, float) - (k - 1) / 2) / k


def unbin_fit(fit: GaussianFit, k: int, start_x: np.ndarray, start_y: np.ndarray) -> GaussianFit:
    """A fit on the k × k binned grid in the original pixel frame (failed fits keep ``start_x/y``)."""
    from dataclasses import replace

    back = (k - 1) / 2
    return replace(fit, x=np.where(fit.ok, fit.x * k + back, start_x), y=np.where(fit.ok, fit.y * k + back, start_y),
                   cxx=fit.cxx * k**2, cxy=fit.cxy * k**2, cyy=fit.cyy * k**2, x_err=fit.x_err * k, y_err=fit.y_err * k)


def fit_to_columns(fit: GaussianFit, pixel_size_A: float, min_separation_A: float,
                   significance: np.ndarray | None = None, threshold: float | None = None) -> pd.DataFrame:
    """Column table (see :data:`octascope.model.COLUMN_FIELDS`) from a :class:`GaussianFit`.

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
