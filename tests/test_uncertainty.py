"""Linearised propagation of column position errors to φ/θ/σ/L, checked against Monte Carlo sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from octascope.core.model import Image
from octascope.input.synthetic import SyntheticSpec, perovskite_columns
from octascope.analysis.uncertainty import column_position_variance, denoiser_position_variance
from octascope.analysis.octahedral_geometry import octahedra_from_indices, octahedral_geometry

QUANTITIES = ["phi1_deg", "phi3_deg", "theta1_deg", "theta2_deg", "theta3_deg", "sigma2_A", "L1_A", "L2_A"]


def test_linearised_errors_match_monte_carlo():
    cols, _ = perovskite_columns(SyntheticSpec(n_cells=(4, 4), a_A=6.2, rotation_deg=9.0))
    rng = np.random.default_rng(3)
    # unequal, anisotropic errors per column (Pb better localised than X, as in a real fit)
    sx = np.where(cols.species == "Pb", 0.02, 0.05) * rng.uniform(0.6, 1.4, len(cols))
    sy = np.where(cols.species == "Pb", 0.03, 0.04) * rng.uniform(0.6, 1.4, len(cols))
    cols = cols.assign(x_err_A=sx, y_err_A=sy)
    # drop one X so a partial octahedron is checked too
    cols = cols[~((cols.i == 1.5) & (cols.j == 1)).to_numpy()]
    net = octahedra_from_indices(cols)
    lin = octahedral_geometry(cols, net, column_position_variance(cols))

    # Monte Carlo reference: n_mc perturbed copies of the lattice stacked into one network
    n_mc = 4000
    n_cols, n_oct = len(cols), len(net.table)
    xy = cols[["x_A", "y_A"]].to_numpy()
    noise = rng.standard_normal((n_mc, n_cols, 2)) * cols[["x_err_A", "y_err_A"]].to_numpy()
    big_cols = pd.DataFrame((xy + noise).reshape(-1, 2), columns=["x_A", "y_A"])
    offset = np.repeat(np.arange(n_mc) * n_cols, n_oct)
    pos = cols.index.get_indexer  # labels -> 0..n_cols-1 positions
    tab = pd.concat([net.table] * n_mc, ignore_index=True)
    tab["pb"] = pos(tab["pb"]) + offset
    for name in ("x_right", "x_left", "x_up", "x_down"):
        tab[name] = np.where(tab[name] >= 0, pos(tab[name]) + offset, -1)
    tab["x_A"] = big_cols["x_A"].to_numpy()[tab["pb"]]
    tab["y_A"] = big_cols["y_A"].to_numpy()[tab["pb"]]
    mc = octahedral_geometry(big_cols, type(net)(tab, lattice_vectors_A=net.lattice_vectors_A))
    samples = mc[QUANTITIES].to_numpy().reshape(n_mc, n_oct, len(QUANTITIES))
    mc_std = np.std(samples, axis=0, ddof=1)  # (n_oct, n_q)
    for q, name in enumerate(QUANTITIES):
        err = lin[name.replace("_deg", "_err_deg").replace("_A", "_err_A")].to_numpy()
        ok = np.isfinite(err)
        assert ok.sum() >= 14, name
        # standard error of a std estimate from 4000 samples is ~1.1 %; allow 6 % (linearisation + sampling)
        np.testing.assert_allclose(err[ok], mc_std[ok, q], rtol=0.06, err_msg=name)
    # the partial octahedron: θ1 from its left bond only, L1 undefined
    part = lin[(lin.i == 1) & (lin.j == 1)].iloc[0]
    assert np.isnan(part.L1_err_A) and np.isfinite(part.theta1_err_deg)


def test_shared_pb_correlation_is_kept():
    # straight X-Pb-X along x, errors only on the Pb in y: moving Pb up tilts both bonds the
    # same way in magnitude, so θ1 = mean(φ1, φ2) has the full single-bond error, not 1/√2 of it
    cols = pd.DataFrame({"x_A": [0.0, 3.0, -3.0, 0.0, 0.0], "y_A": [0.0, 0.0, 0.0, 3.0, -3.0],
                         "species": ["Pb", "X", "X", "X", "X"], "i": [0, 0.5, -0.5, 0, 0], "j": [0, 0, 0, 0.5, -0.5]})
    cols = cols.assign(x_A=cols.x_A, y_A=cols.y_A + np.array([0.0, 0.3, -0.3, 0, 0]))  # a 5.7° tilt, no sign flip
    net = octahedra_from_indices(cols, lattice_vectors_A=np.array([[6.0, 0.0], [0.0, 6.0]]))
    var = np.zeros((5, 2))
    var[0, 1] = 0.01**2
    g = octahedral_geometry(cols, net, var).iloc[0]
    # |φ1| shrinks and |φ2| grows when Pb moves up: d|φ|/dy_P = ∓b_x/|b|² → the mean is insensitive
    assert g.phi1_err_deg == pytest.approx(np.degrees(0.01 * 3.0 / (3.0**2 + 0.3**2)), rel=1e-9)
    assert g.theta1_err_deg == pytest.approx(0.0, abs=1e-12)


def test_denoiser_variance_term():
    # Cramér-Rao: white noise v per pixel, peak height A -> var(x0) = 2 v / (π A²) px²
    cols = pd.DataFrame({"x_px": [10.0, 20.0], "y_px": [10.0, 12.0], "amplitude": [2.0, 0.5],
                         "x_err_A": [0.01, np.nan], "y_err_A": [0.01, np.nan]})
    var_map = np.full((32, 32), 0.04, np.float32)
    img = Image(np.zeros((32, 32), np.float32), pixel_size_A=0.2, variance=var_map)
    mc = denoiser_position_variance(cols, img)
    np.testing.assert_allclose(mc, 2 * 0.04 / (np.pi * np.array([4.0, 0.25])) * 0.04, rtol=1e-6)
    total = column_position_variance(cols, img)
    np.testing.assert_allclose(total[0], 0.01**2 + mc[0], rtol=1e-6)
    np.testing.assert_allclose(total[1], mc[1], rtol=1e-6)  # fit error missing: denoiser term only
    assert np.isnan(column_position_variance(cols.drop(columns=["x_err_A", "y_err_A"]))).all()


def test_cramer_rao_formula_against_fits():
    # fit a Gaussian centroid by least squares on noisy patches; its scatter matches 2 v / (π A²)
    from scipy.optimize import least_squares

    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:15, 0:15].astype(float)
    A, s, v = 1.0, 1.8, 0.05**2
    est = []
    for _ in range(300):
        img = A * np.exp(-((xx - 7) ** 2 + (yy - 7) ** 2) / (2 * s**2)) + rng.normal(0, np.sqrt(v), xx.shape)
        fun = lambda p: (p[0] * np.exp(-((xx - p[1]) ** 2 + (yy - p[2]) ** 2) / (2 * p[3] ** 2)) - img).ravel()
        est.append(least_squares(fun, [1.0, 7.0, 7.0, 1.8]).x[1])
    assert np.std(est) ** 2 == pytest.approx(2 * v / (np.pi * A**2), rel=0.2)
