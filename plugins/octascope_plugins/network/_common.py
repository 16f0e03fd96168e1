"""Helpers shared by the network builders."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from octascope.core.model import Octahedra


def network_octahedra(pb: np.ndarray, p: np.ndarray, neighbours: dict[str, np.ndarray], i: np.ndarray,
                      j: np.ndarray, shell: np.ndarray, a1: np.ndarray, a2: np.ndarray, edge: npt.ArrayLike,
                      rim: npt.ArrayLike, basis: np.ndarray) -> Octahedra:
    """The network of a builder: its octahedron table and the Pb–X bonds found.

    Parameters
    ----------
    pb : numpy.ndarray
        (n,) row labels of the Pb columns.
    p : numpy.ndarray
        (n, 2) their positions [Å].
    neighbours : dict
        ``x_right``, ``x_left``, ``x_up``, ``x_down``: (n,) row labels of the X neighbours (-1 if missing).
    i, j, shell : numpy.ndarray
        (n,) lattice indices and unit cells to the outline.
    a1, a2 : numpy.ndarray
        (n, 2) local lattice vectors [Å].
    edge, rim : numpy.ndarray
        (n,) bool, unreliable octahedra and Pb without all four Pb neighbours.
    basis : numpy.ndarray
        (2, 2) the Pb-Pb lattice vectors [Å].

    Returns
    -------
    Octahedra
        One row per Pb; the bonds (Pb label, X label) of the X neighbours found.
    """
    table = pd.DataFrame({
        "pb": pb, "x_A": p[:, 0], "y_A": p[:, 1], **neighbours, "i": i, "j": j, "shell": shell,
        "a1_x_A": a1[:, 0], "a1_y_A": a1[:, 1], "a2_x_A": a2[:, 0], "a2_y_A": a2[:, 1],
        "edge": edge, "rim": rim,
    })
    pairs = np.concatenate([np.column_stack([table["pb"], table[k]]) for k in Octahedra.NEIGHBOURS])
    bonds = pairs[pairs[:, 1] >= 0].astype(int)
    return Octahedra(table=table, bonds=bonds, lattice_vectors_A=basis)
