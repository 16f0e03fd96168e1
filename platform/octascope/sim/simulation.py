"""Simulated images with ground truth: structure → MD → imaging → noise → truth, each step cached.

``simulated_source(**params)`` is what ``source=simulated`` calls; :func:`simulate` returns every
intermediate (structure, trajectory, clean image, 3-D octahedra) for scripts and validation.
Parameters are plain mappings, one per step, each passed to its function:

- ``structure`` → :func:`octascope.sim.structure.build_nanocube`
- ``md`` → :func:`octascope.sim.md.run_md` (``run_md=False`` images the relaxed-free start structure)
- ``imaging`` → :func:`octascope.sim.imaging.simulate_image`
- ``support`` → :func:`octascope.sim.support.amorphous_carbon` (plus ``gap_A``): an amorphous-carbon
  film under the particle, added to the image only (``None``: vacuum); the truth is the particle's
- ``noise`` → :func:`octascope.sim.noise.apply_noise`

MD trajectories and clean images are cached on disk (:mod:`octascope.sim.cache`) by the hash of
their own parameters and of their inputs, so a dose or noise sweep re-uses one image and an imaging
sweep re-uses one trajectory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from octascope.core.errors import ConfigError
from octascope.core.model import Image, Truth
from octascope.sim.cache import cached, step_key
from octascope.sim.imaging import Frame, SimulatedImage, simulate_image
from octascope.sim import md as _md
from octascope.sim.md import Trajectory
from octascope.sim.noise import apply_noise, distort_positions
from octascope.sim.structure import build_nanocube, composition_formula
from octascope.sim.truth import octahedra_3d, project_columns, projected_octahedra

#: Parameters that change nothing physical and stay out of the cache keys.
_NOT_KEYED = {"progress", "workdir", "num_workers", "device", "n_threads", "on_snapshot"}
#: Imaging parameters added later: keyed only when set, so that earlier cache entries stay valid.
_KEYED_IF_SET = {"scan_window_A": None, "window_padding_A": 8.0, "support": None}


@dataclass
class Simulation:
    """Every product of one simulation."""

    atoms: Any
    trajectory: Trajectory | None
    clean: SimulatedImage
    image: Image
    truth: Truth
    octahedra_3d: pd.DataFrame
    bonds_3d: pd.DataFrame
    keys: dict = field(default_factory=dict)


def _check(name: str, given: Mapping[str, Any] | None, func) -> dict:
    import inspect

    given = dict(given or {})
    allowed = {p for p in inspect.signature(func).parameters if p not in ("atoms", "sim", "symbols", "positions", "extent_A")}
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ConfigError(f"unknown {name} parameter(s) {unknown}; allowed: {sorted(allowed)}")
    return given


def _keyed(p: Mapping[str, Any]) -> dict:
    return {k: v for k, v in p.items()
            if k not in _NOT_KEYED and not (k in _KEYED_IF_SET and v == _KEYED_IF_SET[k])}


def support_params(support: Mapping[str, Any] | None) -> dict | None:
    """Completed parameters of the support film (``None``: no film), as they enter the image key."""
    from octascope.sim.support import amorphous_carbon

    if support is None:
        return None
    given = dict(support)
    gap = given.pop("gap_A", 3.0)
    out = complete(amorphous_carbon, _check("support", given, amorphous_carbon))
    out.pop("max_rounds", None)
    out["gap_A"] = float(gap)
    return out


def complete(func, params: Mapping[str, Any] | None) -> dict:
    """``params`` with every other keyword default of ``func`` filled in (cache keys then do not
    depend on whether a default was spelled out); tuples become lists as in JSON."""
    import inspect

    out = {}
    for name, par in inspect.signature(func).parameters.items():
        if par.kind is par.KEYWORD_ONLY and par.default is not inspect.Parameter.empty:
            out[name] = par.default
    out.update(params or {})
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}


def structure_key(structure: Mapping[str, Any] | None) -> str:
    """Cache key of a structure built by :func:`build_nanocube` with these parameters."""
    return step_key("structure", _keyed(complete(build_nanocube, structure)))


def md_step(atoms, s_key: str, md: Mapping[str, Any] | None, *, cache_dir: str | None = None,
            progress: bool = True) -> tuple[str, Trajectory, bool]:
    """Run MD on ``atoms`` (structure key ``s_key``) or load it from the cache: ``(key, trajectory, hit)``."""
    m_par = complete(_md.run_md, _check("md", md, _md.run_md))
    m_par["progress"] = m_par.get("progress", True) and progress

    def do_md(folder: Path) -> None:
        _md.run_md(atoms, **m_par).save(folder / "trajectory.npz")

    key, folder, hit = cached("md", _keyed(m_par), [s_key], do_md, cache_dir=cache_dir)
    return key, Trajectory.load(folder / "trajectory.npz"), hit


def simulate(
    *,
    structure: Mapping[str, Any] | None = None,
    md: Mapping[str, Any] | None = None,
    imaging: Mapping[str, Any] | None = None,
    noise: Mapping[str, Any] | None = None,
    support: Mapping[str, Any] | None = None,
    run_md: bool = True,
    cache_dir: str | None = None,
    progress: bool = True,
) -> Simulation:
    """Run (or load from the cache) structure → MD → imaging → noise → truth.

    Parameters
    ----------
    structure, md, imaging, noise : Mapping, optional
        Keyword arguments of each step's function (defaults where missing).
    support : Mapping, optional
        Amorphous-carbon support film under the particle (``thickness_A`` [Å], ``density_g_cm3``
        [g/cm³], ``min_distance_A`` [Å], ``seed``, ``gap_A`` [Å]; see
        :func:`octascope.sim.support.amorphous_carbon`); ``None``: the particle in vacuum. It changes
        the image (and its cache key), never the truth.
    run_md : bool
        Run molecular dynamics; ``False`` images the built structure as a single snapshot.
    cache_dir : str, optional
        Cache directory (default ``$OCTASCOPE_CACHE`` or ``~/.cache/octascope``).
    progress : bool
        Show progress bars.

    Returns
    -------
    Simulation
    """
    s_par = complete(build_nanocube, _check("structure", structure, build_nanocube))
    if imaging and "support" in imaging:
        raise ConfigError("the support film is its own group: support.thickness_A=..., not imaging.support")
    i_par = complete(simulate_image, _check("imaging", imaging, simulate_image))
    i_par["support"] = support_params(support)
    n_par = _check("noise", noise, apply_noise)
    atoms = build_nanocube(**s_par)
    s_key = structure_key(s_par)
    symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
    trajectory = None
    if run_md:
        m_key, trajectory, _ = md_step(atoms, s_key, md, cache_dir=cache_dir, progress=progress)
        positions = trajectory.positions
        lattice = trajectory.lattice
    else:
        m_key = s_key
        pos = atoms.get_positions()
        positions = (pos - pos.mean(0))[None]
        lattice = atoms.arrays["lattice"]
    i_par.setdefault("progress", False)
    n_snap = i_par.get("max_snapshots", 8)
    if n_snap is not None and len(positions) > n_snap:
        positions = positions[np.linspace(0, len(positions) - 1, n_snap).round().astype(int)]

    def do_image(folder: Path) -> None:
        sim = simulate_image(symbols, positions, **i_par)
        np.savez_compressed(folder / "image.npz", com=sim.com, image=sim.image)
        (folder / "image.json").write_text(json.dumps({
            "pixel_size_A": sim.pixel_size_A, "signal": sim.signal, "info": sim.info,
            "frame": sim.frame.as_dict()}, default=str))

    i_key, i_dir, _ = cached("image", _keyed(i_par), [m_key], do_image, cache_dir=cache_dir)
    meta = json.loads((i_dir / "image.json").read_text())
    with np.load(i_dir / "image.npz") as z:
        clean = SimulatedImage(com=z["com"], image=z["image"], pixel_size_A=meta["pixel_size_A"], signal=meta["signal"],
                               frame=Frame.from_dict(meta["frame"]), info=meta["info"])
    noisy = apply_noise(clean, **n_par)
    dose = n_par.get("dose_e_per_A2", 500.0)

    columns = project_columns(symbols, lattice, positions, to_image=clean.frame.to_image)
    if i_par.get("scan_window_A") is not None:  # a crop: the truth is the columns inside the scanned area
        h, w = clean.image.shape
        inside = (columns["x_A"].between(0, (w - 1) * clean.pixel_size_A)
                  & columns["y_A"].between(0, (h - 1) * clean.pixel_size_A))
        columns = columns[inside.to_numpy()].reset_index(drop=True)
    drift = tuple(n_par.get("drift_A", (0.0, 0.0)))
    xy = distort_positions(columns[["x_A", "y_A"]].to_numpy(), shape=clean.image.shape,
                           pixel_size_A=clean.pixel_size_A, drift_A=drift)
    columns["x_A"], columns["y_A"] = xy[:, 0], xy[:, 1]
    columns["x_px"], columns["y_px"] = xy[:, 0] / clean.pixel_size_A, xy[:, 1] / clean.pixel_size_A
    octa = projected_octahedra(columns)
    octa3, bonds3 = octahedra_3d(symbols, lattice, positions)
    keys = {"structure": s_key, "md": m_key if run_md else None, "image": i_key}
    metadata = {"composition": composition_formula(atoms), "n_snapshots": int(len(positions)), "keys": keys,
                "structure": s_par, "md": trajectory.info if trajectory is not None else None, "imaging": _keyed(i_par), "noise": n_par,
                "support": i_par["support"],
                "frame": meta["frame"]}
    image = Image(data=noisy, pixel_size_A=clean.pixel_size_A, signal=clean.signal, dose_e_per_A2=dose,
                  source=f"simulated:{i_key}", metadata=metadata)
    truth = Truth(columns=columns, octahedra=octa, clean=clean.image, metadata=metadata)
    return Simulation(atoms=atoms, trajectory=trajectory, clean=clean, image=image, truth=truth,
                      octahedra_3d=octa3, bonds_3d=bonds3, keys=keys)


def simulated_source(
    *,
    structure: Mapping[str, Any] | None = None,
    md: Mapping[str, Any] | None = None,
    imaging: Mapping[str, Any] | None = None,
    noise: Mapping[str, Any] | None = None,
    support: Mapping[str, Any] | None = None,
    run_md: bool = True,
    cache_dir: str | None = None,
    progress: bool = True,
) -> tuple[Image, Truth]:
    """A simulated image and its ground truth (see :func:`simulate` for the parameters)."""
    sim = simulate(structure=structure, md=md, imaging=imaging, noise=noise, support=support, run_md=run_md,
                   cache_dir=cache_dir, progress=progress)
    return sim.image, sim.truth


def write_bundle(sim: Simulation, out: str | Path, *, command: str = "") -> Path:
    """Write ``image.npy``, ``truth_columns.csv``, ``truth_octahedra.csv`` (if the truth has octahedra),
    ``meta.json`` to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "image.npy", sim.image.data.astype(np.float32))
    cols = sim.truth.columns[["x_A", "y_A", "species", "i", "j", "n_atoms", "n_Pb", "n_Cs", "n_I", "n_Br",
                              "br_fraction", "shell"]]
    cols.to_csv(out / "truth_columns.csv", index=False, float_format="%.4f")
    if sim.truth.octahedra is not None:  # always, for a simulate() result
        sim.truth.octahedra.to_csv(out / "truth_octahedra.csv", index=False, float_format="%.4f")
    meta = {"pixel_size_A": sim.image.pixel_size_A, "signal": sim.image.signal,
            "dose_e_per_A2": sim.image.dose_e_per_A2, "shape": list(sim.image.shape),
            "composition": sim.truth.metadata["composition"], "regenerate": command,
            "parameters": {k: sim.truth.metadata.get(k) for k in ("structure", "md", "imaging", "noise", "support")},
            "keys": sim.keys, "frame": sim.truth.metadata["frame"]}
    (out / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    return out
