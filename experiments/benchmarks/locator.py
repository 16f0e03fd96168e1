"""Locator benchmark: batched ``gaussian`` vs the real Atomap, same image, same candidates, one CPU thread.

Usage::

    python experiments/benchmarks/locator.py              # 20 x 20 cells, 1,681 columns
    python experiments/benchmarks/locator.py --cells 10 --dose 500
    python experiments/benchmarks/locator.py --quick      # 6 x 6 cells, a smoke run

Both refiners start from the same candidate list (local maxima of the smoothed image) and each
does its own centre-of-mass step and Gaussian fit; the timed part is that refinement. Library
imports and a torch warm-up are excluded. Positions are compared with the synthetic truth
(matched within 0.6 Å).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402


def accuracy(cols, truth, tol_A: float = 0.6) -> dict[str, float]:
    """Matched fraction and position RMSE [pm], overall and per species."""
    t = truth.columns
    d, j = cKDTree(t[["x_A", "y_A"]].to_numpy()).query(cols[["x_A", "y_A"]].to_numpy())
    ok = d < tol_A
    out = {"precision": ok.mean(), "recall": len(set(j[ok])) / len(t), "rmse_pm": 100 * np.sqrt(np.mean(d[ok] ** 2))}
    species = t.species.to_numpy()[j]
    for s in ("Pb", "X", "Cs"):
        sel = ok & (species == s)
        out[f"rmse_{s}_pm"] = 100 * np.sqrt(np.mean(d[sel] ** 2)) if sel.any() else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20, help="octahedra along each direction (20 -> 1,681 columns)")
    parser.add_argument("--dose", type=float, default=2000.0, help="electron dose [e/Å²]")
    parser.add_argument("--pixel-size", type=float, default=0.2, help="pixel size [Å]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="6 x 6 cells, for a smoke run")
    args = parser.parse_args()
    cells = 6 if args.quick else args.cells

    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from octascope.synthetic import SyntheticSpec, make_synthetic
    from octascope_plugins.locate.atomap_locator import AtomapLocator, _quiet
    from octascope_plugins.locate.gaussian import GaussianLocator
    from octascope_plugins.locate.peaks import find_candidates, refine_com

    with _quiet():
        import atomap.api  # noqa: F401  (import time is not fitting time)

    image, truth = make_synthetic(SyntheticSpec(n_cells=(cells, cells), dose_e_per_A2=args.dose,
                                                pixel_size_A=args.pixel_size, seed=args.seed))
    gauss = GaussianLocator(device="cpu")
    x0, y0 = find_candidates(image.data, background_window_px=2 * gauss.patch_radius_px(image.pixel_size_A) + 1)
    print(f"image {image.shape[1]} x {image.shape[0]} px at {image.pixel_size_A} Å/px, dose {args.dose:g} e/Å², "
          f"{len(truth.columns)} true columns, {len(x0)} candidates; torch threads {torch.get_num_threads()}")

    gauss.refine(image, *refine_com(image.data, x0[:20], y0[:20]))  # warm-up
    t = time.perf_counter()
    cols_g = gauss.refine(image, *refine_com(image.data, x0, y0, radius_px=gauss.com_radius_px))
    t_g = time.perf_counter() - t

    t = time.perf_counter()
    cols_a = AtomapLocator().refine(image, x0, y0)
    t_a = time.perf_counter() - t

    rows = []
    for name, cols, sec in (("gaussian", cols_g, t_g), ("atomap", cols_a, t_a)):
        acc = accuracy(cols, truth)
        rows.append((name, len(cols), sec, 1000 * sec / max(len(cols), 1), acc))
    print(f"{'locator':10s} {'columns':>8s} {'seconds':>9s} {'ms/col':>8s} {'RMSE pm':>8s} "
          f"{'Pb':>6s} {'X':>6s} {'Cs':>6s} {'recall':>7s} {'precision':>9s}")
    for name, n, sec, ms, acc in rows:
        print(f"{name:10s} {n:8d} {sec:9.2f} {ms:8.3f} {acc['rmse_pm']:8.2f} {acc['rmse_Pb_pm']:6.2f} "
              f"{acc['rmse_X_pm']:6.2f} {acc['rmse_Cs_pm']:6.2f} {acc['recall']:7.3f} {acc['precision']:9.3f}")
    print(f"speed ratio per column (atomap / gaussian): {rows[1][3] / rows[0][3]:.1f}x; "
          f"RMSE ratio (gaussian / atomap): {rows[0][4]['rmse_pm'] / rows[1][4]['rmse_pm']:.2f}")


if __name__ == "__main__":
    main()
