"""Simulated ground truth: CsPbX3 nanocubes → LAMMPS ReaxFF MD → abTEM iDPC/iCoM images → dose noise → truth.

Modules: :mod:`~octascope.sim.structure` (builder), :mod:`~octascope.sim.md` (LAMMPS),
:mod:`~octascope.sim.mpi` (the MD step under ``mpirun``), :mod:`~octascope.sim.imaging` (abTEM),
:mod:`~octascope.sim.support` (carbon film), :mod:`~octascope.sim.noise`, :mod:`~octascope.sim.truth`,
:mod:`~octascope.sim.cache`, :mod:`~octascope.sim.options` (the steps' parameters, one Options class
each), :mod:`~octascope.sim.simulation` (``simulated_source`` for ``source=simulated``).
Command line: ``python -m octascope.sim {structure,md,run} --out PATH [group.key=value ...]``.
Heavy libraries (ASE, LAMMPS, abTEM) are imported inside the functions that need them.
"""

from octascope.sim.simulation import Simulation, simulate, simulated_source

__all__ = ["Simulation", "simulate", "simulated_source"]
