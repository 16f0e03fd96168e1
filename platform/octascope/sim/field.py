"""Simulated fields of view: several quantum dots in one frame, with their truth.

The method paper's frames are 2048² px at 0.168 Å/px (34.5 nm) and its dots about 10 nm: a frame
holds several particles. :func:`simulate_field` builds such a frame: each particle is a CsPbX3
nanocube (:func:`octascope.sim.structure.build_nanocube`, optionally with a core/shell tilt
gradient) with its own size, in-plane rotation, position (also across the frame edge), optional
tilt off the [001] zone axis about x or y and optional Ruddlesden-Popper planar fault; static with
thermal jitter, or the snapshots of a (cached) MD run. All particles are imaged together
(:func:`octascope.sim.imaging.image_field`), on vacuum or on an amorphous-carbon film, and the
dose noise is applied to the frame's CoM field (:func:`octascope.sim.noise.apply_noise`).

Truth: the projected columns of every particle (:func:`octascope.sim.truth.project_columns`)
with its id in ``particle``, its registry domain in ``domain`` (the two sides of a fault) and
``valid_001``: False for a particle off the zone axis, whose atoms no longer stand in columns
along the beam (no [001] truth exists for it). Columns and octahedra outside the frame are left out.

A Ruddlesden-Popper fault after ``fault_at_cell`` cells along x: the block beyond the CsX plane
at x = k - ½ (lattice units) is copied with that plane and shifted by (½, ½, ½)·a, the RP
displacement; the two CsX planes then form the rock-salt double layer of the fault, and in [001]
projection the column lattice continues with the Pb and Cs sublattices swapped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from octascope.core.model import Image, Truth
from octascope.core.params import param, require
from octascope.sim.cache import cached
from octascope.sim.imaging import Frame, ImagingOptions, SimulatedImage, image_field
from octascope.sim.noise import NoiseOptions, apply_noise, distort_positions
from octascope.sim.options import SimulationParameterError, StepOptions, finite
from octascope.sim.simulation import md_step, structure_key
from octascope.sim.structure import StructureOptions, build_nanocube
from octascope.sim.support import SupportOptions
from octascope.sim.truth import project_columns, projected_octahedra


@dataclass(frozen=True, kw_only=True)
class FieldParticleOptions(StepOptions):
    """One particle of a simulated field (:func:`simulate_field`)."""

    group: ClassVar[str] = "particles[]"

    structure: dict = param(factory=dict, doc="the nanocube (keys of the structure group: n_cells, tilt_deg, "
                            "shell_tilt_deg, br_fraction, ...)")
    centre_A: tuple[float, float] = param((100.0, 100.0), unit="Å", doc="position of the particle's centre in "
                                           "the frame (it may lie near or beyond the edge)")
    rotation_deg: float = param(0.0, unit="deg", doc="in-plane rotation of the particle about the beam")
    off_axis_deg: float = param(0.0, unit="deg", doc="tilt off the [001] zone axis")
    off_axis_axis: Literal["x", "y"] = param("x", doc="axis of the off-axis tilt (in the particle's frame)")
    fault_at_cell: int | None = param(None, doc="Ruddlesden-Popper fault after this many cells along x; null: none")
    md: bool = param(False, doc="use the snapshots of an MD run of this structure (cached; the md group's "
                     "defaults), else the static structure with thermal jitter")
    thermal_sigma_A: float = param(0.08, unit="Å", doc="RMS displacement per axis of the jitter snapshots "
                                   "of a static particle")
    seed: int = param(0, doc="seed of the thermal jitter")

    def check(self) -> None:
        require(all(finite(v) for v in self.centre_A), f"centre_A={list(self.centre_A)} must be two finite numbers [Å]")
        require(finite(self.rotation_deg), f"rotation_deg={self.rotation_deg} must be a finite angle [deg]")
        require(finite(self.off_axis_deg) and abs(self.off_axis_deg) < 45,
                f"off_axis_deg={self.off_axis_deg} must lie in (-45, 45) deg")
        require(finite(self.thermal_sigma_A) and self.thermal_sigma_A >= 0,
                f"thermal_sigma_A={self.thermal_sigma_A} must be >= 0 Å")
        require(self.seed >= 0, f"seed={self.seed} must be >= 0")
        n = StructureOptions.from_config(self.structure).n_cells
        require(self.fault_at_cell is None or 1 <= self.fault_at_cell < n,
                f"fault_at_cell={self.fault_at_cell} must lie in 1..{n - 1} for a {n}-cell particle")


@dataclass(frozen=True, kw_only=True)
class FieldOptions(StepOptions):
    """The frame of a simulated field."""

    group: ClassVar[str] = "field"

    shape_px: tuple[int, int] = param((2048, 2048), unit="px", doc="frame size (rows, columns)")
    n_snapshots: int = param(4, doc="snapshots averaged: thermal-jitter copies of static particles, evenly "
                             "spaced MD snapshots of MD particles")
    padding_A: float = param(12.0, unit="Å", doc="specimen simulated around the frame (particles cut by the edge)")

    def check(self) -> None:
        require(all(v >= 16 for v in self.shape_px), f"shape_px={list(self.shape_px)} must be at least 16 x 16 px")
        require(self.n_snapshots >= 1, f"n_snapshots={self.n_snapshots} must be >= 1")
        require(finite(self.padding_A) and self.padding_A >= 0, f"padding_A={self.padding_A} must be >= 0 Å")


@dataclass
class FieldSimulation:
    """A simulated field: the noisy image, its truth, the clean image and the cache key."""

    image: Image
    truth: Truth
    clean: SimulatedImage
    key: str


@dataclass
class _Block:
    """Atoms of one registry domain of one particle, in the frame [Å]: symbols (N,), lattice (N, 3)
    (the structure's own sites, for the truth), positions (S, N, 3)."""

    particle: int
    domain: int
    valid_001: bool
    symbols: np.ndarray
    lattice: np.ndarray
    positions: np.ndarray


def _rotation_matrix(axis: str, angle_deg: float) -> np.ndarray:
    t = np.deg2rad(angle_deg)
    c, s = np.cos(t), np.sin(t)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def _snapshots(atoms: Any, opts: FieldParticleOptions, n_snapshots: int, cache_dir: str | None,
               progress: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """(S, N, 3) positions [Å] centred on the origin, the lattice sites and the key of where they came from."""
    s_key = structure_key(opts.structure)
    if opts.md:
        m_key, traj, _ = md_step(atoms, s_key, {}, cache_dir=cache_dir, progress=progress)
        pos = traj.positions[np.linspace(0, len(traj.positions) - 1, n_snapshots).round().astype(int)]
        return pos - pos.reshape(-1, 3).mean(0), traj.lattice, m_key
    rng = np.random.default_rng(opts.seed)
    base = atoms.get_positions() - atoms.get_positions().mean(0)
    jitter = rng.normal(scale=opts.thermal_sigma_A, size=(n_snapshots, *base.shape)) if opts.thermal_sigma_A > 0 else 0.0
    return base[None] + jitter, atoms.arrays["lattice"], s_key


def _blocks(pid: int, opts: FieldParticleOptions, symbols: np.ndarray, lattice: np.ndarray,
            positions: np.ndarray) -> list[_Block]:
    """The particle's registry domains placed in the frame: fault, off-axis tilt, rotation, position."""
    a = StructureOptions.from_config(opts.structure).a_A
    parts = [(symbols, lattice, positions, 0)]
    if opts.fault_at_cell is not None:
        plane = opts.fault_at_cell - 0.5
        left, right = lattice[:, 0] <= plane + 1e-6, lattice[:, 0] >= plane - 1e-6
        shifted = positions[:, right] + 0.5 * a
        parts = [(symbols[left], lattice[left], positions[:, left], 0), (symbols[right], lattice[right], shifted, 1)]
    centre = np.concatenate([p[2] for p in parts], axis=1).reshape(-1, 3).mean(0)
    rot = _rotation_matrix("z", opts.rotation_deg) @ _rotation_matrix(opts.off_axis_axis, opts.off_axis_deg)
    z_min = min(float(((p[2] - centre) @ rot.T)[..., 2].min()) for p in parts)
    shift = np.array([opts.centre_A[0], opts.centre_A[1], -z_min])
    return [_Block(pid, dom, opts.off_axis_deg == 0.0, sym, lat, (pos - centre) @ rot.T + shift)
            for sym, lat, pos, dom in parts]


def _truth(blocks: list[_Block], shape_px: tuple[int, int], pixel_size_A: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Truth columns and octahedra of every block, inside the frame, with particle, domain, valid_001."""
    cols, octs = [], []
    h, w = shape_px
    for b in blocks:
        c = project_columns(b.symbols, b.lattice, b.positions)
        o = projected_octahedra(c)
        tags = {"particle": b.particle, "domain": b.domain, "valid_001": b.valid_001}
        cols.append(c.assign(**tags))
        octs.append(o.assign(**tags))
    columns = pd.concat(cols, ignore_index=True)
    octahedra = pd.concat(octs, ignore_index=True)

    def inside(df: pd.DataFrame) -> np.ndarray:
        return (df["x_A"].between(0, (w - 1) * pixel_size_A) & df["y_A"].between(0, (h - 1) * pixel_size_A)).to_numpy()

    columns = columns[inside(columns)].reset_index(drop=True)
    columns["x_px"], columns["y_px"] = columns["x_A"] / pixel_size_A, columns["y_A"] / pixel_size_A
    return columns, octahedra[inside(octahedra)].reset_index(drop=True)


def simulate_field(particles: Sequence[Mapping[str, Any] | FieldParticleOptions], *,
                   field: Mapping[str, Any] | FieldOptions | None = None,
                   imaging: Mapping[str, Any] | ImagingOptions | None = None,
                   support: Mapping[str, Any] | SupportOptions | None = None,
                   noise: Mapping[str, Any] | NoiseOptions | None = None, cache_dir: str | None = None,
                   progress: bool = True) -> FieldSimulation:
    """Simulate (or load from the cache) a frame of several particles, with dose noise and truth.

    Parameters
    ----------
    particles : sequence of Mapping or FieldParticleOptions
        The particles (ids 1, 2, … in this order); keys of :class:`FieldParticleOptions`.
    field : Mapping or FieldOptions, optional
        Frame size [px], snapshots, padding [Å].
    imaging : Mapping or ImagingOptions, optional
        As for one particle (``pixel_size_A``, ``mode``, ``signal``, …); the field of view is the frame.
    support : Mapping or SupportOptions, optional
        Amorphous-carbon film under the whole frame; ``None``: vacuum.
    noise : Mapping or NoiseOptions, optional
        Dose [e/Å²] and seed of the shot noise.
    cache_dir : str, optional
        Cache directory (default ``$OCTASCOPE_CACHE`` or ``~/.cache/octascope``).
    progress : bool
        Show progress bars (MD).

    Returns
    -------
    FieldSimulation
    """
    if not particles:
        raise SimulationParameterError("particles: give at least one particle of the field")
    p_opts = [FieldParticleOptions.from_config(p) for p in particles]
    f_opts = FieldOptions.from_config(field)
    i_opts = ImagingOptions.from_config(imaging)
    s_opts = None if support is None else SupportOptions.from_config(support)
    n_opts = NoiseOptions.from_config(noise)
    blocks: list[_Block] = []
    inputs = []
    for pid, po in enumerate(p_opts, start=1):
        atoms = build_nanocube(StructureOptions.from_config(po.structure))
        pos, lattice, key = _snapshots(atoms, po, f_opts.n_snapshots, cache_dir, progress)
        blocks.extend(_blocks(pid, po, np.array(atoms.get_chemical_symbols(), dtype=object), lattice, pos))
        inputs.append(key)
    symbols = np.concatenate([b.symbols for b in blocks])
    positions = np.concatenate([b.positions for b in blocks], axis=1)
    params = {"field": f_opts.key_params(field), "particles": [po.key_params(p) for po, p in zip(p_opts, particles)],
              "imaging": i_opts.key_params(imaging), "support": None if s_opts is None else s_opts.key_params(support)}

    def do_image(folder: Path) -> None:
        sim = image_field(symbols, positions, f_opts.shape_px, i_opts, support=s_opts, padding_A=f_opts.padding_A)
        np.savez_compressed(folder / "image.npz", com=sim.com, image=sim.image)
        (folder / "image.json").write_text(json.dumps({"pixel_size_A": sim.pixel_size_A, "signal": sim.signal,
                                                       "info": sim.info, "frame": sim.frame.as_dict()}, default=str))

    key, folder, _ = cached("field-image", params, inputs, do_image, cache_dir=cache_dir)
    meta = json.loads((folder / "image.json").read_text())
    with np.load(folder / "image.npz") as z:
        clean = SimulatedImage(com=z["com"], image=z["image"], pixel_size_A=meta["pixel_size_A"], signal=meta["signal"],
                               frame=Frame.from_dict(meta["frame"]), info=meta["info"])
    columns, octahedra = _truth(blocks, f_opts.shape_px, clean.pixel_size_A)
    if any(n_opts.drift_A):  # the truth where the drifting scan shows it
        for table in (columns, octahedra):
            xy = distort_positions(table[["x_A", "y_A"]].to_numpy(), shape=f_opts.shape_px,
                                   pixel_size_A=clean.pixel_size_A, drift_A=n_opts.drift_A)
            table["x_A"], table["y_A"] = xy[:, 0], xy[:, 1]
        columns["x_px"], columns["y_px"] = columns["x_A"] / clean.pixel_size_A, columns["y_A"] / clean.pixel_size_A
    metadata = {"field": params, "keys": {"field_image": key, "inputs": inputs}, "noise": n_opts.key_params(noise)}
    image = Image(data=apply_noise(clean, n_opts), pixel_size_A=clean.pixel_size_A, signal=clean.signal,
                  dose_e_per_A2=n_opts.dose_e_per_A2, source=f"simulated field:{key}", metadata=metadata)
    truth = Truth(columns=columns, octahedra=octahedra, clean=clean.image, metadata=metadata)
    return FieldSimulation(image=image, truth=truth, clean=clean, key=key)


#: keys of the ``field`` source (``source=field``)
FIELD_SOURCE_KEYS = ("particles", "field", "imaging", "support", "noise", "cache_dir", "progress")


def check_field_params(params: Mapping[str, Any]) -> None:
    """Check the field source's parameters without simulating (one-line errors naming the key)."""
    unknown = sorted(set(params) - set(FIELD_SOURCE_KEYS))
    if unknown:
        raise SimulationParameterError(f"field source has no key(s) {unknown}; its keys are {', '.join(FIELD_SOURCE_KEYS)}")
    particles = params.get("particles") or []
    if not particles:
        raise SimulationParameterError("particles: give at least one particle of the field (source.particles=[{...}])")
    for k, p in enumerate(particles):
        try:
            FieldParticleOptions.from_config(p)
        except SimulationParameterError as exc:
            raise SimulationParameterError(f"particles[{k}].{exc}") from None
    FieldOptions.from_config(params.get("field"))
    ImagingOptions.from_config(params.get("imaging"))
    NoiseOptions.from_config(params.get("noise"))
    if params.get("support") is not None:
        SupportOptions.from_config(params["support"])


def simulated_field_source(*, particles: Sequence[Mapping[str, Any]], field: Mapping[str, Any] | None = None,
                           imaging: Mapping[str, Any] | None = None, support: Mapping[str, Any] | None = None,
                           noise: Mapping[str, Any] | None = None, cache_dir: str | None = None,
                           progress: bool = True) -> tuple[Image, Truth]:
    """The image and truth of a simulated field (``source=field``; :func:`simulate_field`)."""
    sim = simulate_field(particles, field=field, imaging=imaging, support=support, noise=noise, cache_dir=cache_dir,
                         progress=progress)
    return sim.image, sim.truth
