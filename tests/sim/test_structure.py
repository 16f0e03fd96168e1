"""octascope.sim.structure and truth: composition, charge, geometry, mixing, truth vs structure."""

from __future__ import annotations

import numpy as np
import pytest

from octascope.core.errors import InputError
from octascope.sim.structure import CHARGE, build_nanocube, check_structure, read_structure, write_structure
from octascope.sim.truth import octahedra_3d, project_columns, projected_octahedra


@pytest.mark.parametrize("n", [2, 3, 5])
def test_composition_and_charge(n):
    atoms = build_nanocube(n_cells=n, seed=3)
    sym = np.array(atoms.get_chemical_symbols())
    assert (sym == "Pb").sum() == n**3
    assert (sym == "I").sum() == 3 * n**2 * (n + 1)
    assert (sym == "Cs").sum() == (n + 1) ** 3 - (3 * n + 1)
    assert sum(CHARGE[s] for s in sym) == 0
    assert atoms.info["charge"] == 0
    # without balancing the CsX-terminated cube carries +(3n+1)
    raw = build_nanocube(n_cells=n, charge_balance=False)
    assert sum(CHARGE[s] for s in raw.get_chemical_symbols()) == 3 * n + 1


def test_geometry_cubic_bonds_and_termination():
    a = 6.29
    atoms = build_nanocube(n_cells=3, a_A=a, phase="cubic")
    pos, sym = atoms.get_positions(), np.array(atoms.get_chemical_symbols())
    pb, x = pos[sym == "Pb"], pos[sym == "I"]
    d = np.linalg.norm(pb[:, None] - x[None], axis=-1)
    assert np.all(np.sort(d, axis=1)[:, :6] == pytest.approx(a / 2, abs=1e-9))  # six X at a/2 around each Pb
    assert np.sort(d, axis=1)[:, 6].min() > a / 2 + 1.0
    # outermost layer along x is Cs + X (CsX plane), Pb is one half cell further in
    assert pos[sym == "Cs", 0].max() == pytest.approx(pb[:, 0].max() + a / 2)
    check_structure(atoms)


def test_orthorhombic_tilts_seen_by_truth():
    atoms = build_nanocube(n_cells=4, phase="orthorhombic", tilt_deg=(0.0, 0.0, 9.0))
    octa, bonds = octahedra_3d(atoms.get_chemical_symbols(), atoms.arrays["lattice"], atoms.get_positions())
    # X at the mean of the two rotated-bond predictions: tan(tilt_seen) = sin(9°)
    expected = np.degrees(np.arctan(np.sin(np.radians(9.0))))
    assert octa["theta3_z_deg"].mean() == pytest.approx(expected, abs=0.05)
    assert octa["theta3_x_deg"].abs().max() < 1e-6
    a3 = build_nanocube(n_cells=4, tilt_deg=(6.0, 6.0, 9.0))
    o3, _ = octahedra_3d(a3.get_chemical_symbols(), a3.arrays["lattice"], a3.get_positions())
    assert 5.0 < o3["theta3_x_deg"].mean() < 7.0


@pytest.mark.parametrize("mixing", ["uniform", "corner", "face", "shell", "paper"])
def test_halide_mixing_fraction(mixing):
    atoms = build_nanocube(n_cells=4, br_fraction=0.25, mixing=mixing, seed=1)
    sym = np.array(atoms.get_chemical_symbols())
    n_x = 3 * 16 * 5
    assert (sym == "Br").sum() == round(0.25 * n_x)
    assert (sym == "Br").sum() + (sym == "I").sum() == n_x


def test_corner_segregation_is_local():
    atoms = build_nanocube(n_cells=5, br_fraction=0.15, mixing="corner")
    lat = atoms.arrays["lattice"]
    sym = np.array(atoms.get_chemical_symbols())
    dist = np.linalg.norm(lat + 0.5, axis=1)
    hal = np.isin(sym, ["I", "Br"])
    assert dist[sym == "Br"].max() <= dist[hal & (sym == "I")].min() + 1e-9
    paper = build_nanocube(n_cells=5, br_fraction=0.15, mixing="paper", seed=2)
    psym = np.array(paper.get_chemical_symbols())
    # 94.4 % on the corner, the rest elsewhere
    n_br = (psym == "Br").sum()
    far = (psym == "Br") & (dist > np.sort(dist[hal])[int(round(0.944 * n_br))])
    assert 0 < far.sum() <= n_br - int(round(0.944 * n_br)) + 1


def test_overlap_and_bad_inputs_raise():
    atoms = build_nanocube(n_cells=2)
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    with pytest.raises(InputError, match="overlap"):
        check_structure(atoms)
    with pytest.raises(InputError, match="mixing"):
        build_nanocube(mixing="stripes")
    with pytest.raises(InputError, match="br_fraction"):
        build_nanocube(br_fraction=1.5)


def test_extxyz_roundtrip(tmp_path):
    atoms = build_nanocube(n_cells=2, br_fraction=0.5)
    write_structure(atoms, tmp_path / "qd.extxyz")
    back = read_structure(tmp_path / "qd.extxyz")
    assert back.get_chemical_symbols() == atoms.get_chemical_symbols()
    np.testing.assert_allclose(back.arrays["lattice"], atoms.arrays["lattice"])
    np.testing.assert_allclose(back.positions, atoms.positions, atol=1e-6)


def test_truth_columns_agree_with_structure():
    n = 4
    atoms = build_nanocube(n_cells=n, tilt_deg=(0.0, 0.0, 8.0), br_fraction=0.3, mixing="face")
    sym = np.array(atoms.get_chemical_symbols())
    pos = atoms.get_positions()
    cols = project_columns(sym, atoms.arrays["lattice"], pos)
    counts = cols["species"].value_counts()
    assert counts["Pb"] == n**2 and counts["X"] == 2 * n * (n + 1) and counts["Cs"] == (n + 1) ** 2
    assert cols["n_atoms"].sum() == len(atoms)
    assert cols["n_Br"].sum() == (sym == "Br").sum()
    pbc = cols[cols.species == "Pb"]
    assert set(pbc["n_Pb"]) == {n} and set(pbc["n_atoms"]) == {2 * n + 1}  # Pb + apical X, plus the two outer X
    # a Pb column sits on its Pb atoms (apical X have the same xy in a z-rotated start)
    pb_xy = pos[sym == "Pb", :2]
    d = np.linalg.norm(pbc[["x_A", "y_A"]].to_numpy()[:, None] - pb_xy[None], axis=-1).min(1)
    assert d.max() < 1e-9
    octa = projected_octahedra(cols)
    expected = np.degrees(np.arctan(np.sin(np.radians(8.0))))
    core = octa[octa.shell == 1]
    # interior bonds: X at the mean of two predictions; rim bonds: the one prediction (exactly 8°)
    assert core["theta3_deg"].to_numpy() == pytest.approx(expected, abs=1e-6)
    assert octa["theta3_deg"].between(expected - 1e-6, 8.0 + 1e-6).all()
    assert core["L1_A"].to_numpy() == pytest.approx(6.29 * np.hypot(0.5, 0.5 * np.sin(np.radians(8.0))) * 2, rel=1e-9)
    assert set(octa["shell"]) == {0, 1}
