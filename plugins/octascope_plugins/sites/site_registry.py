"""Lattice registry of [001] perovskite columns: which sublattice each column sits on.

In [001] projection every column of an ABX3 perovskite sits on one square lattice of spacing
a/2 (≈3.1 Å): Pb (+ apical X) columns on one of its four cosets, Cs on the diagonal coset, X on
the other two. So the species follow from *where* a column is once the lattice is indexed, and
the amplitude is needed only to tell which coset is Pb — a decision taken on the median of a
whole coset, not column by column against a global mean (which noise columns in the vacuum drag
down, and which the weak-phase iDPC contrast of Pb (≈1.3 × the mean, not 1.5) does not reach).

Indexing propagates from neighbour to neighbour (breadth-first over near neighbours), so a
lattice that bends or strains slowly across a particle is indexed correctly where one global
lattice would drift by half a spacing. A column that sits far from its site, or shares its site
with a stronger column, does not continue the lattice and is reported off-lattice.

A two-component Gaussian mixture on the amplitudes (Pb vs the rest, initialised from the coset
split) gives each column the probability that its amplitude is a Pb column's; a column of the Pb
coset whose amplitude is clearly not (posterior < ``min_pb_posterior``) is left unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from octascope.core.errors import InputError
from octascope.core.params import Options, param, require
from octascope.analysis.lattice import square_neighbour_vectors
from octascope.analysis.noise_spectrum import PEAK_ROUGHNESS_ATTR, false_peak_probability

#: Coset offsets (in steps of the a/2 lattice) relative to the Pb coset.
_X_COSETS = ((1, 0), (0, 1))
_CS_COSET = (1, 1)


@dataclass(frozen=True)
class SiteRegistry:
    """Result of :func:`index_columns`.

    ``index`` (N, 2) integer lattice indices on the a/2 lattice (−1 where not indexed),
    ``residual_frac`` the distance from the site predicted by the indexed neighbours as a
    fraction of the spacing, ``on_lattice`` the columns that continue the lattice, ``species``
    (Pb / X / Cs / unknown), ``pb_posterior`` the amplitude mixture's P(Pb | amplitude),
    ``basis_A`` the (2, 2) a/2-lattice vectors [Å] and ``pb_coset`` the (i mod 2, j mod 2) of Pb.
    """

    index: np.ndarray
    residual_frac: np.ndarray
    on_lattice: np.ndarray
    species: np.ndarray
    pb_posterior: np.ndarray
    basis_A: np.ndarray
    pb_coset: tuple[int, int]

    @property
    def pb_basis_A(self) -> np.ndarray:
        """Pb-Pb lattice vectors (twice the a/2 basis) [Å]."""
        return 2.0 * self.basis_A


def column_basis(xy_A: np.ndarray, *, k: int = 4) -> np.ndarray:
    """Basis of the square column lattice [Å]: the four-fold mean direction of the near-neighbour
    vectors (:func:`~octascope.analysis.lattice.square_neighbour_vectors`) and their median length
    (robust to the small tilt displacements of X columns).

    Raises
    ------
    InputError
        When the near-neighbour directions show no four-fold order.
    """
    _, length, z = square_neighbour_vectors(xy_A, k=k)
    theta = np.angle(z) / 4.0
    L = float(np.median(length))
    return L * np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])


def _propagate(xy: np.ndarray, basis: np.ndarray, eligible: np.ndarray, site_tolerance_frac: float,
               spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Breadth-first indexing from the column nearest the centroid of the eligible columns."""
    n = len(xy)
    index = np.full((n, 2), np.iinfo(np.int64).min, dtype=np.int64)
    resid = np.full(n, np.inf)
    elig = np.flatnonzero(eligible)
    if elig.size == 0:
        return index, resid
    start = elig[np.argmin(np.linalg.norm(xy[elig] - xy[elig].mean(0), axis=1))]
    index[start] = 0
    resid[start] = 0.0
    tree = cKDTree(xy[elig])
    inv = np.linalg.inv(basis.T)
    frontier = np.array([start])
    done = np.zeros(n, bool)
    done[start] = True
    while frontier.size:
        # steps of up to two spacings: at low dose the significant columns may be Pb alone (2 apart)
        nbr_lists = tree.query_ball_point(xy[frontier], r=2.1 * spacing)
        src = np.repeat(frontier, [len(v) for v in nbr_lists])
        dst = elig[np.fromiter((j for v in nbr_lists for j in v), dtype=np.int64, count=len(src))]
        new = ~done[dst]
        src, dst = src[new], dst[new]
        if src.size == 0:
            break
        step = (xy[dst] - xy[src]) @ inv.T
        rounded = np.rint(step)
        err = np.linalg.norm((step - rounded) @ basis, axis=1) / spacing
        # each new column takes the assignment from the neighbour that predicts it best
        order = np.lexsort((err, dst))
        first = np.r_[True, np.diff(dst[order]) != 0]
        pick = order[first]
        good = err[pick] < site_tolerance_frac
        pick = pick[good]
        d = dst[pick]
        index[d] = index[src[pick]] + rounded[pick].astype(np.int64)
        resid[d] = err[pick]
        done[d] = True
        frontier = d
    return index, resid


def _gaussian_mixture_posterior(amp: np.ndarray, init_high: np.ndarray, iterations: int = 50) -> np.ndarray:
    """P(high component | amplitude) of a two-component 1-D Gaussian mixture fitted by EM."""
    a = np.asarray(amp, float)
    ok = np.isfinite(a)
    post = np.full(a.shape, np.nan)
    hi, lo = a[ok & init_high], a[ok & ~init_high]
    if hi.size < 2 or lo.size < 2:
        return post
    x = a[ok]
    w, mu, sd = np.array([hi.size, lo.size], float) / x.size, np.array([hi.mean(), lo.mean()]), \
        np.array([hi.std() + 1e-12, lo.std() + 1e-12])
    for _ in range(iterations):
        like = w[:, None] * np.exp(-0.5 * ((x[None, :] - mu[:, None]) / sd[:, None]) ** 2) / sd[:, None]
        r = like / np.maximum(like.sum(0, keepdims=True), 1e-300)
        nk = r.sum(1) + 1e-12
        w = nk / x.size
        mu = (r * x).sum(1) / nk
        sd = np.sqrt((r * (x[None, :] - mu[:, None]) ** 2).sum(1) / nk) + 1e-6 * (abs(mu).max() + 1e-12)
    like = w[:, None] * np.exp(-0.5 * ((x[None, :] - mu[:, None]) / sd[:, None]) ** 2) / sd[:, None]
    p_high = like[0] / np.maximum(like.sum(0), 1e-300)
    # unequal widths make the Gaussian posterior non-monotone far out in the tails: beyond the
    # component means an amplitude is at least as much the component's as at its mean
    lo_mu, hi_mu = min(mu), max(mu)
    p_high = np.where(x <= lo_mu, 0.0, np.where(x >= hi_mu, 1.0, p_high)) if mu[0] > mu[1] else p_high
    post[ok] = p_high
    return post


def _attach_site_candidates(xy: np.ndarray, index: np.ndarray, resid: np.ndarray, weak: np.ndarray,
                            basis: np.ndarray, spacing: float, site_tolerance_frac: float,
                            site_test: "SiteTest | None" = None) -> None:
    """Index site candidates one step from an indexed significant column (in place); they never
    index others, so a chain of noise peaks cannot walk the lattice out into the vacuum. With
    ``site_test``, only those that pass it (:meth:`SiteTest.passed`) are indexed."""
    anchors = np.flatnonzero(np.isfinite(resid) & (resid < site_tolerance_frac) & ~weak)
    cand = np.flatnonzero(weak)
    if anchors.size == 0 or cand.size == 0:
        return
    kq = min(4, anchors.size)
    # 1.6 spacings reach the diagonal (Cs) sites of a Pb column, never a site two steps out
    dist, nb = cKDTree(xy[anchors]).query(xy[cand], k=kq, distance_upper_bound=1.6 * spacing)
    if kq == 1:
        dist, nb = dist[:, None], nb[:, None]
    inv = np.linalg.inv(basis.T)
    best_err = np.full(cand.size, np.inf)
    best_idx = np.zeros((cand.size, 2), np.int64)
    for k in range(nb.shape[1]):  # a few neighbours per candidate, vectorised over candidates
        ok = np.isfinite(dist[:, k])
        src = anchors[np.minimum(nb[:, k], anchors.size - 1)]
        step = (xy[cand] - xy[src]) @ inv.T
        rounded = np.rint(step)
        err = np.linalg.norm((step - rounded) @ basis, axis=1) / spacing
        better = ok & (err < best_err)
        best_err[better] = err[better]
        best_idx[better] = index[src[better]] + rounded[better].astype(np.int64)
    take = best_err < site_tolerance_frac
    if site_test is not None and take.any():
        held = index[anchors]
        open_sites = _empty_sites_next_to(held)
        open_sites = open_sites[~_enclosed(open_sites, held)]
        tested = np.flatnonzero(take)[~_enclosed(best_idx[take], held)]
        passed = site_test.passed(cand[tested], n_sites=len(open_sites), radius_A=site_tolerance_frac * spacing)
        take[tested[~passed]] = False
    index[cand[take]] = best_idx[take]
    resid[cand[take]] = best_err[take]


#: the eight lattice steps from a column to the sites a site candidate may take (1.6 spacings reach the diagonals)
_SITE_STEPS = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)], np.int64)


def _empty_sites_next_to(anchor_index: np.ndarray) -> np.ndarray:
    """(M, 2) lattice indices one step (diagonals included) from the given indexed columns that
    none of them holds: the sites a search for site candidates looks at."""
    held = np.unique(np.asarray(anchor_index, np.int64).reshape(-1, 2), axis=0)
    around = np.unique((held[:, None, :] + _SITE_STEPS[None, :, :]).reshape(-1, 2), axis=0)
    return around[~np.isin(_site_keys(around), _site_keys(held))]


def _site_keys(index: np.ndarray) -> np.ndarray:
    """One integer per lattice index (N, 2)."""
    index = np.asarray(index, np.int64).reshape(-1, 2)
    return index[:, 0] * 1_000_003 + index[:, 1]


def _enclosed(sites: np.ndarray, held: np.ndarray) -> np.ndarray:
    """(M,) bool: sites (M, 2) whose two neighbours on opposite sides along a lattice row, column
    or diagonal are both held (``held`` (K, 2) indices): sites inside the indexed lattice."""
    sites = np.asarray(sites, np.int64).reshape(-1, 2)
    keys = _site_keys(held)
    out = np.zeros(len(sites), bool)
    for step in _SITE_STEPS[:4]:  # (-1,-1), (-1,0), (-1,1), (0,-1): one of each opposite pair
        out |= np.isin(_site_keys(sites + step), keys) & np.isin(_site_keys(sites - step), keys)
    return out


@dataclass(frozen=True)
class SiteTest:
    """The test a site candidate passes to become a column: a false discovery rate over the sites looked at.

    A site candidate is a maximum of at least ``site_significance`` (2.5σ) found within the site
    tolerance of an empty lattice site next to the particle. Each such site is one test, and a
    particle's rim has hundreds of them: at 2.5σ a disc of the tolerance's radius holds a noise
    maximum that high about a quarter of the time
    (:func:`octascope.analysis.noise_spectrum.false_peak_probability`), so a fixed floor keeps a
    noise peak on a good share of the empty rim sites. The Benjamini-Hochberg procedure over the
    empty sites next to the particle keeps the candidates whose p-values are small enough that at
    most ``fdr`` of the kept ones are expected to be noise: where many weak columns are real (the
    X and Cs columns of a particle at low dose), the bar is low; where the sites are a bare rim
    (a large particle at a good dose), it rises.

    ``significance``: (N,) the candidates' significance [noise std] (NaN: no value, never kept),
    ``roughness_per_A2``: λ of the candidate search's filtered noise [1/Å²]
    (:func:`octascope.analysis.noise_spectrum.peak_roughness`), ``fdr``: the rate [1].
    """

    significance: np.ndarray
    roughness_per_A2: float
    fdr: float

    def passed(self, rows: np.ndarray, *, n_sites: int, radius_A: float) -> np.ndarray:
        """(len(rows),) bool: which of the candidates ``rows`` pass, ``n_sites`` empty sites having
        been looked at within ``radius_A`` [Å] each."""
        z = np.asarray(self.significance, float)[np.asarray(rows, np.int64)]
        n = len(z)
        if n == 0:
            return np.zeros(0, bool)
        p = np.where(np.isfinite(z), false_peak_probability(np.nan_to_num(z, nan=-np.inf), self.roughness_per_A2,
                                                            radius_A), 1.0)
        m = max(int(n_sites), n)
        # Storey's share of empty sites: the sites without a candidate are those whose p-value
        # exceeds every candidate's, and (m - n) of the m sites exceeding p.max() estimates
        # m0 (1 - p.max()) (Storey 2002); a rim where most sites hold a weak column gets a lower bar
        lam = float(p.max())
        pi0 = min(1.0, (m - n) / (m * (1.0 - lam))) if lam < 1 else 1.0
        order = np.argsort(p, kind="stable")
        below = np.flatnonzero(p[order] <= self.fdr * np.arange(1, n + 1) / (m * max(pi0, 1.0 / m)))
        keep = np.zeros(n, bool)
        if below.size:
            keep[order[:below[-1] + 1]] = True
        return keep


def index_columns(xy_A: np.ndarray, amplitude: np.ndarray, *, significant: np.ndarray | None = None,
                  site_tolerance_frac: float = 0.35, min_pb_posterior: float = 0.02,
                  min_columns: int = 9, site_test: SiteTest | None = None) -> SiteRegistry:
    """Index columns on the a/2 lattice and assign species by coset (see module docstring).

    Parameters
    ----------
    xy_A : numpy.ndarray
        (N, 2) column positions [Å].
    amplitude : numpy.ndarray
        (N,) fitted amplitudes [image units]; NaN for failed fits (such a column keeps its
        centre-of-mass position: indexed by where it is, left out of the amplitude statistics).
    significant : numpy.ndarray of bool, optional
        Columns significant on their own (the locator's ``significant``); the others are site
        candidates, indexed only one step from a significant column and kept only there. Default:
        all significant.
    site_test : SiteTest, optional
        The test a site candidate must pass as well (default: none, every site candidate on its
        site is kept).
    site_tolerance_frac : float
        Largest distance from the site predicted by a neighbour, as a fraction of the a/2
        spacing, for a column to continue the lattice [1].
    min_pb_posterior : float
        A column of the Pb coset whose amplitude gives P(Pb) below this is ``unknown`` [1].
    min_columns : int
        Fewest indexed columns that make a lattice.

    Returns
    -------
    SiteRegistry

    Raises
    ------
    InputError
        When the columns show no square lattice or too few of them can be indexed.
    """
    xy = np.asarray(xy_A, float)
    amp = np.asarray(amplitude, float)
    usable = np.isfinite(xy).all(1)
    if np.isfinite(amp[usable]).sum() < min_columns:
        raise InputError(f"only {int(np.isfinite(amp[usable]).sum())} fitted columns: too few for a lattice (need >= {min_columns}); "
                         "check the pixel size or denoise the image")
    strong = usable if significant is None else usable & np.asarray(significant, bool)
    index, resid = _index_lattice(xy, usable, strong, site_tolerance_frac, site_test)
    indexed = resid < site_tolerance_frac
    if indexed.sum() < min_columns:
        raise InputError(f"only {int(indexed.sum())} columns continue a square lattice (need >= {min_columns}); "
                         "check the pixel size, the zone axis ([001]) and the denoising")
    on = _one_column_per_site(index, indexed, amp, strong)
    parity = np.mod(index, 2)
    pb_coset, pb_median = _pb_coset(parity, on, amp)
    species, post = _species_by_coset(parity, on, amp, pb_coset, pb_median, min_pb_posterior)
    return SiteRegistry(index=np.where(indexed[:, None], index, -1), residual_frac=resid, on_lattice=on,
                        species=species, pb_posterior=post, basis_A=_fitted_basis(xy, index, indexed), pb_coset=pb_coset)


def _index_lattice(xy: np.ndarray, usable: np.ndarray, strong: np.ndarray, site_tolerance_frac: float,
                   site_test: SiteTest | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lattice indices (N, 2) on the a/2 lattice and the residual from the predicted site
    [fraction of the spacing] (inf where not indexed): the significant columns from neighbour to
    neighbour, then the site candidates one step from them."""
    basis = column_basis(xy[usable])
    spacing = float(np.mean(np.linalg.norm(basis, axis=1)))
    index, resid = _propagate(xy, basis, strong, site_tolerance_frac, spacing)
    _attach_site_candidates(xy, index, resid, usable & ~strong, basis, spacing, site_tolerance_frac, site_test)
    return index, resid


def _fitted_basis(xy: np.ndarray, index: np.ndarray, indexed: np.ndarray) -> np.ndarray:
    """The a/2-lattice basis [Å] fitted by least squares to all indexed columns (for reporting;
    the indexing itself follows the local lattice)."""
    idx_f = index[indexed].astype(float)
    design = np.column_stack([idx_f, np.ones(len(idx_f))])
    coef, *_ = np.linalg.lstsq(design, xy[indexed], rcond=None)
    return np.asarray(coef[:2])


def _one_column_per_site(index: np.ndarray, indexed: np.ndarray, amp: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """(N,) bool, the indexed columns that hold their site: of several on one site, a significant
    column before a site candidate, then the brighter."""
    on = indexed.copy()
    keys = index[:, 0] * 1_000_003 + index[:, 1]
    order = np.lexsort((-np.nan_to_num(amp, nan=-np.inf), ~strong, keys))
    order = order[on[order]]
    dup = np.r_[False, np.diff(keys[order]) == 0]
    on[order[dup]] = False
    return on


def _pb_coset(parity: np.ndarray, on: np.ndarray, amp: np.ndarray) -> tuple[tuple[int, int], float]:
    """The Pb coset (i mod 2, j mod 2): the one of highest median amplitude, and that median.

    Raises
    ------
    InputError
        When that coset does not stand above the pooled other columns by more than three
        standard errors (equal cosets — a metal, a wrong zone axis — fail; so does a field too
        small to tell).
    """
    coset_id = parity[:, 0] * 2 + parity[:, 1]
    medians = np.full(4, -np.inf)
    sem = np.full(4, np.inf)
    for c in range(4):
        sel = on & (coset_id == c) & np.isfinite(amp)
        if sel.sum() >= 2:
            medians[c] = np.median(amp[sel])
            sem[c] = 1.2533 * np.std(amp[sel]) / np.sqrt(sel.sum())  # standard error of a median
    pb = int(np.argmax(medians))
    rest_sel = on & (coset_id != pb) & np.isfinite(amp)
    pb_sel = on & (coset_id == pb) & np.isfinite(amp)
    rest_med = float(np.median(amp[rest_sel])) if rest_sel.sum() >= 2 else np.inf
    rest_sem = 1.2533 * np.std(amp[rest_sel]) / np.sqrt(max(rest_sel.sum(), 1)) if rest_sel.sum() >= 2 else np.inf
    gap = medians[pb] - rest_med
    if not gap > 3.0 * np.hypot(sem[pb], rest_sem):
        raise InputError(
            f"no Pb sublattice: the brightest column coset (median amplitude {medians[pb]:.3g}, {int(pb_sel.sum())} columns) "
            f"is not significantly brighter than the other columns ({rest_med:.3g}); is this a lead-halide perovskite "
            "on [001] with bright columns, and does the field hold enough of it?"
        )
    return (pb // 2, pb % 2), float(medians[pb])


def _species_by_coset(parity: np.ndarray, on: np.ndarray, amp: np.ndarray, pb_coset: tuple[int, int], pb_median: float,
                      min_pb_posterior: float) -> tuple[np.ndarray, np.ndarray]:
    """Species of every column from its coset relative to Pb's (Cs diagonal, X the other two,
    ``unknown`` off the lattice), a Pb-site column whose amplitude is clearly not Pb's left
    ``unknown``; and the amplitude mixture's P(Pb | amplitude) (N,)."""
    rel = np.mod(parity - np.array(pb_coset), 2)
    species = np.full(len(on), "unknown", dtype=object)
    species[on & (rel[:, 0] == 1) & (rel[:, 1] == 1)] = "Cs"
    species[on & (rel[:, 0] + rel[:, 1] == 1)] = "X"
    is_pb_site = on & (rel[:, 0] == 0) & (rel[:, 1] == 0)
    post = _gaussian_mixture_posterior(np.where(on, amp, np.nan), is_pb_site)
    species[is_pb_site] = "Pb"
    # a mixture with one narrow component can give a low P(Pb) to a Pb column only slightly dim:
    # reject only amplitudes that are also nearer the other columns' median than the Pb median
    rest_median = np.nanmedian(np.where(on & ~is_pb_site, amp, np.nan)) if (on & ~is_pb_site).any() else -np.inf
    dim = amp < 0.5 * (pb_median + rest_median)
    species[is_pb_site & dim & (np.nan_to_num(post, nan=1.0) < min_pb_posterior)] = "unknown"
    return species, post


def column_amplitudes(columns) -> np.ndarray:
    """The ``amplitude`` column of a column table; :class:`InputError` when no column has a finite one."""
    amp = columns["amplitude"].to_numpy(float) if "amplitude" in columns else np.full(len(columns), np.nan)
    if not np.isfinite(amp).any():
        raise InputError("column amplitudes are missing; use a locator that fits amplitudes (e.g. gaussian)")
    return amp


def significant_mask(columns) -> np.ndarray | None:
    """The locator's ``significant`` flags of a column table (``None`` when it has none)."""
    if "significant" not in columns:
        return None
    return columns["significant"].fillna(True).to_numpy(bool)


@dataclass(frozen=True, kw_only=True)
class SiteTestOptions(Options):
    """The site-candidate test of the classifiers that index the lattice (:class:`SiteTest`)."""

    site_fdr: float = param(0.05, doc="false discovery rate of the site candidates kept as columns, over the empty "
                            "lattice sites next to a particle (Benjamini-Hochberg); 0: every site candidate on its "
                            "site is kept")

    def check(self) -> None:
        require(0 <= self.site_fdr < 1, f"site_fdr is {self.site_fdr}; give a rate in [0, 1) (0: no test)")

    def site_test(self, columns) -> SiteTest | None:
        """The test for the site candidates of a column table: ``None`` when it is off (``site_fdr``
        0) or the table does not say how significant its columns are (``significance``) and how
        rough the search's noise was (``attrs["peak_roughness_per_A2"]``, set by the locators)."""
        roughness = float(columns.attrs.get(PEAK_ROUGHNESS_ATTR, np.nan))
        if self.site_fdr <= 0 or "significance" not in columns or not np.isfinite(roughness):
            return None
        return SiteTest(columns["significance"].to_numpy(float), roughness, self.site_fdr)
