"""SOFS network builder: octahedra from the halide sublattice linked by the spiral search."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from octascope.core.errors import InputError
from octascope.analysis.lattice import lattice_indices_and_shell
from octascope.core.model import Classification, Image, Octahedra
from octascope.core.params import Plugin
from octascope_plugins.network._common import network_octahedra
from octascope_plugins.sites.sofs_search import SofsSearchOptions, SofsSearchRecord, search_columns


class SofsNetwork(Plugin):
    """Build the PbX6 network with the Spiral Octahedra First Search (:mod:`octascope_plugins.sites.sofs_search`).

    The search links the columns labelled X; each Pb then takes the linked X column nearest to
    each of its four bond sites ``p ± a1/2``, ``p ± a2/2`` (local lattice vectors from its Pb
    neighbours), within ``site_tolerance_frac`` × ``a``. An octahedron is ``edge`` (unreliable:
    kept in the tables, left out of maps and statistics) when an X is missing, is flagged ``edge``
    in the columns, or is a rim X found from one direction only.

    One search per analysis: after ``classifier=sofs`` the classification carries that classifier's
    search (``search``, a :class:`~octascope_plugins.sites.sofs_search.SofsSearchRecord`), and when it ran with
    these search options on the same Pb and X rows (nothing dropped or moved in between) the
    octahedra are built from it; otherwise (``classifier=lattice``, other options given to the
    network, refined positions) the search runs here, over the columns labelled X.

    Parameters are those of :class:`octascope_plugins.sites.sofs_search.SofsSearchOptions` (the same fields, defaults
    and YAML keys as the ``sofs`` classifier's search): ``n_candidates``, ``branching``,
    ``depth_limit``, ``distance_tolerance_frac`` [fraction of a], ``angle_tolerance_deg`` [deg],
    ``intensity_tolerance_frac`` [fraction of the median amplitude], ``min_probability`` [1],
    ``site_tolerance_frac`` [fraction of a].
    """

    name: ClassVar[str] = "sofs"
    Options = SofsSearchOptions
    options: SofsSearchOptions

    def search(self, classification: Classification) -> SofsSearchRecord:
        """The search outcome for a classification: the classifier's when it matches its columns
        (:meth:`~octascope_plugins.sites.sofs_search.SofsSearchRecord.matches`), else a new search over the X columns."""
        columns = classification.columns
        record = classification.search
        if isinstance(record, SofsSearchRecord) and record.matches(columns, self.options):
            return record
        species = columns["species"].astype(str).to_numpy()
        xy = columns[["x_A", "y_A"]].to_numpy(float)
        amp = columns["amplitude"].to_numpy(float) if "amplitude" in columns else np.full(len(columns), np.nan)
        _, record = search_columns(xy, amp, species == "Pb", columns.index.to_numpy(), self.options,
                                   candidate_mask=species == "X")
        return record

    def build(self, image: Image, classification: Classification) -> Octahedra:
        """Return the octahedral network of classified ``columns``.

        Parameters
        ----------
        image : Image
            The image (unused).
        classification : Classification
            Classified columns (``x_A``, ``y_A`` [Å], ``species``, ``amplitude``, ``edge``) and the
            classifier's search record, if any.

        Returns
        -------
        Octahedra
            One row per Pb: its four X neighbours (row labels, -1 if missing), lattice indices,
            shell, local lattice vectors [Å], ``edge`` and ``rim``.
        """
        columns = classification.columns
        if "species" not in columns:
            raise InputError("columns have no species; run a classifier (e.g. classifier=sofs) before the network builder")
        rec = self.search(classification)
        labels = columns.index.to_numpy()
        row_of = pd.Series(np.arange(len(labels)), index=labels)
        pb_rows = row_of[rec.pb_labels].to_numpy()
        x_rows = row_of[rec.x_labels].to_numpy()
        xy = columns[["x_A", "y_A"]].to_numpy(float)
        p = xy[pb_rows]
        a1, a2 = rec.pb_basis[:, 0], rec.pb_basis[:, 1]
        col_edge = columns["edge"].to_numpy(bool) if "edge" in columns else np.zeros(len(columns), bool)
        unreliable = col_edge.copy()
        unreliable[x_rows] |= rec.x_edge
        neigh: dict[str, np.ndarray] = {}
        bad = np.zeros(len(p), bool)
        tol = self.options.site_tolerance_frac * rec.a_A
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
        i, j, shell = lattice_indices_and_shell(p, rec.basis)
        return network_octahedra(labels[pb_rows], p, neigh, i, j, shell, a1, a2, bad, ~rec.pb_neighbours.all(1),
                                 rec.basis)
