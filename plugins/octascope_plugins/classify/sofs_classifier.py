"""One-pot classification with SOFS: Pb by amplitude, X by the spiral search, Cs the remainder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from octascope.core.errors import InputError
from octascope.core.model import Classification, Image
from octascope.core.params import Plugin, param, require
from octascope_plugins.sites.sofs_search import SofsSearchOptions, cs_sites, search_columns
from octascope_plugins.sites.site_registry import SiteTestOptions, column_amplitudes, index_columns, significant_mask


def _one_per_site(species: np.ndarray, xy: np.ndarray, amp: np.ndarray, label: str, radius_A: float) -> None:
    """Of two columns of ``label`` closer than ``radius_A``, the weaker becomes ``unknown`` (in place)."""
    idx = np.flatnonzero(species == label)
    if len(idx) < 2:
        return
    pairs = cKDTree(xy[idx]).query_pairs(r=radius_A, output_type="ndarray")
    if len(pairs):
        a, b = idx[pairs[:, 0]], idx[pairs[:, 1]]
        species[np.where(np.nan_to_num(amp[a]) >= np.nan_to_num(amp[b]), b, a)] = "unknown"


@dataclass(frozen=True, kw_only=True)
class SofsClassifierOptions(SofsSearchOptions, SiteTestOptions):
    """Parameters of :class:`SofsClassifier`: the search's (inherited from
    :class:`octascope_plugins.sites.sofs_search.SofsSearchOptions`), the site candidates' test
    (:class:`octascope_plugins.sites.site_registry.SiteTestOptions`) and the Pb mixture model's."""

    min_pb_posterior: float = param(0.02, doc="Pb-site columns whose amplitude the mixture model gives a smaller "
                                    "P(Pb) are unknown")

    def check(self) -> None:
        SofsSearchOptions.check(self)
        SiteTestOptions.check(self)
        require(0 <= self.min_pb_posterior < 1, f"min_pb_posterior is {self.min_pb_posterior}; give a probability in [0, 1)")


class SofsClassifier(Plugin):
    """Classify columns as the method paper does, without a complementary HAADF image.

    Pb columns: the brightest coset of the lattice registry (:func:`octascope_plugins.sites.site_registry.index_columns`:
    columns indexed neighbour by neighbour on the a/2 lattice, Pb decided by the coset's median
    amplitude and confirmed per column by an amplitude mixture model; the paper's rule, amplitude
    above 1.5 × the global mean, fails once background peaks or weak-phase contrast enter). X
    columns: those linked by the Spiral Octahedra First Search (:mod:`octascope_plugins.sites.sofs_search`). Cs
    columns: the remainder at a Cs site with a plausible amplitude. Peaks that do not continue the
    lattice (off every site, or a weaker second peak on an occupied site) are ``unknown`` and never
    enter the search. ``edge`` marks the unreliable outer rim (rim X found from one direction only,
    rim Cs, unknown columns).

    One search for classifier and network: the returned classification carries the search's
    outcome as its ``search`` (a :class:`octascope_plugins.sites.sofs_search.SofsSearchRecord`); the ``sofs`` network
    builder builds the octahedra from it, without searching again, when its own search options
    equal these and the Pb and X rows are unchanged.

    Parameters are those of :class:`SofsClassifierOptions`: ``n_candidates`` (candidates per node,
    paper 8), ``branching`` (links kept per node B, 4), ``depth_limit`` (rings per seed α, 9),
    ``distance_tolerance_frac`` [fraction of a], ``angle_tolerance_deg`` [deg],
    ``intensity_tolerance_frac`` [fraction of the median non-Pb amplitude], ``min_probability``
    [1], ``site_tolerance_frac`` [fraction of a] and ``min_pb_posterior`` [1].
    """

    name: ClassVar[str] = "sofs"
    Options = SofsClassifierOptions
    options: SofsClassifierOptions

    def classify(self, image: Image, columns: pd.DataFrame) -> Classification:
        """Return a copy of ``columns`` with ``species``, ``species_confidence`` and ``edge`` set.

        Parameters
        ----------
        image : Image
            The image (unused: the search works on the column table).
        columns : pandas.DataFrame
            Located columns with ``x_A``, ``y_A`` [Å] and ``amplitude``.

        Returns
        -------
        Classification
            A copy of the columns with ``species``, ``species_confidence`` [1], ``on_lattice`` and
            ``edge``; the Pb-Pb ``lattice_basis_A`` [Å]; the search record
            (:class:`~octascope_plugins.sites.sofs_search.SofsSearchRecord`, with the search statistics) as ``search``.
        """
        o = self.options
        amp = column_amplitudes(columns)
        xy = columns[["x_A", "y_A"]].to_numpy(float)
        significant = significant_mask(columns)
        reg = index_columns(xy, amp, significant=significant, min_pb_posterior=o.min_pb_posterior,
                            site_test=o.site_test(columns))
        if (reg.species == "Pb").sum() < 4:
            raise InputError(f"found {int((reg.species == 'Pb').sum())} Pb columns on the lattice: no Pb sublattice; "
                             "check the image contrast (iDPC/HAADF with bright Pb columns) and the zone axis ([001])")
        # peaks that do not continue the lattice never enter the search
        sub = np.flatnonzero(reg.on_lattice)
        xs, amps, is_pb = xy[sub], amp[sub], reg.species[sub] == "Pb"
        res, record = search_columns(xs, amps, is_pb, columns.index.to_numpy()[sub], o)
        a = res.stats["a_A"]
        rest = ~is_pb & ~res.is_x
        ref = np.nanmedian(amps[~is_pb]) if (~is_pb).any() else np.nan
        is_cs, cs_score, n_diag = cs_sites(xs, amps, xs[is_pb], a, ref, o)
        sp = np.full(len(sub), "unknown", dtype=object)
        sp[is_pb] = "Pb"
        sp[res.is_x] = "X"
        sp[rest & is_cs] = "Cs"
        _one_per_site(sp, xs, amps, "Cs", 0.3 * a)

        cf = np.zeros(len(sub))
        cf[is_pb] = np.nan_to_num(reg.pb_posterior[sub][is_pb], nan=0.5)
        cf[res.is_x] = np.clip(res.probability[res.is_x], 0, 1)
        cf[sp == "Cs"] = cs_score[sp == "Cs"]

        ed = res.edge.copy()
        ed |= (sp == "Cs") & (n_diag < 4)
        ed |= sp == "unknown"
        ed[np.flatnonzero(is_pb)] |= res.pb_neighbours.sum(1) < 2  # isolated Pb: no lattice around it

        species = np.full(len(columns), "unknown", dtype=object)
        conf = np.zeros(len(columns))
        edge = np.ones(len(columns), dtype=bool)
        species[sub], conf[sub], edge[sub] = sp, cf, ed
        out = columns.copy()
        out["species"] = species
        out["species_confidence"] = conf
        out["on_lattice"] = reg.on_lattice
        prior = out["edge"].to_numpy(bool) if "edge" in out else np.zeros(len(out), bool)
        out["edge"] = prior | edge
        return Classification(columns=out, lattice_basis_A=res.basis, search=record)
