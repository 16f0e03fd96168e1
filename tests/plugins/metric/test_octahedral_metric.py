"""The octahedral metric on hand-built lattices with analytic angles and lengths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import octascope
from octascope.core.errors import InputError
from octascope.core.model import Image, Octahedra, Result
from octascope.input.synthetic import SyntheticSpec, perovskite_columns
from octascope.analysis.octahedral_geometry import octahedra_from_indices, octahedral_geometry
from octascope_plugins.metric.octahedral import OctahedralMetric

TOL = 1e-6


def rotated(columns: pd.DataFrame, angle_deg: float, shift=(40.0, 30.0)) -> pd.DataFrame:
    ang = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    xy = columns[["x_A", "y_A"]].to_numpy() @ rot.T + np.asarray(shift)
    return columns.assign(x_A=xy[:, 0], y_A=xy[:, 1])


def metric_result(columns: pd.DataFrame, octahedra: Octahedra) -> Result:
    image = Image(np.zeros((16, 16), np.float32), pixel_size_A=1.0)
    return Result(image=image, denoised=image, columns=columns, octahedra=octahedra)


@pytest.fixture(scope="module")
def lattice_8deg():
    spec = SyntheticSpec(n_cells=(6, 5), a_A=6.2, rotation_deg=8.0)
    return perovskite_columns(spec)


def test_single_octahedron_analytic():
    # one Pb at the origin, four X placed by hand: right bond at +10°, left at -4° (below -a1),
    # up bond 6° off +a2, down bond exactly on -a2
    cols = pd.DataFrame({
        "x_A": [0.0, 3.0 * np.cos(np.radians(10)), -2.9 * np.cos(np.radians(4)), -3.1 * np.sin(np.radians(6)), 0.0],
        "y_A": [0.0, 3.0 * np.sin(np.radians(10)), -2.9 * np.sin(np.radians(4)), 3.1 * np.cos(np.radians(6)), -3.2],
        "species": ["Pb", "X", "X", "X", "X"],
    }, index=[10, 11, 12, 13, 14])
    tab = pd.DataFrame({"pb": [10], "x_A": [0.0], "y_A": [0.0], "x_right": [11], "x_left": [12], "x_up": [13],
                        "x_down": [14], "i": [0], "j": [0], "shell": [0], "a1_x_A": [6.0], "a1_y_A": [0.0],
                        "a2_x_A": [0.0], "a2_y_A": [6.0], "edge": [False]})
    g = octahedral_geometry(cols, Octahedra(tab)).iloc[0]
    assert g.phi1_deg == pytest.approx(10, abs=TOL)
    assert g.phi2_deg == pytest.approx(4, abs=TOL)
    assert g.phi3_deg == pytest.approx(6, abs=TOL)
    assert g.phi4_deg == pytest.approx(0, abs=TOL)
    assert g.theta1_deg == pytest.approx(7, abs=TOL)
    assert g.theta2_deg == pytest.approx(3, abs=TOL)
    assert g.theta3_deg == pytest.approx(5, abs=TOL)
    assert (g.sigma1_A, g.sigma2_A, g.sigma3_A, g.sigma4_A) == pytest.approx((3.0, 2.9, 3.1, 3.2), abs=TOL)
    assert g.L1_A == pytest.approx(5.9, abs=TOL)
    assert g.L2_A == pytest.approx(6.3, abs=TOL)


@pytest.mark.parametrize("angle_deg", [0.0, 17.0, -45.0, 90.0])
def test_rotated_particle_gives_same_geometry(lattice_8deg, angle_deg):
    cols, truth = lattice_8deg
    cols = rotated(cols, angle_deg)
    table = octahedral_geometry(cols, octahedra_from_indices(cols))
    merged = table.merge(truth, on=["i", "j"], suffixes=("", "_true"))
    assert len(merged) == 30
    for name in ["phi1_deg", "phi2_deg", "phi3_deg", "phi4_deg", "theta1_deg", "theta2_deg", "theta3_deg",
                 "sigma1_A", "sigma2_A", "sigma3_A", "sigma4_A", "L1_A", "L2_A"]:
        np.testing.assert_allclose(merged[name], merged[name + "_true"], atol=TOL, err_msg=name)
    # a0a0c+ rotation: every bond at 8°, bond length (a/2)/cos(8°)
    np.testing.assert_allclose(table["theta3_deg"], 8.0, atol=TOL)
    np.testing.assert_allclose(table["L1_A"], 6.2 / np.cos(np.radians(8)), atol=TOL)


def test_missing_neighbours(lattice_8deg):
    cols, _ = lattice_8deg
    # remove the right X of Pb (2, 2) and both vertical X of Pb (3, 3)
    drop = ((cols.i == 2.5) & (cols.j == 2)) | ((cols.i == 3) & (cols.j.isin([2.5, 3.5])))
    cols = cols[~drop.to_numpy()]
    table = octahedral_geometry(cols, octahedra_from_indices(cols)).set_index(["i", "j"])
    a = table.loc[(2.0, 2.0)]
    assert np.isnan(a.phi1_deg) and np.isnan(a.sigma1_A) and np.isnan(a.L1_A)
    assert a.theta1_deg == pytest.approx(8.0, abs=TOL)  # from the left bond alone
    assert a.L2_A == pytest.approx(6.2 / np.cos(np.radians(8)), abs=TOL)
    assert not a.complete and a.n_bonds == 3
    b = table.loc[(3.0, 3.0)]
    assert np.isnan(b.theta2_deg) and np.isnan(b.L2_A)
    assert b.theta3_deg == pytest.approx(b.theta1_deg, abs=TOL)
    # the right X of (2, 2) is the left X of (3, 2)
    assert np.isnan(table.loc[(3.0, 2.0)].phi2_deg)


def test_core_shell_statistics_and_edge_exclusion():
    spec = SyntheticSpec(n_cells=(10, 10), rotation_deg=11.0, shell_rotation_deg=5.0, shell_depth=3)
    cols, truth = perovskite_columns(spec)
    net = octahedra_from_indices(cols)
    # flag one core octahedron as edge and move its Pb so that including it would change the mean
    table = net.table.copy()
    centre = ((table.i == 5) & (table.j == 5)).to_numpy()
    table.loc[centre, "edge"] = True
    table.loc[centre, "y_A"] += 0.8
    net = Octahedra(table, net.bonds, net.lattice_vectors_A)
    out = OctahedralMetric(figures=False).compute(metric_result(cols, net), None)
    s = out.scalars
    # shell octahedra (shell index < 3) have every bond touching a shell octahedron -> 5°;
    # core octahedra have bonds to shell neighbours at the core boundary -> compare with truth
    t = truth[truth.shell >= 3]
    assert s["theta1_deg_mean_shell"] == pytest.approx(5.0, abs=TOL)
    exp_core = t[~((t.i == 5) & (t.j == 5))]["theta1_deg"].mean()
    assert s["theta1_deg_mean_core"] == pytest.approx(exp_core, abs=TOL)
    assert s["theta3_deg_mean_core"] == pytest.approx(t[~((t.i == 5) & (t.j == 5))]["theta3_deg"].mean(), abs=TOL)
    assert s["n_octahedra"] == 100 and s["n_octahedra_complete"] == 100
    assert len(out.tables["octahedra"]) == 100
    # with depth 2 the split moves
    s2 = OctahedralMetric(shell_depth_cells=2, figures=False).compute(metric_result(cols, net), None).scalars
    assert s2["theta1_deg_mean_core"] < s["theta1_deg_mean_core"]


def test_registered_and_public_columns(lattice_8deg):
    metric = octascope.get_registry().create("metric", "octahedral", shell_depth_cells=2, figures=False)
    cols, _ = lattice_8deg
    out = metric.compute(metric_result(cols, octahedra_from_indices(cols)), None)
    table = out.tables["octahedra"]
    for c in ["x_A", "y_A", "theta1_deg", "theta2_deg", "theta3_deg", "L1_A", "L2_A", "shell", "i", "j", "edge"]:
        assert c in table
    for k in ["theta1_deg_mean_core", "theta1_deg_mean_shell", "theta2_deg_mean_core", "theta3_deg_mean_shell",
              "L1_A_mean", "L2_A_mean", "n_octahedra", "n_octahedra_complete"]:
        assert k in out.scalars


def test_no_network_is_input_error():
    image = Image(np.zeros((16, 16), np.float32), pixel_size_A=1.0)
    with pytest.raises(InputError):
        OctahedralMetric().compute(Result(image=image), None)
