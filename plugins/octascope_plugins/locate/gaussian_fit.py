"""The batched Gaussian fit of all columns: rounds of Levenberg-Marquardt with restarts and
neighbour subtraction, uncertainties, and the column table.

Overlapping neighbours are handled by iterative neighbour subtraction: after each round the
current model of every column is rendered (:func:`.neighbours.others_on_patches`), and each
column is refitted on its patch minus the model of all the other columns. The solver is
:mod:`.lm_solver`, the patches :mod:`.patches`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from octascope.analysis.noise_covariance import autocovariance, channel_spectra, estimator_covariance, neighbour_pairs
from octascope.analysis.uncertainty import PAIRS_ATTR, PositionCovariance
from octascope.core.model import make_columns

from octascope_plugins.locate.arrays import Array, Arrays, arrays_of, fit_arrays
from octascope_plugins.locate.ellipse import ellipse_from_covariance
from octascope_plugins.locate.gaussian_options import GaussianOptions
from octascope_plugins.locate.lm_solver import (_A, _B, _L11, _L22, _X, _Y, N_PARAMS, N_POSITION, covariance,
                                                fit_shared_shapes, levenberg_marquardt, model)
from octascope_plugins.locate.neighbours import others_on_patches, render_columns
from octascope_plugins.locate.patches import Patches, disk_offsets
from octascope_plugins.locate.profile_covariance import (NOISE_CROP_PX, acov_grid, residual_noise,
                                                         shared_profile_covariance)

@dataclass
class GaussianFit:
    """Per-column results of :func:`fit_gaussians` (numpy arrays, pixel units).

    ``cxx``, ``cxy``, ``cyy`` are the covariance entries of the fitted Gaussian [px²];
    ``x_err``, ``y_err`` the 1-sigma position uncertainties [px] and ``xy_cov`` the covariance of
    the x and y errors [px²] (:func:`_position_covariance`); ``pairs`` (P, 2) indices of
    neighbouring columns whose errors are correlated and ``pair_cov`` (P, 2, 2) their covariance
    ``Cov((x_i, y_i), (x_j, y_j))`` [px²]; ``noise_model`` the noise the covariances assume
    (``spectrum`` or ``white``); ``residual`` the RMS residual relative to the amplitude; ``edge``
    marks patches cut by the image border; ``ok`` marks successful fits (failed ones keep their
    start position and NaN shape).
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
    xy_cov: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    pair_cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 2)))
    noise_model: str = "white"


def _initial_params(patches: Patches, x0, y0, sigma_init_px: float, background_radius_px: int):
    """Start parameters: background the 10th percentile within ``background_radius_px`` [px] of the
    patch centre, amplitude the patch maximum above it, width ``sigma_init_px`` [px], round."""
    xp = arrays_of(patches.values)
    vals = xp.where(patches.weight > 0, patches.values, float("nan"))
    peak = xp.amax(xp.nan_to_num(vals, nan=-float("inf")), 1)
    if background_radius_px < patches.radius:
        vals = xp.where(patches.r2[None, :] <= background_radius_px**2, vals, float("nan"))
    bg = xp.nanquantile(vals, 0.1, 1)
    p = xp.zeros((x0.shape[0], N_PARAMS))
    p[:, _A] = xp.clip(peak - bg, 1e-12)
    p[:, _B] = bg
    p[:, _X], p[:, _Y] = x0, y0
    p[:, _L11] = 1.0 / sigma_init_px
    p[:, _L22] = 1.0 / sigma_init_px
    return p


def _ok(p: "Array", centre_x, centre_y, radius_px: int, sigma_max_px: float) -> "Array":
    """A fit is usable when the peak is positive, stays inside its patch and has sane widths."""
    xp = arrays_of(p)
    inside = (p[:, _X] - centre_x) ** 2 + (p[:, _Y] - centre_y) ** 2 <= radius_px**2
    # widths: the inverse Cholesky diagonal bounds sigma along the axes
    det = xp.abs(p[:, _L11] * p[:, _L22])
    sane = (det > 1.0 / sigma_max_px**2) & (xp.abs(p[:, _L11]) < 10) & (xp.abs(p[:, _L22]) < 10)
    return inside & sane & (p[:, _A] > 0) & xp.isfinite(p).all(1)


@dataclass(frozen=True)
class _FitWindow:
    """The fit's lengths in pixels of the fit grid (see :meth:`GaussianOptions.fit_px`)."""

    radius: int  # fitting patch [px]
    sigma_max: float  # widest usable fit [px]
    bg_radius: int  # start-background window, at most the patch [px]
    render_radius: int  # neighbour rendering [px]
    sigma_init: float  # starting width [px]
    restart_shift: float  # largest random shift of a restart's start [px]

    @classmethod
    def of(cls, o: GaussianOptions, pixel_size_A: float) -> "_FitWindow":
        """The window of options ``o`` on a grid of ``pixel_size_A`` [Å]."""
        radius = o.fit_px(o.patch_radius_A, pixel_size_A)
        return cls(radius=radius, sigma_max=float(o.fit_px(o.max_sigma_A, pixel_size_A)),
                   bg_radius=min(o.fit_px(o.background_radius_A, pixel_size_A), radius),
                   render_radius=o.fit_px(o.neighbour_radius_A, pixel_size_A),
                   sigma_init=o.sigma_init_A / pixel_size_A, restart_shift=o.restart_shift_A / pixel_size_A)


@dataclass
class _Round:
    """One fitting round: the patches, the values fitted on them (neighbours subtracted), and the
    fitted parameters with their cost (updated in place by the restarts)."""

    patches: Patches
    target: "Array"  # (N, M)
    p: "Array"  # (N, 7)
    cost: "Array"  # (N,)
    n_pix: "Array"  # (N,) pixels on the image per patch
    cx: "Array"  # (N,) rounded patch centres [px]
    cy: "Array"


def fit_gaussians(data: np.ndarray, x_px: np.ndarray, y_px: np.ndarray, options: GaussianOptions, *,
                  pixel_size_A: float, progress: "Callable[[int, int], None] | None" = None,
                  shape_from: np.ndarray | None = None, arrays: Arrays | None = None) -> GaussianFit:
    """Fit an elliptical 2-D Gaussian + constant background to every column, all at once.

    With ``options.profile_groups`` >= 1 (the default) the columns are grouped by amplitude and
    the columns of a group share one elliptical profile, each keeping its own position, amplitude
    and background (:func:`_fit_round_shared`); with 0 every column has its own shape
    (:func:`_fit_round`). A first round fits every column on its patch; ``neighbour_rounds`` more
    refit each on its patch minus the current model of all other columns. In every round, fits
    that fail (and, for own shapes, those that misfit beyond the noise) are restarted
    (:func:`_restart_bad_fits`). The position uncertainties come from the last round.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image, columns bright (the grid the fit runs on, binned or not).
    x_px, y_px : numpy.ndarray
        Start positions (e.g. centre of mass) on that grid [px].
    options : GaussianOptions
        The locator's options; its lengths [Å] are converted to pixels of ``data``
        (:class:`_FitWindow`).
    pixel_size_A : float
        Pixel size of ``data`` [Å].
    progress : callable, optional
        Called as ``progress(rounds_done, rounds_total)`` after each fitting round.
    shape_from : numpy.ndarray, optional
        (N,) bool, the columns whose patches the shared profiles are fitted on (e.g. the
        significant candidates; default: every column with a positive start amplitude).
    arrays : Arrays, optional
        The array library to fit with (default from ``options.device``, :func:`.arrays.fit_arrays`:
        NumPy on the CPU, torch on a GPU; the tests pass torch on the CPU to check the GPU path's code).

    Returns
    -------
    GaussianFit
        Per-column parameters, covariances and uncertainties [px].
    """
    xp = arrays if arrays is not None else fit_arrays(options.device)
    if len(x_px) == 0:
        return _empty_fit()
    win = _FitWindow.of(options, pixel_size_A)
    rng = np.random.default_rng(options.seed)
    img, start_x, start_y = (xp.asarray(a) for a in (data, x_px, y_px))  # float64 copies
    rnd: _Round | None = None
    shared: _Shared | None = None
    ok = xp.falses(len(x_px))
    iterations = 0
    use = None if shape_from is None else xp.mask(shape_from)
    for k in range(options.neighbour_rounds + 1):
        if options.profile_groups > 0:
            rnd, ok, it, shared = _fit_round_shared(img, start_x, start_y, rnd, ok, shared, use, win, options, rng)
        else:
            rnd, ok, it = _fit_round(img, start_x, start_y, None if rnd is None else rnd.p, ok, win, options, rng)
        iterations += it
        if progress is not None:
            progress(k + 1, options.neighbour_rounds + 1)
    assert rnd is not None  # the loop above runs at least once (options.neighbour_rounds >= 0)
    shape_p = rnd.p
    if shared is not None and options.shape_iterations > 0:
        shape_p, iterations = _own_shapes(rnd, ok, win, options, iterations)
    fit = _gaussian_fit(rnd, ok, data, x_px, y_px, iterations, shape_p)
    residual = img - render_columns(rnd.p, ok, (int(img.shape[0]), int(img.shape[1])), img, win.render_radius)
    residual_np = xp.to_numpy(residual)
    if shared is None:
        return _with_covariance(fit, rnd, residual_np, pixel_size_A, options)
    influence, white, _ = _influence(rnd, N_POSITION)
    centres = np.column_stack([xp.to_numpy(rnd.cx), xp.to_numpy(rnd.cy)]).astype(np.int64)
    return _with(fit, *shared_profile_covariance(
        ok=fit.ok, x=fit.x, y=fit.y, amplitude=xp.to_numpy(rnd.p[:, _A]), group=xp.to_numpy(shared.group),
        shapes=xp.to_numpy(shared.shapes), radius_px=rnd.patches.radius, centres=centres,
        edge=xp.to_numpy(rnd.patches.edge), influence=influence, white=white, residual=residual_np,
        pixel_size_A=pixel_size_A, noise_model=options.noise_model, covariance_radius_A=options.covariance_radius_A))


@dataclass
class _Shared:
    """The profile groups of a shared-profile fit: every column's group and each group's shape."""

    group: "Array"  # (N,) long
    shapes: "Array"  # (G, 3) l11, l21, l22 [1/px]


#: members of a group its shared profile is fitted on at most (a random sample; three shape
#: parameters are fixed to a fraction of a per cent by a few hundred columns)
SHAPE_SAMPLE = 400
#: fewest members of a profile group; a smaller group joins the nearest one in amplitude
MIN_GROUP = 8


def amplitude_groups(amplitude: np.ndarray, usable: np.ndarray, n_groups: int) -> np.ndarray:
    """Group columns by amplitude: 1-D k-means of log amplitude over the usable columns.

    Parameters
    ----------
    amplitude : numpy.ndarray
        (N,) peak heights above the background [image units].
    usable : numpy.ndarray
        (N,) bool, columns whose amplitude is trusted (the others join the nearest group).
    n_groups : int
        Groups at most; a group of fewer than :data:`MIN_GROUP` usable columns joins its nearest
        neighbour in amplitude.

    Returns
    -------
    numpy.ndarray
        (N,) group of every column, ``0 .. G - 1`` in increasing amplitude.
    """
    a = np.asarray(amplitude, float)
    use = np.asarray(usable, bool) & np.isfinite(a) & (a > 0)
    v = np.log(np.where(a > 0, a, np.nan))
    if use.sum() < 2 * MIN_GROUP or n_groups <= 1:
        return np.zeros(len(a), np.int64)
    centres = np.quantile(v[use], (np.arange(n_groups) + 0.5) / n_groups)
    for _ in range(25):
        lab = np.argmin(np.abs(v[use, None] - centres[None, :]), axis=1)
        new = np.array([v[use][lab == g].mean() if (lab == g).any() else centres[g] for g in range(len(centres))])
        if np.allclose(new, centres):
            break
        centres = new
    while len(centres) > 1:
        lab = np.argmin(np.abs(v[use, None] - centres[None, :]), axis=1)
        counts = np.bincount(lab, minlength=len(centres))
        if counts.min() >= MIN_GROUP:
            break
        centres = np.delete(centres, int(np.argmin(counts)))
    centres = np.sort(centres)
    filled = np.where(np.isfinite(v), v, centres[0])
    return np.argmin(np.abs(filled[:, None] - centres[None, :]), axis=1).astype(np.int64)


def _shape_sample(group: np.ndarray, candidates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most :data:`SHAPE_SAMPLE` candidate columns of every group, in random order."""
    out = []
    for g in np.unique(group[candidates]):
        members = np.flatnonzero(candidates & (group == g))
        out.append(rng.permutation(members)[:SHAPE_SAMPLE] if len(members) > SHAPE_SAMPLE else members)
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def _fit_round_shared(img: "Array", start_x: "Array", start_y: "Array", rnd: "_Round | None",
                      ok: "Array", shared: "_Shared | None", use: "Array | None", win: _FitWindow,
                      o: GaussianOptions, rng: np.random.Generator) -> tuple["_Round", "Array", int, "_Shared"]:
    """One round of the shared-profile fit: patches around the current centres (the other columns'
    model subtracted after the first round), the group shapes (:func:`.lm_solver.fit_shared_shapes`
    on a sample of each group), then every column's ``A, B, x0, y0`` with its group's shape
    (:func:`.lm_solver.levenberg_marquardt`, ``fixed_shape``), and restarts of the failed fits.

    The first round groups the columns by their start amplitude and, once fitted, again by the
    fitted one (:func:`amplitude_groups`); later rounds keep the groups.

    Returns
    -------
    _Round, array, int, _Shared
        The round, its usable fits (N,), the Levenberg-Marquardt iterations run, and the groups
        with their shapes.
    """
    xp = arrays_of(img)
    first = rnd is None
    p = None if rnd is None else rnd.p
    centre_x = start_x if p is None else xp.where(ok, p[:, _X], start_x)
    centre_y = start_y if p is None else xp.where(ok, p[:, _Y], start_y)
    patches = Patches(img, centre_x, centre_y, win.radius)
    target = patches.values
    if p is None:
        p = _initial_params(patches, start_x, start_y, win.sigma_init, win.bg_radius)
        amp = xp.to_numpy(p[:, _A])
        trusted = amp > 0 if use is None else (amp > 0) & xp.to_numpy(use)
        group = xp.index(amplitude_groups(amp, trusted, o.profile_groups))
        n_groups = int(group.max()) + 1
        shared = _Shared(group, xp.tile(p[0:1, _L11:], n_groups))
    else:
        assert shared is not None
        target = target - others_on_patches(p, ok, patches, img, win.render_radius) * patches.weight
        if bool((~ok).any()):  # failed fits start again from their start position on the cleaned patch
            p[~ok] = _initial_params(patches.subset(~ok, target), start_x[~ok], start_y[~ok], win.sigma_init, win.bg_radius)
    group = shared.group
    cand = (p[:, _A] > 0) & (ok if not first else ~xp.falses(ok.shape[0]))
    if use is not None:
        cand &= use
    sample = xp.index(_shape_sample(xp.to_numpy(group), xp.to_numpy(cand), rng))
    iterations = 0
    if sample.shape[0]:
        q = xp.copy(p[sample])
        q[:, _L11:] = shared.shapes[group[sample]]
        _, shapes, it = fit_shared_shapes(q, patches.x[sample], patches.y[sample], target[sample], patches.weight[sample],
                                          group[sample], shared.shapes.shape[0], max_iterations=o.profile_iterations,
                                          tolerance=o.tolerance)
        iterations += it
        fitted = xp.falses(shared.shapes.shape[0])
        fitted[group[sample]] = True
        shared.shapes = xp.where((fitted & _sane_shape(shapes, win.sigma_max))[:, None], shapes, shared.shapes)
    p[:, _L11:] = shared.shapes[group]
    cx, cy = xp.round(centre_x), xp.round(centre_y)
    p, cost, it = levenberg_marquardt(p, patches.x, patches.y, target, patches.weight, max_iterations=o.max_iterations,
                                      tolerance=o.tolerance, fixed_shape=True)
    iterations += it
    rnd = _Round(patches, target, p, cost, xp.clip(patches.weight.sum(1), 1), cx, cy)
    if o.max_restarts > 0:
        iterations += _restart_bad_fits(rnd, start_x, start_y, win, o, rng, fixed_shape=True)
    ok = _ok(rnd.p, rnd.cx, rnd.cy, win.radius, win.sigma_max)
    if first and o.profile_groups > 1:  # regroup by the fitted amplitudes; each new group starts from its members' mean shape
        amp = xp.to_numpy(xp.where(ok, rnd.p[:, _A], float("nan")))
        trusted = xp.to_numpy(ok) if use is None else xp.to_numpy(ok) & xp.to_numpy(use)
        new = xp.index(amplitude_groups(amp, trusted, o.profile_groups))
        n_new = int(new.max()) + 1
        sums = xp.index_add(xp.zeros((n_new, 3)), new, shared.shapes[group])
        counts = xp.index_add(xp.zeros(n_new), new, xp.full(p.shape[0], 1.0))
        shared = _Shared(new, sums / xp.clip(counts, 1)[:, None])
    return rnd, ok, iterations, shared


def _sane_shape(shapes: "Array", sigma_max_px: float) -> "Array":
    """(G,) bool: shapes ``l11, l21, l22`` (G, 3) that :func:`_ok` accepts."""
    xp = arrays_of(shapes)
    det = xp.abs(shapes[:, 0] * shapes[:, 2])
    return (det > 1.0 / sigma_max_px**2) & (xp.abs(shapes[:, 0]) < 10) & (xp.abs(shapes[:, 2]) < 10) & xp.isfinite(shapes).all(1)


def _own_shapes(rnd: "_Round", ok: "Array", win: _FitWindow, o: GaussianOptions,
                iterations: int) -> tuple["Array", int]:
    """Every column's own shape after a shared-profile fit: at most ``shape_iterations``
    Levenberg-Marquardt iterations of all seven parameters on the last round's patch, from the
    shared fit. Its shape, amplitude and background are reported (a column whose profile differs
    from its group's, e.g. a weak column at a corner, has its peak height misread by the group's
    profile; the classifiers read the amplitude); positions stay those of the shared fit (the more
    precise ones). A column whose own fit is not usable keeps the shared fit's values.

    Returns
    -------
    array, int
        (N, 7) parameters whose ``A, B, l11, l21, l22`` are the columns' own; the iterations so far.
    """
    xp = arrays_of(rnd.p)
    q, _, it = levenberg_marquardt(rnd.p, rnd.patches.x, rnd.patches.y, rnd.target, rnd.patches.weight,
                                   max_iterations=o.shape_iterations, tolerance=o.tolerance)
    good = _ok(q, rnd.cx, rnd.cy, win.radius, win.sigma_max) & ok
    out = xp.copy(rnd.p)
    own = xp.index([_A, _B, *range(_L11, N_PARAMS)])
    out[:, own] = xp.where(good[:, None], q[:, own], rnd.p[:, own])
    return out, iterations + it


def _empty_fit() -> GaussianFit:
    """The fit of no columns."""
    empty = np.zeros(0)
    return GaussianFit(empty, empty, empty, empty, empty, empty, empty, empty, empty, empty,
                       np.zeros(0, bool), np.zeros(0, bool), 0, xy_cov=empty)


def _fit_round(img: "Array", start_x: "Array", start_y: "Array", p: "Array | None",
               ok: "Array", win: _FitWindow, o: GaussianOptions, rng: np.random.Generator
               ) -> tuple[_Round, "Array", int]:
    """One round of the fit: patches around the current centres, the other columns' model
    subtracted (after the first round), Levenberg-Marquardt, restarts of the bad fits.

    Parameters
    ----------
    img : array
        (H, W) image.
    start_x, start_y : array
        (N,) start positions [px]; patch centres of the first round and of failed fits.
    p : array or None
        (N, 7) parameters of the previous round (``None`` in the first); failed fits restart from
        their start position.
    ok : array
        (N,) bool, usable fits of the previous round.
    win : _FitWindow
        The fit's lengths [px].
    o : GaussianOptions
        ``max_iterations``, ``tolerance``, ``max_restarts``, ``max_residual``.
    rng : numpy.random.Generator
        Source of the restart shifts.

    Returns
    -------
    _Round, array, int
        The round, its usable fits (N,) and the Levenberg-Marquardt iterations run.
    """
    xp = arrays_of(img)
    centre_x = start_x if p is None else xp.where(ok, p[:, _X], start_x)
    centre_y = start_y if p is None else xp.where(ok, p[:, _Y], start_y)
    patches = Patches(img, centre_x, centre_y, win.radius)
    target = patches.values
    if p is None:
        p = _initial_params(patches, start_x, start_y, win.sigma_init, win.bg_radius)
    else:
        target = target - others_on_patches(p, ok, patches, img, win.render_radius) * patches.weight
        # failed fits start again from their start position on the cleaned patch
        if bool((~ok).any()):
            p[~ok] = _initial_params(patches.subset(~ok, target), start_x[~ok], start_y[~ok], win.sigma_init, win.bg_radius)
    cx, cy = xp.round(centre_x), xp.round(centre_y)
    p, cost, iterations = levenberg_marquardt(p, patches.x, patches.y, target, patches.weight,
                                              max_iterations=o.max_iterations, tolerance=o.tolerance)
    rnd = _Round(patches, target, p, cost, xp.clip(patches.weight.sum(1), 1), cx, cy)
    if o.max_restarts > 0:
        iterations += _restart_bad_fits(rnd, start_x, start_y, win, o, rng)
    return rnd, _ok(rnd.p, rnd.cx, rnd.cy, win.radius, win.sigma_max), iterations


def _restart_bad_fits(rnd: _Round, start_x: "Array", start_y: "Array", win: _FitWindow,
                      o: GaussianOptions, rng: np.random.Generator, fixed_shape: bool = False) -> int:
    """Refit the failed fits and those whose misfit beyond the noise exceeds ``max_residual``
    from ``max_restarts`` randomly shifted starts each; the best usable one replaces the fit in
    ``rnd`` when it lowers the cost (or the fit had failed). Returns the iterations run.

    ``fixed_shape``: the columns share their group's profile (kept in ``rnd.p``); only failed
    fits restart (a shared profile does not fit every column's own shape, so the misfit says
    nothing about a wrong minimum), with the shape held.

    All restarts of all bad columns run as one batched fit: a fixed cost per Levenberg-Marquardt
    call dominates when few columns restart.
    """
    xp = arrays_of(rnd.p)
    ok = _ok(rnd.p, rnd.cx, rnd.cy, win.radius, win.sigma_max)
    if fixed_shape:
        bad = xp.nonzero(~ok)
    else:
        rel = _misfit(rnd.p, rnd.patches, rnd.target, rnd.cost, rnd.n_pix)
        bad = xp.nonzero(~ok | (rel > o.max_residual))
    if not bad.shape[0]:
        return 0
    nb = bad.shape[0]
    shift = xp.asarray(rng.uniform(-1, 1, size=(o.max_restarts * nb, 2)) * win.restart_shift)
    rep = xp.tile(bad, o.max_restarts)
    patches = rnd.patches
    q = _initial_params(patches.subset(rep, rnd.target), start_x[rep] + shift[:, 0], start_y[rep] + shift[:, 1],
                        win.sigma_init, win.bg_radius)
    if fixed_shape:
        q[:, _L11:] = rnd.p[rep, _L11:]
    q, qcost, iterations = levenberg_marquardt(q, patches.x[rep], patches.y[rep], rnd.target[rep], patches.weight[rep],
                                               max_iterations=o.max_iterations, tolerance=o.tolerance,
                                               fixed_shape=fixed_shape)
    q_ok = _ok(q, rnd.cx[rep], rnd.cy[rep], win.radius, win.sigma_max)
    qcost = xp.where(q_ok, qcost, float("inf")).reshape(o.max_restarts, nb)
    best = xp.argmin(qcost, 0)
    best_cost = qcost[best, xp.arange(nb)]
    q_best = q.reshape(o.max_restarts, nb, N_PARAMS)[best, xp.arange(nb)]
    take = xp.isfinite(best_cost) & (~ok[bad] | (best_cost < rnd.cost[bad]))
    idx = bad[take]
    rnd.p[idx], rnd.cost[idx] = q_best[take], best_cost[take]
    return iterations


def _influence(rnd: _Round, n_free: int = N_PARAMS, rows: "Array | None" = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each fit's linear response to the noise on its patch, and the white-noise sandwich.

    ``n_free``: the parameters the fit had free (7; 4 = ``A, B, x0, y0`` for a shared profile);
    ``rows``: only these columns (default all).

    Returns
    -------
    influence : numpy.ndarray
        (N, 2, M) rows x0, y0 of ``(JᵀWJ)⁻¹JᵀW``: ``δx_i = Σ_m influence[i, 0, m] ε_i[m]``
        (NaN where ``JᵀWJ`` is singular).
    white : numpy.ndarray
        (N, 2, 2) covariance of (x0, y0) for white, heteroscedastic noise [px²]: the sandwich
        (JᵀJ)⁻¹ Jᵀ diag(r²) J (JᵀJ)⁻¹ with the n / (n − 7) small-sample factor. Shot noise is
        largest on the column, where the position information is, so the plain residual-variance
        × (JᵀJ)⁻¹ would underestimate it; the sandwich reduces to it for uniform noise.
    misfit_var : numpy.ndarray
        (N,) mean squared residual per patch pixel [image units²].
    """
    xp = arrays_of(rnd.p)
    sel = slice(None) if rows is None else rows
    weight, n_pix = rnd.patches.weight[sel], rnd.n_pix[sel]
    f, jac = model(rnd.p[sel], rnd.patches.x[sel], rnd.patches.y[sel], jacobian=True)
    jac = jac[:, :n_free]
    jac_t = xp.t(jac)
    jtj = (jac * weight[:, None, :]) @ jac_t
    inv, inverted = xp.inv(jtj)
    r2 = weight * (rnd.target[sel] - f) ** 2
    meat = (jac * r2[:, None, :]) @ jac_t
    cov = inv @ meat @ inv * (n_pix / xp.clip(n_pix - n_free, 1))[:, None, None]
    infl = inv[:, _X:_Y + 1, :] @ (jac * weight[:, None, :])
    bad = ~xp.to_numpy(inverted)
    white = np.array(xp.to_numpy(cov[:, _X:_Y + 1, _X:_Y + 1]), dtype=np.float64)
    influence = np.array(xp.to_numpy(infl), dtype=np.float64)
    white[bad] = np.nan
    influence[bad] = np.nan
    return influence, white, xp.to_numpy(r2.sum(1) / n_pix)


def _position_covariance(rnd: _Round, ok: np.ndarray, x: np.ndarray, y: np.ndarray, residual: np.ndarray,
                         pixel_size_A: float, o: GaussianOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Position covariance of every fit and of neighbouring fits under the image's own noise [px²].

    The fit is linear in the noise to first order, ``δx_i = h_i · ε`` (:func:`_influence`), so
    ``Cov(δx_i, δx_j) = h_i C h_jᵀ`` with ``C`` the noise covariance between the pixels of the two
    patches. ``noise_model="spectrum"`` takes ``C`` from the noise power spectrum of the image
    minus the fitted model of all columns (``residual``;
    :func:`octascope.analysis.noise_spectrum.estimate_noise_spectrum`): stationary and correlated,
    the integrated noise of iDPC/iCoM, whose correlation spans a column's footprint. The spectrum of
    the image itself would count the particle's own non-periodic signal as noise (1.3-2.7× the
    true power between 0.15 and 1 Å⁻¹ on a simulated static cube at 100-1,000 e/Å²; the residual's
    is within ≈15 %). ``"white"`` keeps each column's own residual sandwich (heteroscedastic shot noise
    of HAADF), and couples neighbours only through shared pixels; ``"auto"`` is ``spectrum`` when
    the noise power falls faster than 1/k (log-log slope < −1 between 0.15 and 1 Å⁻¹), ``white``
    otherwise. Pairs closer than ``covariance_radius_A`` get their covariance.

    Returns
    -------
    own : numpy.ndarray
        (N, 2, 2) covariance of (x, y) of every fit (NaN for failed fits).
    pairs : numpy.ndarray
        (P, 2) indices of neighbouring usable fits.
    pair_cov : numpy.ndarray
        (P, 2, 2) their covariances.
    noise_model : str
        ``spectrum`` or ``white``.
    """
    influence, white, _ = _influence(rnd)
    noise, mode = residual_noise(residual, pixel_size_A, o.noise_model)
    usable = ok & np.isfinite(influence).all(axis=(1, 2))
    radius_px = o.covariance_radius_A / pixel_size_A
    idx = np.flatnonzero(usable)
    pairs = idx[neighbour_pairs(x[usable], y[usable], radius_px)] if len(idx) else np.zeros((0, 2), np.int64)
    own = np.full((len(x), 2, 2), np.nan)
    pair_cov = np.zeros((len(pairs), 2, 2))
    if not len(idx):
        return own, pairs, pair_cov, mode
    ox, oy, _, _ = disk_offsets(rnd.patches.radius)
    offsets = np.column_stack([ox, oy])
    xp = arrays_of(rnd.p)
    centres = np.column_stack([xp.to_numpy(rnd.cx), xp.to_numpy(rnd.cy)]).astype(np.int64)
    acov = autocovariance(channel_spectra(noise, acov_grid(np.shape(residual), rnd.patches.radius, radius_px)))
    pos = np.full(len(x), -1)
    pos[idx] = np.arange(len(idx))
    spec_own, spec_pair = estimator_covariance(influence[idx][:, None], offsets, centres[idx], pos[pairs], acov)
    if mode == "spectrum":
        own[idx] = spec_own
        pair_cov = spec_pair
    else:
        own[idx] = white[idx]
        # white noise: a pair shares noise only on shared pixels; scale the (flat) spectrum's pair
        # covariance from its mean variance to the two columns' own residual levels
        with np.errstate(invalid="ignore"):
            level = np.sqrt(np.clip(np.einsum("nii->n", white[idx]), 0, None)
                            / np.maximum(np.einsum("nii->n", spec_own), 1e-300))
        pair_cov = spec_pair * (level[pos[pairs[:, 0]]] * level[pos[pairs[:, 1]]])[:, None, None]
    return own, pairs, pair_cov, mode


def _with_covariance(fit: GaussianFit, rnd: _Round, residual: np.ndarray, pixel_size_A: float,
                     o: GaussianOptions) -> GaussianFit:
    """``fit`` with its position uncertainties and neighbour covariances (:func:`_position_covariance`;
    ``residual``: the image minus the model of all columns)."""
    return _with(fit, *_position_covariance(rnd, fit.ok, fit.x, fit.y, residual, pixel_size_A, o))


def _with(fit: GaussianFit, own: np.ndarray, pairs: np.ndarray, pair_cov: np.ndarray, mode: str) -> GaussianFit:
    """``fit`` with the position covariances ``own`` (N, 2, 2), ``pairs`` (P, 2), ``pair_cov`` (P, 2, 2) [px²]."""
    return replace(fit, x_err=np.sqrt(np.clip(own[:, 0, 0], 0, None)), y_err=np.sqrt(np.clip(own[:, 1, 1], 0, None)),
                   xy_cov=own[:, 0, 1], pairs=pairs, pair_cov=pair_cov, noise_model=mode)


def _gaussian_fit(rnd: _Round, ok: "Array", data: np.ndarray, x_px: np.ndarray, y_px: np.ndarray,
                  iterations: int, shape_p: "Array | None" = None) -> GaussianFit:
    """The :class:`GaussianFit` of the last round (uncertainties NaN until :func:`_with_covariance`):
    failed fits, and centres a patch cut by the border pulled off the image (no column of this
    image), keep their start and NaN shape. The shape (widths, rotation), amplitude and background
    are read from ``shape_p`` (N, 7) when given (a column's own after a shared-profile fit)."""
    xp = arrays_of(rnd.p)
    p = rnd.p
    sp = p if shape_p is None else shape_p
    cxx, cxy, cyy = covariance(sp)

    def out(t: Any) -> np.ndarray:
        return np.array(xp.to_numpy(t), dtype=np.float64)

    okn = out(ok).astype(bool)
    h, w = np.shape(data)
    fx, fy = out(p[:, _X]), out(p[:, _Y])
    with np.errstate(invalid="ignore"):
        okn &= (fx >= -0.5) & (fx <= w - 0.5) & (fy >= -0.5) & (fy <= h - 0.5)
    nan = np.where(okn, 1.0, np.nan)
    return GaussianFit(
        x=np.where(okn, out(p[:, _X]), np.asarray(x_px, float)),
        y=np.where(okn, out(p[:, _Y]), np.asarray(y_px, float)),
        amplitude=out(sp[:, _A]) * nan,
        background=out(sp[:, _B]) * nan,
        cxx=out(cxx) * nan, cxy=out(cxy) * nan, cyy=out(cyy) * nan,
        x_err=nan.copy(), y_err=nan.copy(), xy_cov=nan.copy(),
        residual=out(xp.sqrt(rnd.cost / rnd.n_pix) / xp.clip(xp.abs(p[:, _A]), 1e-30)) * nan,
        edge=out(rnd.patches.edge).astype(bool),
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
    xp = arrays_of(p)
    both = patches.weight[:, patches.pair_a] * patches.weight[:, patches.pair_b]
    diff2 = (both * (r[:, patches.pair_a] - r[:, patches.pair_b]) ** 2).sum(1) / (2 * xp.clip(both.sum(1), 1))
    excess = xp.clip(cost / n_pix - diff2, 0)
    return xp.sqrt(excess) / xp.clip(xp.abs(p[:, _A]), 1e-30)


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
                   significance: np.ndarray | None = None, threshold: float | None = None,
                   failed_err_A: float = float("nan")) -> pd.DataFrame:
    """Column table (see :data:`octascope.core.model.COLUMN_FIELDS`) from a :class:`GaussianFit`.

    Extra fields: ``fit_ok`` marks columns whose Gaussian fit succeeded (the others keep their
    centre-of-mass position and have NaN shape fields); ``xy_corr`` is the correlation of the x and
    y errors [1]; ``column_id`` numbers the columns (what the pair covariances name);
    ``significance`` is the candidate's detection significance [1] when given, and
    ``significant`` whether it reaches ``threshold`` (the others are site candidates, see
    :func:`~octascope_plugins.locate.peaks.find_candidates`). The covariances between neighbouring
    columns ride along as ``table.attrs["position_covariance"]``
    (:class:`octascope.analysis.uncertainty.PositionCovariance` [Å²]), and
    ``table.attrs["noise_model"]`` says which noise they assume. A failed fit keeps its
    centre-of-mass start, whose 1σ is ``failed_err_A`` per axis (the locator gives half its
    centre-of-mass aperture radius: the sd of a point spread evenly over the aperture).
    """
    major, minor, rot = ellipse_from_covariance(fit.cxx, fit.cxy, fit.cyy)
    keep = drop_duplicates(fit.x, fit.y, np.where(fit.ok, fit.amplitude, np.nan), min_separation_A / pixel_size_A)
    with np.errstate(invalid="ignore", divide="ignore"):
        ellipticity = major / minor
        xy_corr = fit.xy_cov / (fit.x_err * fit.y_err) if len(fit.xy_cov) == len(fit.x) else np.full(len(fit.x), np.nan)
    table = make_columns(
        fit.x[keep], fit.y[keep], pixel_size_A,
        amplitude=fit.amplitude[keep], background=fit.background[keep],
        sigma_major_A=major[keep] * pixel_size_A, sigma_minor_A=minor[keep] * pixel_size_A,
        rotation_deg=rot[keep], ellipticity=ellipticity[keep], residual=fit.residual[keep],
        x_err_A=np.where(fit.ok, fit.x_err * pixel_size_A, failed_err_A)[keep],
        y_err_A=np.where(fit.ok, fit.y_err * pixel_size_A, failed_err_A)[keep],
        edge=fit.edge[keep], fit_ok=fit.ok[keep], xy_corr=np.where(fit.ok, xy_corr, 0.0)[keep],
        column_id=np.arange(len(keep)),
        **({} if significance is None else {"significance": np.asarray(significance, float)[keep]}),
    )
    if significance is not None:
        table["significant"] = table["significance"] >= (-np.inf if threshold is None else threshold)
        table.attrs["significance_threshold"] = threshold
    new_id = np.full(len(fit.x), -1)
    new_id[keep] = np.arange(len(keep))
    pairs = np.asarray(fit.pairs, np.int64).reshape(-1, 2)
    a, b = new_id[pairs[:, 0]], new_id[pairs[:, 1]]
    kept = (a >= 0) & (b >= 0)
    table.attrs[PAIRS_ATTR] = PositionCovariance(a[kept], b[kept], np.asarray(fit.pair_cov)[kept] * pixel_size_A**2)
    table.attrs["noise_model"] = fit.noise_model
    return table
