"""Figures: line profiles with known answers, maps with colour bars and units, edge exclusion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from octascope.results import figures
from octascope.core.model import Image, Octahedra, Result
from octascope.input.synthetic import SyntheticSpec, perovskite_columns
from octascope_plugins.metric.lattice import LatticeMetric
from octascope.analysis.octahedral_geometry import octahedra_from_indices
from octascope_plugins.metric.octahedral import OctahedralMetric


def test_line_profile_integrates_rows_and_bins_by_spacing():
    a = 6.0
    ii, jj = np.meshgrid(np.arange(10), np.arange(9), indexing="ij")
    xy = np.column_stack([ii.ravel() * a, jj.ravel() * a])
    values = 2.0 * ii.ravel() + 100.0 * (jj.ravel() == 0)  # row j = 0 is far from the line: must not count
    prof = figures.line_profile(xy, values, start_A=(0.0, 4 * a), direction=(1.0, 0.0), spacing_A=a, n_rows=4)
    np.testing.assert_allclose(prof["distance_A"], np.arange(10) * a)
    np.testing.assert_allclose(prof["mean"], 2.0 * np.arange(10), atol=1e-12)
    # |t| <= 2 rows: rows j = 2..6 lie within the band (5 rows incl. both boundaries)
    assert (prof["count"] == 5).all()
    # a tilted line on a rotated lattice gives the same profile
    ang = np.deg2rad(30)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    prof_r = figures.line_profile(xy @ rot.T, values, start_A=rot @ [0.0, 4 * a], direction=rot @ [1.0, 0.0],
                                  spacing_A=a, n_rows=4)
    np.testing.assert_allclose(prof_r["mean"], prof["mean"], atol=1e-9)


def test_tile_polygons_span_the_cell():
    poly = figures.tile_polygons(np.array([[10.0, 20.0]]), np.array([6.0, 0.0]), np.array([0.0, 5.0]))
    np.testing.assert_allclose(poly[0], [[7, 17.5], [13, 17.5], [13, 22.5], [7, 22.5]])


@pytest.fixture(scope="module")
def result():
    cols, _ = perovskite_columns(SyntheticSpec(n_cells=(7, 6), a_A=6.2, rotation_deg=9.0))
    cols = cols.assign(x_A=cols.x_A + 10, y_A=cols.y_A + 10, x_err_A=0.02, y_err_A=0.02)
    cols["x_px"], cols["y_px"] = cols.x_A / 0.5, cols.y_A / 0.5
    net = octahedra_from_indices(cols)
    table = net.table.assign(edge=(net.table.shell == 0).to_numpy())
    image = Image(np.random.default_rng(0).random((120, 130)).astype(np.float32), pixel_size_A=0.5, signal="idpc")
    return Result(image=image, denoised=image, columns=cols, octahedra=Octahedra(table, net.bonds, net.lattice_vectors_A))


def _colourbar_labels(fig):
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_octahedral_figures_have_units_and_leave_out_edge(result, tmp_path):
    out = OctahedralMetric().compute(result, None)
    figs = out.figures
    for key in ("network_overlay", "theta_maps", "bond_length_maps", "tilt_histograms", "tilt_line_profile",
                "theta_uncertainty_map", "phi_maps"):
        assert key in figs
    assert _colourbar_labels(figs["theta_maps"]) == ["θ1 [°]", "θ2 [°]", "θ3 [°]"]
    assert all("[Å]" in lab for lab in _colourbar_labels(figs["bond_length_maps"]))
    # each θ panel: a grey collection with the 22 rim tiles, a coloured one with the 5 x 4 interior tiles
    ax = figs["theta_maps"].axes[0]
    sizes = sorted(len(c.get_paths()) for c in ax.collections)
    assert sizes == [20, 22]
    figs["theta_maps"].savefig(tmp_path / "theta.png", dpi=40)
    assert (tmp_path / "theta.png").stat().st_size > 1000
    assert OctahedralMetric(figures=False).compute(result, None).figures == {}


def test_lattice_figures(result):
    figs = LatticeMetric().compute(result, None).figures
    assert set(figs) == {"cs_spacing_maps", "pb_spacing_maps", "spacing_line_profile"}
    assert _colourbar_labels(figs["cs_spacing_maps"]) == ["Cs–Cs C1 [Å]", "Cs–Cs C2 [Å]", "Cs–Cs C3 [Å]"]
    assert LatticeMetric(figures=False).compute(result, None).figures == {}
