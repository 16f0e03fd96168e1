"""One-pot classification with SOFS: Pb by amplitude, X by the spiral search, Cs the remainder."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from octascope.errors import InputError
from octascope.geometry import estimate_square_basis, grow_sublattice
from octascope.model import Image
from octascope_plugins.network._sofs_search import SofsParameters, cs_sites, sofs_search


def _one_per_site(species: np.ndarray, xy: np.ndarray, amp: np.ndarray, label: str, radius_A: float) -> None:
    """Of two columns of ``label`` closer than ``radius_A``, the weaker becomes ``unknown`` (in place)."""
    idx = np.flatnonzero(species == label)
    if len(idx) < 2:
        return
    pairs = cKDTree(xy[idx]).query_pairs(r=radius_A, output_type="ndarray")
    if len(pairs):
        a, b = idx[pairs[:, 0]], idx[pairs[:, 1]]
        species[np.where(np.nan_to_num(amp[a]) >= np.nan_to_num(amp[b]), b, a)] = "unknown"


class SofsClassifier:
    """Classify columns as the method paper does, without a complementary HAADF image.

    Pb columns: fitted amplitude above ``pb_amplitude_factor`` × the mean amplitude, then grown
    along the Pb sublattice to weaker rim columns on Pb sites (amplitude above
    ``pb_site_amplitude_factor`` × the mean; :func:`octascope.geometry.grow_sublattice`). X columns:
    those linked by the Spiral Octahedra First Search (see
    :mod:`octascope_plugins.network._sofs_search`). Cs columns: the remainder at a Cs site with a
    plausible amplitude; other leftovers (background peaks) are ``unknown``. ``edge`` marks the
    unreliable outer rim (rim X found from one direction only, rim Cs, unknown columns).

    Parameters
    ----------
    pb_amplitude_factor : float
        Pb threshold as a multiple of the mean column amplitude [1] (paper: 1.5).
    n_candidates : int
        Candidate neighbours examined per search node (paper: 8).
    branching : int
        Links kept per node, B (paper: 4).
    depth_limit : int
        Search rings per seed, α (paper: 9).
    distance_tolerance_frac : float
        Width of the link-length term, fraction of the lattice constant [1].
    angle_tolerance_deg : float
        Width of the link-angle term [deg].
    intensity_tolerance_frac : float
        Width of the intensity term, fraction of the median non-Pb amplitude [1].
    min_probability : float
        Smallest accepted link probability [1].
    site_tolerance_frac : float
        Largest miss of a predicted site, fraction of the lattice constant [1].
    pb_site_amplitude_factor : float
        Least amplitude, as a multiple of the mean, of a column on a Pb lattice site to be Pb [1];
        set it to ``pb_amplitude_factor`` for the paper's amplitude rule alone.
    """

    name: ClassVar[str] = "sofs"

    def __init__(self, *, pb_amplitude_factor: float = 1.5, n_candidates: int = 8, branching: int = 4,
                 depth_limit: int = 9, distance_tolerance_frac: float = 0.12, angle_tolerance_deg: float = 15.0,
                 intensity_tolerance_frac: float = 0.3, min_probability: float = 0.25,
                 site_tolerance_frac: float = 0.25, pb_site_amplitude_factor: float = 1.0):
        if not pb_amplitude_factor > 0:
            raise InputError(f"pb_amplitude_factor is {pb_amplitude_factor}; give a positive multiple of the mean amplitude (paper: 1.5)")
        self.pb_amplitude_factor = float(pb_amplitude_factor)
        self.pb_site_amplitude_factor = float(pb_site_amplitude_factor)
        self.params = SofsParameters(n_candidates=int(n_candidates), branching=int(branching), depth_limit=int(depth_limit),
                                     distance_tolerance_frac=float(distance_tolerance_frac),
                                     angle_tolerance_deg=float(angle_tolerance_deg),
                                     intensity_tolerance_frac=float(intensity_tolerance_frac),
                                     min_probability=float(min_probability), site_tolerance_frac=float(site_tolerance_frac))

    def classify(self, image: Image, columns: pd.DataFrame) -> pd.DataFrame:
        """Return a copy of ``columns`` with ``species``, ``species_confidence`` and ``edge`` set."""
        if "amplitude" not in columns or not np.isfinite(columns["amplitude"].to_numpy(float)).any():
            raise InputError("column amplitudes are missing; use a locator that fits amplitudes (e.g. gaussian)")
        amp = columns["amplitude"].to_numpy(float)
        xy = columns[["x_A", "y_A"]].to_numpy(float)
        mean_amp = np.nanmean(amp)
        is_pb = amp > self.pb_amplitude_factor * mean_amp
        if is_pb.sum() < 4:
            spread = np.nanstd(amp) / abs(mean_amp) if mean_amp else np.nan
            raise InputError(
                f"found {int(is_pb.sum())} Pb columns (amplitude > {self.pb_amplitude_factor} x mean; relative amplitude "
                f"spread {spread:.2f}): no Pb sublattice; check the image contrast (iDPC/HAADF with bright Pb columns) "
                "or lower classifier.pb_amplitude_factor"
            )
        is_pb = grow_sublattice(xy, is_pb, amp > self.pb_site_amplitude_factor * mean_amp,
                                estimate_square_basis(xy[is_pb]), tolerance_frac=0.15)
        res = sofs_search(xy, amp, is_pb, self.params)
        a = res.stats["a_A"]
        rest = ~is_pb & ~res.is_x
        ref = np.nanmedian(amp[~is_pb]) if (~is_pb).any() else np.nan
        is_cs, cs_score, n_diag = cs_sites(xy, amp, xy[is_pb], a, self.params.site_tolerance_frac, self.params.min_probability,
                                 ref, self.params.intensity_tolerance_frac)
        species = np.full(len(columns), "unknown", dtype=object)
        species[is_pb] = "Pb"
        species[res.is_x] = "X"
        species[rest & is_cs] = "Cs"
        _one_per_site(species, xy, amp, "Cs", 0.3 * a)

        conf = np.zeros(len(columns))
        margin = (amp - self.pb_amplitude_factor * mean_amp) / (self.pb_amplitude_factor * mean_amp)
        conf[is_pb] = np.clip(np.abs(margin[is_pb]) / 0.5, 0, 1)
        conf[res.is_x] = np.clip(res.probability[res.is_x], 0, 1)
        conf[rest & is_cs] = cs_score[rest & is_cs]

        edge = res.edge.copy()
        edge |= (species == "Cs") & (n_diag < 4)
        edge |= species == "unknown"
        edge[np.flatnonzero(is_pb)] |= res.pb_neighbours.sum(1) < 2  # isolated Pb: no lattice around it
        out = columns.copy()
        out["species"] = species
        out["species_confidence"] = conf
        prior = out["edge"].to_numpy(bool) if "edge" in out else np.zeros(len(out), bool)
        out["edge"] = prior | edge
        out.attrs = {**columns.attrs, "lattice_basis_A": res.basis.tolist(), "lattice_constant_A": a,
                     "sofs": {k: v for k, v in res.stats.items()}}
        return out
