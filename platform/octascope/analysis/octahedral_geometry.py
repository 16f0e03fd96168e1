"""Octahedral geometry of a network: Pb-X bond tilts φ1-φ4, octahedral tilts θ1-θ3, bond lengths σ1-σ4, L1, L2.

Computed once by the pipeline right after the network builder (:func:`compute_geometry`) and
carried on the result as an :class:`OctahedralGeometry`, so every metric can read θ and L
without depending on another metric (``metric=[accuracy]`` measures the tilt errors too).

Definitions (DESIGN.md, the method paper's Fig. 1d): for each Pb column with its four X
neighbours, the projected bond ``b_k = X_k - Pb``; φ1, φ2 are the unsigned angles of the right
and left bonds from ``+a1`` and ``-a1``, φ3, φ4 those of the up and down bonds from ``+a2`` and
``-a2``, where ``a1``, ``a2`` are the *local* Pb-Pb lattice vectors (so a rotated particle gives the
same angles). θ1 = mean(φ1, φ2), θ2 = mean(φ3, φ4), θ3 = mean(θ1, θ2); σk = |b_k|,
L1 = σ1 + σ2, L2 = σ3 + σ4.

A missing neighbour leaves its φ and σ NaN; θ1/θ2 then use the bond that is present (L1/L2 need
both), θ3 the θ that are present (:func:`octahedral_geometry`). In the pipeline's value
(:func:`compute_geometry`) an octahedron missing a bond, or at the rim, has empty θ and L
columns: its tilt is not one anyone should read (φ and σ of the bonds it has stay).

Uncertainties (``*_err_deg``, ``*_err_A``, 1σ) are first-order propagations of the column
position variances (:mod:`octascope.analysis.uncertainty`: fit covariance plus the denoiser's Monte Carlo
variance) through the bond vectors, keeping the correlation through the shared Pb column. The
local lattice directions are averages over several Pb columns and are treated as exact.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from octascope.core.errors import InputError
from octascope.analysis.lattice import estimate_square_basis
from octascope.core.model import TILT_NAMES, Image, MetricInput, Octahedra, OctahedralGeometry, Result, Truth
from octascope.analysis.uncertainty import angle_gradient, column_position_variance, combination_variance, length_gradient

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
    columns: pd.DataFrame, octahedra: Octahedra, position_variance: np.ndarray | None = None
) -> pd.DataFrame:
    """Per-octahedron bond tilts, octahedral tilts and bond lengths (vectorised).

    Parameters
    ----------
    columns : pandas.DataFrame
        Column table whose index holds the row labels used by ``octahedra``.
    octahedra : Octahedra
        The network (Pb positions, X neighbour labels, local lattice vectors).
    position_variance : numpy.ndarray, optional
        (N, 2) position variance of every column [Å²] (see
        :func:`octascope.analysis.uncertainty.column_position_variance`); adds the ``*_err_*`` columns
        (1-sigma, first-order propagation).

    Returns
    -------
    pandas.DataFrame
        One row per octahedron: ``pb``, ``x_A``, ``y_A``, ``i``, ``j``, ``shell``, ``edge``,
        ``phi1_deg``..``phi4_deg``, ``theta1_deg``..``theta3_deg`` [deg], ``sigma1_A``..``sigma4_A``,
        ``L1_A``, ``L2_A`` [Å], ``n_bonds``, ``complete`` and, with variances, ``<name>_err_deg`` /
        ``<name>_err_A``.
    """
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
    phi0 = np.nan_to_num(phi)
    theta1 = np.where(has1, (w_t1 * phi0).sum(1), np.nan)
    theta2 = np.where(has2, (w_t2 * phi0).sum(1), np.nan)
    theta3 = np.where(n_theta > 0, (w_t3 * phi0).sum(1), np.nan)
    L1 = sigma[:, 0] + sigma[:, 1]
    L2 = sigma[:, 2] + sigma[:, 3]

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
    out.update(theta1_deg=theta1, theta2_deg=theta2, theta3_deg=theta3)
    for k in range(4):
        out[f"sigma{k + 1}_A"] = sigma[:, k]
    out.update(L1_A=L1, L2_A=L2, n_bonds=present.sum(1), complete=present.all(1))

    if position_variance is not None:
        var = np.asarray(position_variance, dtype=float)
        pb_rows = columns.index.get_indexer(tab["pb"].to_numpy()) if "pb" in tab else np.full(n, -1)
        var_p = np.where((pb_rows >= 0)[:, None], var[np.clip(pb_rows, 0, None)], np.nan)
        var_x = np.where(present[..., None], var[np.clip(rows, 0, None)], np.nan)
        g_phi = np.sign(signed)[..., None] * angle_gradient(b)  # d|angle| / db [rad/Å]
        g_sig = length_gradient(b)
        deg = np.degrees(1.0)
        eye = np.eye(4)
        for k in range(4):
            w = np.broadcast_to(eye[k], (n, 4))
            out[f"phi{k + 1}_err_deg"] = np.where(present[:, k], deg * np.sqrt(combination_variance(g_phi, w, var_p, var_x)), np.nan)
            out[f"sigma{k + 1}_err_A"] = np.where(present[:, k], np.sqrt(combination_variance(g_sig, w, var_p, var_x)), np.nan)
        for name, w, ok in (("theta1", w_t1, has1), ("theta2", w_t2, has2), ("theta3", w_t3, n_theta > 0)):
            out[f"{name}_err_deg"] = np.where(ok, deg * np.sqrt(combination_variance(g_phi, w, var_p, var_x)), np.nan)
        for name, sl in (("L1", slice(0, 2)), ("L2", slice(2, 4))):
            w = np.zeros((n, 4))
            w[:, sl] = 1.0
            ok = present[:, sl].all(1)
            out[f"{name}_err_A"] = np.where(ok, np.sqrt(combination_variance(g_sig, w, var_p, var_x)), np.nan)
    return pd.DataFrame(out)


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
                     uncertainty: bool = True) -> OctahedralGeometry:
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
        Propagate the column position uncertainty to the ``*_err_*`` columns.
    """
    var = column_position_variance(columns, denoised) if uncertainty else None
    table = octahedral_geometry(columns, octahedra, var)
    partial = ~table["complete"].to_numpy(bool) | table["edge"].to_numpy(bool)
    derived = [c for c in table.columns if c.startswith(("theta1_", "theta2_", "theta3_", "L1_", "L2_"))]
    table.loc[partial, derived] = np.nan
    return OctahedralGeometry(table=table)


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
