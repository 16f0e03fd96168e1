"""Octahedral geometry of a network: Pb-X bond tilts φ1-φ4, octahedral tilts θ1-θ3, bond lengths σ1-σ4, L1, L2.

Computed once by the pipeline right after the network builder (:func:`compute_geometry`) and
carried on the result as an :class:`OctahedralGeometry`, so every metric can read θ and L
without depending on another metric (``metric=[accuracy]`` measures the tilt errors too).

Definitions (the method paper's Fig. 1d): for each Pb column with its four X
neighbours, the projected bond ``b_k = X_k - Pb``; φ1, φ2 are the unsigned angles of the right
and left bonds from ``+a1`` and ``-a1``, φ3, φ4 those of the up and down bonds from ``+a2`` and
``-a2``, where ``a1``, ``a2`` are the *local* Pb-Pb lattice vectors (so a rotated particle gives the
same angles). θ1 = mean(φ1, φ2), θ2 = mean(φ3, φ4), θ3 = mean(θ1, θ2); σk = |b_k|,
L1 = σ1 + σ2, L2 = σ3 + σ4.

A missing neighbour leaves its φ and σ NaN; θ1/θ2 then use the bond that is present (L1/L2 need
both), θ3 the θ that are present (:func:`octahedral_geometry`). In the pipeline's value
(:func:`compute_geometry`) an octahedron missing a bond, or at the rim, has empty θ and L
columns: its tilt is not one anyone should read (φ and σ of the bonds it has stay).

Uncertainties (1σ) are first-order propagations of the column position covariance
(:mod:`octascope.analysis.uncertainty`) through the bond vectors: ``*_err_deg``, ``*_err_A`` the
statistical part (the image's noise: fit covariances under the image's noise spectrum, the
covariance of neighbouring columns, the denoiser's Monte Carlo variance), ``*_sys_deg``,
``*_sys_A`` the systematic part (the columns' model error, ``x_sys_A``) and ``*_total_err_deg``,
``*_total_err_A`` both; the systematic part of φ and θ includes the upward bias of an absolute
angle under the noise (:func:`octascope.analysis.uncertainty.folded_bias`). The sparse gradients are kept (:class:`~octascope.analysis.uncertainty.GeometryCovariance`
on :attr:`OctahedralGeometry.covariance`) for the errors of means and differences over octahedra,
which share X columns. The local lattice directions ``a1``, ``a2`` are measured too — from the Pb
columns next to the octahedron's (:func:`octascope.analysis.lattice.neighbour_lattice_vectors`) — so
their error turns every bond angle of the octahedron the same way; where the stored vector is
reproduced from its Pb neighbours, those Pb columns enter the gradients (:func:`_reference_terms`),
otherwise (a particle-wide vector) the direction is treated as exact.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.spatial import cKDTree

from octascope.core.errors import InputError
from octascope.analysis.lattice import estimate_square_basis
from octascope.core.model import TILT_NAMES, Image, MetricInput, Octahedra, OctahedralGeometry, Result, Truth
from octascope.analysis.uncertainty import (ColumnCovariance, GeometryCovariance, PositionCovariance, angle_gradient,
                                            column_covariance, diagonal_covariance, folded_bias, length_gradient,
                                            with_systematic)

NEIGHBOURS = Octahedra.NEIGHBOURS


def octahedron_axes(octahedra: Octahedra) -> tuple[np.ndarray, np.ndarray]:
    """Per-octahedron lattice vectors ``a1``, ``a2`` [Å], each (n, 2).

    Rows without finite local vectors fall back to ``octahedra.lattice_vectors_A``, then to a
    square basis estimated from the Pb positions.
    """
    tab = octahedra.table
    n = len(tab)
    a = np.full((n, 2, 2), np.nan)
    for k, name in enumerate(("a1", "a2")):
        if f"{name}_x_A" in tab and f"{name}_y_A" in tab:
            a[:, k, 0] = tab[f"{name}_x_A"].to_numpy(float)
            a[:, k, 1] = tab[f"{name}_y_A"].to_numpy(float)
    bad = ~np.isfinite(a).all(axis=(1, 2))
    if bad.any():
        glob = np.asarray(octahedra.lattice_vectors_A, dtype=float)
        if glob.shape != (2, 2) or not np.isfinite(glob).all():
            glob = estimate_square_basis(tab[["x_A", "y_A"]].to_numpy(float))
        a[bad] = glob
    return a[:, 0], a[:, 1]


def _neighbour_positions(columns: pd.DataFrame, octahedra: Octahedra) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the four X neighbours (n, 4, 2) [Å] (NaN where missing) and their row positions (n, 4)."""
    tab = octahedra.table
    missing = [c for c in NEIGHBOURS if c not in tab]
    if missing:
        raise InputError(f"octahedra table lacks {missing}; the network builder must give the four X neighbour labels")
    labels = tab[list(NEIGHBOURS)].to_numpy()
    labels = np.where(pd.isna(labels), -1, labels).astype(np.int64)
    rows = columns.index.get_indexer(labels.ravel()).reshape(labels.shape)
    rows = np.where(labels < 0, -1, rows)
    xy = columns[["x_A", "y_A"]].to_numpy(float)
    pos = np.where((rows >= 0)[..., None], xy[np.clip(rows, 0, None)], np.nan)
    return pos, rows


def octahedral_geometry(
    columns: pd.DataFrame, octahedra: Octahedra, position_variance: np.ndarray | ColumnCovariance | None = None
) -> pd.DataFrame:
    """Per-octahedron bond tilts, octahedral tilts and bond lengths (vectorised).

    Parameters
    ----------
    columns : pandas.DataFrame
        Column table whose index holds the row labels used by ``octahedra``.
    octahedra : Octahedra
        The network (Pb positions, X neighbour labels, local lattice vectors).
    position_variance : numpy.ndarray or ColumnCovariance, optional
        (N, 2) position variance of every column [Å²] (independent columns, see
        :func:`octascope.analysis.uncertainty.column_position_variance`) or the full covariance of the
        table's positions (:func:`octascope.analysis.uncertainty.column_covariance`); adds the error
        columns (1σ, first-order propagation; module docstring).

    Returns
    -------
    pandas.DataFrame
        One row per octahedron: ``pb``, ``x_A``, ``y_A``, ``i``, ``j``, ``shell``, ``edge``,
        ``phi1_deg``..``phi4_deg``, ``theta1_deg``..``theta3_deg`` [deg], ``sigma1_A``..``sigma4_A``,
        ``L1_A``, ``L2_A`` [Å], ``n_bonds``, ``complete`` and, with a covariance, ``<name>_err_deg`` /
        ``<name>_err_A`` (and ``<name>_sys_*``, ``<name>_total_err_*`` when it has a systematic part).
    """
    return geometry_with_covariance(columns, octahedra, position_variance)[0]


#: quantities of the geometry table that have uncertainties: name -> unit suffix
ERROR_QUANTITIES = {**{f"phi{k}": "deg" for k in range(1, 5)}, **{f"theta{k}": "deg" for k in (1, 2, 3)},
                    **{f"sigma{k}": "A" for k in range(1, 5)}, "L1": "A", "L2": "A"}


def geometry_with_covariance(
    columns: pd.DataFrame, octahedra: Octahedra, position_variance: np.ndarray | ColumnCovariance | None = None
) -> tuple[pd.DataFrame, GeometryCovariance | None]:
    """:func:`octahedral_geometry` and, with a covariance, its propagation
    (:class:`~octascope.analysis.uncertainty.GeometryCovariance`; rows follow the table)."""
    tab = octahedra.table.reset_index(drop=True)
    n = len(tab)
    P = tab[["x_A", "y_A"]].to_numpy(float)
    X, rows = _neighbour_positions(columns, octahedra)
    present = rows >= 0
    a1, a2 = octahedron_axes(octahedra) if n else (np.zeros((0, 2)), np.zeros((0, 2)))
    ref = np.stack([a1, -a1, a2, -a2], axis=1)  # (n, 4, 2) ideal bond directions
    b = X - P[:, None, :]
    cross = ref[..., 0] * b[..., 1] - ref[..., 1] * b[..., 0]
    dot = (ref * b).sum(-1)
    signed = np.arctan2(cross, dot)  # NaN where missing
    phi = np.degrees(np.abs(signed))
    sigma = np.linalg.norm(b, axis=-1)

    # nan-aware means as weights so the same weights drive the error propagation
    w_t1, w_t2, w_t3, has1, has2, n_theta = _tilt_weights(present)
    phi0 = np.nan_to_num(phi)
    theta1 = np.where(has1, (w_t1 * phi0).sum(1), np.nan)
    theta2 = np.where(has2, (w_t2 * phi0).sum(1), np.nan)
    theta3 = np.where(n_theta > 0, (w_t3 * phi0).sum(1), np.nan)
    L1 = sigma[:, 0] + sigma[:, 1]
    L2 = sigma[:, 2] + sigma[:, 3]
    out = _geometry_columns(tab, P, phi, (theta1, theta2, theta3), sigma, (L1, L2), present)
    if position_variance is None:
        return pd.DataFrame(out), None

    cov = position_variance if isinstance(position_variance, ColumnCovariance) else \
        diagonal_covariance(columns.index.to_numpy(), np.asarray(position_variance, float))
    pb_rows = columns.index.get_indexer(tab["pb"].to_numpy()) if "pb" in tab else np.full(n, -1)
    g_phi = np.degrees(np.sign(signed)[..., None] * angle_gradient(b))  # d|angle| / db [deg/Å]
    g_sig = length_gradient(b)
    weights = _propagation_weights(g_phi, g_sig, present, (w_t1, has1), (w_t2, has2), (w_t3, n_theta > 0))
    ref_rows, ref_coef = _reference_terms(columns, octahedra, np.stack([a1, a2], axis=1), pb_rows)
    # the reference direction of bond k turns its signed angle by minus its own turn: d|φ_k|/dα = -sign_k
    ref_grad = np.degrees(np.stack([angle_gradient(a1), angle_gradient(a2)], axis=1))  # (n, 2, 2) dα_r/da_r
    sign = np.nan_to_num(np.sign(signed))
    gradients = {}
    for name, (g, w, _) in weights.items():
        extra = None
        if name.startswith(("phi", "theta")):
            s_ref = np.stack([(w * sign)[:, :2].sum(1), (w * sign)[:, 2:].sum(1)], axis=1)  # (n, 2)
            extra = (ref_rows, -s_ref[:, :, None, None] * ref_coef[..., None] * ref_grad[:, :, None, :])
        gradients[f"{name}_{ERROR_QUANTITIES[name]}"] = _gradient_matrix(g, w, pb_rows, rows, len(columns), extra)
    geo = GeometryCovariance(gradients=gradients, columns=cov, n_octahedra=n)
    with_sys = bool(cov.sys.nnz) and bool(np.any(cov.sys.data))
    if with_sys:
        geo = GeometryCovariance(gradients=gradients, columns=cov, n_octahedra=n, bias=_tilt_bias(geo, phi, weights))
    _add_error_columns(out, weights, geo, with_sys)
    return pd.DataFrame(out), geo


def _tilt_weights(present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                 np.ndarray]:
    """Weights (n, 4) of the bonds in θ1, θ2, θ3: nan-aware means over the (n, 4) bonds ``present``.

    Returns ``w_t1, w_t2, w_t3``, whether θ1 and θ2 have a bond (``has1, has2``) and how many of
    θ1, θ2 the mean θ3 averages (``n_theta``).
    """
    n = len(present)
    w_t1 = np.zeros((n, 4))
    w_t2 = np.zeros((n, 4))
    n_h = present[:, :2].sum(1)
    n_v = present[:, 2:].sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        w_t1[:, :2] = np.where(present[:, :2], 1.0 / n_h[:, None], 0.0)
        w_t2[:, 2:] = np.where(present[:, 2:], 1.0 / n_v[:, None], 0.0)
    has1, has2 = n_h > 0, n_v > 0
    n_theta = has1.astype(int) + has2.astype(int)
    with np.errstate(divide="ignore", invalid="ignore"):
        w_t3 = (np.where(has1, 1.0, 0.0)[:, None] * w_t1 + np.where(has2, 1.0, 0.0)[:, None] * w_t2) / n_theta[:, None]
    w_t3 = np.nan_to_num(w_t3)
    return w_t1, w_t2, w_t3, has1, has2, n_theta


def _geometry_columns(tab: pd.DataFrame, P: np.ndarray, phi: np.ndarray, theta: tuple[np.ndarray, ...],
                      sigma: np.ndarray, L: tuple[np.ndarray, np.ndarray], present: np.ndarray) -> dict[str, Any]:
    """The columns of the geometry table, in its order: the octahedron's identity and centre [Å],
    φ1–φ4 and θ1–θ3 [deg], σ1–σ4 and L1, L2 [Å], the number of bonds and whether all four are there."""
    n = len(tab)
    out: dict[str, Any] = {
        "pb": tab["pb"].to_numpy() if "pb" in tab else np.arange(n),
        "x_A": P[:, 0],
        "y_A": P[:, 1],
        "i": tab["i"].to_numpy(float) if "i" in tab else np.full(n, np.nan),
        "j": tab["j"].to_numpy(float) if "j" in tab else np.full(n, np.nan),
        "shell": tab["shell"].to_numpy() if "shell" in tab else np.full(n, -1),
        "edge": tab["edge"].to_numpy(bool) if "edge" in tab else np.zeros(n, bool),
    }
    for k in range(4):
        out[f"phi{k + 1}_deg"] = phi[:, k]
    out.update(theta1_deg=theta[0], theta2_deg=theta[1], theta3_deg=theta[2])
    for k in range(4):
        out[f"sigma{k + 1}_A"] = sigma[:, k]
    out.update(L1_A=L[0], L2_A=L[1], n_bonds=present.sum(1), complete=present.all(1))
    return out


def _propagation_weights(g_phi: np.ndarray, g_sig: np.ndarray, present: np.ndarray,
                         *thetas: tuple[np.ndarray, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray, Any]]:
    """Per quantity (``phi1``…, ``sigma1``…, ``theta1``–``theta3``, ``L1``, ``L2``): the bond gradient
    it is made of (``g_phi`` [deg/Å] or ``g_sig`` [1]), its (n, 4) weights over the bonds and where it
    is defined. ``thetas`` are (weights, defined) of θ1, θ2, θ3 (:func:`_tilt_weights`)."""
    n = len(present)
    eye = np.eye(4)
    weights: dict[str, tuple[np.ndarray, np.ndarray, Any]] = {}
    for k in range(4):
        weights[f"phi{k + 1}"] = (g_phi, np.broadcast_to(eye[k], (n, 4)), present[:, k])
        weights[f"sigma{k + 1}"] = (g_sig, np.broadcast_to(eye[k], (n, 4)), present[:, k])
    for name, (w, ok) in zip(("theta1", "theta2", "theta3"), thetas):
        weights[name] = (g_phi, w, ok)
    for name, sl in (("L1", slice(0, 2)), ("L2", slice(2, 4))):
        w = np.zeros((n, 4))
        w[:, sl] = 1.0
        weights[name] = (g_sig, w, present[:, sl].all(1))
    return weights


def _tilt_bias(geo: GeometryCovariance, phi: np.ndarray, weights: dict[str, tuple[np.ndarray, np.ndarray, Any]]
               ) -> dict[str, np.ndarray]:
    """The noise bias [deg] of φ1–φ4 and θ1–θ3, from their statistical errors in ``geo``."""
    # |φ| under noise is biased upward (folded normal), bond by bond; θ averages the bonds' biases
    bond_bias = np.stack([folded_bias(phi[:, k], geo.errors(f"phi{k + 1}_deg", "stat")) for k in range(4)], axis=1)
    bias = {f"phi{k + 1}_deg": bond_bias[:, k] for k in range(4)}
    for name in ("theta1", "theta2", "theta3"):
        w = weights[name][1]
        bias[f"{name}_deg"] = (w * np.nan_to_num(bond_bias)).sum(1)
    return bias


def _add_error_columns(out: dict[str, Any], weights: dict[str, tuple[np.ndarray, np.ndarray, Any]],
                       geo: GeometryCovariance, with_sys: bool) -> None:
    """Add to the table columns ``out`` every quantity's statistical 1σ and, ``with_sys``, its
    systematic and total 1σ (NaN where the quantity is undefined)."""
    for name, (_, _, ok) in weights.items():
        unit = ERROR_QUANTITIES[name]
        q = f"{name}_{unit}"
        out[f"{name}_err_{unit}"] = np.where(ok, geo.errors(q, "stat"), np.nan)
        if with_sys:
            out[f"{name}_sys_{unit}"] = np.where(ok, geo.errors(q, "sys"), np.nan)
            out[f"{name}_total_err_{unit}"] = np.where(ok, geo.errors(q, "total"), np.nan)


def _reference_terms(columns: pd.DataFrame, octahedra: Octahedra, local: np.ndarray,
                     pb_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which Pb columns each octahedron's local lattice vectors were measured from.

    ``local`` (n, 2, 2) are the vectors a1, a2 the network gave. Each is matched to the Pb columns
    of the table at ``P ± a_k`` of the particle-wide basis: ``(P₊ − P₋)/2``, ``P₊ − P`` or
    ``P − P₋`` (:func:`octascope.analysis.lattice.neighbour_lattice_vectors`), whichever reproduces it
    to 1e-6 Å. Returns the column rows (n, 2, 2) and coefficients (n, 2, 2) with
    ``a_k = Σ_j coef[:, k, j] · position(rows[:, k, j])``; rows -1 (coefficient 0) where no
    combination reproduces the vector, or where it is the network's particle-wide vector
    (``octahedra.lattice_vectors_A``), which is then treated as exact.
    """

    n = len(local)
    rows = np.full((n, 2, 2), -1, np.int64)
    coef = np.zeros((n, 2, 2))
    if n == 0:
        return rows, coef
    species = columns["species"].astype(str).to_numpy() if "species" in columns else None
    pb_all = np.flatnonzero(species == "Pb") if species is not None else np.unique(pb_rows[pb_rows >= 0])
    pb_all = np.union1d(pb_all, pb_rows[pb_rows >= 0])
    xy = columns[["x_A", "y_A"]].to_numpy(float)
    basis = np.asarray(octahedra.lattice_vectors_A, float)
    glob = basis.copy() if basis.shape == (2, 2) else np.full((2, 2), np.nan)
    if basis.shape != (2, 2) or not np.isfinite(basis).all():
        basis = np.nanmedian(local, axis=0) if np.isfinite(local).all(axis=(1, 2)).any() else np.full((2, 2), np.nan)
    if not np.isfinite(basis).all() or len(pb_all) < 2:
        return rows, coef
    tree = cKDTree(xy[pb_all])
    own = np.clip(pb_rows, 0, None)
    centre = xy[own]
    for k in range(2):
        tol = 0.45 * float(np.linalg.norm(basis[k]))
        d_p, i_p = tree.query(centre + basis[k], k=1)
        d_m, i_m = tree.query(centre - basis[k], k=1)
        p_row, m_row = pb_all[np.minimum(i_p, len(pb_all) - 1)], pb_all[np.minimum(i_m, len(pb_all) - 1)]
        ok_p, ok_m = (d_p < tol) & (pb_rows >= 0), (d_m < tol) & (pb_rows >= 0)
        for ok, r, c in ((ok_p & ok_m, (p_row, m_row), (0.5, -0.5)), (ok_p, (p_row, own), (1.0, -1.0)),
                         (ok_m, (own, m_row), (1.0, -1.0))):
            vec = c[0] * xy[r[0]] + c[1] * xy[r[1]]
            hit = ok & (rows[:, k, 0] < 0) & (np.abs(vec - local[:, k]).max(axis=1) < 1e-6)
            with np.errstate(invalid="ignore"):
                hit &= ~(np.abs(local[:, k] - glob[k]).max(axis=1) < 1e-9)
            rows[hit, k, 0], rows[hit, k, 1] = r[0][hit], r[1][hit]
            coef[hit, k] = c
    return rows, coef


def _gradient_matrix(g: np.ndarray, w: np.ndarray, pb_rows: np.ndarray, x_rows: np.ndarray, n_columns: int,
                     extra: tuple[np.ndarray, np.ndarray] | None = None):
    """Sparse (n, 2 n_columns) gradient of ``Q = Σ_k w_k q_k(X_k − P)`` per octahedron: ``w_k g_k``
    at X_k, ``−Σ_k w_k g_k`` at the Pb column P (absent bonds and Pb columns contribute nothing);
    ``extra`` = (rows (n, r, j), gradients (n, r, j, 2)) adds gradients at further columns (the Pb
    columns the reference directions were measured from; row -1: none)."""

    n = len(w)
    wg = np.where((x_rows >= 0)[..., None], np.nan_to_num(w[..., None] * g), 0.0)  # (n, 4, 2)
    centre = -wg.sum(axis=1)  # (n, 2)
    oct_idx = np.repeat(np.arange(n), 4)
    r_x = np.repeat(oct_idx, 2)
    c_x = (2 * np.clip(x_rows, 0, None).ravel())[:, None] + np.arange(2)[None, :]
    d_x = wg.reshape(-1, 2)
    keep_x = np.repeat((x_rows.ravel() >= 0), 2) & (d_x.ravel() != 0)
    r_p = np.repeat(np.arange(n), 2)
    c_p = (2 * np.clip(pb_rows, 0, None))[:, None] + np.arange(2)[None, :]
    keep_p = np.repeat(pb_rows >= 0, 2) & (centre.ravel() != 0)
    rows = [r_x[keep_x], r_p[keep_p]]
    cols = [c_x.ravel()[keep_x], c_p.ravel()[keep_p]]
    data = [d_x.ravel()[keep_x], centre.ravel()[keep_p]]
    if extra is not None:
        e_rows, e_grad = extra
        oct_e = np.broadcast_to(np.arange(n)[:, None, None, None], e_grad.shape)
        col_e = 2 * np.clip(e_rows, 0, None)[..., None] + np.arange(2)
        keep_e = np.broadcast_to((e_rows >= 0)[..., None], e_grad.shape) & np.isfinite(e_grad) & (e_grad != 0)
        rows.append(oct_e[keep_e])
        cols.append(col_e[keep_e])
        data.append(e_grad[keep_e])
    # duplicates (a column in two roles) are summed by the sparse constructor
    return sparse.csr_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(n, 2 * n_columns))


def octahedra_from_indices(columns: pd.DataFrame, lattice_vectors_A: np.ndarray | None = None) -> Octahedra:
    """Build the network from columns that carry lattice indices (no search).

    For columns with known half-integer lattice coordinates ``i``, ``j`` (Pb at integers, X at
    ``(i ± ½, j)`` and ``(i, j ± ½)``), e.g. the truth columns of a synthetic or simulated particle
    or a hand-built test lattice.

    Parameters
    ----------
    columns : pandas.DataFrame
        ``x_A``, ``y_A``, ``species``, ``i``, ``j`` and optionally ``shell``, ``edge``.
    lattice_vectors_A : numpy.ndarray, optional
        (2, 2) Pb-Pb lattice vectors [Å] (rows a1, a2); fitted to the Pb positions and indices if omitted.

    Returns
    -------
    Octahedra
        One row per Pb column; neighbour labels are the index labels of ``columns``.
    """
    for c in ("x_A", "y_A", "species", "i", "j"):
        if c not in columns:
            raise InputError(f"columns lack '{c}'; octahedra_from_indices needs x_A, y_A, species, i, j")
    key = np.rint(2 * columns["i"].to_numpy(float)).astype(np.int64) * 1_000_003 + np.rint(2 * columns["j"].to_numpy(float)).astype(np.int64)
    is_x = (columns["species"] == "X").to_numpy()
    x_lookup = pd.Series(columns.index[is_x], index=key[is_x])
    x_lookup = x_lookup[~x_lookup.index.duplicated()]
    pb = columns[(columns["species"] == "Pb").to_numpy()]
    i2 = np.rint(2 * pb["i"].to_numpy(float)).astype(np.int64)
    j2 = np.rint(2 * pb["j"].to_numpy(float)).astype(np.int64)
    table = pd.DataFrame({"pb": pb.index.to_numpy(), "x_A": pb["x_A"].to_numpy(float), "y_A": pb["y_A"].to_numpy(float)})
    for name, (di, dj) in zip(NEIGHBOURS, ((1, 0), (-1, 0), (0, 1), (0, -1))):
        k = (i2 + di) * 1_000_003 + (j2 + dj)
        table[name] = x_lookup.reindex(k).fillna(-1).to_numpy().astype(np.int64)
    table["i"] = pb["i"].to_numpy(float)
    table["j"] = pb["j"].to_numpy(float)
    if "shell" in pb:
        table["shell"] = pb["shell"].to_numpy().astype(int)
    else:
        ii, jj = table["i"].to_numpy(), table["j"].to_numpy()
        table["shell"] = np.minimum.reduce([ii - ii.min(), ii.max() - ii, jj - jj.min(), jj.max() - jj]).astype(int)
    if lattice_vectors_A is not None:
        basis = np.asarray(lattice_vectors_A, float)
    else:
        # least-squares fit xy = origin + i a1 + j a2, so that a1/a2 follow the index directions
        design = np.column_stack([np.ones(len(table)), table["i"], table["j"]])
        if len(table) < 3 or np.linalg.matrix_rank(design) < 3:
            raise InputError(f"{len(table)} Pb columns do not span two lattice directions; give lattice_vectors_A")
        coef = np.linalg.lstsq(design, table[["x_A", "y_A"]].to_numpy(float), rcond=None)[0]
        basis = coef[1:3]
    for k, name in enumerate(("a1", "a2")):
        table[f"{name}_x_A"] = basis[k, 0]
        table[f"{name}_y_A"] = basis[k, 1]
    table["edge"] = pb["edge"].to_numpy(bool) if "edge" in pb else False
    nb = table[list(NEIGHBOURS)].to_numpy()
    bonds = np.stack([np.repeat(table["pb"].to_numpy(), 4), nb.ravel()], axis=1)
    bonds = bonds[bonds[:, 1] >= 0]
    return Octahedra(table=table, bonds=bonds, lattice_vectors_A=basis)


def compute_geometry(columns: pd.DataFrame, octahedra: Octahedra, denoised: Image | None = None, *,
                     uncertainty: bool = True, pairs: PositionCovariance | None = None) -> OctahedralGeometry:
    """The octahedral geometry of a network, with incomplete and edge octahedra's θ and L blanked.

    Parameters
    ----------
    columns : pandas.DataFrame
        Classified column table (its index labels are what ``octahedra`` points to).
    octahedra : Octahedra
        The network builder's output.
    denoised : Image, optional
        The image the columns were fitted on (its Monte Carlo ``variance`` adds to the errors).
    uncertainty : bool
        Propagate the column position uncertainty to the error columns and keep the propagation
        (``covariance``).
    pairs : PositionCovariance, optional
        Covariances between neighbouring columns (the locator's or the refinement's).

    The columns' systematic error is their ``x_sys_A``/``y_sys_A`` when the table has them, else
    :func:`octascope.analysis.uncertainty.with_systematic` of this network.
    """
    if uncertainty and "x_sys_A" not in columns:
        columns = with_systematic(columns, octahedra)
    cov = column_covariance(columns, denoised, pairs) if uncertainty else None
    table, geo = geometry_with_covariance(columns, octahedra, cov)
    partial = ~table["complete"].to_numpy(bool) | table["edge"].to_numpy(bool)
    derived = [c for c in table.columns if c.startswith(("theta1_", "theta2_", "theta3_", "L1_", "L2_"))]
    table.loc[partial, derived] = np.nan
    return OctahedralGeometry(table=table, covariance=geo)


def metric_input(data: MetricInput | Result, truth: Truth | None = None) -> MetricInput:
    """A metric's argument as a :class:`~octascope.core.model.MetricInput`: a hand-built
    :class:`~octascope.core.model.Result` is viewed read-only, with its octahedral geometry
    computed when it has columns and octahedra but no geometry."""
    if isinstance(data, MetricInput):
        return data
    if data.geometry is None and data.columns is not None and data.octahedra is not None:
        data = dataclasses.replace(data, geometry=compute_geometry(data.columns, data.octahedra, data.denoised))
    view = MetricInput.from_result(data)
    if truth is not None and truth is not view.truth:
        view = dataclasses.replace(view, truth=truth)
    return view
