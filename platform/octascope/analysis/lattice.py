"""Lattice geometry helpers shared by classifiers, network builders and metrics.

Vectorised over columns (scipy cKDTree); nothing here loops over pixels.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy import ndimage

from octascope.core.errors import InputError


def square_neighbour_vectors(xy_A: np.ndarray, *, k: int = 4) -> tuple[np.ndarray, np.ndarray, complex]:
    """Near-neighbour vectors of a (near-)square point lattice and their four-fold mean direction.

    Of the ``k`` nearest neighbours of every point, those between 0.7 and 1.3 times the median
    nearest-neighbour distance are kept (second neighbours and stray points dropped). Their
    directions, multiplied by four, coincide on a square lattice, so the mean of
    ``exp(4i·angle)`` measures the four-fold order (its modulus, 1 for a perfect lattice) and the
    orientation (its angle / 4).

    Parameters
    ----------
    xy_A : numpy.ndarray
        (N, 2) positions [Å].
    k : int
        Nearest neighbours per point examined.

    Returns
    -------
    vectors : numpy.ndarray
        (M, 2) kept neighbour vectors [Å].
    lengths : numpy.ndarray
        (M,) their lengths [Å].
    four_fold : complex
        Mean of ``exp(4i·angle)`` over the kept vectors.

    Raises
    ------
    InputError
        With fewer than 4 points or 4 kept vectors, or a four-fold order below 0.3.
    """
    xy = np.asarray(xy_A, dtype=float)
    if len(xy) < 4:
        raise InputError(
            f"only {len(xy)} lattice points: at least 4 are needed to find the lattice directions; "
            "check the classifier threshold or the field of view"
        )
    dist, idx = cKDTree(xy).query(xy, k=min(k + 1, len(xy)))
    vec = xy[idx[:, 1:]] - xy[:, None, :]
    d = dist[:, 1:]
    nn = np.median(d[:, 0])
    keep = (d > 0.7 * nn) & (d < 1.3 * nn)
    v = vec[keep]
    if len(v) < 4:
        raise InputError("no square lattice found among the columns; check the pixel size, the zone axis ([001]) "
                         "and the denoising")
    z = np.exp(4j * np.arctan2(v[:, 1], v[:, 0])).mean()
    if abs(z) < 0.3:
        raise InputError(
            f"column positions show no square lattice (four-fold order {abs(z):.2f} < 0.3); "
            "check the pixel size, the zone axis ([001]) and the denoising"
        )
    return v, d[keep], complex(z)


def estimate_square_basis(xy_A: np.ndarray, *, k: int = 4) -> np.ndarray:
    """Estimate the two shortest lattice vectors of a (near-)square point lattice.

    Parameters
    ----------
    xy_A : numpy.ndarray
        (N, 2) positions [Å], e.g. the Pb columns.
    k : int
        Nearest neighbours per point used for the estimate.

    Returns
    -------
    numpy.ndarray
        (2, 2) array: rows ``a1`` (closest to +x) and ``a2`` (``a1`` rotated by +90°, then
        fitted) [Å]: the median of the neighbour vectors within 20° of each direction.

    Raises
    ------
    InputError
        With fewer than 4 points, or when the nearest-neighbour vectors show no square order
        (:func:`square_neighbour_vectors`).
    """
    v, _, z = square_neighbour_vectors(xy_A, k=k)
    ang = np.arctan2(v[:, 1], v[:, 0])
    theta0 = np.angle(z) / 4.0  # in (-45°, 45°]
    basis = []
    for target in (theta0, theta0 + np.pi / 2):
        dang = np.angle(np.exp(1j * (ang - target)))
        sel = np.abs(dang) < np.deg2rad(20)
        sel_opp = np.abs(np.angle(np.exp(1j * (ang - target - np.pi)))) < np.deg2rad(20)
        vv = np.concatenate([v[sel], -v[sel_opp]])
        if len(vv) == 0:
            raise InputError("could not find two lattice directions among the columns; is the image on a [001] zone axis?")
        basis.append(np.median(vv, axis=0))
    return np.array(basis)


def fractional(xy_A: np.ndarray, basis_A: np.ndarray, origin_A: np.ndarray) -> np.ndarray:
    """Fractional lattice coordinates of points: solve ``xy - origin = u*a1 + v*a2``."""
    return np.linalg.solve(basis_A.T, (np.asarray(xy_A) - origin_A).T).T


def neighbour_lattice_vectors(points_A: np.ndarray, basis_A: np.ndarray, *, tol_frac: float | None = None,
                              tol_A: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Local lattice vectors at each point of a square sublattice (e.g. Pb) from its neighbours.

    Parameters
    ----------
    points_A : numpy.ndarray
        (n, 2) positions [Å].
    basis_A : numpy.ndarray
        (2, 2) particle-wide lattice vectors ``a1``, ``a2`` [Å].
    tol_frac : float, optional
        A neighbour is the point within ``tol_frac`` × ``|a_k|`` of ``p ± a_k`` [1].
    tol_A : float, optional
        Or within this distance [Å] (give exactly one of the two).

    Returns
    -------
    local : numpy.ndarray
        (n, 2, 2) ``a1``, ``a2`` per point [Å]: ``(p(+a) - p(-a)) / 2`` where both neighbours
        exist, the one-sided difference where one does, the particle-wide vector otherwise.
    present : numpy.ndarray
        (n, 4) bool, neighbour at ``+a1, -a1, +a2, -a2``.
    """
    if (tol_frac is None) == (tol_A is None):
        raise ValueError("give exactly one of tol_frac and tol_A")
    pts = np.asarray(points_A, dtype=float)
    tree = cKDTree(pts)
    n = len(pts)
    local = np.empty((n, 2, 2))
    present = np.zeros((n, 4), bool)
    for k, vec in enumerate(np.asarray(basis_A, dtype=float)):
        tol = tol_frac * np.linalg.norm(vec) if tol_frac is not None else tol_A
        d_p, i_p = tree.query(pts + vec, k=1)
        d_m, i_m = tree.query(pts - vec, k=1)
        ok_p, ok_m = d_p < tol, d_m < tol
        v = np.broadcast_to(vec, (n, 2)).copy()
        both = ok_p & ok_m
        v[both] = (pts[i_p[both]] - pts[i_m[both]]) / 2
        v[ok_p & ~ok_m] = pts[i_p[ok_p & ~ok_m]] - pts[ok_p & ~ok_m]
        v[ok_m & ~ok_p] = pts[ok_m & ~ok_p] - pts[i_m[ok_m & ~ok_p]]
        local[:, k] = v
        present[:, 2 * k], present[:, 2 * k + 1] = ok_p, ok_m
    return local, present


def _occupied_grid(ij: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The occupied, hole-filled grid of (n, 2) integer lattice indices ``ij``, one empty site around.

    Returns the bool grid, the sites' (n, 2) grid indices and the lattice index of grid index (0, 0).
    """
    lo = ij.min(axis=0) - 1
    g = ij - lo
    shape = tuple(g.max(axis=0) + 2)
    occ = np.zeros(shape, dtype=bool)
    occ[g[:, 0], g[:, 1]] = True
    occ = ndimage.binary_fill_holes(occ)
    return occ, g, lo


def lattice_indices_and_shell(xy_A: np.ndarray, basis_A: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer lattice indices of sublattice points (e.g. Pb) and their shell index.

    The shell index is the number of unit cells between a site and the particle outline
    (0 = outermost octahedra): the taxicab distance on the occupied (i, j) grid to the nearest
    unoccupied site outside the particle, minus one. Interior holes (missing columns) are filled
    first so that a vacancy does not create an inner "surface".

    Parameters
    ----------
    xy_A : numpy.ndarray
        (n, 2) positions [Å].
    basis_A : numpy.ndarray
        (2, 2) lattice vectors [Å].

    Returns
    -------
    i, j : numpy.ndarray of int
        Lattice indices along ``a1`` and ``a2`` (origin: the point nearest the centroid).
    shell : numpy.ndarray of int
        Unit cells to the outline.
    """

    centroid = xy_A.mean(axis=0)
    origin = xy_A[np.argmin(np.linalg.norm(xy_A - centroid, axis=1))]
    f = fractional(xy_A, basis_A, origin)
    ij = np.rint(f).astype(int)
    occ, grid_ij, _ = _occupied_grid(ij)
    dist = ndimage.distance_transform_cdt(occ, metric="taxicab")
    shell = dist[grid_ij[:, 0], grid_ij[:, 1]] - 1
    return ij[:, 0], ij[:, 1], shell.astype(int)


def surface_depth(i: np.ndarray, j: np.ndarray, xy_A: np.ndarray, *, frame_A: tuple[float, float],
                  margin_A: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit cells from each site of a particle to its surface, knowing that the frame may cut it.

    As :func:`lattice_indices_and_shell` (taxicab distance on the occupied, hole-filled (i, j) grid
    to the nearest empty site, minus one), except that an empty site whose position lies outside
    the frame (closer than ``margin_A`` to its border, or beyond) is *unknown*: the particle may
    continue there. A site's depth is known when a known-empty site is at least as close as any
    unknown one; otherwise only a lower bound is.

    Parameters
    ----------
    i, j : numpy.ndarray
        Integer lattice indices of the particle's Pb sites.
    xy_A : numpy.ndarray
        (n, 2) their positions [Å] (image frame); an affine fit ``xy = o + i·a1 + j·a2`` places the
        empty sites.
    frame_A : tuple of float
        Width and height of the frame [Å] (the image spans 0..width, 0..height).
    margin_A : float
        Sites closer than this to the border count as outside [Å].

    Returns
    -------
    shell : numpy.ndarray of int
        Unit cells to the surface (0 = outermost); -1 where unknown.
    shell_min : numpy.ndarray of int
        The lower bound (equal to ``shell`` where known).
    known : numpy.ndarray of bool
        Whether the depth is known.
    """

    ij = np.column_stack([np.rint(i), np.rint(j)]).astype(int)
    occ, g, lo = _occupied_grid(ij)
    shape = occ.shape
    design = np.column_stack([np.ones(len(ij)), ij])
    if len(ij) >= 3 and np.linalg.matrix_rank(design) == 3:
        coef = np.linalg.lstsq(design, np.asarray(xy_A, float), rcond=None)[0]
        gi, gj = np.meshgrid(np.arange(shape[0]) + lo[0], np.arange(shape[1]) + lo[1], indexing="ij")
        pos = coef[0] + gi[..., None] * coef[1] + gj[..., None] * coef[2]
        w, h = frame_A
        outside = (pos[..., 0] < margin_A) | (pos[..., 1] < margin_A) | (pos[..., 0] > w - margin_A) | (pos[..., 1] > h - margin_A)
    else:
        outside = np.zeros(shape, bool)
    unknown = ~occ & outside
    empty = ~occ & ~outside
    big = np.iinfo(np.int32).max // 2

    def dist_to(target: np.ndarray) -> np.ndarray:
        if not target.any():
            return np.full(shape, big)
        return ndimage.distance_transform_cdt(~target, metric="taxicab")

    d_e, d_u = dist_to(empty)[g[:, 0], g[:, 1]], dist_to(unknown)[g[:, 0], g[:, 1]]
    known = d_e <= d_u
    shell_min = np.minimum(d_e, d_u) - 1
    return np.where(known, d_e - 1, -1).astype(int), shell_min.astype(int), known
