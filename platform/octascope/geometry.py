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
