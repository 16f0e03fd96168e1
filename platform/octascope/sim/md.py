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
rank 0 writes files. This module runs LAMMPS in the processes it is in; starting ``mpirun`` from a
configuration (``md.mpi_ranks``) is :mod:`octascope.sim.mpi`'s.

Every value that reaches a LAMMPS command is typed and checked first (:class:`MDOptions`,
:func:`lammps_setup_commands`): numbers are finite, seeds integers, element names the fixed
:data:`TYPE_ORDER`, file paths plain existing files (:func:`lammps_path`), so no configuration
text can add a command.
"""

from __future__ import annotations

import ctypes
import glob
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, ClassVar
import json

import numpy as np

from octascope.core.errors import ConfigError, InputError, OctascopeError
from octascope.core.params import param, require
from octascope.sim.options import LAMMPS_MAX_SEED, StepOptions, finite, resolve_options
from octascope.sim.structure import check_structure

if TYPE_CHECKING:
    from ase import Atoms

#: LAMMPS type order (pair_coeff element map)
TYPE_ORDER = ("Cs", "Pb", "I", "Br")
MASSES = {"Cs": 132.905, "Pb": 207.2, "I": 126.904, "Br": 79.904}
#: environment variables an MPI launcher (MPICH/Hydra, Open MPI, Intel MPI, SLURM's PMI) sets in each rank
RANK_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE")
#: a path that can stand in a LAMMPS command as one word (see :func:`lammps_path`)
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_.,+=@:~/-]+")


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

    def save(self, path: str | os.PathLike) -> None:
        """Write a compressed ``.npz``."""

        np.savez_compressed(
            path, symbols=self.symbols.astype(str), lattice=self.lattice, positions=self.positions.astype(np.float32),
            time_ps=self.time_ps, temperature_K=self.temperature_K,
            potential_energy_kcal_mol=self.potential_energy_kcal_mol, info=json.dumps(self.info, default=str),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Trajectory":
        """Read a trajectory written by :meth:`save`."""

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
        # lazy: LAMMPS (MPI shared library), only when running MD
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


def lammps_path(path: str | os.PathLike, what: str = "forcefield") -> str:
    """``path`` as it may stand in a LAMMPS command: an existing regular file with a plain name.

    LAMMPS's input parser splits on whitespace, reads quotes, ``#`` (comment), ``$`` (variable) and
    ``&`` (continuation); a newline would start a new command (``shell`` runs programs). A path
    that could carry any of these is refused rather than quoted.

    Raises
    ------
    ConfigError
        A character outside letters, digits and ``_.,+=@:~/-``, or no such regular file.
    """
    problem = lammps_path_problem(path)
    if problem:
        raise ConfigError(f"{what} {problem}")
    return str(path)


def lammps_path_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` may not stand in a LAMMPS command (see :func:`lammps_path`), or ``None``."""
    text = str(path)
    if not _PLAIN_PATH.fullmatch(text):
        return (f"{text!r} has characters a LAMMPS command cannot take (whitespace, quotes, #, $, &, control "
                "characters); give a path of letters, digits and _.,+=@:~/- (copy or link the file there)")
    if not Path(text).is_file():
        return f"{text!r} is not an existing regular file; give the path of one"
    return None


def _lammps_number(value: Any, name: str, *, integer: bool = False) -> Any:
    """``value`` unchanged if it is a finite number (an integer if ``integer``), else :class:`ConfigError`."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite {'integer' if integer else 'number'} to reach LAMMPS")
    return value


def lammps_setup_commands(
    data_path: str | None, forcefield: str, *, temperature_K: float, timestep_fs: float, minimize_steps: int, seed: int,
    box_A: float = 200.0,
) -> list[str]:
    """Input-script lines up to (not including) the NVT ``run``, shared by Python and ``lmp -in``.

    With ``data_path`` the atoms come from a data file (``lmp -in``); with ``None`` the box is
    created empty and the caller adds the atoms through the library API after the ``mass`` lines
    (that needs no file shared between MPI ranks). ``temperature_K`` [K], ``timestep_fs`` [fs] (the
    Nosé–Hoover damping time is 100 steps), ``minimize_steps`` (0: none), ``seed`` (LAMMPS gets
    ``seed % 900000 + 1``) and ``box_A`` [Å] are as in :class:`MDOptions`.

    Every value is checked before it is pasted into a command: numbers finite, ``seed`` and
    ``minimize_steps`` integers, the paths plain existing files (:func:`lammps_path`); the element
    names are the fixed :data:`TYPE_ORDER`. A value that is not raises :class:`ConfigError`.
    """
    temperature_K = _lammps_number(temperature_K, "md.temperature_K")
    timestep_fs = _lammps_number(timestep_fs, "md.timestep_fs")
    minimize_steps = _lammps_number(minimize_steps, "md.minimize_steps", integer=True)
    seed = _lammps_number(seed, "md.seed", integer=True)
    box_A = _lammps_number(box_A, "md.box_A")
    forcefield = lammps_path(forcefield, "md.forcefield")
    lines = ["units real", "atom_style charge", "boundary f f f", "atom_modify map array sort 0 0.0"]
    if data_path is not None:
        lines.append(f"read_data {lammps_path(data_path, 'LAMMPS data file')}")
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


@dataclass(frozen=True, kw_only=True)
class MDOptions(StepOptions):
    """Parameters of :func:`run_md` (config group ``md``)."""

    group: ClassVar[str] = "md"
    not_keyed: ClassVar[frozenset[str]] = frozenset({"n_threads", "workdir"})
    #: K ranks sum forces in another order than one: keyed when > 1, so serial keys stay as they are
    keyed_unless: ClassVar[dict[str, Any]] = {"mpi_ranks": 1}

    temperature_K: float = param(300.0, unit="K", doc="thermostat temperature")
    timestep_fs: float = param(1.0, unit="fs", doc="time step")
    n_steps: int = param(15000, unit="steps", doc="NVT steps after equilibration during which snapshots are taken")
    equilibration_steps: int = param(5000, unit="steps", doc="NVT steps before the first snapshot")
    snapshot_every: int = param(500, unit="steps", doc="steps between snapshots (also the blow-up check interval)")
    minimize_steps: int = param(200, unit="iterations", doc="maximum conjugate-gradient iterations before MD "
                                "(0: no minimisation)")
    box_A: float = param(200.0, unit="Å", doc="edge of the non-periodic cubic box (the paper: 200 Å)")
    min_distance_A: float = param(1.5, unit="Å", doc="closest allowed pair distance in the start structure "
                                  "(0 disables the check)")
    max_temperature_K: float | None = param(None, unit="K", doc="temperature that counts as a blow-up; "
                                            "null: 3 × temperature_K + 300")
    n_threads: int = param(1, doc="OpenMP threads per MPI rank (-sf omp -pk omp n; 1 = plain styles)")
    seed: int = param(0, doc="velocity seed")
    forcefield: str | None = param(None, doc="ReaxFF parameter file (a plain path, see lammps_path); "
                                   "null: the bundled Pols et al. (2024) IBrPbCs.ff")
    workdir: str | None = param(None, doc="folder for LAMMPS's log file; null: no log")
    mpi_ranks: int = param(1, doc="MPI ranks of the run: > 1 runs it under mpirun -n mpi_ranks (octascope.sim.mpi)")

    def check(self) -> None:
        for name in ("temperature_K", "timestep_fs", "box_A"):
            value = getattr(self, name)
            require(finite(value) and value > 0, f"{name}={value} must be a number > 0")
        require(finite(self.min_distance_A) and self.min_distance_A >= 0, f"min_distance_A={self.min_distance_A} must be >= 0 Å")
        t_max = self.max_temperature_K
        require(t_max is None or (finite(t_max) and t_max > self.temperature_K),
                f"max_temperature_K={t_max} must exceed temperature_K={self.temperature_K} (or be null)")
        require(self.snapshot_every >= 1 and self.n_steps >= self.snapshot_every,
                f"n_steps={self.n_steps} must be >= snapshot_every={self.snapshot_every} >= 1 to give at least one snapshot")
        require(self.equilibration_steps >= 0 and self.minimize_steps >= 0,
                f"equilibration_steps={self.equilibration_steps} and minimize_steps={self.minimize_steps} must be >= 0")
        require(self.n_threads >= 1 and self.mpi_ranks >= 1,
                f"n_threads={self.n_threads} and mpi_ranks={self.mpi_ranks} must be >= 1")
        require(0 <= self.seed <= LAMMPS_MAX_SEED, f"seed={self.seed} must lie in [0, {LAMMPS_MAX_SEED}]")
        problem = None if self.forcefield is None else lammps_path_problem(self.forcefield)
        require(problem is None, f"forcefield {problem}")
        require(self.workdir is None or self.workdir.isprintable(), f"workdir={self.workdir!r} has control characters")

    @property
    def t_max_K(self) -> float:
        """Temperature that counts as a blow-up [K]."""
        return float(self.max_temperature_K or 3.0 * self.temperature_K + 300.0)


def under_mpi() -> bool:
    """True in a process started by an MPI launcher (one rank of ``mpirun -n K``)."""
    return any(k in os.environ for k in RANK_ENV)


def run_md(atoms: Atoms, options: MDOptions | None = None, /, *, progress: bool = True,
           on_snapshot: Callable[[int, dict], Any] | None = None, **params: Any) -> Trajectory:
    """Minimise, then run Nosé–Hoover NVT with ReaxFF + QEq in this process and collect snapshots.

    Parameters
    ----------
    atoms : ase.Atoms
        The particle (Cs/Pb/I/Br); ``arrays["lattice"]`` is carried into the trajectory.
    options : MDOptions, optional
        The MD parameters (units in :class:`MDOptions`); or give them as keywords
        (``run_md(atoms, n_steps=60)``).
    progress : bool
        Show a tqdm progress bar (rank 0 only).
    on_snapshot : callable, optional
        Called as ``on_snapshot(index, thermo)`` after every snapshot.

    Returns
    -------
    Trajectory

    Raises
    ------
    InputError
        Element missing from the force field, overlapping atoms, particle larger than the box, or a
        parameter out of range (:class:`~octascope.sim.options.SimulationParameterError`).
    ConfigError
        LAMMPS or its MPI library missing; ``mpi_ranks > 1`` outside an MPI launcher (run it through
        :func:`octascope.sim.mpi.run_md_on_ranks`, which starts ``mpirun``).
    MDError
        Lost atoms, non-finite energy or runaway temperature during the run.
    """
    opts = resolve_options(MDOptions, options, params)
    if opts.mpi_ranks > 1 and not under_mpi():
        raise ConfigError(f"md.mpi_ranks={opts.mpi_ranks} needs mpirun: run it through octascope.sim.mpi.run_md_on_ranks "
                          "(simulate() and `python -m octascope.sim md` do), not run_md")
    ff = check_md_start(atoms, opts)
    lammps = load_lammps()
    lmp = lammps.lammps(cmdargs=_lammps_cmdargs(opts))
    try:
        rank = int(lmp.extract_setting("world_rank"))
        n_ranks = int(lmp.extract_setting("world_size"))
        symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
        t_min = _set_up(lmp, atoms.get_positions(), symbols, ff, opts)
        samples = _sample_nvt(lmp, len(symbols), opts, progress=progress and rank == 0, on_snapshot=on_snapshot)
    finally:
        lmp.close()
    return _trajectory(atoms, symbols, samples, opts, dict(forcefield=Path(ff).name, rank=rank, n_ranks=n_ranks,
                                                           minimize_s=t_min))


def check_md_start(atoms: Atoms, options: MDOptions) -> str:
    """Check that LAMMPS can start from ``atoms`` with ``options``; return the force-field path.

    The elements are in the force field and among :data:`TYPE_ORDER`, no two atoms are closer than
    ``min_distance_A`` [Å], and the particle fits in the box with 20 Å of vacuum on each side.

    Raises
    ------
    InputError
        Which of these fails, with the fix.
    ConfigError
        A force-field path that may not reach LAMMPS (:func:`lammps_path`).
    """

    ff = lammps_path(options.forcefield or default_forcefield(), "md.forcefield")
    symbols = set(atoms.get_chemical_symbols())
    known = set(forcefield_elements(ff))
    missing = sorted(symbols - known)
    if missing:
        raise InputError(
            f"element(s) {missing} are not in the force field {Path(ff).name} (it defines {sorted(known)}); "
            "use a structure of those elements or give a force field that has them"
        )
    unsupported = sorted(symbols - set(TYPE_ORDER))
    if unsupported:
        raise InputError(f"element(s) {unsupported} are not supported; octascope's MD handles {list(TYPE_ORDER)}")
    if options.min_distance_A > 0:
        check_structure(atoms, min_distance_A=options.min_distance_A)
    pos = atoms.get_positions()
    extent = float((pos.max(0) - pos.min(0)).max())
    margin = 20.0
    if extent + 2 * margin > options.box_A:
        raise InputError(
            f"the particle ({extent:.1f} Å across) does not fit in the {options.box_A:.1f} Å box with {margin:.0f} Å "
            f"vacuum on each side; set md.box_A >= {extent + 2 * margin:.0f}"
        )
    return ff


def _lammps_cmdargs(opts: MDOptions) -> list[str]:
    """LAMMPS command-line arguments: the log file (in ``workdir``, else none), no screen output, OpenMP threads."""
    if opts.workdir is not None:
        Path(opts.workdir).mkdir(parents=True, exist_ok=True)
    log = ["-log", str(Path(opts.workdir) / "log.lammps")] if opts.workdir is not None else ["-log", "none"]
    cmdargs = log + ["-screen", "none", "-nocite"]
    if opts.n_threads > 1:
        cmdargs += ["-sf", "omp", "-pk", "omp", str(int(opts.n_threads))]
    return cmdargs


def _set_up(lmp: Any, positions: np.ndarray, symbols: np.ndarray, ff: str, opts: MDOptions) -> float:
    """Box, atoms (centred in the box), ReaxFF + QEq, minimisation, velocities and the NVT fix.

    Parameters
    ----------
    lmp : lammps.lammps
        A fresh LAMMPS instance.
    positions : numpy.ndarray
        Start positions (N, 3) [Å].
    symbols : numpy.ndarray
        Element per atom (N,), all in :data:`TYPE_ORDER`.
    ff : str
        Force-field path (checked by :func:`lammps_path`).
    opts : MDOptions
        The run's parameters.

    Returns
    -------
    float
        Wall time of the minimisation [s].
    """
    setup = lammps_setup_commands(None, ff, temperature_K=opts.temperature_K, timestep_fs=opts.timestep_fs,
                                  minimize_steps=opts.minimize_steps, seed=opts.seed, box_A=opts.box_A)
    cut = setup.index("# create_atoms")
    lmp.commands_list(setup[:cut])
    shifted = positions + (opts.box_A / 2.0 - (positions.max(0) + positions.min(0)) / 2.0)
    types = [TYPE_ORDER.index(s) + 1 for s in symbols]
    lmp.create_atoms(len(symbols), list(range(1, len(symbols) + 1)), types, shifted.ravel().tolist())
    setup = setup[cut + 1:]
    t0 = time.perf_counter()
    lmp.commands_list(setup[:-3])  # up to minimisation
    t_min = time.perf_counter() - t0
    lmp.commands_list(setup[-3:])
    return t_min


def _trajectory(atoms: Atoms, symbols: np.ndarray, samples: _Samples, opts: MDOptions, run: dict) -> Trajectory:
    """The :class:`Trajectory` of a run, its ``info`` holding the settings, ``run`` (force field, rank,
    ranks, minimisation time [s]), the timings and the structure's own ``info``."""
    n_total = opts.equilibration_steps + opts.n_steps
    steps_per_s = n_total / samples.wall_s if samples.wall_s > 0 else float("nan")
    info = dict(
        temperature_K=opts.temperature_K, timestep_fs=opts.timestep_fs, n_steps=opts.n_steps,
        equilibration_steps=opts.equilibration_steps, snapshot_every=opts.snapshot_every,
        minimize_steps=opts.minimize_steps, box_A=opts.box_A, n_threads=opts.n_threads, seed=opts.seed,
        forcefield=run["forcefield"], n_atoms=len(symbols), rank=run["rank"], n_ranks=run["n_ranks"],
        wall_s=samples.wall_s, minimize_s=run["minimize_s"], steps_per_s=steps_per_s,
        ns_per_day=steps_per_s * opts.timestep_fs * 1e-6 * 86400.0,
    )
    info["structure"] = {k: v for k, v in atoms.info.items() if isinstance(v, (int, float, str, list, dict))}
    lattice = atoms.arrays.get("lattice", np.full((len(symbols), 3), np.nan))
    return Trajectory(symbols=symbols, lattice=np.asarray(lattice, dtype=float), positions=np.asarray(samples.positions),
                      time_ps=np.asarray(samples.time_ps), temperature_K=np.asarray(samples.temperature_K),
                      potential_energy_kcal_mol=np.asarray(samples.potential_energy), info=info)


@dataclass
class _Samples:
    """Snapshots of an NVT run: positions (S, N, 3) [Å] centred, time [ps], T [K], energy [kcal/mol], wall time [s]."""

    positions: list[np.ndarray] = field(default_factory=list)
    time_ps: list[float] = field(default_factory=list)
    temperature_K: list[float] = field(default_factory=list)
    potential_energy: list[float] = field(default_factory=list)
    wall_s: float = 0.0


def _sample_nvt(lmp: Any, n_atoms: int, opts: MDOptions, *, progress: bool,
                on_snapshot: Callable[[int, dict], Any] | None) -> _Samples:
    """Run equilibration + sampling in chunks of ``snapshot_every`` steps, checking for blow-ups.

    After each chunk the thermo values are read and checked (:func:`_check_blowup`); after each
    sampling chunk the positions are gathered (collective under MPI) and centred.

    Raises
    ------
    MDError
        Lost atoms, non-finite energy, positions or temperature, or a runaway temperature.
    """
    eq, every = opts.equilibration_steps, opts.snapshot_every
    n_total = eq + opts.n_steps
    bar = None
    if progress:
        # lazy: tqdm (~14 ms to import), only when a progress bar is shown
        from tqdm.auto import tqdm

        bar = tqdm(total=n_total, unit="step", desc="MD", leave=False)
    out = _Samples()
    done = 0
    lmp.command("run 0 post no")  # set-up (neighbour lists, QEq, forces) once, outside the timed loop
    t1 = time.perf_counter()
    while done < n_total:
        chunk = min(every, n_total - done)
        lmp.command(f"run {chunk} pre no post no")
        done += chunk
        if bar is not None:
            bar.update(chunk)
        thermo = {"step": done, "temp": float(lmp.get_thermo("temp")), "pe": float(lmp.get_thermo("pe")),
                  "atoms": int(lmp.get_natoms())}
        _check_blowup(thermo, n_atoms, opts.t_max_K)
        if done > eq and (done - eq) % every == 0:
            x = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(n_atoms, 3).astype(float)
            if not np.all(np.isfinite(x)):
                raise MDError(f"non-finite positions at step {done}; lower md.timestep_fs or check the start structure")
            out.positions.append(x - x.mean(0))
            out.temperature_K.append(thermo["temp"])
            out.potential_energy.append(thermo["pe"])
            out.time_ps.append((done - eq) * opts.timestep_fs / 1000.0)
            if on_snapshot is not None:
                on_snapshot(len(out.positions) - 1, thermo)
    out.wall_s = time.perf_counter() - t1
    if bar is not None:
        bar.close()
    return out


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
