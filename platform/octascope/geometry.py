"""Lattice geometry helpers shared by classifiers, network builders and metrics.

Vectorised over columns (scipy cKDTree); nothing here loops over pixels.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .errors import InputError


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
        fitted) [Å].

    Raises
    ------
    InputError
        With fewer than 4 points, or when the nearest-neighbour vectors show no square order.
    """
    xy = np.asarray(xy_A, dtype=float)
    if len(xy) < 4:
        raise InputError(
            f"only {len(xy)} lattice points: at least 4 are needed to find the lattice directions; "
            "check the classifier threshold or the field of view"
        )
    tree = cKDTree(xy)
    kk = min(k + 1, len(xy))
    dist, idx = tree.query(xy, k=kk)
    vec = xy[idx[:, 1:]] - xy[:, None, :]
    d = dist[:, 1:]
    nn = np.median(d[:, 0])
    keep = (d > 0.7 * nn) & (d < 1.3 * nn)
    v = vec[keep]
    if len(v) < 4:
        raise InputError("no square lattice found among the columns; check the pixel size and the Pb threshold")
    ang = np.arctan2(v[:, 1], v[:, 0])
    # four-fold orientation of a square lattice
    z = np.exp(4j * ang).mean()
    order = abs(z)
    if order < 0.3:
        raise InputError(
            f"column positions show no square lattice (four-fold order {order:.2f} < 0.3); "
            "check the pixel size, zone axis and denoising"
        )
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


def angle_between_deg(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Unsigned angle between vectors (last axis of length 2) [deg], vectorised."""
    cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    dot = (u * v).sum(-1)
    return np.degrees(np.abs(np.arctan2(cross, dot)))


def signed_angle_deg(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed angle from ``u`` to ``v`` (counter-clockwise positive in x-y) [deg], vectorised."""
    cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    dot = (u * v).sum(-1)
    return np.degrees(np.arctan2(cross, dot))


def grow_sublattice(xy_A: np.ndarray, members: np.ndarray, eligible: np.ndarray, basis_A: np.ndarray, *,
                    tolerance_frac: float = 0.15, max_rings: int = 3) -> np.ndarray:
    """Extend a square sublattice to eligible points on the sites one lattice step away.

    Used to recover Pb columns at the rim of a small particle, which image weaker than the
    amplitude threshold: a point joins when it is ``eligible`` and within ``tolerance_frac`` ×
    ``a`` of a site ``±a1`` or ``±a2`` from a member, ring by ring up to ``max_rings`` times.
    Points half a step off the sites (X, Cs) never qualify.

    Parameters
    ----------
    xy_A : numpy.ndarray
        (N, 2) positions [Å].
    members, eligible : numpy.ndarray of bool
        Current sublattice points; points allowed to join.
    basis_A : numpy.ndarray
        (2, 2) lattice vectors [Å].

    Returns
    -------
    numpy.ndarray of bool
        The grown membership (a new array).
    """
    a = float(np.mean(np.linalg.norm(basis_A, axis=1)))
    grown = np.asarray(members, dtype=bool).copy()
    steps = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]]) @ basis_A
    for _ in range(max_rings):
        cand = np.flatnonzero(eligible & ~grown)
        if cand.size == 0:
            break
        sites = (xy_A[grown][:, None, :] + steps[None, :, :]).reshape(-1, 2)
        d, _ = cKDTree(sites).query(xy_A[cand], k=1)
        new = cand[d < tolerance_frac * a]
        if new.size == 0:
            break
        grown[new] = True
    return grown
