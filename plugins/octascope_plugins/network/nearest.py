"""Geometric baseline network builder: each Pb to its nearest X along the local lattice directions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.spatial import cKDTree

from octascope.core.errors import InputError
from octascope.analysis.lattice import estimate_square_basis, lattice_indices_and_shell, neighbour_lattice_vectors
from octascope.core.model import Classification, Image, Octahedra
from octascope.core.params import Options, Plugin, param, require
from octascope_plugins.network._common import network_octahedra


@dataclass(frozen=True, kw_only=True)
class NearestNetworkOptions(Options):
    """Parameters of :class:`NearestNetwork`."""

    search_radius_frac: float = param(0.3, unit="fraction of a", doc="largest distance of an X column from its ideal "
                                      "bond site (and of a Pb from its neighbour's site), fraction of the Pb-Pb spacing")

    def check(self) -> None:
        require(0 < self.search_radius_frac < 0.5, f"search_radius_frac must lie in (0, 0.5), got {self.search_radius_frac}")


class NearestNetwork(Plugin):
    """Link each Pb column to the X columns nearest to its four bond sites.

    For every Pb column the local lattice vectors are taken from its Pb neighbours
    (``(p(+a1) - p(-a1)) / 2`` where both exist, falling back to the particle-wide basis), and
    the X column nearest to ``p ± a1/2`` and ``p ± a2/2`` within ``search_radius_frac`` × ``a``
    becomes its right/left/up/down neighbour. Octahedra missing an X are flagged ``edge``
    (unreliable: left out of maps and statistics); those whose Pb lacks a Pb neighbour in some
    direction are flagged ``rim`` (the outermost octahedra, still measured).

    Parameters are those of :class:`NearestNetworkOptions`: ``search_radius_frac``, the largest
    distance of an X column from its ideal bond site [fraction of the Pb-Pb spacing a]. The ideal X
    of a rotated octahedron is ``(a/2)·tan θ`` off the site (0.55 Å at 10°); a Cs column is ``a/2`` away.
    """

    name: ClassVar[str] = "nearest"
    Options = NearestNetworkOptions
    options: NearestNetworkOptions

    def build(self, image: Image, classification: Classification) -> Octahedra:
        """The octahedral network of classified ``columns`` (``x_A``, ``y_A`` [Å], ``species``).

        Parameters
        ----------
        image : Image
            The image (unused).
        classification : Classification
            Classified columns; its ``lattice_basis_A`` [Å] is used when present.

        Returns
        -------
        Octahedra
            One row per Pb: its four X neighbours (row labels, -1 if missing), lattice indices,
            shell, local lattice vectors [Å], ``edge`` and ``rim``.
        """
        columns = classification.columns
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
        basis = classification.lattice_basis_A if classification.lattice_basis_A is not None else estimate_square_basis(p)
        a = float(np.mean(np.linalg.norm(basis, axis=1)))
        tol = self.options.search_radius_frac * a

        local, present = neighbour_lattice_vectors(p, basis, tol_A=tol)
        a1, a2 = local[:, 0], local[:, 1]
        a1p, a1m, a2p, a2m = present.T

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
        return network_octahedra(pb.index.to_numpy(), p, neigh, i, j, shell, a1, a2, edge, rim, basis)
