"""Simulated images with ground truth: structure → MD → imaging → noise → truth, each step cached.

``simulated_source(**params)`` is what ``source=simulated`` calls; :func:`simulate` returns every
intermediate (structure, trajectory, clean image, 3-D octahedra) for scripts and validation.
Each step's parameters are a mapping (a config group) or its options object:

- ``structure`` → :class:`octascope.sim.structure.StructureOptions` (:func:`~octascope.sim.structure.build_nanocube`)
- ``md`` → :class:`octascope.sim.md.MDOptions` (:func:`~octascope.sim.md.run_md`; ``run_md=False`` images
  the built structure as a single snapshot)
- ``imaging`` → :class:`octascope.sim.imaging.ImagingOptions` (:func:`~octascope.sim.imaging.simulate_image`)
- ``support`` → :class:`octascope.sim.support.SupportOptions`: an amorphous-carbon film under the
  particle, added to the image only (``None``: vacuum); the truth is the particle's
- ``noise`` → :class:`octascope.sim.noise.NoiseOptions` (:func:`~octascope.sim.noise.apply_noise`)

:func:`plan_simulation` checks them all and computes the cache keys before anything is simulated.
MD trajectories and clean images are cached on disk (:mod:`octascope.sim.cache`) by the hash of
their own parameters and of their inputs' keys, so a dose or noise sweep re-uses one image and an
imaging sweep re-uses one trajectory. A key holds each parameter as the config spelled it
(:meth:`octascope.sim.options.StepOptions.key_params`), so entries computed from a config stay valid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
import pandas as pd

from octascope.core.errors import ConfigError
from octascope.core.model import Image, Truth
from octascope.sim.cache import cached, step_key
from octascope.sim.imaging import Frame, ImagingOptions, SimulatedImage, simulate_image
from octascope.sim.md import MDOptions, Trajectory
from octascope.sim.mpi import run_md_on_ranks
from octascope.sim.noise import NoiseOptions, apply_noise, distort_positions
from octascope.sim.options import SimulationParameterError, StepOptions
from octascope.sim.structure import StructureOptions, build_nanocube, composition_formula
from octascope.sim.support import SupportOptions
from octascope.sim.truth import octahedra_3d, project_columns, projected_octahedra

#: the keys of the simulated source (``conf/source/simulated.yaml`` besides ``kind``)
SOURCE_KEYS = ("structure", "md", "imaging", "noise", "support", "run_md", "cache_dir", "progress")

#: a step's parameters: a config mapping, its options object, or ``None`` (the defaults)
StepParams = Union[Mapping[str, Any], StepOptions, None]


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


@dataclass(frozen=True)
class SimulationPlan:
    """The checked parameters of one simulation and its cache keys.

    Attributes
    ----------
    structure, md, imaging, noise : StepOptions
        Each step's options.
    support : SupportOptions or None
        The support film (``None``: vacuum).
    run_md : bool
        Run MD (``False``: image the built structure).
    structure_params, image_params : dict
        The parameters in the structure and image keys (the image's include ``support`` when set).
    noise_params : dict
        The noise parameters as given (recorded in the metadata).
    keys : dict
        ``structure``, ``md`` (the structure key without MD) and ``image`` cache keys.
    """

    structure: StructureOptions
    md: MDOptions
    imaging: ImagingOptions
    support: SupportOptions | None
    noise: NoiseOptions
    run_md: bool
    structure_params: dict
    image_params: dict
    noise_params: dict
    keys: dict


def _given(params: StepParams) -> dict[str, Any]:
    """A step's parameters as a plain dict (an options object: its values)."""
    return params.to_dict() if isinstance(params, StepOptions) else dict(params or {})


def plan_simulation(*, structure: StepParams = None, md: StepParams = None, imaging: StepParams = None,
                    noise: StepParams = None, support: StepParams = None, run_md: bool = True) -> SimulationPlan:
    """Check every step's parameters and compute the cache keys, without simulating anything.

    Parameters
    ----------
    structure, md, imaging, noise, support : Mapping or StepOptions, optional
        Each step's parameters (see the module docstring); ``support=None``: no film.
    run_md : bool
        Run molecular dynamics; ``False`` images the built structure.

    Returns
    -------
    SimulationPlan

    Raises
    ------
    SimulationParameterError
        An unknown key or a bad value in any step (one line, naming the key and the allowed ones).
    """
    if not isinstance(run_md, bool):
        raise SimulationParameterError(f"run_md must be true or false, got {run_md!r}")
    if isinstance(imaging, Mapping) and "support" in imaging:
        raise ConfigError("the support film is its own group: support.thickness_A=..., not imaging.support")
    s_opts = StructureOptions.from_config(structure)
    m_opts = MDOptions.from_config(md)
    i_opts = ImagingOptions.from_config(imaging)
    f_opts = None if support is None else SupportOptions.from_config(support)
    n_opts = NoiseOptions.from_config(noise)
    s_params = s_opts.key_params(structure)
    s_key = step_key("structure", s_params)
    m_key = step_key("md", m_opts.key_params(md), [s_key]) if run_md else s_key
    i_params = i_opts.key_params(imaging)
    if f_opts is not None:
        i_params["support"] = f_opts.key_params(support)
    keys = {"structure": s_key, "md": m_key if run_md else None, "image": step_key("image", i_params, [m_key])}
    return SimulationPlan(structure=s_opts, md=m_opts, imaging=i_opts, support=f_opts, noise=n_opts, run_md=run_md,
                          structure_params=s_params, image_params=i_params, noise_params=_given(noise), keys=keys)


def check_source_params(params: Mapping[str, Any]) -> SimulationPlan:
    """Check the simulated source's parameters (:data:`SOURCE_KEYS`) without simulating; the plan.

    Raises
    ------
    SimulationParameterError
        An unknown key or a bad value (one line).
    """
    unknown = sorted(set(params) - set(SOURCE_KEYS))
    if unknown:
        raise SimulationParameterError(f"simulated source has no key(s) {unknown}; its keys are {', '.join(SOURCE_KEYS)}")
    for name in ("progress",):
        if name in params and not isinstance(params[name], bool):
            raise SimulationParameterError(f"{name} must be true or false, got {params[name]!r}")
    steps = {k: params[k] for k in ("structure", "md", "imaging", "noise", "support", "run_md") if k in params}
    return plan_simulation(**steps)


def structure_key(structure: StepParams) -> str:
    """Cache key of a structure built by :func:`build_nanocube` with these parameters."""
    return step_key("structure", StructureOptions.from_config(structure).key_params(structure))


def md_step(atoms: Any, s_key: str, md: StepParams, *, cache_dir: str | None = None,
            progress: bool = True) -> tuple[str, Trajectory, bool]:
    """Run MD on ``atoms`` (structure key ``s_key``) or load it from the cache: ``(key, trajectory, hit)``.

    ``md.mpi_ranks > 1`` runs it under ``mpirun`` (:func:`octascope.sim.mpi.run_md_on_ranks`).
    """
    opts = MDOptions.from_config(md)

    def do_md(folder: Path) -> None:
        run_md_on_ranks(atoms, opts, progress=progress).save(folder / "trajectory.npz")

    key, folder, hit = cached("md", opts.key_params(md), [s_key], do_md, cache_dir=cache_dir)
    return key, Trajectory.load(folder / "trajectory.npz"), hit


def image_step(symbols: np.ndarray, positions: np.ndarray, plan: SimulationPlan, m_key: str, *,
               cache_dir: str | None = None) -> tuple[str, SimulatedImage]:
    """The clean image of snapshots ``positions`` (S, N, 3) [Å] (MD key ``m_key``), simulated or from the cache.

    With ``imaging.thermal_configurations`` set, ``positions`` are all the MD snapshots, from which
    the imaging step draws its frozen-phonon configurations.
    """

    def do_image(folder: Path) -> None:
        sim = simulate_image(symbols, positions, plan.imaging, support=plan.support)
        if sim.detector is None:
            np.savez_compressed(folder / "image.npz", com=sim.com, image=sim.image)
        else:
            np.savez_compressed(folder / "image.npz", com=sim.com, image=sim.image, detector=sim.detector)
        (folder / "image.json").write_text(json.dumps({
            "pixel_size_A": sim.pixel_size_A, "signal": sim.signal, "info": sim.info,
            "frame": sim.frame.as_dict()}, default=str))

    key, folder, _ = cached("image", plan.image_params, [m_key], do_image, cache_dir=cache_dir)
    meta = json.loads((folder / "image.json").read_text())
    with np.load(folder / "image.npz") as z:
        clean = SimulatedImage(com=z["com"], image=z["image"], pixel_size_A=meta["pixel_size_A"], signal=meta["signal"],
                               frame=Frame.from_dict(meta["frame"]), info=meta["info"],
                               detector=z["detector"] if "detector" in z.files else None)
    return key, clean


def _true_columns(symbols: np.ndarray, lattice: np.ndarray, positions: np.ndarray, clean: SimulatedImage,
                  plan: SimulationPlan) -> pd.DataFrame:
    """The projected columns [Å, px] where the noisy image shows them: inside a scan window, drifted."""
    columns = project_columns(symbols, lattice, positions, to_image=clean.frame.to_image)
    if plan.imaging.scan_window_A is not None:  # a crop: the truth is the columns inside the scanned area
        h, w = clean.image.shape
        inside = (columns["x_A"].between(0, (w - 1) * clean.pixel_size_A)
                  & columns["y_A"].between(0, (h - 1) * clean.pixel_size_A))
        columns = columns[inside.to_numpy()].reset_index(drop=True)
    xy = distort_positions(columns[["x_A", "y_A"]].to_numpy(), shape=clean.image.shape,
                           pixel_size_A=clean.pixel_size_A, drift_A=plan.noise.drift_A)
    columns["x_A"], columns["y_A"] = xy[:, 0], xy[:, 1]
    columns["x_px"], columns["y_px"] = xy[:, 0] / clean.pixel_size_A, xy[:, 1] / clean.pixel_size_A
    return columns


def simulate(*, structure: StepParams = None, md: StepParams = None, imaging: StepParams = None,
             noise: StepParams = None, support: StepParams = None, run_md: bool = True, cache_dir: str | None = None,
             progress: bool = True) -> Simulation:
    """Run (or load from the cache) structure → MD → imaging → noise → truth.

    Parameters
    ----------
    structure, md, imaging, noise, support : Mapping or StepOptions, optional
        Each step's parameters (see the module docstring; defaults where missing). ``support``
        (thickness [Å], density [g/cm³], ...) changes the image and its key, never the truth;
        ``None``: the particle in vacuum.
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
    plan = plan_simulation(structure=structure, md=md, imaging=imaging, noise=noise, support=support, run_md=run_md)
    atoms = build_nanocube(plan.structure)
    s_key = plan.keys["structure"]
    symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
    trajectory = None
    if run_md:
        m_key, trajectory, _ = md_step(atoms, s_key, md, cache_dir=cache_dir, progress=progress)
        positions, lattice = trajectory.positions, trajectory.lattice
    else:
        m_key = s_key
        pos = atoms.get_positions()
        positions, lattice = (pos - pos.mean(0))[None], atoms.arrays["lattice"]
    n_snap = plan.imaging.max_snapshots
    if plan.imaging.thermal_configurations is not None:
        if not run_md:
            raise SimulationParameterError("imaging.thermal_configurations draws configurations from the MD: it needs "
                                           "run_md: true (or set it to null)")
    elif n_snap is not None and len(positions) > n_snap:  # thermal: all snapshots (their mean is the truth)
        positions = positions[np.linspace(0, len(positions) - 1, n_snap).round().astype(int)]
    i_key, clean = image_step(symbols, positions, plan, m_key, cache_dir=cache_dir)
    columns = _true_columns(symbols, lattice, positions, clean, plan)
    octa3, bonds3 = octahedra_3d(symbols, lattice, positions)
    keys = {"structure": s_key, "md": m_key if run_md else None, "image": i_key}
    metadata = {"composition": composition_formula(atoms), "n_snapshots": int(len(positions)), "keys": keys,
                "structure": plan.structure_params, "md": trajectory.info if trajectory is not None else None,
                "imaging": plan.image_params, "noise": plan.noise_params,
                "support": plan.image_params.get("support"), "frame": clean.frame.as_dict()}
    image = Image(data=apply_noise(clean, plan.noise), pixel_size_A=clean.pixel_size_A, signal=clean.signal,
                  dose_e_per_A2=plan.noise.dose_e_per_A2, source=f"simulated:{i_key}", metadata=metadata)
    truth = Truth(columns=columns, octahedra=projected_octahedra(columns), clean=clean.image, metadata=metadata)
    return Simulation(atoms=atoms, trajectory=trajectory, clean=clean, image=image, truth=truth,
                      octahedra_3d=octa3, bonds_3d=bonds3, keys=keys)


def simulated_source(*, structure: StepParams = None, md: StepParams = None, imaging: StepParams = None,
                     noise: StepParams = None, support: StepParams = None, run_md: bool = True,
                     cache_dir: str | None = None, progress: bool = True) -> tuple[Image, Truth]:
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
