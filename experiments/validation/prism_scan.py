"""PRISM against one multislice per probe position, on the multislice crop's own specimen.

    python experiments/validation/prism_scan.py [--signal idpc|icom] [--factors 2,4] [--out FILE.md]

The image of ``conf/simulation/multislice_crop.yaml`` (abTEM multislice iDPC of a 20 × 20 Å corner
of the default CsPbI3 cube, 2 MD snapshots, 0.25 Å/px, potential at 0.125 Å; exact: one multislice
per probe position, from the cache when simulated before; ``--signal icom``: the same window as iCoM
from a pixelated detector, one snapshot, as in ``multislice_full``) is simulated again with
``imaging.prism_interpolation`` = f (abTEM's PRISM S-matrix, the probe in a window of the 36 Å cell's
size / f). Both noise-free images are analysed by the default pipeline. Printed per factor: the
imaging time (recorded with the cached image), the images' correlation and r.m.s. difference over the r.m.s. signal (after the best
common scale, which is printed too), and the columns' position difference [pm] and octahedra's
θ1/θ2 difference [deg] between the two analyses (matched within 0.5 Å).
``conf/simulation/multislice_full.yaml`` uses f = 4 on a 58 Å cell (a 14.5 Å probe window, wider
than this check's 9 Å at f = 4).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CROP = {"mode": "multislice", "signal": "idpc", "pixel_size_A": 0.25, "scan_window_A": [12.0, 12.0, 32.0, 32.0],
        "window_padding_A": 8.0, "sampling_A": 0.125, "max_snapshots": 2, "num_workers": 1, "device": "cpu"}


def analysed(sim):
    from octascope import analyze

    return analyze(sim.image, truth=sim.truth, metrics=[("octahedral", {"figures": False}), "accuracy"], progress=None)


def compare(ref, ra, other) -> dict[str, float]:
    """Images and analyses of ``ref`` (analysed as ``ra``) and ``other`` compared."""
    from octascope_plugins.metric.accuracy import match_points

    a, b = np.asarray(ref.clean.image, float), np.asarray(other.clean.image, float)
    a0, b0 = a - a.mean(), b - b.mean()
    scale = float((a0 * b0).sum() / (a0 * a0).sum())
    out = {"corr": float(np.corrcoef(a0.ravel(), b0.ravel())[0, 1]), "scale": scale,
           "rms_rel": float(np.sqrt(((b0 / scale - a0) ** 2).mean()) / np.sqrt((a0**2).mean()))}
    rb = analysed(other)
    ca, cb = ra.columns, rb.columns
    i, j = match_points(ca[["x_A", "y_A"]].to_numpy(float), cb[["x_A", "y_A"]].to_numpy(float), 0.5)
    d = np.hypot(*(ca[["x_A", "y_A"]].to_numpy(float)[i] - cb[["x_A", "y_A"]].to_numpy(float)[j]).T) * 100
    out |= {"columns_ref": len(ca), "columns": len(cb), "matched": len(i), "dpos_median_pm": float(np.median(d)),
            "dpos_p95_pm": float(np.percentile(d, 95)), "f1_ref": ra.scalars.get("detection_f1", np.nan),
            "f1": rb.scalars.get("detection_f1", np.nan)}
    oa, ob = ra.tables["octahedra"], rb.tables["octahedra"]
    i, j = match_points(oa[["x_A", "y_A"]].to_numpy(float), ob[["x_A", "y_A"]].to_numpy(float), 0.5)
    dt = np.abs(np.r_[oa["theta1_deg"].to_numpy(float)[i] - ob["theta1_deg"].to_numpy(float)[j],
                      oa["theta2_deg"].to_numpy(float)[i] - ob["theta2_deg"].to_numpy(float)[j]])
    out |= {"octahedra": len(i), "dtheta_median_deg": float(np.nanmedian(dt)) if len(dt) else np.nan,
            "dtheta_max_deg": float(np.nanmax(dt)) if len(dt) else np.nan}
    return out


def main(argv: list[str] | None = None) -> int:
    from octascope.sim.simulation import simulate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--signal", choices=("idpc", "icom"), default="idpc")
    ap.add_argument("--factors", default="2,4")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    crop = CROP if args.signal == "idpc" else CROP | {"signal": "icom", "max_snapshots": 1}
    ref = simulate(imaging=crop, noise={"dose_e_per_A2": None}, progress=False)
    ra = analysed(ref)
    lines = [f"signal {args.signal}; exact scan (one multislice per position): imaging "
             f"{float(ref.clean.info.get('seconds', float('nan'))):.0f} s when simulated, image {ref.clean.image.shape}",
             "", "| interpolation | imaging [s] | corr | scale | r.m.s. diff / signal | columns exact / PRISM / matched | "
             "Δposition median / 95 % [pm] | F1 exact / PRISM | octahedra | Δθ1,2 median / max [deg] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for f in (int(v) for v in args.factors.split(",")):
        sim = simulate(imaging=crop | {"prism_interpolation": f}, noise={"dose_e_per_A2": None}, progress=False)
        seconds = float(sim.clean.info.get("seconds", float("nan")))  # the imaging's own time, kept with the cache
        c = compare(ref, ra, sim)
        lines.append(f"| {f} | {seconds:.0f} | {c['corr']:.5f} | {c['scale']:.3f} | {c['rms_rel']:.3f} | "
                     f"{c['columns_ref']} / {c['columns']} / {c['matched']} | {c['dpos_median_pm']:.2f} / "
                     f"{c['dpos_p95_pm']:.2f} | {c['f1_ref']:.3f} / {c['f1']:.3f} | {c['octahedra']} | "
                     f"{c['dtheta_median_deg']:.3f} / {c['dtheta_max_deg']:.3f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"`python experiments/validation/prism_scan.py --signal {args.signal} --factors {args.factors}`"
                            "\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
