"""Denoiser benchmark: image quality, downstream accuracy and wall time on a low-dose image with a clean reference.

Usage::

    python experiments/benchmarks/denoise.py                  # 8 x 8 cells, 257 x 257 px, 400 e/Å²
    python experiments/benchmarks/denoise.py --dose 300 --denoisers none,bm3d,s2sred
    python experiments/benchmarks/denoise.py --quick          # 3 x 3 cells, short training: a smoke run
    python experiments/benchmarks/denoise.py --gpu-paper      # CUDA only: s/iteration of the paper's
                                                              # settings on a 1024 x 1024 image

Every denoiser is timed on its own, scored by the ``denoise-quality`` metric, and its output
is analysed by the rest of the pipeline (``octascope.analyze``: gaussian locator -> lattice
classifier -> nearest network -> octahedral and accuracy metrics) on a synthetic [001] CsPbI3 particle (``octascope.input.synthetic``, Poisson noise) whose clean image,
columns and tilts are known. Printed per denoiser: PSNR and SSIM against the clean image (raw
image for reference), position RMSE of all columns [pm], θ3 tilt error [deg] (mean absolute),
denoiser wall time [s]; for S2SRED also seconds per training iteration. Torch runs on
``--threads`` CPU threads (1 by default: the benchmark machine is shared).

The paper reports ~2.5 h per 1024² image with S2SRED on an RTX 3060 Laptop GPU; ``--gpu-paper``
times ``--gpu-iterations`` iterations with the paper's settings (``conf/denoiser/s2sred_paper.yaml``)
and extrapolates to the configured iteration count.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

PAPER_SECONDS_1024 = 2.5 * 3600.0


def load_yaml_params(name: str) -> dict:
    """Constructor parameters of ``conf/denoiser/<name>.yaml`` (without ``name``)."""
    import yaml

    path = Path(__file__).resolve().parents[2] / "conf" / "denoiser" / f"{name}.yaml"
    params = yaml.safe_load(path.read_text())
    params.pop("name")
    return params


def denoiser_specs(names: list[str], quick: bool, threads: int, s2s_iterations: int | None, dip_iterations: int) -> dict:
    common_torch = {"progress": False, "cpu_threads": threads}
    specs = {
        "none": ("none", {}),
        "absf": ("absf", {}),
        "bm3d": ("bm3d", {}),
        "s2sred": ("s2sred", {**common_torch}),
        "s2s": ("s2sred", {**common_torch, "red": False}),  # plain Self2Self (ablation)
        "dip": ("dip", {**common_torch, "n_iterations": dip_iterations}),
    }
    if quick:
        for key in ("s2sred", "s2s"):
            specs[key][1].update(n_iterations=40, patch_px=32, encoder_width=16, decoder_width=32, n_mc_passes=4,
                                 red_every=20)
        specs["dip"][1].update(n_iterations=min(dip_iterations, 300), encoder_width=16, decoder_width=32)
    if s2s_iterations is not None:
        for key in ("s2sred", "s2s"):
            specs[key][1]["n_iterations"] = s2s_iterations
    unknown = set(names) - set(specs)
    if unknown:
        raise SystemExit(f"unknown denoiser(s) {sorted(unknown)}; choose from {', '.join(specs)}")
    return {k: specs[k] for k in names}


def run_cpu(args: argparse.Namespace) -> None:
    import torch

    import octascope
    from octascope.core.errors import OctascopeError
    from octascope.core.model import Result
    from octascope.input.synthetic import make_synthetic

    torch.set_num_threads(args.threads)
    cells = 3 if args.quick else args.cells
    image, truth = make_synthetic(n_cells=(cells, cells), pixel_size_A=0.25, margin_A=6.9,
                                  dose_e_per_A2=args.dose, rotation_deg=8.0, seed=args.seed)
    print(f"image {image.shape[0]}x{image.shape[1]} px at {image.pixel_size_A} Å/px, {cells}x{cells} cells, "
          f"dose {args.dose:g} e/Å², rotation 8°, torch {torch.__version__} on {args.threads} CPU thread(s)")
    registry = octascope.get_registry()
    specs = denoiser_specs(args.denoisers.split(","), args.quick, args.threads, args.s2s_iterations, args.dip_iterations)
    rows = []
    quality = registry.create("metric", "denoise-quality")
    for label, (name, params) in specs.items():
        denoiser = registry.create("denoiser", name, **params)
        t0 = time.perf_counter()
        denoised = denoiser.denoise(image)
        denoise_s = time.perf_counter() - t0
        q = quality.compute(Result(image=image, denoised=denoised), truth).scalars
        meta = denoised.metadata.get("denoiser", {})
        row = {
            "denoiser": label, "psnr_db": q["denoise_psnr_db"], "ssim": q["denoise_ssim"],
            "rmse_pm": np.nan, "theta3_mae_deg": np.nan, "f1": np.nan, "denoise_s": denoise_s,
            "s_per_it": meta.get("s_per_iteration") or np.nan,
            "iters": meta.get("iterations_run", meta.get("n_iterations", "-")),
        }
        try:  # downstream: the rest of the pipeline on the denoised image
            result = octascope.analyze(denoised, denoiser="none", metrics=["octahedral", "accuracy"],
                                       truth=truth, progress=None)
            row.update(rmse_pm=result.scalars.get("rmse_pm_all", np.nan),
                       theta3_mae_deg=result.scalars.get("theta3_mae_deg", np.nan),
                       f1=result.scalars.get("detection_f1", np.nan))
        except OctascopeError as exc:
            print(f"  {label}: downstream analysis failed: {exc}")
        rows.append(row)
        print(f"  done {label}: {denoise_s:.1f} s", flush=True)
    raw = q
    print(f"\nraw image: PSNR {raw['raw_psnr_db']:.2f} dB, SSIM {raw['raw_ssim']:.3f} (data range {raw['denoise_data_range']:.3f})")
    head = f"{'denoiser':<9}{'PSNR dB':>9}{'SSIM':>7}{'pos RMSE pm':>13}{'θ3 MAE °':>10}{'F1':>6}{'denoise s':>11}{'s/iter':>9}{'iters':>7}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['denoiser']:<9}{r['psnr_db']:>9.2f}{r['ssim']:>7.3f}{r['rmse_pm']:>13.2f}{r['theta3_mae_deg']:>10.3f}"
              f"{r['f1']:>6.3f}{r['denoise_s']:>11.1f}{r['s_per_it']:>9.3f}{r['iters']:>7}")
    base = next((r for r in rows if r["denoiser"] == "none"), None)
    if base is not None:
        print("\nratios to no denoising (position RMSE, θ3 MAE): " + ", ".join(
            f"{r['denoiser']} {r['rmse_pm'] / base['rmse_pm']:.2f}, {r['theta3_mae_deg'] / base['theta3_mae_deg']:.2f}"
            for r in rows if r is not base))


def run_gpu_paper(args: argparse.Namespace) -> None:
    import torch

    from octascope.core.model import Image
    from octascope_plugins.denoise.s2sred import S2SREDDenoiser

    if not torch.cuda.is_available():
        raise SystemExit("--gpu-paper needs a CUDA device; none is available here")
    params = load_yaml_params("s2sred_paper")
    full_iterations = params["n_iterations"]
    params.update(n_iterations=args.gpu_iterations, n_mc_passes=min(params["n_mc_passes"], 20), progress=False,
                  red_every=max(1, args.gpu_iterations // 2))
    rng = np.random.default_rng(0)
    image = Image(data=rng.poisson(5.0, size=(1024, 1024)).astype(np.float32), pixel_size_A=0.168)
    S2SREDDenoiser(**{**params, "n_iterations": 5, "n_mc_passes": 1, "red": False}).denoise(image)  # warm-up
    torch.cuda.synchronize()
    out = S2SREDDenoiser(**params).denoise(image)
    meta = out.metadata["denoiser"]
    per_it = meta["s_per_iteration"]
    per_mc = meta["inference_s"] / params["n_mc_passes"]
    total = per_it * full_iterations + per_mc * 100
    print(f"GPU {torch.cuda.get_device_name()}: paper settings on 1024x1024, amp={meta['amp_used']}: "
          f"{per_it:.3f} s/iteration (incl. {params['n_iterations'] // params['red_every']} BM3D RED updates), "
          f"{per_mc:.3f} s per MC pass")
    print(f"extrapolated: {full_iterations} iterations + 100 MC passes = {total:.0f} s "
          f"= {PAPER_SECONDS_1024 / total:.1f}x faster than the paper's 2.5 h")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=8, help="unit cells per side (8 -> 257x257 px)")
    p.add_argument("--dose", type=float, default=400.0, help="electron dose [e/Å²]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--denoisers", default="none,absf,bm3d,s2s,s2sred,dip")
    p.add_argument("--s2s-iterations", type=int, default=None, help="override S2SRED/S2S training iterations")
    p.add_argument("--dip-iterations", type=int, default=2000, help="DIP iteration cap (early stop usually ends sooner)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--quick", action="store_true", help="tiny image and short training (smoke run)")
    p.add_argument("--gpu-paper", action="store_true", help="time the paper's S2SRED settings on a 1024² image (CUDA)")
    p.add_argument("--gpu-iterations", type=int, default=200, help="iterations timed for --gpu-paper")
    args = p.parse_args()
    warnings.simplefilter("ignore", category=UserWarning)
    if args.gpu_paper:
        run_gpu_paper(args)
    else:
        run_cpu(args)


if __name__ == "__main__":
    main()
