"""Geometry-and-intensity classifier for [001] perovskite images."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from octascope.errors import InputError
from octascope.geometry import estimate_square_basis, grow_sublattice
from octascope.model import Image


class LatticeClassifier:
    """Pb by amplitude, X vs Cs by position relative to the Pb sublattice.

    Pb columns (Pb + apical X in [001] projection) are the columns whose fitted amplitude
    exceeds ``pb_amplitude_factor`` × the mean amplitude (iDPC contrast is roughly linear in Z).
    The Pb sublattice gives the lattice constant ``a``; every other column is an X column when
    its nearest Pb is at about ``a/2`` (Pb-Pb midpoints) and a Cs column at about ``a/√2``
    (square centres). Columns farther than ``max_pb_distance_frac`` × ``a`` from any Pb are left
    ``unknown`` (background peaks).

    The amplitude rule misses Pb columns at the rim of a small particle, which hold fewer or more
    disordered atoms and image weaker. So the Pb sublattice is then grown geometrically: a column
    within ``pb_site_tolerance_frac`` × ``a`` of a lattice site one step from a known Pb, with an
    amplitude above ``pb_site_amplitude_factor`` × the mean, is Pb too (X and Cs sit half a step
    off the Pb sites and are never taken).

    Parameters
    ----------
    pb_amplitude_factor : float
        Pb threshold as a multiple of the mean column amplitude [1].
    x_cs_boundary_frac : float
        Nearest-Pb distance, as a fraction of ``a``, separating X (below) from Cs (above) [1];
        the ideal values are 0.5 and 0.707.
    max_pb_distance_frac : float
        Columns farther than this fraction of ``a`` from every Pb are ``unknown`` [1].
    pb_site_amplitude_factor : float
        Least amplitude, as a multiple of the mean, of a column on a Pb lattice site to be Pb [1];
        set it to ``pb_amplitude_factor`` to use the amplitude rule alone.
    pb_site_tolerance_frac : float
        Largest distance from a Pb lattice site, as a fraction of ``a`` [1].
    """

    name: ClassVar[str] = "lattice"

    def __init__(self, *, pb_amplitude_factor: float = 1.5, x_cs_boundary_frac: float = 0.6,
                 max_pb_distance_frac: float = 0.9, pb_site_amplitude_factor: float = 1.0,
                 pb_site_tolerance_frac: float = 0.15):
        if pb_amplitude_factor <= 0:
            raise ValueError("pb_amplitude_factor must be > 0")
        if not 0.5 < x_cs_boundary_frac < 0.707:
            raise ValueError("x_cs_boundary_frac must lie between 0.5 (X) and 0.707 (Cs)")
        self.pb_amplitude_factor = pb_amplitude_factor
        self.x_cs_boundary_frac = x_cs_boundary_frac
        self.max_pb_distance_frac = max_pb_distance_frac
        self.pb_site_amplitude_factor = pb_site_amplitude_factor
        self.pb_site_tolerance_frac = pb_site_tolerance_frac

    def classify(self, image: Image, columns: pd.DataFrame) -> pd.DataFrame:
        out = columns.copy()
        amp = out["amplitude"].to_numpy(float)
        if not np.isfinite(amp).any():
            raise InputError("column amplitudes are missing; use a locator that fits amplitudes (e.g. gaussian)")
        mean_amp = np.nanmean(amp)
        is_pb = amp > self.pb_amplitude_factor * mean_amp
        n_pb = int(is_pb.sum())
        if n_pb < 4:
            raise InputError(
                f"found {n_pb} Pb columns (amplitude > {self.pb_amplitude_factor} x mean): no perovskite lattice; "
                "check the image contrast (bright Pb columns expected) or lower classifier.pb_amplitude_factor"
            )
        xy = out[["x_A", "y_A"]].to_numpy(float)
        basis = estimate_square_basis(xy[is_pb])
        a = float(np.mean(np.linalg.norm(basis, axis=1)))
        is_pb = grow_sublattice(xy, is_pb, amp > self.pb_site_amplitude_factor * mean_amp, basis,
                                tolerance_frac=self.pb_site_tolerance_frac)
        tree = cKDTree(xy[is_pb])
        d_pb, _ = tree.query(xy, k=1)
        frac = d_pb / a
        species = np.where(frac < self.x_cs_boundary_frac, "X", "Cs").astype(object)
        species[frac > self.max_pb_distance_frac] = "unknown"
        species[is_pb] = "Pb"

        # confidence: distance of the decision variable from its boundary, scaled to [0, 1]
        conf = np.empty(len(out))
        lo, hi = 0.5, 1 / np.sqrt(2)
        width = (hi - lo) / 2
        conf[:] = np.clip(np.abs(frac - self.x_cs_boundary_frac) / width, 0, 1)
        pb_margin = (amp - self.pb_amplitude_factor * mean_amp) / (self.pb_amplitude_factor * mean_amp)
        conf[is_pb] = np.clip(np.abs(pb_margin[is_pb]) / 0.5, 0, 1)
        conf[species == "unknown"] = 0.0

        # rim: Pb with fewer than four Pb neighbours, X with fewer than two, Cs with fewer than four
        n_pb_near = np.array([len(n) for n in tree.query_ball_point(xy, r=1.2 * a)]) - is_pb.astype(int)
        n_pb_half = np.array([len(n) for n in tree.query_ball_point(xy, r=0.6 * a)])
        n_pb_diag = np.array([len(n) for n in tree.query_ball_point(xy, r=0.85 * a)])
        edge = np.zeros(len(out), dtype=bool)
        edge |= is_pb & (n_pb_near < 4)
        edge |= (species == "X") & (n_pb_half < 2)
        edge |= (species == "Cs") & (n_pb_diag < 4)
        edge |= species == "unknown"

        out["species"] = species
        out["species_confidence"] = conf
        out["edge"] = out.get("edge", False) | edge
        out.attrs = {**columns.attrs, "lattice_basis_A": basis.tolist(), "lattice_constant_A": a}
        return out
