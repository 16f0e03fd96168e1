"""Geometric baseline network builder: each Pb to its nearest X along the local lattice directions."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from octascope.errors import InputError
from octascope.geometry import estimate_square_basis, fractional
from octascope.model import Image, Octahedra


def lattice_indices_and_shell(xy_A: np.ndarray, basis_A: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer lattice indices of Pb positions and their shell index.

    The shell index is the number of unit cells between a Pb site and the particle outline
    (0 = outermost octahedra): the taxicab distance on the occupied (i, j) grid to the nearest
    unoccupied site outside the particle, minus one. Interior holes (missing columns) are filled
    first so that a vacancy does not create an inner "surface".

    Returns
    -------
    i, j : numpy.ndarray of int
        Lattice indices along ``a1`` and ``a2``.
    shell : numpy.ndarray of int
    """
    centroid = xy_A.mean(axis=0)
    origin = xy_A[np.argmin(np.linalg.norm(xy_A - centroid, axis=1))]
    f = fractional(xy_A, basis_A, origin)
    ij = np.rint(f).astype(int)
    lo = ij.min(axis=0) - 1
    grid_ij = ij - lo
    shape = tuple(grid_ij.max(axis=0) + 2)
    occ = np.zeros(shape, dtype=bool)
    occ[grid_ij[:, 0], grid_ij[:, 1]] = True
    occ = ndimage.binary_fill_holes(occ)
    dist = ndimage.distance_transform_cdt(occ, metric="taxicab")
    shell = dist[grid_ij[:, 0], grid_ij[:, 1]] - 1
    return ij[:, 0], ij[:, 1], shell.astype(int)


class NearestNetwork:
    """Link each Pb column to the X columns nearest to its four bond sites.

    For every Pb column the local lattice vectors are taken from its Pb neighbours
    (``(p(+a1) - p(-a1)) / 2`` where both exist, falling back to the particle-wide basis), and
    the X column nearest to ``p ± a1/2`` and ``p ± a2/2`` within ``search_radius_frac`` × ``a``
    becomes its right/left/up/down neighbour. Octahedra missing an X are flagged ``edge``
    (unreliable: left out of maps and statistics); those whose Pb lacks a Pb neighbour in some
    direction are flagged ``rim`` (the outermost octahedra, still measured).

    Parameters
    ----------
    search_radius_frac : float
        Largest distance of an X column from its ideal bond site, as a fraction of the Pb-Pb
        spacing [1]. The ideal X of a rotated octahedron is ``(a/2)·tan θ`` off the site
        (0.55 Å at 10°); a Cs column is ``a/2`` away.
    """

    name: ClassVar[str] = "nearest"

    def __init__(self, *, search_radius_frac: float = 0.3):
        if not 0 < search_radius_frac < 0.5:
            raise ValueError("search_radius_frac must lie in (0, 0.5)")
        self.search_radius_frac = search_radius_frac

    def build(self, image: Image, columns: pd.DataFrame) -> Octahedra:
        if "species" not in columns:
            raise InputError("columns have no species; run a classifier before the network builder")
        pb = columns[columns["species"] == "Pb"]
        xs = columns[columns["species"] == "X"]
        if len(pb) < 4 or len(xs) < 4:
            raise InputError(
                f"{len(pb)} Pb and {len(xs)} X columns: less than one unit cell, no octahedral network can be built; "
                "check the classifier or the field of view"
            )
        p = pb[["x_A", "y_A"]].to_numpy(float)
        x = xs[["x_A", "y_A"]].to_numpy(float)
        basis = np.asarray(columns.attrs.get("lattice_basis_A") or estimate_square_basis(p), dtype=float)
        a = float(np.mean(np.linalg.norm(basis, axis=1)))
        tol = self.search_radius_frac * a

        pb_tree = cKDTree(p)
        local = []
        for vec in basis:
            d_plus, i_plus = pb_tree.query(p + vec, k=1)
            d_minus, i_minus = pb_tree.query(p - vec, k=1)
            ok_p, ok_m = d_plus < tol, d_minus < tol
            v = np.tile(vec, (len(p), 1))
            both = ok_p & ok_m
            v[both] = (p[i_plus[both]] - p[i_minus[both]]) / 2
            only_p = ok_p & ~ok_m
            v[only_p] = p[i_plus[only_p]] - p[only_p]
            only_m = ok_m & ~ok_p
            v[only_m] = p[only_m] - p[i_minus[only_m]]
            local.append((v, ok_p, ok_m))
        (a1, a1p, a1m), (a2, a2p, a2m) = local

        x_tree = cKDTree(x)
        x_labels = xs.index.to_numpy()
        neigh = {}
        for key, offset in (("x_right", a1 / 2), ("x_left", -a1 / 2), ("x_up", a2 / 2), ("x_down", -a2 / 2)):
            d, idx = x_tree.query(p + offset, k=1)
            neigh[key] = np.where(d < tol, x_labels[idx], -1)

        i, j, shell = lattice_indices_and_shell(p, basis)
        missing = np.column_stack([neigh[k] for k in Octahedra.NEIGHBOURS]) < 0
        edge = missing.any(axis=1)
        rim = ~(a1p & a1m & a2p & a2m)
        table = pd.DataFrame({
            "pb": pb.index.to_numpy(), "x_A": p[:, 0], "y_A": p[:, 1], **neigh,
            "i": i, "j": j, "shell": shell,
            "a1_x_A": a1[:, 0], "a1_y_A": a1[:, 1], "a2_x_A": a2[:, 0], "a2_y_A": a2[:, 1],
            "edge": edge, "rim": rim,
        })
        pairs = [np.column_stack([table["pb"], table[k]]) for k in Octahedra.NEIGHBOURS]
        bonds = np.concatenate(pairs)
        bonds = bonds[bonds[:, 1] >= 0]
        return Octahedra(table=table, bonds=bonds.astype(int), lattice_vectors_A=basis)
