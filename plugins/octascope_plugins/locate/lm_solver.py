"""Batched Levenberg-Marquardt fit of elliptical 2-D Gaussians (model, Jacobian, solver).

Every column is fitted on its own patch, but all patches are stacked into tensors of shape
(N, M) (N columns, M pixels per patch) and the iterations run on the whole stack: batched model
and Jacobian, batched normal equations (N, 7, 7) solved together. This is the Atomap refinement
(one SciPy least-squares fit per column) done in a few dozen array operations: NumPy arrays on the
CPU, torch tensors on a GPU (:mod:`.arrays`; the functions take either and return the same kind).

Model of one column (pixel coordinates, x along axis 1, y along axis 0)::

    f(x, y) = B + A * exp(-0.5 * ((l11*dx + l21*dy)**2 + (l22*dy)**2)),  dx = x - x0, dy = y - y0

``L = [[l11, 0], [l21, l22]]`` is the Cholesky factor of the inverse covariance, so any
positive-definite ellipse is reachable and a round column has no degenerate rotation parameter.
The widths and rotation are read from the covariance ``(L L^T)^-1`` (:func:`covariance`).

The analytic Jacobian is written once, in :func:`_jacobian_rows`; :func:`model` (values and,
optionally, the Jacobian) and :func:`_normal_matrix` (the solver's weighted normal equations,
written into preallocated buffers) both call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from octascope_plugins.locate.arrays import Array, arrays_of


N_PARAMS = 7  # A, B, x0, y0, l11, l21, l22
#: indices of the parameters in the last axis of ``p``
_A, _B, _X, _Y, _L11, _L21, _L22 = range(N_PARAMS)


def model(p: "Array", x: "Array", y: "Array", jacobian: bool):
    """Model values and, optionally, the analytic Jacobian of every column on its pixels.

    Parameters
    ----------
    p : array
        (N, 7) parameters ``A, B, x0, y0, l11, l21, l22`` [counts, counts, px, px, 1/px, 1/px, 1/px].
    x, y : array
        (N, M) pixel coordinates [px].
    jacobian : bool
        Also return the Jacobian. Without it the values are computed in place (two temporaries).

    Returns
    -------
    f : array
        (N, M) model values.
    jac : array or None
        (N, 7, M) Jacobian, parameter axis before pixels.
    """
    xp = arrays_of(p)
    dx = x - p[:, _X, None]
    dy = y - p[:, _Y, None]
    if not jacobian:  # in place: few temporaries
        dx *= p[:, _L11, None]
        dx += dy * p[:, _L21, None]
        dy *= p[:, _L22, None]
        dx *= dx
        dy *= dy
        dx += dy
        dx *= -0.5
        g = xp.exp(dx, out=dx)
        g *= p[:, _A, None]
        g += p[:, _B, None]
        return g, None
    w1 = dx * p[:, _L11, None]
    w1 += dy * p[:, _L21, None]
    w2 = p[:, _L22, None] * dy
    e = w1 * w1
    e += w2 * w2
    e *= -0.5
    g = xp.exp(e, out=e)
    f = p[:, _B, None] + p[:, _A, None] * g
    jac = xp.empty((p.shape[0], N_PARAMS) + tuple(g.shape[1:]))
    jac[:, _B] = 1.0
    jac[:, _A] = g
    _jacobian_rows(jac, p, g, dx, dy, w1, w2)
    return f, jac


def _jacobian_rows(jac, p, g, dx, dy, w1, w2, u_out=None, shape: bool = True) -> Any:
    """Write the Jacobian rows x0, y0, l11, l21, l22 into ``jac`` (N, >=7, M); the one place the
    Jacobian is written. ``shape=False`` writes only the rows x0, y0 (``jac`` (N, >=4, M)): the
    shape is held fixed.

    ``g`` is the Gaussian factor ``exp(-(w1² + w2²)/2)`` (a weight folded into it carries over to
    every row); ``w1 = l11 dx + l21 dy``, ``w2 = l22 dy`` are overwritten (with ``-A g w1`` and
    ``-A g w2``). The rows of ``A`` (``g``) and ``B`` (1, or the weight) are the caller's.

    Returns
    -------
    array
        ``u = -A g`` (N, M), written into ``u_out`` when given.
    """
    xp = arrays_of(p)
    u = xp.mul(g, -p[:, _A, None], out=u_out)
    w1 *= u  # -A g w1
    w2 *= u  # -A g w2
    t1, t2 = w1, w2
    xp.mul(t1, -p[:, _L11, None], out=jac[:, _X])
    xp.mul(t1, -p[:, _L21, None], out=jac[:, _Y])
    jac[:, _Y] -= t2 * p[:, _L22, None]
    if not shape:
        return u
    xp.mul(t1, dx, out=jac[:, _L11])
    xp.mul(t1, dy, out=jac[:, _L21])
    xp.mul(t2, dy, out=jac[:, _L22])
    return u


def _normal_matrix(p, x, y, tw, sw, buf, work, n_free: int = N_PARAMS) -> Any:
    """Augmented normal matrix (N, F+1, F+1) of the weighted problem at ``p`` in its first
    ``n_free`` = F parameters (7: all; 4: ``A, B, x0, y0`` with the shape held fixed).

    ``buf`` (N, F+1, M) receives the weighted Jacobian rows sqrt(w) dF/dp (row 1, the background
    row sqrt(w), must already be there) and, as row F, the weighted residual sqrt(w) (t - f);
    ``buf @ buf^T`` then holds J^T W J in [:F, :F], J^T W r in [:F, F] and the cost r^T W r
    in [F, F], all from one batched matrix product. ``work`` (5, N, M) is scratch space, so the
    iterations allocate no large temporaries. ``sw`` may be None for all-ones weights.
    """
    xp = arrays_of(p)
    dx = xp.sub(x, p[:, _X, None], out=work[0])
    dy = xp.sub(y, p[:, _Y, None], out=work[1])
    w1 = xp.mul(dx, p[:, _L11, None], out=work[2])
    w1 += dy * p[:, _L21, None]
    w2 = xp.mul(dy, p[:, _L22, None], out=work[3])
    e = xp.mul(w1, w1, out=work[4])
    e += w2 * w2
    e *= -0.5
    g = xp.exp(e, out=buf[:, _A])
    if sw is not None:
        g *= sw
    u = _jacobian_rows(buf, p, g, dx, dy, w1, w2, u_out=work[4], shape=n_free == N_PARAMS)  # u = -A g
    # weighted residual sqrt(w) * (t - B - A g)
    r = buf[:, n_free]
    if sw is None:
        xp.sub(tw, p[:, _B, None], out=r)
    else:
        xp.mul(sw, -p[:, _B, None], out=r)
        r += tw
    r += u
    return buf @ xp.t(buf)


def covariance(p: "Array"):
    """Covariance entries ``cxx, cxy, cyy`` [px²] of the fitted Gaussians: ``(L L^T)^-1``, the
    closed-form inverse of the 2 x 2 precision with ``L`` lower triangular."""
    l11, l21, l22 = p[:, _L11], p[:, _L21], p[:, _L22]
    prec_xx, prec_xy, prec_yy = l11 * l11, l11 * l21, l21 * l21 + l22 * l22
    det = prec_xx * prec_yy - prec_xy * prec_xy
    return prec_yy / det, -prec_xy / det, prec_xx / det


#: free parameters of a fit with the shape held fixed: ``A, B, x0, y0``
N_POSITION = 4


@dataclass
class _WorkingSet:
    """The columns of a batched Levenberg-Marquardt fit that are still iterating, and their state.

    ``buf`` (N, F+1, M) and ``work`` (5, N, M) are the scratch space of :func:`_normal_matrix`,
    allocated once for all N columns; the working set uses their first rows. ``n_free`` (F) is 7,
    or 4 when the shape is held fixed.
    """

    idx: "Array"  # (k,) working set -> column
    p: "Array"  # (k, 7) current parameters
    x: "Array"  # (k, M) pixel coordinates [px]
    y: "Array"
    tw: "Array"  # (k, M) target times sqrt(weight)
    sw: "Array | None"  # (k, M) sqrt(weight); None for all-ones weights
    cost: "Array"  # (k,) weighted sum of squared residuals at p
    lam: "Array"  # (k,) damping
    normal: "Array"  # (k, F+1, F+1) augmented normal matrix at p
    active: "Array"  # (k,) bool, not yet converged
    buf: "Array"
    work: "Array"
    n_free: int = N_PARAMS

    @classmethod
    def start(cls, p: "Array", x: "Array", y: "Array", target: "Array",
              weight: "Array", n_free: int = N_PARAMS) -> "_WorkingSet":
        """All columns, at their start parameters ``p`` (N, 7), with the damping at 1e-3."""
        xp = arrays_of(p)
        n, m = x.shape
        sqrt_w = xp.sqrt(weight)
        tw = target * sqrt_w
        buf = xp.empty((n, n_free + 1, m))
        buf[:, _B] = sqrt_w
        sw = sqrt_w
        if bool((weight == 1).all()):
            sw = None  # no pixel outside the image: skip the weighting
        work = xp.empty((5, n, m))
        normal = _normal_matrix(p, x, y, tw, sw, buf, work, n_free)
        return cls(idx=xp.arange(n), p=p, x=x, y=y, tw=tw, sw=sw,
                   cost=xp.copy(normal[:, n_free, n_free]), lam=xp.full(n, 1e-3),
                   normal=normal, active=~xp.falses(n), buf=buf, work=work,
                   n_free=n_free)

    def iterate(self, tolerance: float) -> None:
        """One damped Gauss-Newton step of every active column: kept where it lowers the cost
        (damping / 10), refused otherwise (damping x 10); converged columns become inactive."""
        xp = arrays_of(self.p)
        nf = self.n_free
        jtj = self.normal[:, :nf, :nf]
        grad = self.normal[:, :nf, nf]
        diag = xp.diagonal(jtj)
        floor = 1e-12 * xp.amax(diag, 1, keepdims=True) + 1e-30
        damped = jtj + xp.diag_embed(self.lam[:, None] * (diag + floor))
        step, ok = xp.solve(damped, grad[..., None])
        step = step[..., 0]
        solved = ok & xp.isfinite(step).all(1) & self.active
        p_new = xp.copy(self.p)
        p_new[:, :nf] += xp.where(solved[:, None], step, xp.zeros(tuple(step.shape)))
        k = self.p.shape[0]
        normal_new = _normal_matrix(p_new, self.x, self.y, self.tw, self.sw, self.buf[:k], self.work[:, :k], nf)
        cost_new = normal_new[:, nf, nf]
        better = solved & xp.isfinite(cost_new) & (cost_new < self.cost)
        rel = (self.cost - cost_new) / xp.clip(self.cost, 1e-300)
        self.p = xp.where(better[:, None], p_new, self.p)
        self.normal = xp.where(better[:, None, None], normal_new, self.normal)
        self.lam = xp.clip(xp.where(better, self.lam / 10, self.lam * 10), 1e-12, 1e12)
        converged = (better & (rel < tolerance)) | (~better & (self.lam >= 1e12)) | (self.cost <= 0)
        self.cost = xp.where(better, cost_new, self.cost)
        self.active = self.active & ~converged

    def shrink(self, p_out: "Array", cost_out: "Array") -> None:
        """Write the inactive columns into ``p_out`` (N, 7) and ``cost_out`` (N,) and keep only
        the active ones, so later iterations touch only those."""
        done = ~self.active
        p_out[self.idx[done]] = self.p[done]
        cost_out[self.idx[done]] = self.cost[done]
        keep = arrays_of(self.p).nonzero(self.active)
        self.idx, self.p, self.cost, self.lam, self.normal = (self.idx[keep], self.p[keep], self.cost[keep],
                                                              self.lam[keep], self.normal[keep])
        self.x, self.y, self.tw = self.x[keep], self.y[keep], self.tw[keep]
        self.active = self.active[keep]
        if self.sw is not None:
            self.sw = self.sw[keep]
            self.buf[:keep.shape[0], _B] = self.sw


def levenberg_marquardt(p: "Array", x: "Array", y: "Array", target: "Array",
                        weight: "Array", *, max_iterations: int, tolerance: float, fixed_shape: bool = False
                        ) -> tuple["Array", "Array", int]:
    """Batched Levenberg-Marquardt: minimise ``sum(weight * (target - model(p))**2)`` for every row of ``p``.

    Each iteration forms J^T W J, J^T W r and the cost at the trial parameters in one batched
    product (:func:`_normal_matrix`; a rejected step keeps those of the current parameters).
    Converged columns leave the working set (:class:`_WorkingSet`) once a fifth of it has.

    Parameters
    ----------
    p : array
        (N, 7) start parameters (see :func:`model`) [px units]; not modified.
    x, y : array
        (N, M) pixel coordinates of the patches [px].
    target : array
        (N, M) values to fit.
    weight : array
        (N, M) pixel weights (0 outside the image).
    max_iterations : int
        Iterations at most.
    tolerance : float
        A column has converged when an accepted step lowers its cost by less than this fraction [1].
    fixed_shape : bool
        Hold ``l11, l21, l22`` at their values in ``p`` and fit ``A, B, x0, y0`` only (4 x 4
        normal equations).

    Returns
    -------
    p : array
        (N, 7) fitted parameters.
    cost : array
        (N,) final weighted sum of squared residuals.
    iterations : int
        Iterations run.
    """
    xp = arrays_of(p)
    p = xp.copy(p)
    if x.shape[0] == 0:
        return p, xp.zeros(0), 0
    ws = _WorkingSet.start(p, x, y, target, weight, N_POSITION if fixed_shape else N_PARAMS)
    cost_out = xp.copy(ws.cost)
    it = 0
    for it in range(1, max_iterations + 1):
        ws.iterate(tolerance)
        n_active = int(ws.active.sum())
        if n_active == 0:
            break
        if n_active <= 0.8 * ws.p.shape[0]:
            ws.shrink(p, cost_out)
    p[ws.idx] = ws.p
    cost_out[ws.idx] = ws.cost
    return p, cost_out, it


def _schur_step(normal: "Array", lam: "Array", group: "Array", n_groups: int,
                active: "Array") -> tuple["Array", "Array", "Array"]:
    """One damped Gauss-Newton step of :func:`fit_shared_shapes`, the members' parameters eliminated.

    From the (N, 8, 8) augmented normal matrices and the (n_groups,) damping ``lam``: the (N, 4)
    members' steps ``dc`` (zero where a member's block is singular), the (n_groups, 3) shape steps
    ``ds`` and the (n_groups,) bool ``solved`` (``ds`` is zero where False or not ``active``).
    """
    xp = arrays_of(normal)
    c, s = slice(0, N_POSITION), slice(N_POSITION, N_PARAMS)
    lam_i = lam[group]
    h_cc = normal[:, c, c]
    h_cs = normal[:, c, s]
    d_cc = xp.diagonal(h_cc)
    damped = h_cc + xp.diag_embed(lam_i[:, None] * (d_cc + 1e-12 * xp.amax(d_cc, 1, keepdims=True) + 1e-30))
    rhs = xp.empty((normal.shape[0], N_POSITION, 4))  # (N, 4, 4): [H_cs | g_c]
    rhs[:, :, :3] = h_cs
    rhs[:, :, 3] = normal[:, c, N_PARAMS]
    sol, ok = xp.solve(damped, rhs)
    x_s, x_g = sol[:, :, :3], sol[:, :, 3]
    h_sc = xp.t(h_cs)
    usable = ok & xp.isfinite(sol).all(2).all(1)
    n = normal.shape[0]
    schur = xp.where(usable[:, None, None], normal[:, s, s] - h_sc @ x_s, xp.zeros((n, 3, 3)))
    t = xp.where(usable[:, None], normal[:, s, N_PARAMS] - (h_sc @ x_g[..., None])[..., 0], xp.zeros((n, 3)))
    s_g = xp.index_add(xp.zeros((n_groups, 3, 3)), group, schur)
    t_g = xp.index_add(xp.zeros((n_groups, 3)), group, t)
    d_s = xp.diagonal(s_g)
    floor = 1e-12 * xp.amax(d_s, 1, keepdims=True) + 1e-30
    ds, ok_g = xp.solve(s_g + xp.diag_embed(lam[:, None] * (d_s + floor)), t_g[..., None])
    ds = ds[..., 0]
    solved = ok_g & xp.isfinite(ds).all(1) & active
    ds = xp.where(solved[:, None], ds, xp.zeros((n_groups, 3)))
    dc = x_g - (x_s @ ds[group][..., None])[..., 0]
    dc = xp.where(usable[:, None], dc, xp.zeros((n, N_POSITION)))
    return dc, ds, solved


def fit_shared_shapes(p: "Array", x: "Array", y: "Array", target: "Array",
                      weight: "Array", group: "Array", n_groups: int, *, max_iterations: int,
                      tolerance: float) -> tuple["Array", "Array", int]:
    """Levenberg-Marquardt of one shape per group of columns, with every column's ``A, B, x0, y0`` free.

    The joint problem of group g has the shared ``l11, l21, l22`` and four parameters per member.
    Its Gauss-Newton step is solved exactly by eliminating the members' parameters (the Schur
    complement, as in bundle adjustment): from each column's 8 x 8 augmented normal matrix
    (:func:`_normal_matrix`), ``S_g = Σ_i (H_ss - H_sc H_cc⁻¹ H_cs)`` and
    ``t_g = Σ_i (g_s - H_sc H_cc⁻¹ g_c)`` give the shape step ``δs = S_g⁻¹ t_g`` (3 x 3 per group),
    then ``δc_i = H_cc⁻¹ (g_c - H_cs δs)`` every member's. A step is kept per group when it lowers
    the group's summed cost (damping / 10), refused otherwise (damping x 10).

    Parameters
    ----------
    p : array
        (N, 7) start parameters; a member's ``l11, l21, l22`` are read from its group's first
        member (all members of a group must start with the same shape). Not modified.
    x, y, target, weight : array
        (N, M) patches, as for :func:`levenberg_marquardt`.
    group : array
        (N,) long, the group of every column, in ``0 .. n_groups - 1``.
    n_groups : int
        Number of groups.
    max_iterations : int
        Iterations at most.
    tolerance : float
        A group has converged when an accepted step lowers its cost by less than this fraction [1].

    Returns
    -------
    p : array
        (N, 7) fitted parameters (the members of a group share its shape).
    shapes : array
        (n_groups, 3) ``l11, l21, l22`` of every group [1/px] (a group without members keeps zeros).
    iterations : int
        Iterations run.
    """
    xp = arrays_of(p)
    p = xp.copy(p)
    shapes = xp.zeros((n_groups, 3))
    if x.shape[0] == 0:
        return p, shapes, 0
    shapes[group] = p[:, _L11:]  # every member of a group starts with the same shape
    n, m = x.shape
    sqrt_w = xp.sqrt(weight)
    tw = target * sqrt_w
    buf = xp.empty((n, N_PARAMS + 1, m))
    buf[:, _B] = sqrt_w
    work = xp.empty((5, n, m))
    normal = xp.copy(_normal_matrix(p, x, y, tw, sqrt_w, buf, work))
    lam = xp.full(n_groups, 1e-3)
    cost = xp.index_add(xp.zeros(n_groups), group, normal[:, N_PARAMS, N_PARAMS])
    active = ~xp.falses(n_groups)
    c, s = slice(0, N_POSITION), slice(N_POSITION, N_PARAMS)
    it = 0
    for it in range(1, max_iterations + 1):
        dc, ds, solved = _schur_step(normal, lam, group, n_groups, active)
        p_new = xp.copy(p)
        p_new[:, c] += dc
        p_new[:, s] = (shapes + ds)[group]
        normal_new = _normal_matrix(p_new, x, y, tw, sqrt_w, buf, work)
        cost_i = xp.nan_to_num(normal_new[:, N_PARAMS, N_PARAMS], nan=float("inf"))
        cost_new = xp.index_add(xp.zeros(n_groups), group, cost_i)
        better = solved & (cost_new < cost)
        rel = (cost - cost_new) / xp.clip(cost, 1e-300)
        take = better[group]
        p = xp.where(take[:, None], p_new, p)
        normal = xp.where(take[:, None, None], normal_new, normal)
        shapes = xp.where(better[:, None], shapes + ds, shapes)
        lam = xp.clip(xp.where(better, lam / 10, lam * 10), 1e-12, 1e12)
        converged = (better & (rel < tolerance)) | (~better & (lam >= 1e12))
        cost = xp.where(better, cost_new, cost)
        active = active & ~converged
        if not bool(active.any()):
            break
    return p, shapes, it
