"""The ``lattice`` classifier: species from the lattice registry of [001] perovskite columns.

(Named for what it does, so it is not confused with the ``lattice`` *metric*,
:mod:`octascope_plugins.metric.lattice`; the registered name stays ``lattice``.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from octascope.core.errors import InputError
from octascope.core.model import Classification, Image
from octascope.core.params import Plugin, param, require
from octascope_plugins.sites.site_registry import SiteTestOptions, column_amplitudes, index_columns, significant_mask


@dataclass(frozen=True, kw_only=True)
class LatticeClassifierOptions(SiteTestOptions):
    """Parameters of :class:`LatticeClassifier`."""

    site_tolerance_frac: float = param(0.35, unit="fraction of a/2", doc="largest distance from the lattice site "
                                       "for a column to belong to the lattice")
    min_pb_posterior: float = param(0.02, doc="Pb-coset columns with a smaller mixture probability of a Pb "
                                    "amplitude are unknown")

    def check(self) -> None:
        super().check()
        require(0 < self.site_tolerance_frac < 0.5,
                f"site_tolerance_frac must lie in (0, 0.5), got {self.site_tolerance_frac}")
        require(0 <= self.min_pb_posterior < 1, f"min_pb_posterior must lie in [0, 1), got {self.min_pb_posterior}")


class LatticeClassifier(Plugin):
    """Species from the lattice registry: which coset of the a/2 column lattice a column is on.

    All columns of an [001] perovskite sit on one square lattice of spacing a/2; the columns are
    indexed on it neighbour by neighbour (:func:`octascope_plugins.sites.site_registry.index_columns`), the coset
    with the brightest median amplitude is Pb (+ apical X), the diagonal coset Cs and the other
    two X. Columns that do not continue the lattice (off their site, or a weaker second column on
    an occupied site) are ``unknown``, as are Pb-coset columns whose amplitude a two-component
    mixture model says is not a Pb column's. ``species_confidence`` is the mixture's P(Pb) for Pb
    and 1 − P(Pb) for X and Cs, times how well the column sits on its site.

    Parameters are those of :class:`LatticeClassifierOptions`: ``site_tolerance_frac`` (largest
    distance from the site [fraction of the a/2 spacing]), ``min_pb_posterior`` [1] and ``site_fdr``
    (the site candidates' test, :class:`~octascope_plugins.sites.site_registry.SiteTest`) [1].
    """

    name: ClassVar[str] = "lattice"
    Options = LatticeClassifierOptions
    options: LatticeClassifierOptions

    def classify(self, image: Image, columns: pd.DataFrame) -> Classification:
        """Return a copy of ``columns`` with ``species``, ``species_confidence`` and ``edge`` set.

        Parameters
        ----------
        image : Image
            The image (unused: the registry works on the column table).
        columns : pandas.DataFrame
            Located columns with ``x_A``, ``y_A`` [Å] and ``amplitude``.

        Returns
        -------
        Classification
            A copy of the columns with ``species``, ``species_confidence`` [1], ``on_lattice`` and
            ``edge``, and the Pb-Pb ``lattice_basis_A`` [Å].
        """
        o = self.options
        out = columns.copy()
        amp = column_amplitudes(out)
        xy = out[["x_A", "y_A"]].to_numpy(float)
        significant = significant_mask(columns)
        reg = index_columns(xy, amp, significant=significant, site_tolerance_frac=o.site_tolerance_frac,
                            min_pb_posterior=o.min_pb_posterior, site_test=o.site_test(columns))
        species = reg.species
        is_pb = species == "Pb"
        if is_pb.sum() < 4:
            raise InputError(f"found {int(is_pb.sum())} Pb columns on the lattice: no perovskite Pb sublattice; "
                             "check the image contrast (bright Pb columns expected) and the zone axis ([001])")
        basis = reg.pb_basis_A
        a = float(np.mean(np.linalg.norm(basis, axis=1)))
        post = np.nan_to_num(reg.pb_posterior, nan=0.5)
        fit = np.clip(1.0 - reg.residual_frac / o.site_tolerance_frac, 0, 1)
        conf = np.where(is_pb, post, 1.0 - post) * np.where(np.isfinite(fit), fit, 0.0)
        conf[species == "unknown"] = 0.0

        # rim: Pb with fewer than four Pb neighbours, X with fewer than two, Cs with fewer than four
        tree = cKDTree(xy[is_pb])
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
        out["on_lattice"] = reg.on_lattice
        out["edge"] = out.get("edge", False) | edge
        return Classification(columns=out, lattice_basis_A=basis)
