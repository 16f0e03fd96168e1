"""The lattice metric: Cs-Cs and Pb-Pb spacings on hand-built, strained and rotated lattices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import octascope
from octascope.core.model import Image, Result
from octascope.input.synthetic import SyntheticSpec, perovskite_columns
from octascope_plugins.metric.lattice import LatticeMetric, ellipticity_scalars, lattice_spacings
from octascope.analysis.octahedral_geometry import octahedra_from_indices

TOL = 1e-6


def strained(columns: pd.DataFrame, sx: float, sy: float, angle_deg: float) -> pd.DataFrame:
    ang = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    xy = (columns[["x_A", "y_A"]].to_numpy() * [sx, sy]) @ rot.T + [50.0, 40.0]
    return columns.assign(x_A=xy[:, 0], y_A=xy[:, 1])


def result_for(columns: pd.DataFrame, with_network: bool = True) -> Result:
    image = Image(np.zeros((16, 16), np.float32), pixel_size_A=1.0)
    net = octahedra_from_indices(columns) if with_network else None
    return Result(image=image, denoised=image, columns=columns, octahedra=net)


@pytest.mark.parametrize("angle_deg", [0.0, 17.0, 45.0])
@pytest.mark.parametrize("with_network", [True, False])
def test_spacings_of_strained_rotated_lattice(angle_deg, with_network):
    cols, _ = perovskite_columns(SyntheticSpec(n_cells=(6, 7), a_A=6.2, rotation_deg=9.0))
    cols = strained(cols, 1.03, 0.98, angle_deg)
    out = LatticeMetric(figures=False).compute(result_for(cols, with_network), None)
    t = out.tables["lattice"]
    cs, pb = t[t.species == "Cs"], t[t.species == "Pb"]
    assert len(cs) == 7 * 8 and len(pb) == 42
    # the +a1 neighbour exists for all but the last row of each sublattice
    assert np.isfinite(cs.C1_A).sum() == 6 * 8 and np.isfinite(pb.P2_A).sum() == 6 * 6
    np.testing.assert_allclose(cs.C1_A.dropna(), 6.2 * 1.03, atol=TOL)
    np.testing.assert_allclose(cs.C2_A.dropna(), 6.2 * 0.98, atol=TOL)
    np.testing.assert_allclose(pb.P1_A.dropna(), 6.2 * 1.03, atol=TOL)
    s = out.scalars
    assert s["C1_A_mean"] == pytest.approx(6.386, abs=TOL)
    assert s["C2_A_mean"] == pytest.approx(6.076, abs=TOL)
    assert s["P2_A_mean"] == pytest.approx(6.076, abs=TOL)
    # C3 per column: mean of the spacings that exist
    both = cs.C1_A.notna() & cs.C2_A.notna()
    np.testing.assert_allclose(cs.C3_A[both], (6.386 + 6.076) / 2, atol=TOL)
    assert pb.P3_A.isna().sum() == 1 and cs.P1_A.isna().all()  # only the far corner Pb has neither


def test_missing_column_and_edge_excluded():
    cols, _ = perovskite_columns(SyntheticSpec(n_cells=(5, 5), a_A=6.0, rotation_deg=0.0))
    gone = (cols.species == "Cs") & (cols.i == 1.5) & (cols.j == 1.5)
    cols = cols[~gone.to_numpy()].copy()
    t = lattice_spacings(cols, octahedra_from_indices(cols))
    cs = t[t.species == "Cs"].set_index(["x_A", "y_A"])
    # the Cs at (0.5, 1.5) lost its +a1 neighbour, the one at (1.5, 0.5) its +a2 neighbour
    assert np.isnan(cs.loc[(3.0, 9.0), "C1_A"]) and cs.loc[(3.0, 9.0), "C2_A"] == pytest.approx(6.0, abs=TOL)
    assert np.isnan(cs.loc[(9.0, 3.0), "C2_A"])
    # an edge-flagged Pb column with a distorted spacing is kept in the table, not in the means
    cols.loc[(cols.species == "Pb") & (cols.i == 4) & (cols.j == 2), "x_A"] += 1.0
    cols["edge"] = ((cols.species == "Pb") & (cols.i >= 3) & (cols.j == 2)).to_numpy()
    out = LatticeMetric(figures=False).compute(result_for(cols), None)
    assert out.scalars["P1_A_mean"] == pytest.approx(6.0, abs=TOL)
    assert out.tables["lattice"]["P1_A"].max() == pytest.approx(7.0, abs=TOL)


def test_x_ellipticity_median_and_error():
    rng = np.random.default_rng(1)
    e = 1.3 + 0.05 * rng.standard_normal(400)
    cols = pd.DataFrame({"species": ["X"] * 400 + ["Cs"] * 10, "ellipticity": np.r_[e, np.full(10, 3.0)]})
    s = ellipticity_scalars(cols)
    assert s["x_ellipticity_median"] == pytest.approx(np.median(e), abs=1e-12)
    assert s["x_ellipticity_median_err"] == pytest.approx(1.2533 * 0.05 / 20, rel=0.15)
    assert 0.05 < s["x_ellipticity_iqr"] < 0.085  # 1.349 sigma for a normal distribution


def test_registered_with_config_parameters():
    m = octascope.get_registry().create("metric", "lattice", tolerance_frac=0.2, figures=False)
    assert m.options.tolerance_frac == 0.2
