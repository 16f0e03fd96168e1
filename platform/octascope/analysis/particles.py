"""Particles: a frame split into connected regions of one lattice each.

A real frame (the method paper's 34.5 nm at 0.168 Å/px) holds several quantum dots, each with its
own in-plane rotation, and some touch. The located columns are therefore split into particles
before anything assumes one lattice:

1. **Links.** Two columns are linked when they are one or two steps of the column lattice apart
   (the [001] perovskite projects to a square lattice of spacing a/2; at low dose only the Pb
   columns, two steps apart, may be significant), along the local lattice axes, and the local
   lattice orientations at both ends agree. The local orientation is the four-fold mean direction
   of a column's links, averaged over about one unit cell (a single octahedron's bonds are all
   rotated by its tilt, alternating from one octahedron to the next; the average cancels it).
2. **Particles** are the connected groups of linked columns: a grain boundary between touching
   particles (orientation jump), a gap, or a registry jump breaks the links.
3. **Registry.** Across a Ruddlesden-Popper planar fault the column lattice continues but the Pb
   and Cs sublattices swap. Each particle is indexed on its column lattice and the local contrast
   between its brightest coset and the diagonal coset is measured in windows of about two unit
   cells; where that contrast changes sign significantly over a region of its own, the links
   across the change are cut, so each registry domain is analysed with its own species.
4. Columns that are not linked (weak site candidates, rim columns) join the particle of the
   nearest linked column within 1.5 spacings; what is left belongs to no particle and is dropped
   and counted.

The particle's zone axis is judged from the shape of its columns (:func:`zone_axis_score`): off
the [001] axis a column's atoms no longer line up with the beam and every column smears into a
streak along the same direction, while on axis the halide and Cs columns are not elongated along
one common direction (the Pb columns of an orthorhombic particle are, by their apical halides).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import breadth_first_order, connected_components
from scipy.spatial import cKDTree

from octascope.analysis.polygon_fill import polygon_pixels
from octascope.core.model import Particle
from octascope.core.params import Options, param, require


@dataclass(frozen=True, kw_only=True)
class ParticleOptions(Options):
    """How a frame is split into particles (module docstring)."""

    bond_angle_tolerance_deg: float = param(20.0, unit="deg", doc="largest angle of a link from the local "
                                            "lattice axes (a tilted octahedron's Pb-X bond is ~10° off)")
    orientation_tolerance_deg: float = param(8.0, unit="deg", doc="largest difference of the local lattice "
                                             "orientation at the two ends of a link (a larger jump is a grain boundary)")
    length_tolerance_frac: float = param(0.25, unit="fraction of the spacing", doc="largest miss of a link's length "
                                         "from one or two lattice steps")
    smoothing_cells: float = param(1.0, unit="unit cells", doc="radius over which the local orientation is averaged")
    registry_window_cells: float = param(2.0, unit="unit cells", doc="radius of the window in which the local "
                                         "Pb-coset contrast is measured (planar faults)")
    registry_min_z: float = param(4.0, doc="contrast (in standard errors) a window must show against the "
                                  "particle's registry before a region counts as a second registry domain")
    min_columns: int = param(12, doc="fewest linked columns that make a particle (smaller groups belong to no particle)")
    attach_spacings: float = param(1.5, unit="spacings", doc="an unlinked column joins the particle of the "
                                   "nearest column within this distance")
    edge_margin_A: float = param(1.0, unit="Å", doc="a particle touches the frame edge when its lattice comes "
                                 "within one spacing plus this of the border")
    rim_band_A: float = param(6.0, unit="Å", doc="columns this far outside the automatic crystal region may still "
                              "join a particle as site candidates, kept only on its lattice sites (weak rim columns "
                              "the region's smooth boundary cuts off); 0: none")
    off_axis_score: float = param(0.3, doc="coherent elongation of a particle's halide and Cs columns above which it "
                                  "is off the [001] zone axis (zone_axis_score)")

    def check(self) -> None:
        require(0 < self.bond_angle_tolerance_deg < 45, "bond_angle_tolerance_deg must lie in (0, 45), e.g. 20")
        require(0 < self.orientation_tolerance_deg < 45, "orientation_tolerance_deg must lie in (0, 45), e.g. 8")
        require(0 < self.length_tolerance_frac < 0.5, "length_tolerance_frac must lie in (0, 0.5), e.g. 0.25")
        require(self.smoothing_cells > 0, "smoothing_cells must be > 0, e.g. 1")
        require(self.registry_window_cells > 0, "registry_window_cells must be > 0, e.g. 2")
        require(self.registry_min_z > 0, "registry_min_z must be > 0, e.g. 4")
        require(self.min_columns >= 4, f"min_columns is {self.min_columns}; give at least 4")
        require(self.attach_spacings > 0, "attach_spacings must be > 0, e.g. 1.5")
        require(self.edge_margin_A >= 0, "edge_margin_A must be >= 0 Å")
        require(self.rim_band_A >= 0, "rim_band_A must be >= 0 Å")
        require(self.off_axis_score > 0, "off_axis_score must be > 0, e.g. 0.25")


@dataclass(frozen=True)
class Segmentation:
    """What :func:`segment_particles` found.

    ``labels`` (N,) is the particle id of every column (0: in no particle), ``particles`` the
    particles in id order, ``spacing_A`` the column-lattice spacing of the frame [Å] and
    ``n_domains_split`` the registry domains cut off (planar faults).
    """

    labels: np.ndarray
    particles: list[Particle]
    spacing_A: float
    n_domains_split: int = 0


def _wrap4(angle_rad: np.ndarray) -> np.ndarray:
    """An angle modulo 90°, in (-45°, 45°] [rad]."""
    return np.angle(np.exp(4j * np.asarray(angle_rad))) / 4.0


def column_spacing(xy_A: np.ndarray) -> float:
    """Spacing of the column lattice [Å] (a/2 of a perovskite): the median over columns of the
    median distance to their four nearest neighbours. (The nearest neighbour alone is biased
    short: a tilted octahedron moves each halide column towards one of its Cs neighbours.)"""
    if len(xy_A) < 5:
        return float("nan")
    d, _ = cKDTree(xy_A).query(xy_A, k=5)
    return float(np.median(np.median(d[:, 1:], axis=1)))


def _candidate_links(xy: np.ndarray, spacing: float, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of columns one or two lattice steps apart (by length), and their vectors."""
    pairs = cKDTree(xy).query_pairs(2.0 * spacing * (1 + tol), output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros((0, 2), int), np.zeros((0, 2))
    vec = xy[pairs[:, 1]] - xy[pairs[:, 0]]
    length = np.linalg.norm(vec, axis=1)
    steps = np.rint(length / spacing)
    ok = (steps >= 1) & (steps <= 2) & (np.abs(length - steps * spacing) < tol * spacing)
    return pairs[ok], vec[ok]


def local_orientation(xy: np.ndarray, pairs: np.ndarray, vec: np.ndarray, radius_A: float) -> tuple[np.ndarray, np.ndarray]:
    """The four-fold orientation of the lattice at every column [rad, (-45°, 45°]] and how
    coherent it is [0-1]: the mean of exp(4iφ) over the links of the columns within ``radius_A``."""
    n = len(xy)
    z4 = np.exp(4j * np.arctan2(vec[:, 1], vec[:, 0]))
    z = np.zeros(n, complex)
    w = np.zeros(n)
    for end in (0, 1):  # a link counts at both ends (exp(4i(φ+π)) = exp(4iφ))
        np.add.at(z, pairs[:, end], z4)
        np.add.at(w, pairs[:, end], 1.0)
    near = cKDTree(xy).sparse_distance_matrix(cKDTree(xy), radius_A, output_type="coo_matrix")
    avg = sparse.csr_matrix((np.ones(near.nnz), (near.row, near.col)), shape=(n, n)) + sparse.identity(n, format="csr")
    zs, ws = avg @ z, avg @ w
    coherence = np.abs(zs) / np.maximum(ws, 1e-12)
    return np.angle(zs) / 4.0, coherence


def _lattice_links(pairs: np.ndarray, vec: np.ndarray, theta: np.ndarray, o: ParticleOptions) -> np.ndarray:
    """The candidate pairs that continue one lattice: along both ends' axes, orientations alike."""
    if len(pairs) == 0:
        return pairs
    ang = np.arctan2(vec[:, 1], vec[:, 0])
    off_i = np.abs(_wrap4(ang - theta[pairs[:, 0]]))
    off_j = np.abs(_wrap4(ang - theta[pairs[:, 1]]))
    jump = np.abs(_wrap4(theta[pairs[:, 0]] - theta[pairs[:, 1]]))
    tb, to = np.deg2rad(o.bond_angle_tolerance_deg), np.deg2rad(o.orientation_tolerance_deg)
    return pairs[(off_i < tb) & (off_j < tb) & (jump < to)]


def _orientation_cuts(links: np.ndarray, comp: np.ndarray, theta: np.ndarray, o: ParticleOptions) -> np.ndarray:
    """Links to keep: within a group whose orientations form two or more distinct modes (touching
    particles whose boundary columns average both orientations and still link), the links between
    columns nearest different modes are cut."""
    keep = np.ones(len(links), bool)
    tol = o.orientation_tolerance_deg
    bins = np.arange(-45.0, 45.0, 1.0)
    for c, count in zip(*np.unique(comp, return_counts=True)):
        if count < 2 * o.min_columns:
            continue
        nodes = np.flatnonzero(comp == c)
        t = np.degrees(theta[nodes])
        hist = np.bincount(np.floor(t + 45.0).astype(int) % 90, minlength=90).astype(float)
        smooth = ndimage.gaussian_filter1d(hist, 1.5, mode="wrap")
        peaks = [k for k in range(90) if smooth[k] >= smooth[k - 1] and smooth[k] > smooth[(k + 1) % 90]]
        peaks = [k for k in peaks if smooth[k] >= 0.15 * smooth.max()]
        if len(peaks) < 2:
            continue
        centres = bins[peaks] + 0.5
        dist = np.abs(((t[:, None] - centres[None, :]) + 45.0) % 90.0 - 45.0)
        mode = np.argmin(dist, axis=1)
        sizes = np.bincount(mode, minlength=len(centres))
        sep = np.abs(((centres[:, None] - centres[None, :]) + 45.0) % 90.0 - 45.0)
        if (sizes >= o.min_columns).sum() < 2 or sep[np.ix_(sizes >= o.min_columns, sizes >= o.min_columns)].max() < tol:
            continue
        side = np.full(len(theta), -1)
        side[nodes] = mode
        in_c = comp[links[:, 0]] == c
        keep[in_c] = side[links[in_c, 0]] == side[links[in_c, 1]]
    return keep


def _components(n: int, links: np.ndarray) -> np.ndarray:
    """Connected-component label of every node of a link list."""
    graph = sparse.csr_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])), shape=(n, n)) if len(links) else \
        sparse.csr_matrix((n, n))
    return connected_components(graph, directed=False)[1]


def lattice_cosets(xy: np.ndarray, links: np.ndarray, nodes: np.ndarray, orientation: float, spacing: float) -> np.ndarray:
    """Coset (0-3: 2·(u mod 2) + (v mod 2)) of every node of one connected group on its column
    lattice, found by walking the links from the first node (indices (u, v) along the axes)."""
    local = np.full(len(xy), -1)
    local[nodes] = np.arange(len(nodes))
    sub = local[links]
    sub = sub[(sub >= 0).all(1)]
    m = len(nodes)
    rot = np.array([[np.cos(orientation), np.sin(orientation)], [-np.sin(orientation), np.cos(orientation)]])
    steps = np.rint((xy[nodes[sub[:, 1]]] - xy[nodes[sub[:, 0]]]) @ rot.T / spacing).astype(np.int64)
    both = np.concatenate([sub, sub[:, ::-1]])
    both_steps = np.concatenate([steps, -steps])
    graph = sparse.csr_matrix((np.arange(1, len(both) + 1), (both[:, 0], both[:, 1])), shape=(m, m))
    order, pred = breadth_first_order(graph, 0, directed=True, return_predecessors=True)
    uv = np.zeros((m, 2), np.int64)
    step_of = both_steps[np.asarray(graph[pred[order[1:]], order[1:]]).ravel().astype(np.int64) - 1]
    for node, parent, step in zip(order[1:].tolist(), pred[order[1:]].tolist(), step_of):  # breadth-first: parents first
        uv[node] = uv[parent] + step
    coset = 2 * np.mod(uv[:, 0], 2) + np.mod(uv[:, 1], 2)
    unreached = np.ones(m, bool)
    unreached[order] = False
    coset[unreached] = -1
    return coset


def _registry_cuts(xy: np.ndarray, amp: np.ndarray, links: np.ndarray, comp: np.ndarray, orientation: np.ndarray,
                   spacing: float, o: ParticleOptions) -> tuple[np.ndarray, int]:
    """Links to cut where a group's Pb/Cs registry swaps (planar fault); the number of groups split."""
    keep = np.ones(len(links), bool)
    n_split = 0
    radius = o.registry_window_cells * 2 * spacing
    for c in np.unique(comp):
        nodes = np.flatnonzero(comp == c)
        if len(nodes) < 2 * o.min_columns:
            continue
        theta = float(np.angle(np.exp(4j * orientation[nodes]).mean()) / 4)
        in_c = (comp[links[:, 0]] == c)
        coset = lattice_cosets(xy, links[in_c], nodes, theta, spacing)
        a = amp[nodes]
        good = (coset >= 0) & np.isfinite(a)
        means = np.array([a[good & (coset == k)].mean() if (good & (coset == k)).sum() >= 3 else -np.inf for k in range(4)])
        bright = int(np.argmax(means))
        partner = 3 - bright  # the diagonal coset (Cs when the bright one is Pb)
        if not np.isfinite(means[partner]):
            continue
        tree = cKDTree(xy[nodes])
        near = tree.sparse_distance_matrix(tree, radius, output_type="coo_matrix")
        win = sparse.csr_matrix((np.ones(near.nnz), (near.row, near.col)), shape=(len(nodes),) * 2) + \
            sparse.identity(len(nodes), format="csr")
        local, errors = [], []
        for k in (bright, partner):  # each coset's local mean and its standard error, from the window alone
            sel = (good & (coset == k)).astype(float)
            v = np.where(sel > 0, a, 0.0)
            n, s1, s2 = win @ sel, win @ v, win @ (v * v)
            with np.errstate(divide="ignore", invalid="ignore"):
                mean = s1 / n
                var = np.maximum(s2 / n - mean**2, 0.0) * n / np.maximum(n - 1, 1)
            local.append(mean)
            errors.append(var / n)
        with np.errstate(divide="ignore", invalid="ignore"):
            contrast = local[0] - local[1]
            z = contrast / np.sqrt(errors[0] + errors[1])
        swapped = np.nan_to_num(z, nan=0.0) < -o.registry_min_z
        if swapped.sum() < o.min_columns or (np.nan_to_num(z, nan=0.0) > o.registry_min_z).sum() < o.min_columns:
            continue
        sign = np.where(np.nan_to_num(contrast, nan=0.0) < 0, -1, 1)
        side = np.zeros(len(xy), int)
        side[nodes] = sign
        keep[in_c] = side[links[in_c, 0]] == side[links[in_c, 1]]
        n_split += 1
    return keep, n_split


def _attach(xy: np.ndarray, labels: np.ndarray, usable: np.ndarray, radius_A: float, rounds: int = 1) -> np.ndarray:
    """Unlabelled usable columns join the particle of the nearest labelled column within ``radius_A``."""
    labels = labels.copy()
    for _ in range(rounds):
        have = np.flatnonzero(labels > 0)
        free = np.flatnonzero((labels == 0) & usable)
        if len(have) == 0 or len(free) == 0:
            break
        d, k = cKDTree(xy[have]).query(xy[free], k=1, distance_upper_bound=radius_A)
        hit = np.isfinite(d)
        if not hit.any():
            break
        labels[free[hit]] = labels[have[k[hit]]]
    return labels


def zone_axis_score(rotation_deg: np.ndarray, ellipticity: np.ndarray) -> float:
    """How coherently a particle's columns are elongated in one direction [1]:
    ``|mean((e - 1)·exp(2iα))|`` over its columns (``e`` the ellipticity, α the major-axis angle).

    On the [001] axis the Pb and Cs columns are nearly round and the halide columns' elongations
    alternate by 90° between the two halide sublattices, so the sum nearly cancels; off the axis
    every column is a streak along the same direction and the score approaches the mean excess
    elongation. NaN without shape information.
    """
    e = np.asarray(ellipticity, float)
    a = np.deg2rad(np.asarray(rotation_deg, float))
    ok = np.isfinite(e) & np.isfinite(a)
    if ok.sum() < 4:
        return float("nan")
    return float(np.abs(np.mean((e[ok] - 1.0) * np.exp(2j * a[ok]))))


def _outline_and_area(xy: np.ndarray, spacing: float) -> tuple[np.ndarray, float]:
    """Outline polygon (x, y) [Å] and area [Å²] of a particle: the points within spacing/√2 of its
    columns (a square lattice's cells are then covered), on a grid of spacing/3."""
    # lazy: scikit-image (a few ms to import), not loaded at start-up
    from skimage import measure

    step = spacing / 3.0
    r = spacing / np.sqrt(2)
    lo = xy.min(0) - 2 * r
    hi = xy.max(0) + 2 * r
    nx, ny = (np.ceil((hi - lo) / step).astype(int) + 1)
    gx, gy = np.meshgrid(lo[0] + step * np.arange(nx), lo[1] + step * np.arange(ny))
    d, _ = cKDTree(xy).query(np.column_stack([gx.ravel(), gy.ravel()]), k=1, distance_upper_bound=r)
    mask = ndimage.binary_fill_holes(np.isfinite(d).reshape(ny, nx))
    area = float(mask.sum() * step**2)
    contours = measure.find_contours(np.pad(mask, 1).astype(float), 0.5)
    if not contours:
        return np.zeros((0, 2)), area
    c = max(contours, key=len) - 1  # (row, col) on the unpadded grid
    return np.column_stack([lo[0] + c[:, 1] * step, lo[1] + c[:, 0] * step]), area


def _describe(pid: int, rows: np.ndarray, xy: np.ndarray, theta: float, spacing: float, shape_px: tuple[int, int],
              pixel_size_A: float, o: ParticleOptions) -> Particle:
    """A :class:`~octascope.core.model.Particle` from its columns' positions."""
    axes = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    proj = xy @ axes.T
    size = proj.max(0) - proj.min(0)  # outermost column to outermost column: n·a for a CsX-terminated cube of n cells
    outline, area = _outline_and_area(xy, spacing)
    h, w = shape_px
    reach = spacing + o.edge_margin_A
    to_border = np.minimum.reduce([xy[:, 0], xy[:, 1], (w - 1) * pixel_size_A - xy[:, 0], (h - 1) * pixel_size_A - xy[:, 1]])
    return Particle(id=pid, rows=rows, centroid_A=(float(xy[:, 0].mean()), float(xy[:, 1].mean())),
                    orientation_deg=float(np.degrees(theta)), spacing_A=spacing, area_A2=area,
                    size_A=(float(size[0]), float(size[1])), touches_edge=bool((to_border < reach).any()),
                    outline_A=outline)


def segment_particles(xy_A: np.ndarray, amplitude: np.ndarray, significant: np.ndarray | None, *,
                      row_labels: np.ndarray, shape_px: tuple[int, int], pixel_size_A: float,
                      options: ParticleOptions | None = None, linkable: np.ndarray | None = None) -> Segmentation:
    """Split located columns into particles (module docstring).

    Parameters
    ----------
    xy_A : numpy.ndarray
        (N, 2) column positions [Å] (image frame).
    amplitude : numpy.ndarray
        (N,) fitted amplitudes (the registry check compares cosets by them).
    significant : numpy.ndarray of bool, optional
        Columns significant on their own; the others (site candidates) never link, they only join.
    linkable : numpy.ndarray of bool, optional
        Columns that may link (default all); the others may only join a particle (e.g. columns in
        a rim band just outside the crystal region).
    row_labels : numpy.ndarray
        (N,) row labels of the columns (kept in each :attr:`Particle.rows`).
    shape_px : tuple of int
        Image shape (rows, columns) [px], for the frame edge.
    pixel_size_A : float
        Pixel size [Å].
    options : ParticleOptions, optional
        Segmentation parameters.

    Returns
    -------
    Segmentation
        Particles numbered by decreasing number of columns.
    """
    o = options or ParticleOptions()
    xy = np.asarray(xy_A, float)
    n = len(xy)
    usable = np.isfinite(xy).all(1)
    inner = usable if linkable is None else usable & np.asarray(linkable, bool)
    strong = inner if significant is None else inner & np.asarray(significant, bool)
    if strong.sum() < o.min_columns:
        strong = inner
    labels = np.zeros(n, int)
    spacing = column_spacing(xy[inner]) if inner.sum() >= 5 else float("nan")
    if strong.sum() < o.min_columns or not np.isfinite(spacing):
        return Segmentation(labels, [], spacing)
    nodes = np.flatnonzero(strong)
    pxy = xy[nodes]
    pairs, vec = _candidate_links(pxy, spacing, o.length_tolerance_frac)
    theta, _coherence = local_orientation(pxy, pairs, vec, o.smoothing_cells * 2 * spacing)
    links = _lattice_links(pairs, vec, theta, o)
    comp = _components(len(nodes), links)
    keep = _orientation_cuts(links, comp, theta, o)
    if not keep.all():
        links = links[keep]
        comp = _components(len(nodes), links)
    keep, n_split = _registry_cuts(pxy, np.asarray(amplitude, float)[nodes], links, comp, theta, spacing, o)
    if not keep.all():
        links = links[keep]
        comp = _components(len(nodes), links)
    ids, counts = np.unique(comp, return_counts=True)
    big = ids[counts >= o.min_columns]
    big = big[np.argsort(-counts[np.isin(ids, big)], kind="stable")]
    for pid, c in enumerate(big, start=1):
        labels[nodes[comp == c]] = pid
    labels = _attach(xy, labels, usable, o.attach_spacings * spacing)
    rows = np.asarray(row_labels)
    particles = []
    for pid in range(1, len(big) + 1):
        members = labels == pid
        node_sel = comp == big[pid - 1]
        t = float(np.angle(np.exp(4j * theta[node_sel]).mean()) / 4)
        particles.append(_describe(pid, rows[members], xy[members], t, spacing, shape_px, pixel_size_A, o))
    return Segmentation(labels, particles, spacing, n_split)


def particle_label_image(particles: list[Particle], shape_px: tuple[int, int], pixel_size_A: float) -> np.ndarray:
    """(H, W) image of particle ids (0: none), each particle's outline filled [px]."""
    labels = np.zeros(shape_px, np.int32)
    for p in particles:
        if len(p.outline_A) < 3:
            continue
        rr, cc = polygon_pixels(p.outline_A[:, 1] / pixel_size_A, p.outline_A[:, 0] / pixel_size_A, shape_px)
        labels[rr, cc] = np.where(labels[rr, cc] == 0, p.id, labels[rr, cc])
    return labels


def unresolved_particles(region_mask: np.ndarray, particles: list[Particle], xy_A: np.ndarray, labels: np.ndarray,
                         row_labels: np.ndarray, *, spacing_A: float, pixel_size_A: float) -> tuple[list[Particle], np.ndarray]:
    """Crystal regions that no lattice particle covers: particles whose columns do not form a square
    lattice (off the zone axis, another projection), to be reported as refused rather than dropped.

    A region counts when, after the particles' outlines grown by two spacings are taken out, a
    connected part of the crystal mask of at least 16 unit cells (4 × 4, (2·spacing)² each) is left.

    Returns
    -------
    particles : list of Particle
        The new particles (ids after the given ones; ``zone_axis`` unknown).
    labels : numpy.ndarray
        ``labels`` with the columns inside those regions given their ids.
    """
    shape = region_mask.shape
    covered = particle_label_image(particles, shape, pixel_size_A) > 0
    grow = int(np.ceil(2 * spacing_A / pixel_size_A))
    if covered.any():
        covered = ndimage.binary_dilation(covered, iterations=grow)
    rest = np.asarray(region_mask, bool) & ~covered
    comp, n = ndimage.label(rest)
    if n == 0:
        return [], labels
    min_px = 16 * (2 * spacing_A) ** 2 / pixel_size_A**2
    sizes = ndimage.sum(rest, comp, np.arange(1, n + 1))
    labels = labels.copy()
    out: list[Particle] = []
    next_id = max((p.id for p in particles), default=0) + 1
    h, w = shape
    cx = np.clip(np.rint(xy_A[:, 0] / pixel_size_A).astype(int), 0, w - 1)
    cy = np.clip(np.rint(xy_A[:, 1] / pixel_size_A).astype(int), 0, h - 1)
    col_comp = np.where(np.isfinite(xy_A).all(1), comp[cy, cx], 0)
    # lazy: scikit-image (a few ms to import), not loaded at start-up
    from skimage import measure

    for k in np.flatnonzero(sizes >= min_px) + 1:
        mine = (col_comp == k) & (labels == 0)
        yy, xx = np.nonzero(comp == k)
        contours = measure.find_contours(np.pad(comp == k, 1).astype(float), 0.5)
        outline = (max(contours, key=len) - 1)[:, ::-1] * pixel_size_A if contours else np.zeros((0, 2))
        touches = bool(yy.min() == 0 or xx.min() == 0 or yy.max() == h - 1 or xx.max() == w - 1)
        labels[mine] = next_id
        out.append(Particle(id=next_id, rows=np.asarray(row_labels)[mine],
                            centroid_A=(float(xx.mean() * pixel_size_A), float(yy.mean() * pixel_size_A)),
                            orientation_deg=float("nan"), spacing_A=float("nan"), area_A2=float(len(yy) * pixel_size_A**2),
                            size_A=(float((xx.max() - xx.min() + 1) * pixel_size_A), float((yy.max() - yy.min() + 1) * pixel_size_A)),
                            touches_edge=touches, outline_A=outline))
        next_id += 1
    return out, labels
