"""One frame, particle by particle: classification, checks, network and geometry per particle.

After the locator and the crystal region, :func:`octascope.analysis.particles.segment_particles`
splits the columns into particles. :func:`analyse_frame` then runs the classifier, the
plausibility checks and the network builder on each particle's columns on its own, so every
particle has its own lattice basis, registry, species, octahedra and verdict. A particle that
cannot be analysed (off the [001] zone axis, dark columns, no Pb coset, a lattice that is not a
perovskite's, too few columns) keeps its columns as ``unknown``, gets no octahedra and a reason;
the frame is refused only when no particle can be analysed. The tables of the analysed particles
are joined with a ``particle`` column; an octahedron whose surface may lie outside the frame has
an unknown depth (``shell`` -1, :func:`octascope.analysis.lattice.surface_depth`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from octascope.analysis.lattice import surface_depth
from octascope.analysis.octahedral_geometry import compute_geometry
from octascope.analysis.particles import ParticleOptions, Segmentation, particle_label_image, zone_axis_score
from octascope.analysis.plausibility import check_contrast, check_lattice, classification_flags
from octascope.analysis.uncertainty import GeometryCovariance, PositionCovariance, pop_position_covariance, with_systematic
from octascope.core.errors import InputError
from octascope.core.model import Classification, Image, Octahedra, OctahedralGeometry, Particle
from octascope.core.stages import Classifier, NetworkBuilder

#: Fewest columns that can hold one perovskite unit cell with its neighbours.
MIN_COLUMNS = 9


@dataclass
class FrameAnalysis:
    """The joined outcome of :func:`analyse_frame`.

    ``columns``: every particle's columns (``species``, ``particle``), row labels kept;
    ``octahedra`` and ``geometry``: those of the analysed particles, joined (``None`` when no
    particle was analysed); ``particles``: every particle with its verdict; ``flags``: one line per
    refused or doubtful particle; ``timings_s``: time per step summed over particles [s].
    """

    columns: pd.DataFrame
    octahedra: Octahedra | None
    geometry: OctahedralGeometry | None
    particles: list[Particle]
    flags: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    refinement: dict[str, Any] | None = None


def drop_unconfirmed_site_candidates(columns: pd.DataFrame) -> pd.DataFrame:
    """Site candidates (weak maxima the locator marked ``significant=False``) that the classifier
    did not place on a lattice site are no columns: drop them (a significant peak off the lattice
    stays, as ``unknown``)."""
    if "significant" not in columns or "species" not in columns:
        return columns
    weak = ~columns["significant"].fillna(True).to_numpy(bool)
    drop = weak & (columns["species"].astype(str).to_numpy() == "unknown")
    return columns[~drop]


class _Clock:
    """Sums the time of each step over particles."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def run(self, label: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.timings[label] = self.timings.get(label, 0.0) + time.perf_counter() - t0


def _elongation(cols: pd.DataFrame, species: tuple[str, ...] | None = None) -> float:
    """Coherent elongation (:func:`~octascope.analysis.particles.zone_axis_score`) of a particle's
    columns: those of the given species, or (``None``) the significant ones."""
    if species is not None:
        sel = cols["species"].astype(str).isin(species).to_numpy() if "species" in cols else np.zeros(len(cols), bool)
    else:
        sel = cols["significant"].fillna(True).to_numpy(bool) if "significant" in cols else np.ones(len(cols), bool)
    if "rotation_deg" not in cols or "ellipticity" not in cols:
        return float("nan")
    return zone_axis_score(cols["rotation_deg"].to_numpy(float)[sel], cols["ellipticity"].to_numpy(float)[sel])


def _off_axis_reason(score: float, threshold: float, columns: str) -> str:
    return (f"off the [001] zone axis: its {columns} are smeared into streaks along one direction (coherent "
            f"elongation {score:.2f} > {threshold:g}); tilt it to [001] to measure its octahedra")


def _zone_axis(particle: Particle, classified: pd.DataFrame, options: ParticleOptions) -> Particle:
    """The particle's zone-axis verdict from its halide and Cs columns' shapes (after classification).

    On [001] the halide and Cs columns are not elongated along one common direction (the Pb
    columns of an orthorhombic particle are, by their apical halides, which is why they are left
    out); off the axis every column is a streak along the same direction.

    Raises
    ------
    InputError
        When the particle is off the axis.
    """
    score = _elongation(classified, ("X", "Cs"))
    if not np.isfinite(score):
        return particle.replace(zone_axis="unknown", zone_axis_score=score)
    if score > options.off_axis_score:
        raise InputError(_off_axis_reason(score, options.off_axis_score, "halide and Cs columns"))
    return particle.replace(zone_axis="[001]", zone_axis_score=score)


def _unclassifiable(particle: Particle, cols: pd.DataFrame, exc: InputError, options: ParticleOptions) -> Particle:
    """A particle the checks or the classifier refused; when all its columns are coherently
    streaked (twice the off-axis threshold: more than the Pb columns' own elongation on the axis
    gives), the reason is that it is off the zone axis."""
    score = _elongation(cols)
    if np.isfinite(score) and score > 2 * options.off_axis_score:
        reason = _off_axis_reason(score, 2 * options.off_axis_score, "columns")
        return particle.replace(verdict="refused", zone_axis="off-axis", zone_axis_score=score, reasons=(reason,))
    return particle.replace(verdict="refused", zone_axis_score=score, reasons=(" ".join(str(exc).split()),))


def _pre_checks(particle: Particle, cols: pd.DataFrame, band_passed: np.ndarray, pixel_mask: np.ndarray) -> None:
    """Refuse (InputError) a particle that cannot be analysed before its classification."""
    if np.isnan(particle.spacing_A):
        raise InputError("crystalline (lattice fringes) but its columns form no square lattice: off the [001] zone "
                         "axis, or not an [001] perovskite projection")
    if pixel_mask.any():
        check_contrast(band_passed, pixel_mask)
    if len(cols) < MIN_COLUMNS:
        raise InputError(f"{len(cols)} columns, too few for a lattice (need >= {MIN_COLUMNS})")


def _classify(particle: Particle, cols: pd.DataFrame, image: Image, classifier: Classifier, clock: _Clock,
              label: str) -> tuple[Particle, Classification]:
    """Classify one particle's columns and check its lattice; flags go to its ``reasons``."""
    classified = clock.run(label, lambda: classifier.classify(image, cols))
    kept = drop_unconfirmed_site_candidates(classified.columns)
    if classified.lattice_basis_A is not None:
        check_lattice(classified.lattice_basis_A, pixel_size_A=image.pixel_size_A)
    flags = classification_flags(kept["species"].to_numpy(), kept["amplitude"].to_numpy(float))
    return (particle.replace(lattice_basis_A=classified.lattice_basis_A, reasons=tuple(flags)),
            classified.with_columns(kept))


def _edge_depth(octahedra: Octahedra, image: Image, margin_A: float) -> Octahedra:
    """Octahedra of a particle cut by the frame edge, with the depth unknown where the surface may lie outside."""
    tab = octahedra.table.copy()
    if len(tab) == 0:
        return octahedra
    h, w = image.shape
    shell, shell_min, known = surface_depth(tab["i"].to_numpy(float), tab["j"].to_numpy(float),
                                            tab[["x_A", "y_A"]].to_numpy(float),
                                            frame_A=((w - 1) * image.pixel_size_A, (h - 1) * image.pixel_size_A),
                                            margin_A=margin_A)
    tab["shell"], tab["shell_min"], tab["depth_known"] = shell, shell_min, known
    return Octahedra(table=tab, bonds=octahedra.bonds, lattice_vectors_A=octahedra.lattice_vectors_A)


def _network(particle: Particle, classification: Classification, image: Image, network: NetworkBuilder,
             clock: _Clock, label: str, options: ParticleOptions,
             pairs: PositionCovariance | None = None) -> tuple[Octahedra, OctahedralGeometry, pd.DataFrame]:
    """Network, geometry and the columns with their systematic error (``x_sys_A``, totals) of one
    particle; the depth is edge-aware when it touches the frame edge."""
    octahedra = clock.run(label, lambda: network.build(image, classification))
    if particle.touches_edge:
        octahedra = _edge_depth(octahedra, image, options.edge_margin_A)
    else:
        tab = octahedra.table.assign(shell_min=octahedra.table["shell"], depth_known=True)
        octahedra = Octahedra(table=tab, bonds=octahedra.bonds, lattice_vectors_A=octahedra.lattice_vectors_A)
    tab = octahedra.table.assign(particle=particle.id)
    octahedra = Octahedra(table=tab, bonds=octahedra.bonds, lattice_vectors_A=octahedra.lattice_vectors_A)
    columns = with_systematic(classification.columns, octahedra)
    geometry = clock.run("geometry", lambda: compute_geometry(columns, octahedra, image, pairs=pairs))
    gtab = geometry.table.assign(particle=particle.id, shell_min=tab["shell_min"].to_numpy(),
                                 depth_known=tab["depth_known"].to_numpy(bool))
    return octahedra, OctahedralGeometry(table=gtab, covariance=geometry.covariance), columns


def _join_octahedra(parts: list[Octahedra]) -> Octahedra:
    """One network from the particles' networks (tables and bonds concatenated)."""
    table = pd.concat([p.table for p in parts], ignore_index=True)
    bonds = np.concatenate([np.asarray(p.bonds).reshape(-1, 2) for p in parts]).astype(int)
    basis = parts[0].lattice_vectors_A if len(parts) == 1 else np.full((2, 2), np.nan)
    return Octahedra(table=table, bonds=bonds, lattice_vectors_A=basis)


def refusal_line(particle: Particle) -> str:
    """The FLAG line of a refused particle."""
    return f"particle {particle.id} not analysed: {particle.reasons[0] if particle.reasons else 'no reason given'}"


def analyse_frame(image: Image, columns: pd.DataFrame, segmentation: Segmentation, *, classifier: Classifier,
                  network: NetworkBuilder, band_passed: np.ndarray,
                  refine: Callable[[pd.DataFrame], tuple[pd.DataFrame, dict[str, Any]]] | None = None,
                  options: ParticleOptions | None = None, pairs: PositionCovariance | None = None) -> FrameAnalysis:
    """Classify, check and build the network of every particle (module docstring).

    Parameters
    ----------
    image : Image
        The (denoised) image the columns were found on.
    columns : pandas.DataFrame
        The columns in the crystal region (row labels are what the particles' ``rows`` name).
    segmentation : Segmentation
        The particles (:func:`octascope.analysis.particles.segment_particles`, plus any unresolved ones).
    classifier, network : stage objects
        Run on each particle.
    band_passed : numpy.ndarray
        The band-passed image (contrast check).
    refine : callable, optional
        Model-based refinement of all analysed particles' classified columns at once (they are
        one image model); returns the refined table (with its own pair covariances in its
        ``attrs``, :func:`octascope.analysis.uncertainty.pop_position_covariance`) and what the fit did.
    options : ParticleOptions, optional
        Zone-axis threshold and the frame-edge margin.
    pairs : PositionCovariance, optional
        The locator's covariances between neighbouring columns (keyed by ``column_id``).

    Raises
    ------
    InputError
        When no particle can be analysed: the one particle's reason, or every particle's.
    """
    o = options or ParticleOptions()
    clock = _Clock()
    pixel_labels = particle_label_image(segmentation.particles, image.shape, image.pixel_size_A)
    judged: dict[int, Particle] = {}
    classified: dict[int, Classification] = {}
    c_label, n_label = f"classifier:{classifier.name}", f"network:{network.name}"
    for p in segmentation.particles:
        cols = columns.loc[np.sort(p.rows)]
        try:
            _pre_checks(p, cols, band_passed, pixel_labels == p.id)
            done, classification = _classify(p, cols, image, classifier, clock, c_label)
        except InputError as exc:
            judged[p.id] = _unclassifiable(p, cols, exc, o)
            continue
        try:
            judged[p.id], classified[p.id] = _zone_axis(done, classification.columns, o), classification
        except InputError as exc:
            judged[p.id] = done.replace(verdict="refused", zone_axis="off-axis", reasons=(str(exc),))
    refinement = None
    if refine is not None and classified:
        joined = pd.concat([c.columns for c in classified.values()]).sort_index()
        refined, refinement = clock.run("refine", lambda: refine(joined))
        # the refined positions are another estimate: their own neighbour covariances replace the locator's
        pairs = pop_position_covariance(refined)
        classified = {pid: c.with_columns(refined.loc[c.columns.index]) for pid, c in classified.items()}
    networks: list[Octahedra] = []
    geometries: list[OctahedralGeometry] = []
    for pid, classification in classified.items():
        try:
            octs, geo, cols = _network(judged[pid], classification, image, network, clock, n_label, o, pairs)
        except InputError as exc:
            judged[pid] = judged[pid].replace(verdict="refused", reasons=(" ".join(str(exc).split()),))
            continue
        judged[pid] = judged[pid].replace(verdict="analysed")
        classified[pid] = classification.with_columns(cols)
        networks.append(octs)
        geometries.append(geo)
    particles = [judged[p.id] for p in segmentation.particles]
    _refuse_frame_if_nothing_analysed(particles)
    return FrameAnalysis(
        columns=_join_columns(columns, particles, classified), particles=particles,
        octahedra=_join_octahedra(networks) if networks else None,
        geometry=_join_geometry(geometries) if geometries else None,
        flags=_particle_flags(particles), timings_s=clock.timings, refinement=refinement)


def _join_geometry(parts: list[OctahedralGeometry]) -> OctahedralGeometry:
    """One geometry from the particles' (tables concatenated, propagations joined block by block)."""
    covs = [g.covariance for g in parts]
    joined = GeometryCovariance.join(covs) if all(isinstance(c, GeometryCovariance) for c in covs) else None
    return OctahedralGeometry(table=pd.concat([g.table for g in parts], ignore_index=True), covariance=joined)


def _refuse_frame_if_nothing_analysed(particles: list[Particle]) -> None:
    if any(p.analysed for p in particles):
        return
    if len(particles) == 1:
        raise InputError(particles[0].reasons[0])
    raise InputError(f"none of the {len(particles)} particles can be analysed: "
                     + "; ".join(f"particle {p.id}: {p.reasons[0]}" for p in particles))


def _particle_flags(particles: list[Particle]) -> list[str]:
    """FLAG lines: a refused particle's reason; an analysed particle's doubts (prefixed with its id
    when the frame holds several particles)."""
    flags = []
    several = len(particles) > 1
    for p in particles:
        if not p.analysed:
            flags.append(refusal_line(p))
        else:
            flags.extend(f"particle {p.id}: {r}" if several else r for r in p.reasons)
    return flags


def _join_columns(columns: pd.DataFrame, particles: list[Particle], classified: dict[int, Classification]) -> pd.DataFrame:
    """Every particle's columns with ``particle``: the classified ones of analysed particles, the
    refused particles' as located with species ``unknown``, less their site candidates: a site
    candidate is a column only where a lattice confirms it (:func:`drop_unconfirmed_site_candidates`),
    and a refused particle has none (on the benchmark field the off-axis particle kept 135 noise-level
    maxima among its 827 columns)."""
    parts = []
    for p in particles:
        if p.analysed:
            parts.append(classified[p.id].columns.assign(particle=p.id))
        else:
            refused = columns.loc[np.sort(p.rows)].copy()
            refused["species"] = "unknown"
            refused["species_confidence"] = 0.0
            refused["edge"] = True
            parts.append(drop_unconfirmed_site_candidates(refused).assign(particle=p.id))
    if not parts:
        return columns.iloc[:0].assign(particle=np.zeros(0, int))
    return pd.concat(parts).sort_index()
