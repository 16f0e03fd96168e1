"""Precision benchmark: where the position error comes from, and how close each locator gets to the
Cramér-Rao bound.

Usage::

    python experiments/benchmarks/precision.py --out experiments/benchmarks/results/precision.md
    python experiments/benchmarks/precision.py --images static --doses clean,300 --seeds 0 --no-atomap   # smoke

Images (``octascope.sim``, cached in ``~/.cache/octascope``), weak-phase iDPC at 0.2 Å/px of the default
3.8 nm CsPbI3 cube (``conf/source/simulated.yaml``):

- ``static``: the built orthorhombic structure (a⁻a⁻c⁺ tilts 6/6/9°), no MD (``source.run_md=false``):
  every column's atoms are exactly aligned, so the image peak *is* the true position and the
  noise-free error is the locator's own bias (a).
- ``multislice`` (not in the default ``--images``): abTEM multislice iDPC of a 20 Å corner crop of the
  MD particle (``+simulation=multislice_crop``, 0.25 Å/px, 2 snapshots; cached); noise-free only is
  useful (at 100-1,000 e/Å² the crop's 36 columns are refused by the classifier).
- ``md``: 10 snapshots of the ReaxFF MD at 300 K averaged (the accuracy benchmark's ``cspbi3``):
  the noise-free error adds the physics (b), the image peak vs the mean atom position of a column.

Doses ``clean``, 1000, 300, 100 e/Å² with ``--seeds`` noise seeds. Methods, all after the same
classifier (``lattice``) and network (``nearest``): ``gaussian`` (the default locator), ``refine``
(gaussian then :func:`octascope.analysis.refine.refine_columns`, ``refine.enabled=true refine.domain=gradient``:
the whitened fit on the image's gradient), ``refine-image`` (the same fit on the pixels,
``refine.enabled=true``, the option's default) and ``atomap``
(``locator=atomap``, the real Atomap; first seed only unless ``--atomap-seeds``).

Columns: position RMSE per species [pm] (2-D, over matched columns), θ error = mean(|Δθ1|, |Δθ2|)
over matched non-edge octahedra [deg], L error = mean(|ΔL1|, |ΔL2|) [pm], the noise part
√(RMSE² − RMSE_clean²) [pm] and the Cramér-Rao bound of the 2-D position error (√2 × the
one-coordinate bound) for the column model of each species, with the *exact* noise power spectrum
of the simulated noise (mean |FFT(noisy − clean)|² over the seeds) and the refinement's profile and
median amplitude of that species on the clean image; ms per column of the locating step
(refine: locator + refinement).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402

SPECIES = ("Pb", "X", "Cs")
IMAGES = {
    "static": ["source=simulated", "source.run_md=false"],
    "md": ["source=simulated", "source.imaging.max_snapshots=10"],
    "multislice": ["source=simulated", "+simulation=multislice_crop"],
}
REFINE = {"enabled": True}


def simulate_image(image: str, dose: str, seed: int):
    sys.path.insert(0, str(Path(__file__).parent))
    from accuracy import compose

    from octascope.sim.simulation import simulate

    d = "null" if dose == "clean" else str(float(dose))
    src = compose([*IMAGES[image], f"source.noise.dose_e_per_A2={d}", f"source.noise.seed={seed}",
                   "source.progress=false"])["source"]
    for k in ("kind", "path", "pixel_size_A", "frame", "signal_index", "signal", "signal_type", "truth_path",
              "truth_octahedra_path", "name"):
        src.pop(k, None)
    return simulate(**src)


def run_method(sim, method: str) -> dict:
    from octascope import analyze

    kw = dict(truth=sim.truth, metrics=["octahedral", "accuracy"], progress=None)
    if method == "atomap":
        kw["locator"] = "atomap"
    if method == "refine":
        kw["refine"] = dict(REFINE, domain="gradient")
    if method == "refine-image":
        kw["refine"] = dict(REFINE, domain="image")
    t0 = time.perf_counter()
    try:
        res = analyze(sim.image, **kw)
    except Exception as exc:  # a failure is a row
        return {"error": f"{type(exc).__name__}: {str(exc)[:120]}"}
    s = res.scalars
    n = max(1, len(res.columns))
    t_loc = sum(v for k, v in res.timings_s.items() if k.startswith("locator:") or k == "refine")
    out = {f"rmse_{sp}": s.get(f"rmse_pm_{sp}", np.nan) for sp in SPECIES}
    out["theta"] = s.get("theta_mae_deg", np.nan)
    out["L"] = np.nanmean([s.get("L1_mae_pm", np.nan), s.get("L2_mae_pm", np.nan)])
    out["ms_per_col"] = 1e3 * t_loc / n
    cols = res.columns
    for sp in SPECIES:  # the fit's own 2-D uncertainty (median over the species' columns) [pm]
        e = np.hypot(cols["x_err_A"].to_numpy(float), cols["y_err_A"].to_numpy(float))[cols["species"].astype(str) == sp]
        out[f"unc_{sp}"] = float(np.nanmedian(e) * 100) if np.isfinite(e).any() else np.nan
    out["wall_s"] = time.perf_counter() - t0
    out["columns"] = res.columns
    return out


def exact_crb_pm(sim, step_A: float = 0.02) -> dict:
    """Cramér-Rao bound of the 2-D position error [pm] at a dose of 1 e/Å² (scale by 1/√dose) for one
    core column of each species of a *static* simulation, computed exactly in the CoM domain.

    The iDPC image is the integral of the measured CoM field, whose shot noise is white with the σ
    of :func:`octascope.sim.noise.com_noise_sigma` (the integration only discards the curl part of
    the noise, which carries no signal, so the Fisher information is the same). The derivative of the
    noise-free CoM field with respect to a column's x position is a central difference of two
    weak-phase simulations with that column's atoms moved by ±``step_A``; the bound assumes the
    other columns, the amplitude and the background known (x is orthogonal to them for a
    centrosymmetric column) and equal x and y bounds.
    """
    from octascope.sim.imaging import simulate_image
    from octascope.sim.noise import com_noise_sigma

    meta = sim.truth.metadata
    ipar = dict(meta["imaging"])
    for k in list(ipar):
        if k not in ("mode", "signal", "pixel_size_A", "margin_A", "scan_rotation_deg", "energy_eV",
                     "semiangle_mrad", "defocus_A", "sampling_A", "slice_thickness_A", "detector_inner_mrad",
                     "detector_outer_mrad"):
            ipar.pop(k)
    ipar["field_of_view_A"] = sim.clean.frame.field_of_view_A
    symbols = np.array(sim.atoms.get_chemical_symbols(), dtype=object)
    pos = sim.atoms.get_positions()
    pos = pos - pos.mean(0)
    xy_img = sim.clean.frame.to_image(pos[:, :2])
    t = sim.truth.columns
    centre = np.array(sim.image.shape[::-1]) * sim.image.pixel_size_A / 2
    sigma = com_noise_sigma(signal=sim.clean.signal, dose_e_per_A2=1.0, pixel_size_A=sim.image.pixel_size_A,
                            energy_eV=ipar.get("energy_eV", 300e3), semiangle_mrad=ipar.get("semiangle_mrad", 29.9),
                            detector_inner_mrad=ipar.get("detector_inner_mrad", 0.0) or 0.0,
                            detector_outer_mrad=ipar.get("detector_outer_mrad"))
    out = {}
    for sp in SPECIES:
        ts = t[t["species"] == sp]
        k = int(np.argmin(np.hypot(ts["x_A"] - centre[0], ts["y_A"] - centre[1])))
        cxy = ts[["x_A", "y_A"]].to_numpy(float)[k]
        atoms = np.hypot(*(xy_img - cxy).T) < 0.4
        coms = []
        for sgn in (1, -1):
            p = pos.copy()
            p[atoms, 0] += sgn * step_A
            coms.append(simulate_image(symbols, p[None], **ipar).com)
        d = (coms[0] - coms[1]) / (2 * step_A)  # per Å
        fisher = float((d**2).sum()) / sigma**2
        out[sp] = float(np.sqrt(2.0 / fisher) * 100)
    return out


def fmt(v, d=1):
    return "—" if v is None or not np.isfinite(v) else f"{v:.{d}f}"


def agg(rows, key):
    v = np.array([r.get(key, np.nan) for r in rows if "error" not in r], float)
    return float(np.nanmean(v)) if v.size and np.isfinite(v).any() else np.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="static,md")
    ap.add_argument("--doses", default="clean,1000,300,100")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--atomap-seeds", default="0")
    ap.add_argument("--no-atomap", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    seeds = [int(s) for s in args.seeds.split(",")]
    a_seeds = [int(s) for s in args.atomap_seeds.split(",")]
    methods = ["gaussian", "refine", "refine-image"] + ([] if args.no_atomap else ["atomap"])
    lines = []
    t_all = time.perf_counter()
    budget = []
    crb_1 = None
    for image in args.images.split(","):
        clean = simulate_image(image, "clean", 0)
        ps = clean.image.pixel_size_A
        results: dict = {}
        for dose in args.doses.split(","):
            for method in methods:
                ss = [0] if dose == "clean" else (a_seeds if method == "atomap" else seeds)
                results[(dose, method)] = []
                for seed in ss:
                    sim = clean if dose == "clean" else simulate_image(image, dose, seed)
                    r = run_method(sim, method)
                    results[(dose, method)].append(r)
                    print(image, dose, method, seed, {k: (round(v, 2) if isinstance(v, float) else v)
                                                       for k, v in r.items() if k != "columns"}, flush=True)
        # Cramér-Rao bound, exact in the CoM domain, for the static structure's columns (the MD image's
        # blurred columns carry less information: for it this is a lower bound)
        if crb_1 is None:
            crb_1 = exact_crb_pm(clean if image == "static" else simulate_image("static", "clean", 0))
        crb = {dose: {sp: v / np.sqrt(float(dose)) for sp, v in crb_1.items()}
               for dose in args.doses.split(",") if dose != "clean"}
        lines.append(f"\n### {image}\n")
        lines.append("| dose [e/Å²] | method | runs | RMSE Pb | RMSE X | RMSE Cs | noise part Pb | noise part X | noise part Cs "
                     "| CRB Pb | CRB X | CRB Cs | fit σ Pb/X/Cs | θ err [deg] | L err [pm] | ms/column |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for dose in args.doses.split(","):
            for method in methods:
                rows = results[(dose, method)]
                ok = [r for r in rows if "error" not in r]
                c = {sp: agg(results[("clean", method)], f"rmse_{sp}") if ("clean", method) in results else np.nan
                     for sp in SPECIES}
                rm = {sp: agg(rows, f"rmse_{sp}") for sp in SPECIES}
                noise = {sp: (np.sqrt(max(rm[sp] ** 2 - c[sp] ** 2, 0.0)) if dose != "clean" else np.nan) for sp in SPECIES}
                cb = crb.get(dose, {})
                err = "; ".join(sorted({r["error"] for r in rows if "error" in r}))
                lines.append(f"| {dose} | {method} | {len(ok)}/{len(rows)} | " + " | ".join(fmt(rm[sp]) for sp in SPECIES)
                             + " | " + " | ".join(fmt(noise[sp]) for sp in SPECIES)
                             + " | " + " | ".join(fmt(cb.get(sp)) for sp in SPECIES)
                             + " | " + "/".join(fmt(agg(rows, f"unc_{sp}")) for sp in SPECIES)
                             + f" | {fmt(agg(rows, 'theta'), 2)} | {fmt(agg(rows, 'L'))} | {fmt(agg(rows, 'ms_per_col'), 2)} |"
                             + (f" {err}" if err else ""))
                budget.append((image, dose, method, rm, noise, cb, agg(rows, "theta")))
    text = "\n".join(lines)
    head = (f"# Precision benchmark\n\nCommand: `python experiments/benchmarks/{Path(__file__).name} "
            + " ".join(sys.argv[1:]) + f"`\n\n{time.perf_counter() - t_all:.0f} s in all. RMSE, noise part "
            "√(RMSE² − RMSE_clean²) and CRB (√2 × one-coordinate Cramér-Rao bound, exact noise model) are 2-D "
            "position errors in pm (the CRB: exact, in the CoM domain, for a core column of each species of the static "
            "structure, see `exact_crb_pm`); noise seeds " + args.seeds + (f" (atomap: {args.atomap_seeds})" if not args.no_atomap else "") + ".\n")
    print(head + text)
    if args.out:
        Path(args.out).write_text(head + text + "\n")


if __name__ == "__main__":
    main()
