"""Ground truth from 3-D atom positions: projected columns, projected octahedra, 3-D octahedral tilts.

This module computes the geometry from the atoms' own lattice sites (``lattice`` coordinates kept
from the structure builder through MD), with its own arithmetic; it imports nothing from the metric
plugins, so a bug in one cannot cancel in the other.

Definitions (the method paper's Fig. 1d): for each Pb column the four in-plane Pb→X bonds (right = +a1, left = -a1,
up = +a2, down = -a2); φ_k = |angle| between the projected bond and the local lattice direction
(a1 = Pb(i+1) - Pb(i-1) central difference, one-sided at the rim; same for a2); θ1 = mean(φ1, φ2),
θ2 = mean(φ3, φ4), θ3 = mean(θ1, θ2); σ_k the projected bond lengths, L1 = σ1 + σ2, L2 = σ3 + σ4.
Shell: unit cells from the particle edge (0 = outermost) of the Pb lattice.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

HALIDES = ("I", "Br")
ATOMIC_NUMBER = {"Cs": 55, "Pb": 82, "I": 53, "Br": 35}


def _key2(l2: np.ndarray) -> np.ndarray:
    """Integer keys of doubled 2-D lattice coordinates (N, 2) -> (N,) int64."""
    return (l2[:, 0].astype(np.int64) + 1000) * 10000 + (l2[:, 1].astype(np.int64) + 1000)


def project_columns(symbols: Sequence[str] | np.ndarray, lattice: np.ndarray, positions: np.ndarray, *,
                    to_image: Callable[[np.ndarray], np.ndarray] | None = None) -> pd.DataFrame:
    """Projected atomic columns along z.

    Parameters
    ----------
    symbols : array_like of str
        Element per atom (N,).
    lattice : numpy.ndarray
        Lattice coordinates (N, 3) [units of a], Pb at integers.
    positions : numpy.ndarray
        Positions (S, N, 3) or (N, 3) [Å]. The column position is the mean over snapshots and over its
        atoms weighted by atomic number (the iDPC signal is roughly linear in Z, so a Pb + apical-I
        column images where its Pb is); ``xy_spread_A`` is the Z-weighted RMS lateral distance of its
        atoms from that position (large for rim columns whose atoms have moved apart).
    to_image : callable, optional
        Maps (M, 2) particle-frame xy [Å] to the image frame [Å] (e.g. ``Frame.to_image``).

    Returns
    -------
    pandas.DataFrame
        ``x_A``, ``y_A``, ``species`` (Pb: Pb + apical X; X; Cs), ``i``, ``j`` (lattice, half-integer),
        ``n_atoms``, ``n_Pb``, ``n_Cs``, ``n_I``, ``n_Br``, ``br_fraction`` (Br / halides, NaN without
        halide), ``shell``, ``xy_spread_A`` [Å], ``z_min_A``, ``z_max_A``.
    """
    sym = np.asarray(symbols).astype(str)
    pos = np.asarray(positions, float)
    if pos.ndim == 2:
        pos = pos[None]
    mean = pos.mean(0)
    l2 = np.rint(2 * np.asarray(lattice, float)[:, :2]).astype(np.int64)
    keys, inv = np.unique(_key2(l2), return_inverse=True)
    n_col = len(keys)
    count = np.bincount(inv, minlength=n_col)
    z_num = np.array([ATOMIC_NUMBER.get(e, 1) for e in sym], float)
    wsum = np.bincount(inv, z_num, n_col)
    xy = np.column_stack([np.bincount(inv, z_num * mean[:, 0], n_col), np.bincount(inv, z_num * mean[:, 1], n_col)]) / wsum[:, None]
    dev2 = ((pos[:, :, :2] - xy[inv][None]) ** 2).sum(-1).mean(0)  # per atom, over snapshots
    spread = np.sqrt(np.bincount(inv, z_num * dev2, n_col) / wsum)
    if to_image is not None:
        xy = to_image(xy)
    first = np.zeros(n_col, dtype=int)
    first[inv[::-1]] = np.arange(len(inv))[::-1]
    ij2 = l2[first]
    odd = ij2 % 2
    species = np.where(odd.sum(1) == 0, "Pb", np.where(odd.sum(1) == 1, "X", "Cs")).astype(object)
    per = {el: np.bincount(inv, sym == el, n_col).astype(int) for el in ("Pb", "Cs", "I", "Br")}
    n_hal = per["I"] + per["Br"]
    pb2 = l2[sym == "Pb"]
    lo, hi = pb2.min(0), pb2.max(0)
    depth = np.minimum(ij2 - lo, hi - ij2).min(1) / 2.0
    zmin = np.full(n_col, np.inf)
    zmax = np.full(n_col, -np.inf)
    np.minimum.at(zmin, inv, mean[:, 2])
    np.maximum.at(zmax, inv, mean[:, 2])
    with np.errstate(invalid="ignore", divide="ignore"):
        br = np.where(n_hal > 0, per["Br"] / np.maximum(n_hal, 1), np.nan)
    return pd.DataFrame({
        "x_A": xy[:, 0], "y_A": xy[:, 1], "species": species, "i": ij2[:, 0] / 2.0, "j": ij2[:, 1] / 2.0,
        "n_atoms": count, "n_Pb": per["Pb"], "n_Cs": per["Cs"], "n_I": per["I"], "n_Br": per["Br"], "br_fraction": br,
        "shell": np.clip(np.floor(depth), 0, None).astype(int), "xy_spread_A": spread, "z_min_A": zmin, "z_max_A": zmax,
    })


def _angle_deg(v: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Unsigned angle between rows of v and ref [deg]."""
    cos = np.einsum("...i,...i->...", v, ref) / (np.linalg.norm(v, axis=-1) * np.linalg.norm(ref, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _local_axes(key_of: Callable[[np.ndarray, np.ndarray], np.ndarray], pos_of: Callable[[np.ndarray], np.ndarray], i: np.ndarray, j: np.ndarray, step: tuple[int, int]) -> np.ndarray:
    """Local Pb-Pb lattice vector along ``step`` (in doubled units) by central/one-sided differences."""
    plus = pos_of(key_of(i + step[0], j + step[1]))
    minus = pos_of(key_of(i - step[0], j - step[1]))
    centre = pos_of(key_of(i, j))
    central = (plus - minus) / 2.0
    fwd = plus - centre
    bwd = centre - minus
    out = np.where(np.isfinite(central), central, np.where(np.isfinite(fwd), fwd, bwd))
    return out


def projected_octahedra(columns: pd.DataFrame) -> pd.DataFrame:
    """Per Pb column: φ1..φ4, θ1..θ3, σ1..σ4, L1, L2 from projected column positions (module docstring).

    Parameters
    ----------
    columns : pandas.DataFrame
        Output of :func:`project_columns` (needs ``x_A``, ``y_A``, ``i``, ``j``, ``species``, ``shell``).

    Returns
    -------
    pandas.DataFrame
        ``x_A``, ``y_A`` (Pb column), ``i``, ``j``, ``phi1_deg`` .. ``phi4_deg``, ``theta1_deg``,
        ``theta2_deg``, ``theta3_deg``, ``sigma1_A`` .. ``sigma4_A``, ``L1_A``, ``L2_A``, ``shell``,
        ``br_fraction`` (of its four in-plane X columns).
    """
    i2 = np.rint(2 * columns["i"].to_numpy()).astype(np.int64)
    j2 = np.rint(2 * columns["j"].to_numpy()).astype(np.int64)
    keys = _key2(np.column_stack([i2, j2]))
    order = np.argsort(keys)
    sorted_keys = keys[order]
    xy = columns[["x_A", "y_A"]].to_numpy(float)
    br_all = columns["br_fraction"].to_numpy(float) if "br_fraction" in columns else np.full(len(columns), np.nan)

    def key_of(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _key2(np.column_stack([a, b]))

    def lookup(k: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(sorted_keys, k)
        pos = np.clip(pos, 0, len(sorted_keys) - 1)
        found = sorted_keys[pos] == k
        return np.where(found, order[pos], -1)

    def pos_of(k: np.ndarray) -> np.ndarray:
        idx = lookup(k)
        out = np.full((len(k), 2), np.nan)
        out[idx >= 0] = xy[idx[idx >= 0]]
        return out

    pb = columns["species"].to_numpy() == "Pb"
    pi, pj = i2[pb], j2[pb]
    centre = xy[pb]
    a1 = _local_axes(key_of, pos_of, pi, pj, (2, 0))
    a2 = _local_axes(key_of, pos_of, pi, pj, (0, 2))
    bonds = {"right": ((1, 0), a1), "left": ((-1, 0), -a1), "up": ((0, 1), a2), "down": ((0, -1), -a2)}
    phi_rows: list[np.ndarray] = []
    sigma_rows: list[np.ndarray] = []
    br: list[np.ndarray] = []
    for (di, dj), ref in bonds.values():
        k = key_of(pi + di, pj + dj)
        v = pos_of(k) - centre
        phi_rows.append(_angle_deg(v, ref))
        sigma_rows.append(np.linalg.norm(v, axis=1))
        idx = lookup(k)
        br.append(np.where(idx >= 0, br_all[np.maximum(idx, 0)], np.nan))
    phi = np.array(phi_rows)
    sigma = np.array(sigma_rows)
    theta1 = (phi[0] + phi[1]) / 2.0
    theta2 = (phi[2] + phi[3]) / 2.0
    out = pd.DataFrame({"x_A": centre[:, 0], "y_A": centre[:, 1], "i": pi / 2.0, "j": pj / 2.0})
    for b in range(4):
        out[f"phi{b + 1}_deg"] = phi[b]
    out["theta1_deg"], out["theta2_deg"], out["theta3_deg"] = theta1, theta2, (theta1 + theta2) / 2.0
    for b in range(4):
        out[f"sigma{b + 1}_A"] = sigma[b]
    out["L1_A"], out["L2_A"] = sigma[0] + sigma[1], sigma[2] + sigma[3]
    out["shell"] = columns["shell"].to_numpy()[pb]
    with np.errstate(invalid="ignore"):
        out["br_fraction"] = np.nanmean(np.array(br), axis=0) if np.isfinite(br).any() else np.nan
    return out


def octahedra_3d(symbols: Sequence[str] | np.ndarray, lattice: np.ndarray, positions: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """3-D octahedral geometry of every Pb, seen along the three cube axes, averaged over snapshots.

    For each Pb (i, j, k) and each of its six Pb→X bonds along axis α, the bond tilt in a projection
    along β ≠ α is the angle between the bond and the local Pb-Pb vector along α, both projected on
    the plane normal to β. Angles are computed per snapshot and their magnitudes averaged (a
    time-averaged structure would hide dynamic tilts).

    Returns
    -------
    octahedra : pandas.DataFrame
        Per Pb: ``i``, ``j``, ``k``, ``shell`` (3-D, 0 = outermost layer of octahedra), ``theta3_z_deg``,
        ``theta3_x_deg``, ``theta3_y_deg`` (θ3 in projections along z, x, y), ``theta3_deg`` (their mean),
        ``n_Br`` (Br among its six X).
    bonds : pandas.DataFrame
        Per Pb-X bond and projection: ``pb`` (row of ``octahedra``), ``halide`` (I/Br), ``axis``,
        ``view``, ``tilt_deg``, ``length_A`` (3-D), ``shell``.
    """
    sym = np.asarray(symbols).astype(str)
    pos = np.asarray(positions, float)
    if pos.ndim == 2:
        pos = pos[None]
    l2 = np.rint(2 * np.asarray(lattice, float)).astype(np.int64)
    key = (l2[:, 0] + 1000) * 10**8 + (l2[:, 1] + 1000) * 10**4 + (l2[:, 2] + 1000)
    order = np.argsort(key)
    skey = key[order]

    def lookup(k: np.ndarray) -> np.ndarray:
        p = np.clip(np.searchsorted(skey, k), 0, len(skey) - 1)
        return np.where(skey[p] == k, order[p], -1)

    def k3(v: np.ndarray) -> np.ndarray:
        return (v[:, 0] + 1000) * 10**8 + (v[:, 1] + 1000) * 10**4 + (v[:, 2] + 1000)

    pb_idx = np.flatnonzero(sym == "Pb")
    pl = l2[pb_idx]
    lo, hi = pl.min(0), pl.max(0)
    shell = (np.minimum(pl - lo, hi - pl).min(1) // 2).astype(int)
    theta_views = {}
    bond_rows = []
    n_br = np.zeros(len(pb_idx), int)
    for view in range(3):
        phis = []
        for axis in range(3):
            if axis == view:
                continue
            e = np.zeros(3, np.int64)
            e[axis] = 2
            plus, minus = lookup(k3(pl + e)), lookup(k3(pl - e))
            ref = np.where((plus >= 0)[None, :, None] & (minus >= 0)[None, :, None],
                           (pos[:, np.maximum(plus, 0)] - pos[:, np.maximum(minus, 0)]) / 2.0,
                           np.where((plus >= 0)[None, :, None], pos[:, np.maximum(plus, 0)] - pos[:, pb_idx],
                                    pos[:, pb_idx] - pos[:, np.maximum(minus, 0)]))
            keep = [a for a in range(3) if a != view]
            for sign in (1, -1):
                x = lookup(k3(pl + sign * e // 2))
                ok = x >= 0
                v = pos[:, np.maximum(x, 0)] - pos[:, pb_idx]
                ang = _angle_deg(v[..., keep], sign * ref[..., keep]).mean(0)
                ang = np.where(ok, ang, np.nan)
                phis.append(ang)
                length = np.linalg.norm(v, axis=-1).mean(0)
                hal = np.where(ok, sym[np.maximum(x, 0)], "")
                if view == (axis + 1) % 3:  # count each halide once
                    n_br += (hal == "Br")
                bond_rows.append(pd.DataFrame({
                    "pb": np.arange(len(pb_idx))[ok], "halide": hal[ok], "axis": "xyz"[axis], "view": "xyz"[view],
                    "tilt_deg": ang[ok], "length_A": length[ok], "shell": shell[ok],
                }))
        theta_views["xyz"[view]] = np.nanmean(np.array(phis), axis=0)
    octa = pd.DataFrame({"i": pl[:, 0] / 2.0, "j": pl[:, 1] / 2.0, "k": pl[:, 2] / 2.0, "shell": shell})
    for v in "zxy":
        octa[f"theta3_{v}_deg"] = theta_views[v]
    octa["theta3_deg"] = octa[["theta3_z_deg", "theta3_x_deg", "theta3_y_deg"]].mean(axis=1)
    octa["n_Br"] = n_br
    return octa, pd.concat(bond_rows, ignore_index=True)
