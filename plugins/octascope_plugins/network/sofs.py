"""SOFS network builder: octahedra from the halide sublattice linked by the spiral search."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from octascope.errors import InputError
from octascope.model import Image, Octahedra

from ._sofs_search import SofsParameters, sofs_search
from .nearest import lattice_indices_and_shell


class SofsNetwork:
    """Build the PbX6 network with the Spiral Octahedra First Search.

    The search (:mod:`octascope_plugins.network._sofs_search`) runs over the columns labelled X
    and keeps those it links; each Pb then takes the linked X column nearest to each of its four
    bond sites ``p ± a1/2``, ``p ± a2/2`` (local lattice vectors from its Pb neighbours). An
    octahedron is ``edge`` (unreliable: kept in the tables, left out of maps and statistics) when
    an X is missing or is a rim X found from one direction only.

    Parameters
    ----------
    n_candidates, branching, depth_limit : int
        Candidates per node (8), links kept per node B (4), rings per seed α (9).
    distance_tolerance_frac, angle_tolerance_deg, intensity_tolerance_frac : float
        Widths of the distance [fraction of a], angle [deg] and intensity [fraction of the
        median amplitude] terms of the link probability.
    min_probability : float
        Smallest accepted link probability [1].
    site_tolerance_frac : float
        Largest miss of a bond site, fraction of the lattice constant [1].
    """

    name: ClassVar[str] = "sofs"

    def __init__(self, *, n_candidates: int = 8, branching: int = 4, depth_limit: int = 9,
                 distance_tolerance_frac: float = 0.12, angle_tolerance_deg: float = 15.0,
                 intensity_tolerance_frac: float = 0.3, min_probability: float = 0.25,
                 site_tolerance_frac: float = 0.25):
        self.params = SofsParameters(n_candidates=int(n_candidates), branching=int(branching), depth_limit=int(depth_limit),
                                     distance_tolerance_frac=float(distance_tolerance_frac),
                                     angle_tolerance_deg=float(angle_tolerance_deg),
                                     intensity_tolerance_frac=float(intensity_tolerance_frac),
                                     min_probability=float(min_probability), site_tolerance_frac=float(site_tolerance_frac))

    def build(self, image: Image, columns: pd.DataFrame) -> Octahedra:
        """Return the octahedral network of classified ``columns``."""
        if "species" not in columns:
            raise InputError("columns have no species; run a classifier (e.g. classifier=sofs) before the network builder")
        species = columns["species"].astype(str).to_numpy()
        is_pb = species == "Pb"
        xy = columns[["x_A", "y_A"]].to_numpy(float)
        amp = columns["amplitude"].to_numpy(float) if "amplitude" in columns else np.full(len(columns), np.nan)
        res = sofs_search(xy, amp, is_pb, self.params, candidate_mask=species == "X")
        labels = columns.index.to_numpy()
        pb_rows = np.flatnonzero(is_pb)
        p = xy[pb_rows]
        local = res.pb_basis
        a1, a2 = local[:, 0], local[:, 1]
        x_rows = np.flatnonzero(res.is_x)
        col_edge = columns["edge"].to_numpy(bool) if "edge" in columns else np.zeros(len(columns), bool)
        unreliable = res.edge | col_edge
        neigh: dict[str, np.ndarray] = {}
        bad = np.zeros(len(p), bool)
        tol = self.params.site_tolerance_frac * res.stats["a_A"]
        if len(x_rows):
            tree = cKDTree(xy[x_rows])
            for key, off in zip(Octahedra.NEIGHBOURS, (a1 / 2, -a1 / 2, a2 / 2, -a2 / 2)):
                d, j = tree.query(p + off, k=1, distance_upper_bound=tol)
                ok = np.isfinite(d)
                rows = np.where(ok, x_rows[np.minimum(j, len(x_rows) - 1)], -1)
                neigh[key] = np.where(ok, labels[np.maximum(rows, 0)], -1)
                bad |= ~ok | (ok & unreliable[np.maximum(rows, 0)])
        else:
            for key in Octahedra.NEIGHBOURS:
                neigh[key] = np.full(len(p), -1)
            bad[:] = True
        i, j, shell = lattice_indices_and_shell(p, res.basis)
        table = pd.DataFrame({
            "pb": labels[pb_rows], "x_A": p[:, 0], "y_A": p[:, 1], **neigh, "i": i, "j": j, "shell": shell,
            "a1_x_A": a1[:, 0], "a1_y_A": a1[:, 1], "a2_x_A": a2[:, 0], "a2_y_A": a2[:, 1],
            "edge": bad, "rim": ~res.pb_neighbours.all(1),
        })
        pairs = np.concatenate([np.column_stack([table["pb"], table[k]]) for k in Octahedra.NEIGHBOURS])
        bonds = pairs[pairs[:, 1] >= 0].astype(int)
        return Octahedra(table=table, bonds=bonds, lattice_vectors_A=res.basis)
