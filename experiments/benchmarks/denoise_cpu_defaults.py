"""CPU defaults of the network denoisers: wall time and the quality they cost (issue 13 item 4).

Usage (results: ``experiments/benchmarks/results/denoise-cpu-defaults.md``)::

    python experiments/benchmarks/denoise_cpu_defaults.py --variants dip,dip_previous,s2sred,s2sred_previous

Image: ``octascope.sim`` weak-phase iDPC of a CsPbI3 nanocube (4 cells, no MD), 256 x 256 px at
0.168 Å/px (the paper's sampling), iDPC shot noise at 300 e/Å² (the paper's dose), noise seed 0.
Per variant: PSNR [dB] and SSIM against the clean image (data range of the clean image), wall
and process CPU time of ``denoise`` [s] (CPU time: what an idle machine's wall time would be on the
threads used), iterations run, why the fit stopped, torch threads used, and the
1-minute load average before and after (the machine is shared: times are upper bounds).
Downstream: the default locator (gaussian) on the output, detections matched one-to-one to the
true columns within 0.8 Å: detection F1 and position RMSE [pm] of the matched columns.
Rows are appended to ``--out`` (JSON lines).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
QUIET = {"progress": False, "device": "cpu"}

# label -> (denoiser, parameters). "previous": the defaults before this change, spelled out.
VARIANTS: dict[str, tuple[str, dict]] = {
    "none": ("none", {}),
    "dip": ("dip", QUIET),  # the CPU defaults (conf/denoiser/dip.yaml)
    # before: 32/64 features, 2000 iterations, whitened stop, torch's default threads (2 here)
    "dip_previous": ("dip", {**QUIET, "encoder_width": 32, "decoder_width": 64, "cpu_work_budget": None,
                             "cpu_threads": 0}),
    # before, on one thread (what the thread rule picks on a loaded machine): the quality is the same
    "dip_previous_1t": ("dip", {**QUIET, "encoder_width": 32, "decoder_width": 64, "cpu_work_budget": None,
                                "cpu_threads": 1}),
    "s2sred": ("s2sred", QUIET),  # the CPU defaults (conf/denoiser/s2sred.yaml)
    # before: 300 iterations, 20 MC passes, no early stop, torch's default threads
    "s2sred_previous": ("s2sred", {**QUIET, "n_iterations": 300, "n_mc_passes": 20, "early_stop": False,
                                   "cpu_work_budget": None, "cpu_threads": 0}),
    "s2sred_previous_1t": ("s2sred", {**QUIET, "n_iterations": 300, "n_mc_passes": 20, "early_stop": False,
                                      "cpu_work_budget": None, "cpu_threads": 1}),
}


def simulate_case(dose: float, seed: int, n_cells: int = 4, pixel_size_A: float = 0.168, n_px: int = 256):
    from octascope.sim import simulate

    return simulate(structure={"n_cells": n_cells},
                    imaging={"pixel_size_A": pixel_size_A, "field_of_view_A": n_px * pixel_size_A - 0.01},
                    noise={"dose_e_per_A2": dose, "seed": seed}, run_md=False, progress=False)


def quality(img: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = float(clean.max() - clean.min())
    img = np.asarray(img, float)
    clean = np.asarray(clean, float)
    return (float(peak_signal_noise_ratio(clean, img, data_range=rng)),
            float(structural_similarity(clean, img, data_range=rng)))


def locate_and_match(image, truth_columns, radius_A: float = 0.8) -> dict:
    """Default locator (gaussian) on ``image``; detections matched one-to-one to true columns
    within ``radius_A`` (nearest first): F1 and position RMSE [pm] of the matched columns."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    from octascope.core.registry import get_registry

    found = get_registry().create("locator", "gaussian").locate(image)
    d = cdist(found[["x_A", "y_A"]].to_numpy(float), truth_columns[["x_A", "y_A"]].to_numpy(float))
    big = np.where(d <= radius_A, d, 1e6)
    rows, cols = linear_sum_assignment(big)
    ok = big[rows, cols] < 1e6
    tp = int(ok.sum())
    f1 = 2 * tp / max(1, len(found) + len(truth_columns))
    rmse_pm = float(np.sqrt(np.mean(d[rows[ok], cols[ok]] ** 2)) * 100) if tp else float("nan")
    return {"n_found": int(len(found)), "n_true": int(len(truth_columns)), "f1": f1, "rmse_pm": rmse_pm}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--dose", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "denoise-cpu-defaults.jsonl")
    args = ap.parse_args()
    from octascope.core.registry import get_registry

    sim = simulate_case(args.dose, args.seed)
    image, clean = sim.image, np.asarray(sim.truth.clean, float)
    reg = get_registry()
    for label in args.variants.split(","):
        name, params = VARIANTS[label]
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        out = reg.create("denoiser", name, **params).denoise(image)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        meta = out.metadata.get("denoiser", {})
        psnr, ssim = quality(out.data, clean)
        loc = locate_and_match(out, sim.truth.columns)
        row = {"variant": label, "dose": args.dose, "seed": args.seed, "shape": list(image.shape),
               "psnr_db": psnr, "ssim": ssim, **loc, "wall_s": wall, "cpu_s": cpu, "load_before": load0, "load_after": os.getloadavg()[0],
               **{k: meta.get(k) for k in ("iterations_run", "iterations_planned", "stopped_at", "stop_reason",
                                          "cpu_threads_used", "n_mc_passes", "inference_s", "change_over_noise")}}
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
