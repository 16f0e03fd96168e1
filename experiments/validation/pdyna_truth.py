"""octascope's truth tilts checked by an independent implementation, PDynA (``pip install pdyna``, MIT).

    python experiments/validation/pdyna_truth.py [--snapshot -1] [--all] [--out experiments/validation/results/pdyna_truth.json]

One MD snapshot of the default CsPbI3 cube (3.8 nm, 216 PbI6 octahedra; the cached trajectory of
``octascope.sim.simulation.simulate()`` with the default config) is padded with 15 Å of vacuum on
every side and written as a POSCAR; PDynA's ``Frame`` finds each Pb's six I, fits the rotation of the
ideal octahedron to the six Pb→I bond vectors (Kabsch) and reports it as Euler angles 'xyz' [deg].
Its rotation about z (the beam) is compared per octahedron with octascope's truth θ3 along z
(:func:`octascope.sim.truth.octahedra_3d`: the mean over the four in-plane bonds of the unsigned
angle between the projected bond and the local Pb–Pb lattice direction).

Besides |PDynA z|, two octascope-side quantities built from the same bonds separate the
definitions: ``signed_local`` (the signed mean rotation of the four in-plane bonds about z against
the local Pb–Pb directions, whose magnitude differs from θ3 only by bond-to-bond scatter) and
``signed_global`` (against the fixed x, y axes, PDynA's frame). Shell: 0 = the outermost layer of
octahedra (3-D).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pandas as pd


def import_pdyna():
    """PDynA's ``Frame``; PDynA 1.1.1 reads its version with ``pkg_resources``, gone from setuptools ≥ 81,
    so a stand-in that answers from ``importlib.metadata`` is put in first when it is missing."""
    import importlib.metadata as md

    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")
        shim.DistributionNotFound = md.PackageNotFoundError  # type: ignore[attr-defined]
        shim.get_distribution = lambda name: types.SimpleNamespace(version=md.version(name))  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    from pdyna.core import Frame

    return Frame


def default_trajectory():
    from octascope.sim.simulation import md_step, plan_simulation
    from octascope.sim.structure import build_nanocube

    plan = plan_simulation()
    atoms = build_nanocube(plan.structure)
    _, traj, _ = md_step(atoms, plan.keys["structure"], None, progress=False)
    return traj


def pdyna_tilts(symbols: np.ndarray, positions: np.ndarray, padding_A: float = 15.0) -> tuple[np.ndarray, np.ndarray]:
    """PDynA's per-octahedron Euler angles 'xyz' [deg] (n_Pb, 3) and the Pb positions it used (n_Pb, 3) [Å]."""
    from ase import Atoms
    from ase.io import write

    Frame = import_pdyna()
    pos = positions - positions.min(0) + padding_A
    cell = np.diag(pos.max(0) + padding_A)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "POSCAR"
        write(path, Atoms(symbols=list(symbols), positions=pos, cell=cell, pbc=True), format="vasp")
        with contextlib.redirect_stdout(io.StringIO()):
            frame = Frame(data_format="poscar", data_path=str(path))
            try:
                frame.analysis(uniname="octascope-truth", saveFigures=False)
            except Exception:  # the tilt-correlation part after the tilts can fail on a cluster; the tilts are set
                if not hasattr(frame, "Tilting"):
                    raise
    import matplotlib.pyplot as plt

    plt.close("all")  # PDynA draws its distributions with pyplot
    b_pos = frame.st0.cart_coords[frame.Bindex] - padding_A + positions.min(0)
    return np.asarray(frame.Tilting, float), b_pos


def octascope_tilts(symbols: np.ndarray, lattice: np.ndarray, positions: np.ndarray) -> pd.DataFrame:
    """θ3 along z (the truth) and the signed in-plane bond rotations about z, per Pb, from one snapshot (N, 3)."""
    from octascope.sim.truth import octahedra_3d

    octa, _ = octahedra_3d(symbols, lattice, positions[None])
    sym = np.asarray(symbols).astype(str)
    l2 = np.rint(2 * np.asarray(lattice, float)).astype(np.int64)
    index = {tuple(v): i for i, v in enumerate(l2)}
    pb = np.flatnonzero(sym == "Pb")
    local, glob = [], []
    for i in pb:
        c = l2[i]
        ang_l, ang_g = [], []
        for axis, sign in ((0, 1), (0, -1), (1, 1), (1, -1)):
            e = np.zeros(3, np.int64)
            e[axis] = sign
            x = index.get(tuple(c + e))
            if x is None:
                continue
            bond = positions[x, :2] - positions[i, :2]
            plus, minus = index.get(tuple(c + 2 * e)), index.get(tuple(c - 2 * e))
            if plus is not None and minus is not None:
                ref = (positions[plus, :2] - positions[minus, :2]) / 2
            elif plus is not None:
                ref = positions[plus, :2] - positions[i, :2]
            else:
                ref = positions[i, :2] - positions[minus, :2]
            ideal = np.zeros(2)
            ideal[axis] = sign
            for out, r in ((ang_l, ref), (ang_g, ideal)):
                out.append(np.degrees(np.arctan2(r[0] * bond[1] - r[1] * bond[0], r @ bond)))
        local.append(np.mean(ang_l))
        glob.append(np.mean(ang_g))
    octa["signed_local_deg"] = local
    octa["signed_global_deg"] = glob
    octa["x_A"], octa["y_A"], octa["z_A"] = positions[pb, 0], positions[pb, 1], positions[pb, 2]
    return octa


def compare(snapshot: int = -1, traj=None) -> pd.DataFrame:
    """Per octahedron of one snapshot: octascope's θ3_z, signed rotations and PDynA's Euler angles."""
    traj = traj if traj is not None else default_trajectory()
    sym = np.asarray(traj.symbols).astype(str)
    pos = np.asarray(traj.positions[snapshot], float)
    octa = octascope_tilts(sym, traj.lattice, pos)
    tilts, b_pos = pdyna_tilts(sym, pos)
    from scipy.spatial import cKDTree

    d, j = cKDTree(b_pos).query(octa[["x_A", "y_A", "z_A"]].to_numpy())
    if d.max() > 1e-3 or len(set(j)) != len(j):
        raise RuntimeError(f"PDynA's Pb sites do not match octascope's (max distance {d.max():.3g} Å)")
    octa["pdyna_x_deg"], octa["pdyna_y_deg"], octa["pdyna_z_deg"] = tilts[j, 0], tilts[j, 1], tilts[j, 2]
    return octa


def agreement(df: pd.DataFrame) -> dict:
    """RMS difference, correlation and mean offset of θ3_z against |PDynA z| (all, shell 0, shell ≥ 1) and
    of the signed rotations against PDynA z."""
    out: dict = {"n": int(len(df))}
    parts = {"all": np.ones(len(df), bool), "surface": df["shell"].to_numpy() == 0, "interior": df["shell"].to_numpy() >= 1}
    pz = df["pdyna_z_deg"].to_numpy()
    pairs = {"theta3_z_vs_abs_pdyna": (df["theta3_z_deg"].to_numpy(), np.abs(pz)),
             "abs_signed_local_vs_abs_pdyna": (np.abs(df["signed_local_deg"].to_numpy()), np.abs(pz)),
             "signed_local_vs_pdyna": (df["signed_local_deg"].to_numpy(), pz),
             "signed_global_vs_pdyna": (df["signed_global_deg"].to_numpy(), pz)}
    for name, (a, b) in pairs.items():
        for part, sel in parts.items():
            d = a[sel] - b[sel]
            out[f"{name}_{part}"] = {"n": int(sel.sum()), "rms_deg": float(np.sqrt(np.mean(d**2))),
                                     "mean_offset_deg": float(d.mean()), "corr": float(np.corrcoef(a[sel], b[sel])[0, 1]),
                                     "mean_a_deg": float(a[sel].mean()), "mean_b_deg": float(b[sel].mean())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snapshot", type=int, default=-1)
    ap.add_argument("--all", action="store_true", help="also every snapshot of the trajectory")
    ap.add_argument("--out", default="experiments/validation/results/pdyna_truth.json")
    args = ap.parse_args()
    traj = default_trajectory()
    df = compare(args.snapshot, traj)
    res = {"snapshot": args.snapshot, "agreement": agreement(df)}
    for k, v in res["agreement"].items():
        if isinstance(v, dict):
            print(f"{k:>42}: n {v['n']:3d}  RMS {v['rms_deg']:.3f}°  offset {v['mean_offset_deg']:+.3f}°  "
                  f"corr {v['corr']:.3f}  means {v['mean_a_deg']:.2f}° / {v['mean_b_deg']:.2f}°")
    worst = df.assign(diff=df["theta3_z_deg"] - df["pdyna_z_deg"].abs()).sort_values("diff", key=np.abs).tail(5)
    print(worst[["i", "j", "k", "shell", "theta3_z_deg", "signed_local_deg", "signed_global_deg", "pdyna_x_deg",
                 "pdyna_y_deg", "pdyna_z_deg"]].round(2).to_string())
    if args.all:
        per, failed = [], {}
        for s in range(len(traj.positions)):
            try:
                per.append(agreement(compare(s, traj)))
            except ValueError as exc:  # PDynA refuses an octahedron it cannot match to the ideal one
                failed[s] = str(exc)[:160]
        print(f"PDynA analysed {len(per)} of {len(traj.positions)} snapshots; refused: {sorted(failed)}")
        res["all_snapshots_failed"] = failed
        res["all_snapshots"] = {k: {m: float(np.mean([p[k][m] for p in per])) for m in ("rms_deg", "corr", "mean_offset_deg")}
                                for k in per[0] if isinstance(per[0][k], dict)}
        for k, v in res["all_snapshots"].items():
            print(f"all snapshots {k:>42}: RMS {v['rms_deg']:.3f}°  offset {v['mean_offset_deg']:+.3f}°  corr {v['corr']:.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
