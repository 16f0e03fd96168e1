"""The simulator's dose, checked: weak-phase model vs multislice with Poisson-counted detector signals.

    python experiments/validation/dose_check.py --defocus 21 --seeds 16 --out experiments/validation/results/dose_check_focus21.json
    python experiments/validation/dose_check.py --defocus 0 --seeds 16 --out experiments/validation/results/dose_check_focus0.json

Specimen: the ``+simulation=multislice_crop`` window of the default CsPbI3 cube (20 Å × 20 Å over a
corner of the particle, 0.25 Å/px, 2 MD snapshots, potential sampling 0.125 Å). One abTEM multislice
run with a pixelated detector (``max_angle="valid"``, ≈ 52 mrad) gives the mean diffraction pattern at
every probe position (cached in ``~/.cache/octascope/dose-check/<key>/``, ≈ 0.5 GB, ≈ 15 min on a
CPU core the first time); from it:

- iCoM: the centre of mass of the pattern; noise by sampling the pattern itself at the dose (Poisson
  counts in every detector pixel, CoM of the counts), and by the library's moment-based draw
  (:func:`octascope.sim.noise.counted_com`) for comparison;
- iDPC: the four quadrants (inner 0, outer 1.05 α as ``detector_outer_mrad: null``) summed from the
  pattern; CoM = π k_α/(2√2) (S₊ - S₋ - vacuum); noise by Poisson counts of the segments;
- the old iDPC model (outer edge at α, divided by the counts of each position, scale π k_α/4) for
  the "before" ratio.

The weak-phase images of the same window and snapshots come from :func:`octascope.sim.imaging.simulate_image`,
projected (the default) and ``depth_resolved`` at the multislice's focus (``--defocus``, Å below the
cell's entrance surface, which lies 2 Å above the particle; 21 Å is mid-particle).
Signal transfer: the cross-spectrum of the CoM fields, Re⟨F_ms F_wp*⟩ / ⟨|F_wp|²⟩, in bands of |q|
(Hann-windowed, both components); the integrated images have the same ratio (integration divides
both by 2π i q). Noise: the power spectrum of (noisy - clean) CoM over the seeds, multislice-counted
over weak-phase Gaussian (the vacuum formula), per band, and the per-pixel variance.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

WINDOW = (12.0, 12.0, 32.0, 32.0)
IMAGING = dict(mode="multislice", signal="icom", pixel_size_A=0.25, scan_window_A=WINDOW, window_padding_A=8.0,
               sampling_A=0.125, max_snapshots=2, device="cpu")
BANDS = [(0.1, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.1), (1.1, 1.3), (1.3, 1.5)]


def specimen(defocus_A: float = 0.0):
    """Symbols, the two imaged snapshots (2, N, 3) and the plan of the crop (probe focused ``defocus_A``
    below the cell's entrance surface, 2 Å above the particle)."""
    from octascope.sim.simulation import md_step, plan_simulation
    from octascope.sim.structure import build_nanocube

    plan = plan_simulation(imaging=dict(IMAGING, defocus_A=defocus_A) if defocus_A else IMAGING)
    atoms = build_nanocube(plan.structure)
    _, traj, _ = md_step(atoms, plan.keys["structure"], None, progress=False)
    pos = traj.positions[np.linspace(0, len(traj.positions) - 1, 2).round().astype(int)]
    return np.array(atoms.get_chemical_symbols(), dtype=object), pos, plan


def patterns(sym, pos, plan, cache_dir: Path | None = None):
    """Mean diffraction patterns (H, W, Kx, Ky) of the window, their coordinates (kx, ky) [1/Å] and the vacuum pattern."""
    import abtem
    from ase import Atoms

    from octascope.sim import imaging as im

    key = hashlib.sha256(json.dumps({"imaging": plan.image_params, "md": plan.keys["md"], "v": 1}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    out = (cache_dir or Path.home() / ".cache" / "octascope") / "dose-check" / key
    out.mkdir(parents=True, exist_ok=True)
    opts = plan.imaging
    p = opts.pixel_size_A
    frame, n_px = im.make_frame(pos, pixel_size_A=p, field_of_view_A=None, margin_A=opts.margin_A, scan_rotation_deg=0.0)
    frame, geom = im._scan_geometry(frame, n_px, opts)
    frames, _, _ = im._specimen(sym, pos, frame, geom, None, opts)
    m = max(1, int(np.ceil(p / opts.sampling_A - 1e-9)))
    ny, nx = geom.cell_shape
    (c0, r0), (h, w) = geom.scan_in_cell, geom.window_shape
    probe = abtem.Probe(energy=opts.energy_eV, semiangle_cutoff=opts.semiangle_mrad, device="cpu",
                        aberrations={"C10": -opts.defocus_A} if opts.defocus_A else None)
    acc = None
    for s, a in enumerate(frames):
        f = out / f"snap{s}.npy"
        if not f.exists():
            t0 = time.time()
            pot = abtem.Potential(a, gpts=(nx * m, ny * m), slice_thickness=opts.slice_thickness_A, device="cpu")
            scan = abtem.GridScan(start=(c0 * p, r0 * p), end=((c0 + w) * p, (r0 + h) * p), gpts=(w, h), endpoint=False)
            with abtem.config.set({"diagnostics.progress_bar": False}):
                meas = probe.scan(pot, scan=scan, detectors=abtem.PixelatedDetector(max_angle="valid")).compute(num_workers=1)
            np.save(f, np.asarray(meas.array, np.float32))
            kx, ky = meas.coordinates
            (out / f"snap{s}.json").write_text(json.dumps({"kx": [float(v) for v in kx], "ky": [float(v) for v in ky],
                                                           "seconds": time.time() - t0}))
        arr = np.load(f, mmap_mode="r")
        acc = np.array(arr, np.float64) if acc is None else acc + arr
    meta = json.loads((out / "snap0.json").read_text())
    vac_file = out / "vacuum.npy"
    if not vac_file.exists():
        vacuum = abtem.Potential(Atoms(cell=(nx * p, ny * p, 2.0), pbc=True), gpts=(nx * m, ny * m), slice_thickness=2.0)
        one = abtem.GridScan(start=(0.0, 0.0), end=(p, p), gpts=(1, 1), endpoint=False)
        with abtem.config.set({"diagnostics.progress_bar": False}):
            v = probe.scan(vacuum, scan=one, detectors=abtem.PixelatedDetector(max_angle="valid")).compute().array
        np.save(vac_file, np.asarray(v, np.float64).reshape(len(meta["kx"]), len(meta["ky"])))
    mean = (acc / len(frames)).transpose(1, 0, 2, 3)  # [y, x, kx, ky]
    return mean, np.asarray(meta["kx"]), np.asarray(meta["ky"]), np.load(vac_file)


def radial_bands(shape, p):
    """|q| [1/Å] of the FFT grid of an image (H, W) at pixel size p."""
    qy = np.fft.fftfreq(shape[0], d=p)[:, None]
    qx = np.fft.fftfreq(shape[1], d=p)[None, :]
    return np.hypot(qx, qy)


def hann(shape):
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1]))


def spectra(field):
    """Hann-windowed FFTs of the two components of a (2, H, W) field (mean removed)."""
    win = hann(field.shape[1:])
    return np.stack([np.fft.fft2((c - c.mean()) * win) for c in field])


def band_ratio(num, den, q):
    out = []
    for lo, hi in BANDS:
        sel = (q >= lo) & (q < hi)
        out.append(float(np.sum(num[:, sel]).real / np.sum(den[:, sel]).real))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doses", type=float, nargs="+", default=[300.0, 1000.0])
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--defocus", type=float, default=0.0, help="probe focus below the cell's entrance surface [Å]")
    ap.add_argument("--compute-only", action="store_true", help="only compute (cache) the multislice patterns")
    ap.add_argument("--out", default="experiments/validation/results/dose_check.json")
    args = ap.parse_args()

    from octascope.sim.imaging import (SimulatedImage, bright_field_radius, dpc_com_scale, quadrant_masks,
                                       simulate_image)
    from octascope.sim.noise import com_noise_sigma, counted_com

    sym, pos, plan = specimen(args.defocus)
    pat, kx, ky, vac = patterns(sym, pos, plan)
    if args.compute_only:
        return
    lam = 0.019687
    p = 0.25
    h, w = pat.shape[:2]
    k_a = bright_field_radius(300e3, 29.9)
    KX, KY = np.meshgrid(kx, ky, indexing="ij")
    tot = pat.sum((-2, -1))
    com_ms = np.stack([(pat * KX).sum((-2, -1)) / tot, (pat * KY).sum((-2, -1)) / tot])
    moments = np.stack([tot, (pat * KX**2).sum((-2, -1)) / tot, (pat * KY**2).sum((-2, -1)) / tot,
                        (pat * KX * KY).sum((-2, -1)) / tot])
    scale = dpc_com_scale(300e3, 29.9)
    results: dict = {"window_A": list(WINDOW), "pixel_size_A": p, "n_snapshots": 2, "pattern_shape": list(pat.shape),
                     "k_alpha": k_a, "bands": BANDS, "captured_mean": float(tot.mean()), "captured_min": float(tot.min())}
    seg_sets = {}
    for label, outer in (("outer_1.05a", 1.05 * 29.9), ("outer_a", 29.9)):
        masks = quadrant_masks(KX, KY, lam, 0.0, outer)
        seg = np.einsum("yxij,bij->byx", pat, masks)
        seg0 = np.einsum("ij,bij->b", vac, masks)
        seg_sets[label] = (seg, seg0)
    seg, seg0 = seg_sets["outer_1.05a"]
    dpc_ms = scale * np.stack([seg[0] - seg[2] - (seg0[0] - seg0[2]), seg[1] - seg[3] - (seg0[1] - seg0[3])])
    seg_a, _ = seg_sets["outer_a"]
    old_ms = np.pi * k_a / 4 * np.stack([(seg_a[0] - seg_a[2]) / seg_a.sum(0), (seg_a[1] - seg_a[3]) / seg_a.sum(0)])

    kw = dict(pixel_size_A=p, scan_window_A=WINDOW, sampling_A=0.125, max_snapshots=2)
    wp = {sig: simulate_image(sym, pos, mode="weak_phase", signal=sig, **kw) for sig in ("icom", "idpc")}
    wpd = {sig: simulate_image(sym, pos, mode="weak_phase", signal=sig, depth_resolved=True, defocus_A=args.defocus, **kw)
           for sig in ("icom", "idpc")}
    assert wp["icom"].com.shape == com_ms.shape, (wp["icom"].com.shape, com_ms.shape)
    q = radial_bands((h, w), p)
    f_wp = {s: spectra(np.asarray(wp[s].com, float)) for s in wp}
    f_wpd = {s: spectra(np.asarray(wpd[s].com, float)) for s in wpd}
    f_ms = {"icom": spectra(com_ms), "idpc": spectra(dpc_ms), "idpc_old": spectra(old_ms)}
    transfer = {
        "icom": band_ratio(f_ms["icom"] * np.conj(f_wp["icom"]), np.abs(f_wp["icom"]) ** 2, q),
        "idpc": band_ratio(f_ms["idpc"] * np.conj(f_wp["idpc"]), np.abs(f_wp["idpc"]) ** 2, q),
        # against the depth-resolved weak-phase model at the multislice's focus
        "icom_vs_depth_resolved": band_ratio(f_ms["icom"] * np.conj(f_wpd["icom"]), np.abs(f_wpd["icom"]) ** 2, q),
        "idpc_vs_depth_resolved": band_ratio(f_ms["idpc"] * np.conj(f_wpd["idpc"]), np.abs(f_wpd["idpc"]) ** 2, q),
        "depth_resolved_vs_projected_icom": band_ratio(f_wpd["icom"] * np.conj(f_wp["icom"]), np.abs(f_wp["icom"]) ** 2, q),
        # before: the old multislice iDPC against the old weak-phase iDPC (= the CoM image)
        "idpc_old_vs_old_weak_phase": band_ratio(f_ms["idpc_old"] * np.conj(f_wp["icom"]), np.abs(f_wp["icom"]) ** 2, q),
        # the quadrant transfer against the CoM's in the weak-phase model (new / old weak-phase iDPC)
        "weak_phase_idpc_vs_icom": band_ratio(f_wp["idpc"] * np.conj(f_wp["icom"]), np.abs(f_wp["icom"]) ** 2, q),
    }
    def corr_of(a, b):
        return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])

    corr = {s: corr_of(com_ms if s == "icom" else dpc_ms, wp[s].com) for s in ("icom", "idpc")}
    corr.update({f"{s}_vs_depth_resolved": corr_of(com_ms if s == "icom" else dpc_ms, wpd[s].com) for s in ("icom", "idpc")})
    results.update(transfer=transfer, com_correlation=corr, defocus_A=args.defocus)
    noise: dict = {}
    for dose in args.doses:
        n_e = dose * p**2
        rng = np.random.default_rng(0)
        acc = {k: np.zeros((2, h, w)) for k in ("icom_sampled", "icom_moments", "idpc_counted", "icom_wp", "idpc_wp")}
        var_px = {k: np.zeros((2, h, w)) for k in acc}
        sig_wp = {s: com_noise_sigma(signal=s, dose_e_per_A2=dose, pixel_size_A=p) for s in ("icom", "idpc")}
        sim_icom = SimulatedImage(com=com_ms, image=np.zeros((h, w)), pixel_size_A=p, signal="icom",
                                  frame=wp["icom"].frame, info={}, detector=moments)
        sim_idpc = SimulatedImage(com=dpc_ms, image=np.zeros((h, w)), pixel_size_A=p, signal="idpc",
                                  frame=wp["idpc"].frame, info={"detector_vacuum": list(seg0)}, detector=seg)
        for s in range(args.seeds):
            counts = rng.poisson(n_e * pat)
            m = counts.sum((-2, -1)).astype(float)
            m_safe = np.where(m > 0, m, 1.0)
            sampled = np.stack([(counts * KX).sum((-2, -1)) / m_safe, (counts * KY).sum((-2, -1)) / m_safe])
            draws = {"icom_sampled": sampled - com_ms,
                     "icom_moments": counted_com(sim_icom, com_ms, moments, n_e, rng) - com_ms,
                     "idpc_counted": counted_com(sim_idpc, dpc_ms, seg, n_e, rng) - dpc_ms,
                     "icom_wp": rng.normal(0.0, sig_wp["icom"], (2, h, w)),
                     "idpc_wp": rng.normal(0.0, sig_wp["idpc"], (2, h, w))}
            for k, d in draws.items():
                acc[k] += np.abs(spectra(d)) ** 2
                var_px[k] += d**2
        nps = {k: band_ratio(acc[k], acc["icom_wp" if k.startswith("icom") else "idpc_wp"], q)
               for k in ("icom_sampled", "icom_moments", "idpc_counted")}
        nps["icom_moments_vs_sampled"] = band_ratio(acc["icom_moments"], acc["icom_sampled"], q)
        variance = {k: float(v.mean() / args.seeds) for k, v in var_px.items()}
        vac_px = tot > 0.999  # no electron scattered beyond the detector: vacuum or nearly
        noise[str(dose)] = {"nps_ratio_ms_over_wp": nps, "variance_per_component": variance,
                            "variance_formula": {s: sig_wp[s] ** 2 for s in sig_wp},
                            "n_vacuum_pixels": int(vac_px.sum()),
                            "variance_vacuum_pixels": {k: float((var_px[k][:, vac_px]).mean() / args.seeds)
                                                       for k in ("icom_sampled", "idpc_counted")}}
    results["noise"] = noise
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    bands = " | ".join(f"{lo:.1f}–{hi:.1f}" for lo, hi in BANDS)
    print(f"| ratio | {bands} |")
    for k, v in transfer.items():
        print(f"| transfer {k} | " + " | ".join(f"{x:.3f}" for x in v) + " |")
    for dose, d in noise.items():
        for k, v in d["nps_ratio_ms_over_wp"].items():
            print(f"| NPS {k} @ {dose} | " + " | ".join(f"{x:.3f}" for x in v) + " |")
        print(dose, "variance", d["variance_per_component"], "formula", d["variance_formula"],
              "vacuum px", d["n_vacuum_pixels"], d["variance_vacuum_pixels"])
    print("CoM correlation", corr, "captured mean/min", results["captured_mean"], results["captured_min"])
    print("wrote", out)


if __name__ == "__main__":
    main()
