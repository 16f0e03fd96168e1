"""Spiral Octahedra First Search (SOFS): the halide sublattice as a probabilistic graph search.

Shared by the ``sofs`` classifier and the ``sofs`` network builder (platform code, so neither
plugin imports the other): :class:`SofsSearchOptions` (the search's parameters, declared once),
:func:`sofs_search`, :func:`cs_sites` and :class:`SofsSearchRecord` (what the classifier attaches
to its classification so that the network builder reuses its search instead of running it again). Our reading of the method
paper (du2026, Fig. 1c/d, Methods and Supporting Note 3):

* Pb columns are given (amplitude threshold). Their square lattice gives the *local* lattice
  vectors ``a1``, ``a2`` at every Pb (from its Pb neighbours), and every other column takes those
  of its nearest Pb.
* In [001] projection each X column has its four nearest X neighbours at the octahedron edges,
  ``(±a1 ± a2)/2`` away; Cs columns sit ``a/2`` away along the axes and Pb columns are excluded
  from the search; so are columns without a Pb at ``a/2 ± 0.1 a`` (an X column is bonded to a
  Pb; a Cs column's nearest Pb is ``a/√2`` away), a pruning step. From a seed X column the search expands ring by ring (the spiral): for every
  node of the current ring the ``n_candidates`` = 8 nearest non-Pb columns are scored against the
  four expected X sites (vectorised over the ring with a cKDTree), the best candidate per site is
  found and the ``branching`` = 4 most probable links are kept when their probability exceeds
  ``min_probability``. The probability is the product of a distance term (length of the link vs
  ``|a1 ± a2|/2``), an angle term (direction vs the expected diagonal) and an intensity term
  (amplitude vs the median non-Pb amplitude; only weaker peaks are penalised), so Cs columns and
  weak background peaks are not linked.
* After ``depth_limit`` = 9 rings the current ring becomes the set of new seeds at the boundary of
  the explored region (the recursion depth limit α). When an expansion dies out before covering
  the particle (an irregular contour, a gap of missing columns), the next seed is the unvisited
  column nearest to the explored region that looks like an X column from the Pb side (two Pb
  columns on opposite sides at ``a/2``); this repeats until no such column remains.
* The outermost layer is recognised first, from the Pb side: every rim Pb (missing a Pb
  neighbour along some lattice direction) predicts an X site ``a/2`` beyond it. A rim X column is
  reliable when it is found from both directions, by the Pb-side prediction and by the X-X
  spiral; found from only one side it is kept as X but flagged ``edge`` (the delineated,
  unreliable outer region).
* Two accepted columns closer than ``0.3 a`` (a background peak next to a real X) keep the more
  probable one. Cs columns are what remains at a Cs site (``a/√2`` from the nearest Pb) with a
  plausible amplitude; everything else is ``unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
from scipy.spatial import cKDTree

from octascope.core.errors import InputError
from octascope.analysis.lattice import estimate_square_basis, neighbour_lattice_vectors
from octascope.core.params import Options, param, require


@dataclass(frozen=True, kw_only=True)
class SofsSearchOptions(Options):
    """Parameters of the search (see the module docstring), declared once for the ``sofs``
    classifier and the ``sofs`` network builder."""

    n_candidates: int = param(8, doc="nearest non-Pb columns examined per search node (paper: 8)")
    branching: int = param(4, doc="links kept per node, B (paper: 4)")
    depth_limit: int = param(9, doc="rings expanded from one seed before its boundary ring seeds the next expansion, "
                             "α (paper: 9)")
    distance_tolerance_frac: float = param(0.12, unit="fraction of a", doc="width of the link-length term")
    angle_tolerance_deg: float = param(15.0, unit="deg", doc="width of the link-angle term")
    intensity_tolerance_frac: float = param(0.3, unit="fraction of the median amplitude",
                                            doc="width of the intensity term (median non-Pb amplitude)")
    min_probability: float = param(0.25, doc="smallest accepted link probability")
    site_tolerance_frac: float = param(0.25, unit="fraction of a", doc="largest miss of a predicted site "
                                       "(rim X, Cs, Pb neighbours, bond sites)")

    def check(self) -> None:
        require(self.n_candidates >= 4, f"n_candidates is {self.n_candidates}; give at least 4 (paper: 8)")
        require(1 <= self.branching <= 4, f"branching is {self.branching}; give 1 to 4 (paper: B = 4)")
        require(self.depth_limit >= 1, f"depth_limit is {self.depth_limit}; give at least 1 (paper: alpha = 9)")
        require(0 < self.distance_tolerance_frac < 0.5, "distance_tolerance_frac must lie in (0, 0.5), e.g. 0.12")
        require(0 < self.angle_tolerance_deg < 45, "angle_tolerance_deg must lie in (0, 45) degrees, e.g. 15")
        require(self.intensity_tolerance_frac > 0, "intensity_tolerance_frac must be > 0, e.g. 0.3")
        require(0 <= self.min_probability < 1, "min_probability must lie in [0, 1), e.g. 0.25")
        require(0 < self.site_tolerance_frac < 0.35, "site_tolerance_frac must lie in (0, 0.35), e.g. 0.25")

    def search_options(self) -> "SofsSearchOptions":
        """These search options alone (a subclass's extra fields dropped), e.g. to compare two
        plugins' searches."""
        names = [f.name for f in fields(SofsSearchOptions)]
        return SofsSearchOptions(**{k: getattr(self, k) for k in names})


@dataclass
class SofsResult:
    """What the search found, per column of the input arrays."""

    is_x: np.ndarray
    probability: np.ndarray
    edge: np.ndarray
    ring: np.ndarray
    links: np.ndarray
    seeds: list[int]
    basis: np.ndarray  # particle-wide (2, 2) [Å]
    column_basis: np.ndarray  # (N, 2, 2) local a1, a2 at every column [Å]
    pb_basis: np.ndarray  # (n_pb, 2, 2) local a1, a2 at every Pb [Å]
    pb_neighbours: np.ndarray  # (n_pb, 4) bool: Pb neighbour at +a1, -a1, +a2, -a2
    stats: dict = field(default_factory=dict)


def _link_probability(d: np.ndarray, expected: np.ndarray, p_int: np.ndarray, a: float, prm: SofsSearchOptions) -> np.ndarray:
    """Probability that offsets ``d`` (F, K, 2) realise the expected offsets (F, S, 2): (F, K, S)."""
    dn = np.linalg.norm(d, axis=-1)[:, :, None]
    en = np.linalg.norm(expected, axis=-1)[:, None, :]
    p_dist = np.exp(-0.5 * ((dn - en) / (prm.distance_tolerance_frac * a)) ** 2)
    cosang = (d[:, :, None, :] * expected[:, None, :, :]).sum(-1) / np.maximum(dn * en, 1e-12)
    ang = np.degrees(np.arccos(np.clip(cosang, -1.0, 1.0)))
    p_ang = np.exp(-0.5 * (ang / prm.angle_tolerance_deg) ** 2)
    return p_dist * p_ang * p_int[:, :, None]


@dataclass
class _PbLattice:
    """The Pb lattice as every column sees it (lengths in Å)."""

    pb_xy: np.ndarray  # (n_pb, 2) Pb positions
    pb_tree: cKDTree
    basis: np.ndarray  # (2, 2) particle-wide a1, a2
    a: float  # lattice constant
    pb_basis: np.ndarray  # (n_pb, 2, 2) local a1, a2 at every Pb
    pb_nb: np.ndarray  # (n_pb, 4) bool, Pb neighbour at +a1, -a1, +a2, -a2
    d_pb: np.ndarray  # (N,) distance of every column to its nearest Pb
    column_basis: np.ndarray  # (N, 2, 2) local a1, a2 of every column's nearest Pb
    site_tol: float  # largest miss of a predicted site
    bond_tol: float  # largest miss of the Pb-X bond length a/2


@dataclass
class _Search:
    """What the search has found so far, per column (mutated as it runs)."""

    is_x: np.ndarray
    prob: np.ndarray
    ring: np.ndarray
    links: list[np.ndarray] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    def result(self, lat: _PbLattice, edge: np.ndarray, stats: dict) -> SofsResult:
        """The :class:`SofsResult`: links between accepted X columns only, probabilities of X only."""
        link_arr = np.concatenate(self.links) if self.links else np.zeros((0, 2), int)
        if len(link_arr):
            link_arr = link_arr[self.is_x[link_arr[:, 0]] & self.is_x[link_arr[:, 1]]]
        return SofsResult(self.is_x, np.where(self.is_x, self.prob, 0.0), edge, self.ring, link_arr, self.seeds,
                          lat.basis, lat.column_basis, lat.pb_basis, lat.pb_nb, stats)


def sofs_search(xy_A: np.ndarray, amplitude: np.ndarray, is_pb: np.ndarray, params: SofsSearchOptions | None = None,
                candidate_mask: np.ndarray | None = None) -> SofsResult:
    """Run SOFS on one particle's columns (module docstring: the Pb lattice, the pruned
    candidates, the rim from the Pb side, the spiral from seeds, one column per site, rim X).

    Parameters
    ----------
    xy_A : numpy.ndarray
        (N, 2) column positions [Å].
    amplitude : numpy.ndarray
        (N,) column amplitudes (NaN allowed: no intensity evidence, treated as plausible).
    is_pb : numpy.ndarray
        (N,) bool, the Pb columns.
    params : SofsSearchOptions, optional
        Search parameters (paper defaults).
    candidate_mask : numpy.ndarray, optional
        (N,) bool, columns that may become X (default: every non-Pb column).

    Returns
    -------
    SofsResult

    Raises
    ------
    InputError
        With fewer than 4 Pb columns or no square Pb lattice (less than one unit cell).
    """
    prm = params or SofsSearchOptions()
    xy = np.asarray(xy_A, float)
    n = len(xy)
    is_pb = np.asarray(is_pb, bool)
    lat = _pb_lattice(xy, is_pb, prm)
    cand_idx, p_int = _candidates(xy, amplitude, is_pb, candidate_mask, lat, prm)
    search = _Search(is_x=np.zeros(n, bool), prob=np.zeros(n), ring=np.full(n, -1))
    if len(cand_idx) == 0:
        return search.result(lat, np.zeros(n, bool), {"a_A": lat.a, "n_rings": 0})
    cand_tree = cKDTree(xy[cand_idx])
    pb_side, pb_side_prob = _pb_side_sites(n, cand_idx, cand_tree, p_int, lat, prm)
    seed_ok = _seed_candidates(xy, cand_idx, p_int, lat, prm)
    knn, pos_in_cand = _candidate_neighbours(xy, cand_idx, cand_tree, prm.n_candidates)
    n_rings = _spiral(xy, seed_ok, knn, pos_in_cand, p_int, lat, prm, search)
    _add_pb_side_and_dedupe(xy, search, pb_side, pb_side_prob, p_int, lat.a, prm)
    # rim X: reliable only when found from both directions
    _, jn = lat.pb_tree.query(xy, k=2)
    d_b = np.linalg.norm(lat.pb_xy[jn] - xy[:, None, :], axis=-1)
    rim_x = search.is_x & ~(np.abs(d_b - lat.a / 2) < lat.bond_tol).all(1)
    edge = rim_x & ~(pb_side & (search.ring >= 0))
    stats = {"a_A": lat.a, "n_rings": n_rings, "n_seeds": len(search.seeds), "n_rim_x": int(rim_x.sum()),
             "n_rim_x_unreliable": int(edge.sum())}
    return search.result(lat, edge, stats)


def _pb_lattice(xy: np.ndarray, is_pb: np.ndarray, prm: SofsSearchOptions) -> _PbLattice:
    """The particle-wide and local Pb lattice vectors, and what every column sees of them.

    Raises
    ------
    InputError
        With fewer than 4 Pb columns or no square Pb lattice.
    """
    pb_idx = np.flatnonzero(is_pb)
    if len(pb_idx) < 4:
        raise InputError(
            f"{len(pb_idx)} Pb columns: less than one unit cell, SOFS needs at least 4 Pb columns; "
            "check the Pb amplitude threshold (classifier.pb_amplitude_factor) or the field of view"
        )
    pb_xy = xy[pb_idx]
    basis = estimate_square_basis(pb_xy)
    a = float(np.mean(np.linalg.norm(basis, axis=1)))
    site_tol = prm.site_tolerance_frac * a
    pb_basis, pb_nb = neighbour_lattice_vectors(pb_xy, basis, tol_frac=prm.site_tolerance_frac)
    pb_tree = cKDTree(pb_xy)
    d_pb, near_pb = pb_tree.query(xy, k=1)
    return _PbLattice(pb_xy=pb_xy, pb_tree=pb_tree, basis=basis, a=a, pb_basis=pb_basis, pb_nb=pb_nb, d_pb=d_pb,
                      column_basis=pb_basis[near_pb], site_tol=site_tol, bond_tol=0.4 * site_tol)


def _candidates(xy: np.ndarray, amplitude: np.ndarray, is_pb: np.ndarray, candidate_mask: np.ndarray | None,
                lat: _PbLattice, prm: SofsSearchOptions) -> tuple[np.ndarray, np.ndarray]:
    """The columns that may become X and every column's intensity term.

    Pruning: an X column is bonded to a Pb at ~a/2; Cs columns (a/√2) and background peaks away
    from the lattice never enter the search. The intensity term penalises only amplitudes below
    the candidates' median (width ``intensity_tolerance_frac`` of it); NaN amplitudes get 1.

    Returns
    -------
    cand_idx : numpy.ndarray
        Indices of the candidate columns.
    p_int : numpy.ndarray
        (N,) intensity term in [0, 1].
    """
    cand = ~is_pb if candidate_mask is None else (np.asarray(candidate_mask, bool) & ~is_pb)
    cand &= np.abs(lat.d_pb - lat.a / 2) < lat.bond_tol
    cand_idx = np.flatnonzero(cand)
    amp = np.asarray(amplitude, float)
    ref = np.nanmedian(amp[cand_idx]) if len(cand_idx) and np.isfinite(amp[cand_idx]).any() else np.nan
    with np.errstate(invalid="ignore"):
        weak = np.clip((ref - amp) / (prm.intensity_tolerance_frac * abs(ref)), 0, None) if np.isfinite(ref) and ref != 0 \
            else np.zeros(len(xy))
    return cand_idx, np.where(np.isfinite(weak), np.exp(-0.5 * weak**2), 1.0)


def _pb_side_sites(n: int, cand_idx: np.ndarray, cand_tree: cKDTree, p_int: np.ndarray, lat: _PbLattice,
                   prm: SofsSearchOptions) -> tuple[np.ndarray, np.ndarray]:
    """The periphery first: candidates at the X sites ``a/2`` beyond the rim Pb (those missing a
    Pb neighbour in that direction), found from the Pb side; and their probability (N,)."""
    pb_side = np.zeros(n, bool)
    pb_side_prob = np.zeros(n)
    signs = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], float)
    offsets = np.einsum("sk,nkd->nsd", signs, lat.pb_basis) / 2  # (n_pb, 4, 2) bond sites
    sites = (lat.pb_xy[:, None, :] + offsets)[~lat.pb_nb]
    if len(sites):
        d, j = cand_tree.query(sites, k=1, distance_upper_bound=lat.site_tol)
        ok = np.isfinite(d)
        hit = cand_idx[j[ok]]
        pb_side[hit] = True
        np.maximum.at(pb_side_prob, hit, np.exp(-0.5 * (d[ok] / (prm.distance_tolerance_frac * lat.a)) ** 2) * p_int[hit])
    return pb_side, pb_side_prob


def _seed_candidates(xy: np.ndarray, cand_idx: np.ndarray, p_int: np.ndarray, lat: _PbLattice,
                     prm: SofsSearchOptions) -> np.ndarray:
    """(N,) bool: candidates that look like an X column from the Pb side (two Pb at ``a/2`` on
    opposite sides) with a plausible amplitude; the spiral's seeds are taken among them."""
    d2, j2 = lat.pb_tree.query(xy[cand_idx], k=min(2, len(lat.pb_xy)))
    v1 = lat.pb_xy[j2[:, 0]] - xy[cand_idx]
    v2 = lat.pb_xy[j2[:, 1]] - xy[cand_idx]
    cos12 = (v1 * v2).sum(-1) / np.maximum(d2[:, 0] * d2[:, 1], 1e-12)
    seedlike = (np.abs(d2 - lat.a / 2) < lat.bond_tol).all(1) & (cos12 < -0.8) & (p_int[cand_idx] > prm.min_probability)
    seed_ok = np.zeros(len(xy), bool)
    seed_ok[cand_idx[seedlike]] = True
    return seed_ok


def _candidate_neighbours(xy: np.ndarray, cand_idx: np.ndarray, cand_tree: cKDTree, n_candidates: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_candidates`` nearest candidates of every candidate (n_cand, K), as column indices,
    and every column's row in that table (-1 for non-candidates)."""
    k = min(n_candidates + 1, len(cand_idx))
    _, knn_local = cand_tree.query(xy[cand_idx], k=k)
    knn_local = np.atleast_2d(knn_local)[:, 1:] if k > 1 else np.zeros((len(cand_idx), 0), int)
    pos_in_cand = np.full(len(xy), -1)
    pos_in_cand[cand_idx] = np.arange(len(cand_idx))
    return cand_idx[knn_local], pos_in_cand


def _spiral(xy: np.ndarray, seed_ok: np.ndarray, knn: np.ndarray, pos_in_cand: np.ndarray, p_int: np.ndarray,
            lat: _PbLattice, prm: SofsSearchOptions, search: _Search) -> int:
    """Expand from seeds until no seed candidate is left; returns the rings expanded.

    The first seed is the seed candidate nearest the Pb centroid; when an expansion dies out, the
    next is the untried one nearest the explored region.
    """
    tried = np.zeros(len(xy), bool)
    centre = lat.pb_xy.mean(axis=0)
    n_rings = 0
    while True:
        free = np.flatnonzero(seed_ok & ~search.is_x & ~tried)
        if len(free) == 0:
            break
        if not search.is_x.any():
            seed = int(free[np.argmin(np.linalg.norm(xy[free] - centre, axis=1))])
        else:
            dd, _ = cKDTree(xy[search.is_x]).query(xy[free], k=1)
            seed = int(free[np.argmin(dd)])
        tried[seed] = True
        search.seeds.append(seed)
        search.is_x[seed] = True
        search.prob[seed] = max(search.prob[seed], p_int[seed])
        search.ring[seed] = 0
        frontier = np.array([seed])
        depth = 0
        while len(frontier) and knn.shape[1]:
            if depth and depth % prm.depth_limit == 0:
                search.seeds.extend(int(s) for s in frontier)  # the boundary ring seeds the next expansion
            frontier = _expand_ring(xy, frontier, n_rings + depth + 1, knn, pos_in_cand, p_int, lat, prm, search)
            depth += 1
        n_rings += depth
    return n_rings


def _expand_ring(xy: np.ndarray, frontier: np.ndarray, ring: int, knn: np.ndarray, pos_in_cand: np.ndarray,
                 p_int: np.ndarray, lat: _PbLattice, prm: SofsSearchOptions, search: _Search) -> np.ndarray:
    """Link every column of ``frontier`` to the best candidate at each of its four expected X sites
    ``(±a1 ± a2)/2`` (the ``branching`` most probable above ``min_probability``); returns the
    newly accepted X columns (ring number ``ring``), the next frontier."""
    diag = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], float)
    cands = knn[pos_in_cand[frontier]]  # (F, K)
    dvec = xy[cands] - xy[frontier][:, None, :]
    expected = np.einsum("sk,fkd->fsd", diag, lat.column_basis[frontier]) / 2  # (F, 4, 2)
    p = _link_probability(dvec, expected, p_int[cands], lat.a, prm)  # (F, K, 4)
    best_k = p.argmax(axis=1)  # (F, 4) best candidate per expected site
    best_p = np.take_along_axis(p, best_k[:, None, :], axis=1)[:, 0, :]
    if prm.branching < 4:
        order = np.argsort(-best_p, axis=1)
        np.put_along_axis(best_p, order[:, prm.branching:], 0.0, axis=1)
    keep = best_p > prm.min_probability
    src = np.broadcast_to(frontier[:, None], keep.shape)[keep]
    dst = np.take_along_axis(cands, best_k, axis=1)[keep]
    if len(dst):
        search.links.append(np.column_stack([src, dst]))
        np.maximum.at(search.prob, dst, best_p[keep])
    new = np.unique(dst[~search.is_x[dst]])
    search.is_x[new] = True
    search.ring[new] = ring
    return new


def _add_pb_side_and_dedupe(xy: np.ndarray, search: _Search, pb_side: np.ndarray, pb_side_prob: np.ndarray,
                            p_int: np.ndarray, a: float, prm: SofsSearchOptions) -> None:
    """Accept the columns found from the Pb side only (rim X whose X neighbours are all missing),
    then keep one column per X site: of two accepted columns closer than ``0.3 a`` the less
    probable (a background peak next to a real X) is dropped."""
    only_pb = pb_side & ~search.is_x & (pb_side_prob > prm.min_probability)
    search.is_x |= only_pb
    search.prob = np.where(only_pb, pb_side_prob, search.prob)
    x_idx = np.flatnonzero(search.is_x)
    if len(x_idx) > 1:
        pairs = cKDTree(xy[x_idx]).query_pairs(r=0.3 * a, output_type="ndarray")
        if len(pairs):
            pa, pb_ = x_idx[pairs[:, 0]], x_idx[pairs[:, 1]]
            prob = search.prob
            loser = np.where(prob[pa] * p_int[pa] >= prob[pb_] * p_int[pb_], pb_, pa)
            search.is_x[loser] = False
            prob[loser] = 0.0


def cs_sites(xy_A: np.ndarray, amplitude: np.ndarray, pb_xy: np.ndarray, a_A: float, ref_amplitude: float,
             options: SofsSearchOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which columns sit at a Cs site (``a/√2`` from the nearest Pb) with a plausible amplitude.

    Parameters
    ----------
    xy_A : numpy.ndarray
        (N, 2) column positions [Å].
    amplitude : numpy.ndarray
        (N,) column amplitudes.
    pb_xy : numpy.ndarray
        (n_pb, 2) Pb positions [Å].
    a_A : float
        Lattice constant [Å].
    ref_amplitude : float
        Reference amplitude (median non-Pb); weaker columns are penalised.
    options : SofsSearchOptions
        ``site_tolerance_frac`` (largest miss of the site [fraction of a]), ``min_probability``
        (least intensity term [1]) and ``intensity_tolerance_frac`` (width of the intensity term
        [fraction of ``ref_amplitude``]).

    Returns
    -------
    is_cs : numpy.ndarray of bool
    score : numpy.ndarray
        Site-and-intensity score in [0, 1] (a confidence).
    n_pb_diag : numpy.ndarray of int
        Pb columns within ``0.85 a`` (4 inside the particle, fewer at the rim).
    """
    tol_frac, p_int_min, intensity_tolerance_frac = (options.site_tolerance_frac, options.min_probability,
                                                     options.intensity_tolerance_frac)
    tree = cKDTree(pb_xy)
    d, _ = tree.query(xy_A, k=1)
    weak = np.clip((ref_amplitude - amplitude) / (intensity_tolerance_frac * abs(ref_amplitude)), 0, None)
    p_int = np.where(np.isfinite(weak), np.exp(-0.5 * weak**2), 1.0)
    miss = np.abs(d - a_A / np.sqrt(2))
    is_cs = (miss < tol_frac * a_A) & (p_int > p_int_min)
    score = np.exp(-0.5 * (miss / (0.5 * tol_frac * a_A)) ** 2) * p_int
    n_diag = np.asarray(tree.query_ball_point(xy_A, r=0.85 * a_A, return_length=True), dtype=int)
    return is_cs, score, n_diag


@dataclass(frozen=True, eq=False)
class SofsSearchRecord:
    """One search's outcome in terms of column-table rows, returned by the ``sofs`` classifier as
    its :attr:`~octascope.core.model.Classification.search` so that the ``sofs`` network builder
    builds the octahedra from it instead of searching again.

    Rows are identified by their index labels and positions, so the record survives rows being
    dropped between the stages (the pipeline drops unconfirmed site candidates) and is recognised
    as stale when positions moved (model-based refinement) or other search options are asked for
    (:meth:`matches`).

    Attributes
    ----------
    options : SofsSearchOptions
        The options the search ran with.
    pb_labels, x_labels : numpy.ndarray
        Row labels of the Pb columns and of the linked X columns.
    pb_xy_A, x_xy_A : numpy.ndarray
        Their positions (n, 2) [Å].
    x_edge : numpy.ndarray
        Per linked X: a rim X found from one direction only (unreliable).
    basis : numpy.ndarray
        (2, 2) particle-wide lattice vectors [Å].
    pb_basis : numpy.ndarray
        (n_pb, 2, 2) local ``a1``, ``a2`` at every Pb [Å].
    pb_neighbours : numpy.ndarray
        (n_pb, 4) bool, Pb neighbour at ``+a1, -a1, +a2, -a2``.
    a_A : float
        Lattice constant [Å].
    stats : dict
        The search's statistics (rings, seeds, rim X found and unreliable).
    """

    options: SofsSearchOptions
    pb_labels: np.ndarray
    pb_xy_A: np.ndarray
    x_labels: np.ndarray
    x_xy_A: np.ndarray
    x_edge: np.ndarray
    basis: np.ndarray
    pb_basis: np.ndarray
    pb_neighbours: np.ndarray
    a_A: float
    stats: dict = field(default_factory=dict)

    @classmethod
    def from_result(cls, res: SofsResult, labels: np.ndarray, xy_A: np.ndarray, is_pb: np.ndarray,
                    options: SofsSearchOptions) -> "SofsSearchRecord":
        """The record of :func:`sofs_search` output ``res`` on rows ``labels`` at ``xy_A`` [Å]."""
        labels, xy = np.asarray(labels), np.asarray(xy_A, float)
        is_pb = np.asarray(is_pb, bool)
        return cls(options.search_options(), labels[is_pb], xy[is_pb], labels[res.is_x], xy[res.is_x],
                   res.edge[res.is_x].copy(), res.basis, res.pb_basis, res.pb_neighbours, float(res.stats["a_A"]),
                   dict(res.stats))

    def matches(self, columns, options: SofsSearchOptions) -> bool:
        """Whether ``columns`` (classified) still are what was searched, with ``options``: the same
        search options, the same Pb and X rows (labels, in order) at the same positions."""
        if "species" not in columns or options.search_options() != self.options:
            return False
        species = columns["species"].astype(str).to_numpy()
        labels = columns.index.to_numpy()
        xy = columns[["x_A", "y_A"]].to_numpy(float)
        for sel, ref_labels, ref_xy in ((species == "Pb", self.pb_labels, self.pb_xy_A),
                                        (species == "X", self.x_labels, self.x_xy_A)):
            if not (np.array_equal(labels[sel], ref_labels) and np.array_equal(xy[sel], ref_xy)):
                return False
        return True


def search_columns(xy_A: np.ndarray, amplitude: np.ndarray, is_pb: np.ndarray, labels: np.ndarray,
                   options: SofsSearchOptions, candidate_mask: np.ndarray | None = None
                   ) -> tuple[SofsResult, SofsSearchRecord]:
    """Run :func:`sofs_search` on table rows and return its result with the record of it.

    Parameters
    ----------
    xy_A : numpy.ndarray
        (N, 2) column positions [Å].
    amplitude : numpy.ndarray
        (N,) column amplitudes.
    is_pb : numpy.ndarray
        (N,) bool, the Pb columns.
    labels : numpy.ndarray
        (N,) row labels of the columns.
    options : SofsSearchOptions
        Search options.
    candidate_mask : numpy.ndarray, optional
        (N,) bool, the columns that may become X (default: every non-Pb column).

    Returns
    -------
    SofsResult, SofsSearchRecord
    """
    res = sofs_search(xy_A, amplitude, is_pb, options, candidate_mask=candidate_mask)
    return res, SofsSearchRecord.from_result(res, labels, xy_A, is_pb, options)
