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


def _lattice(jitter: float = 1e-4, seed: int = 0):
    """A 5 x 5 rotated perovskite lattice (columns, octahedra) with a sub-pm jitter, so that local
    lattice vectors measured from Pb neighbours differ from the particle-wide one."""
    cols, _ = perovskite_columns(SyntheticSpec(n_cells=(5, 5), a_A=6.2, rotation_deg=9.0))
    rng = np.random.default_rng(seed)
    cols = cols.assign(x_A=cols.x_A + rng.normal(0, jitter, len(cols)), y_A=cols.y_A + rng.normal(0, jitter, len(cols)))
    return cols.reset_index(drop=True)


def _local_network(cols: pd.DataFrame):
    """octahedra_from_indices with local a1, a2 measured from the Pb neighbours (as the network builders do)."""
    from octascope.analysis.lattice import neighbour_lattice_vectors
    from octascope.core.model import Octahedra

    net = octahedra_from_indices(cols)
    pb = cols.loc[net.table["pb"].to_numpy(), ["x_A", "y_A"]].to_numpy()
    local, _ = neighbour_lattice_vectors(pb, net.lattice_vectors_A, tol_frac=0.3)
    tab = net.table.assign(a1_x_A=local[:, 0, 0], a1_y_A=local[:, 0, 1], a2_x_A=local[:, 1, 0], a2_y_A=local[:, 1, 1])
    return Octahedra(table=tab, bonds=net.bonds, lattice_vectors_A=net.lattice_vectors_A)


def test_correlated_columns_and_measured_lattice_directions_match_monte_carlo():
    """Column errors with x-y correlation and neighbour covariances, and lattice directions measured
    from the noisy Pb columns: the propagated σ of φ, θ and L and of core/shell means and their
    difference equal the Monte Carlo scatter (network rebuilt on every draw)."""
    from octascope.analysis.uncertainty import PositionCovariance, column_covariance, region_weights
    from octascope.analysis.octahedral_geometry import geometry_with_covariance

    cols = _lattice()
    n = len(cols)
    rng = np.random.default_rng(7)
    sx = np.where(cols.species == "Pb", 0.02, 0.04) * rng.uniform(0.7, 1.3, n)
    sy = np.where(cols.species == "Pb", 0.03, 0.05) * rng.uniform(0.7, 1.3, n)
    cols = cols.assign(x_err_A=sx, y_err_A=sy, xy_corr=rng.uniform(-0.4, 0.4, n), column_id=np.arange(n))
    from octascope.analysis.noise_covariance import neighbour_pairs

    pairs = neighbour_pairs(cols.x_A.to_numpy(), cols.y_A.to_numpy(), 3.5)
    rho = rng.uniform(-0.3, 0.3, (len(pairs), 2, 2))
    pc = PositionCovariance(pairs[:, 0], pairs[:, 1], rho * np.stack([sx[pairs[:, 0]], sy[pairs[:, 0]]], 1)[:, :, None]
                            * np.stack([sx[pairs[:, 1]], sy[pairs[:, 1]]], 1)[:, None, :])
    cov = column_covariance(cols, pairs=pc)
    dense = cov.stat.toarray()
    assert np.all(np.linalg.eigvalsh(dense) > 0)  # a valid covariance for this draw of correlations
    net = _local_network(cols)
    table, geo = geometry_with_covariance(cols, net, cov)
    shell = table["shell"].to_numpy() == 0
    inner = table["complete"].to_numpy(bool)
    w_core = region_weights(~shell & inner, table["theta3_deg"].to_numpy())
    w_shell = region_weights(shell & inner, table["theta3_deg"].to_numpy())

    chol = np.linalg.cholesky(dense)
    xy = cols[["x_A", "y_A"]].to_numpy()
    quantities = ["phi1_deg", "phi3_deg", "theta1_deg", "theta3_deg", "L2_A"]
    # all draws as one frame: copy k is shifted by 100 k cells (620 k Å), so copies never meet
    n_mc = 2000
    k = np.repeat(np.arange(n_mc), n)
    d = (chol @ rng.standard_normal((2 * n, n_mc))).T.reshape(-1, 2)
    big = pd.concat([cols] * n_mc, ignore_index=True)
    big = big.assign(x_A=np.tile(xy[:, 0], n_mc) + d[:, 0] + 620.0 * k, y_A=np.tile(xy[:, 1], n_mc) + d[:, 1],
                     i=big["i"].to_numpy() + 100.0 * k)
    t2 = octahedral_geometry(big, _local_network(big))
    per = len(t2) // n_mc
    draws = t2[quantities].to_numpy().reshape(n_mc, per, len(quantities))
    th = np.nan_to_num(t2["theta3_deg"].to_numpy().reshape(n_mc, per))
    means = np.stack([th @ w_core, th @ w_shell, th @ (w_core - w_shell)], axis=1)
    mc = np.std(draws, axis=0, ddof=1)
    for q, name in enumerate(quantities):
        err = table[name.replace("_deg", "_err_deg").replace("_A", "_err_A")].to_numpy()
        ok = np.isfinite(err) & inner
        # sampling error of a std from 2000 draws ≈ 1.6 %
        np.testing.assert_allclose(err[ok], mc[ok, q], rtol=0.08, err_msg=name)
    mc_means = np.std(means, axis=0, ddof=1)
    lin = [geo.error("theta3_deg", w, "stat") for w in (w_core, w_shell, w_core - w_shell)]
    np.testing.assert_allclose(lin, mc_means, rtol=0.08)


def test_measured_lattice_directions_add_to_theta_errors():
    """θ3 does not depend on the Pb column of its octahedron (the shared Pb cancels), but it does on
    the Pb neighbours its lattice directions were measured from: with errors on Pb only, θ3 has an
    error when a1/a2 are local and none when they are the particle-wide vectors."""
    cols = _lattice()
    var = np.where((cols.species == "Pb").to_numpy()[:, None], 0.02**2, 0.0) * np.ones((1, 2))
    local = octahedral_geometry(cols, _local_network(cols), var)
    glob = octahedral_geometry(cols, octahedra_from_indices(cols), var)
    inner = (local["shell"] >= 1).to_numpy()
    assert np.all(local["theta3_err_deg"].to_numpy()[inner] > 0.05)
    np.testing.assert_allclose(glob["theta3_err_deg"].to_numpy()[inner], 0.0, atol=1e-3)


def test_systematic_term_by_species_and_depth():
    """The systematic covariance follows the study's table by species and depth class (outer cell
    or unknown depth: outer), X columns along and across their Pb–X bond; totals add in quadrature;
    the systematic part of a mean tilt does not average down, that of a mean length does."""
    from octascope.analysis.uncertainty import (SYSTEMATIC_A, column_bond_axes, column_covariance, column_depth_class,
                                                region_weights, systematic_covariance, with_systematic)
    from octascope.analysis.octahedral_geometry import geometry_with_covariance

    cols = _lattice().assign(x_err_A=0.01, y_err_A=0.01)
    net = octahedra_from_indices(cols)
    depth = column_depth_class(cols, net)
    tab = net.table.set_index("pb")
    for label in tab.index:
        assert depth[cols.index.get_loc(label)] == ("inner" if tab.loc[label, "shell"] >= 1 else "outer")
    cov = systematic_covariance(cols, net)
    axes = column_bond_axes(cols, net)
    species = cols["species"].to_numpy()
    for k in range(len(cols)):
        along, across = SYSTEMATIC_A[(species[k], depth[k])]
        if species[k] == "X" and np.isfinite(axes[k]).all():
            u = axes[k]
            v = np.array([-u[1], u[0]])
            assert u @ cov[k] @ u == pytest.approx(along**2) and v @ cov[k] @ v == pytest.approx(across**2)
        else:
            np.testing.assert_allclose(cov[k], max(along, across) ** 2 * np.eye(2))
    assert np.isfinite(axes[species == "X"]).all(axis=1).sum() >= 0.8 * (species == "X").sum()
    out = with_systematic(cols, net)
    np.testing.assert_allclose(out["x_total_err_A"], np.hypot(0.01, out["x_sys_A"]))
    unknown = net.table.assign(shell=-1)
    assert set(column_depth_class(cols, type(net)(unknown, net.bonds, net.lattice_vectors_A))) == {"outer"}

    table, geo = geometry_with_covariance(out, net, column_covariance(out))
    inner = table["complete"].to_numpy(bool)
    w = region_weights(inner, table["theta3_deg"].to_numpy())
    sys_each = table["theta3_sys_deg"].to_numpy()
    assert geo.error("theta3_deg", w, "sys") == pytest.approx(float(w @ np.nan_to_num(sys_each)), rel=1e-9)
    assert geo.error("theta3_deg", w, "total") == pytest.approx(
        np.hypot(geo.error("theta3_deg", w, "stat"), geo.error("theta3_deg", w, "sys")), rel=1e-9)
    np.testing.assert_allclose(table["theta3_total_err_deg"], np.hypot(table["theta3_err_deg"], table["theta3_sys_deg"]))
    w_l = region_weights(inner, table["L1_A"].to_numpy())
    independent = float(np.sqrt(geo.combination("L1_A", w_l, "sys")[0, 0]))
    assert geo.error("L1_A", w_l, "sys") == pytest.approx(independent, rel=1e-9)
    assert independent < 0.5 * float(w_l @ np.nan_to_num(table["L1_sys_A"].to_numpy()))


def test_particle_tilts_test_the_core_shell_difference():
    """particle_tilts: propagated errors of the means, Δθ3 with its total error, z, p and the verdict;
    the summary states it."""
    from octascope.analysis.octahedral_geometry import compute_geometry
    from octascope.analysis.particle_table import particle_tilts, significance

    assert significance(0.9, 0.3)[2] == "significant at 3σ"
    assert significance(-0.7, 0.3)[2] == "significant at 2σ"
    z, p, verdict = significance(0.3, 0.3)
    assert verdict == "not significant (< 2σ)" and z == pytest.approx(1.0) and p == pytest.approx(0.3173, abs=1e-4)
    assert significance(0.3, float("nan"))[2] == "untested"

    cols, _ = perovskite_columns(SyntheticSpec(n_cells=(8, 8), a_A=6.2, rotation_deg=9.0, shell_rotation_deg=4.0,
                                               shell_depth=2))
    cols = cols.assign(x_err_A=0.01, y_err_A=0.01)
    geo = compute_geometry(cols, octahedra_from_indices(cols))
    row = particle_tilts(geo.table, 2, geo.covariance).iloc[0]
    assert row["theta3_deg_core"] > row["theta3_deg_shell"]
    assert 0 < row["theta3_deg_core_err"] < row["theta3_deg_core_total_err"]
    assert row["dtheta3_core_minus_shell_total_err_deg"] == pytest.approx(
        np.hypot(row["dtheta3_core_minus_shell_err_deg"], row["dtheta3_core_minus_shell_sys_deg"]))
    assert row["dtheta3_z"] == pytest.approx(row["dtheta3_core_minus_shell_deg"] / row["dtheta3_core_minus_shell_total_err_deg"])
    assert row["dtheta3_verdict"].startswith("significant")
    plain = particle_tilts(geo.table, 2).iloc[0]  # no covariance: the scatter's standard error
    assert np.isfinite(plain["theta3_deg_core_err"]) and "theta3_deg_core_total_err" not in plain


def test_folded_bias_of_an_absolute_angle():
    """E|μ + ε| − |μ| for Gaussian ε: against sampling, and 0.8 σ at μ = 0."""
    from octascope.analysis.uncertainty import folded_bias

    rng = np.random.default_rng(2)
    for mu in (0.0, 0.5, 1.0, 2.5):
        sampled = np.mean(np.abs(mu + rng.normal(0, 1.0, 400_000))) - mu
        assert folded_bias(np.array([mu]), np.array([1.0]))[0] == pytest.approx(sampled, abs=0.005)
    assert folded_bias(np.array([-1.0, 3.0]), np.array([2.0, 0.0])).tolist() == pytest.approx([0.7912, 0.0], abs=1e-3)
