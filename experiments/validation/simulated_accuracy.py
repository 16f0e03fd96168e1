"""Simulate -> analyse -> accuracy on the default simulated CsPbI3 QD, over dose and snapshot averaging.

    python experiments/validation/simulated_accuracy.py [--doses 2000 5000 50000] [--snapshots 1 8]

Uses the default MD of conf/source/simulated.yaml (cached after the first run) and the default
analysis plugins (locator gaussian, classifier lattice, network nearest). A single MD snapshot has
instantaneous thermal displacements that split rim columns; a real scan integrates over time, which
the snapshot average models.
"""

from __future__ import annotations

import argparse


def main() -> None:
    import octascope
    from octascope.sim.simulation import simulate

    ap = argparse.ArgumentParser()
    ap.add_argument("--doses", type=float, nargs="+", default=[2000.0, 5000.0, 50000.0])
    ap.add_argument("--snapshots", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--fov", type=float, default=56.0)
    args = ap.parse_args()
    keys = ("detection_f1", "detection_precision", "detection_recall", "rmse_pm_Pb", "rmse_pm_X", "rmse_pm_Cs",
            "species_accuracy")
    print(f"{'snapshots':>9} {'dose':>8} " + " ".join(f"{k:>19}" for k in keys))
    for n_snap in args.snapshots:
        for dose in args.doses:
            sim = simulate(imaging=dict(field_of_view_A=args.fov, max_snapshots=n_snap),
                           noise=dict(dose_e_per_A2=dose, seed=0), progress=False)
            res = octascope.analyze(sim.image, denoiser="none", locator="gaussian", classifier="lattice",
                                    network="nearest", metrics=["accuracy"], truth=sim.truth, progress=None)
            print(f"{n_snap:>9} {dose:>8.0f} " + " ".join(f"{res.scalars.get(k, float('nan')):>19.3f}" for k in keys),
                  flush=True)


if __name__ == "__main__":
    main()
