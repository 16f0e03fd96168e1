"""Benchmark: SOFS (classifier + network builder) and the nearest network builder on 1k, 5k and 20k columns.

Run ``python experiments/benchmarks/network.py``. Column tables come from the synthetic
perovskite generator (10° tilt, particle rotated by 17°, 5 % missing non-Pb columns, 5 % weak
background peaks, 0.03 Å position noise), so no image fitting is timed. Threads are pinned to
one so the figures are single-core. Prints seconds (best of ``--repeat``), columns per second
and the scaling exponent of time vs column count (1 = linear).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from octascope.core.model import Classification, Image  # noqa: E402
from octascope.input.synthetic import Z_COLUMN, SyntheticSpec, perovskite_columns  # noqa: E402
from octascope_plugins.classify.sofs_classifier import SofsClassifier  # noqa: E402
from octascope_plugins.network.nearest import NearestNetwork  # noqa: E402
from octascope_plugins.network.sofs_network import SofsNetwork  # noqa: E402

IMAGE = Image(np.zeros((16, 16), np.float32), pixel_size_A=0.2)


def column_table(n_target: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """About ``n_target`` columns of a square particle; returns the table and the true species."""
    n = max(2, int(round(np.sqrt(n_target / 4.0))))  # ~4 columns per unit cell
    rng = np.random.default_rng(seed)
    cols, _ = perovskite_columns(SyntheticSpec(n_cells=(n, n), a_A=6.25, rotation_deg=10.0))
    cols = cols[((cols.species == "Pb") | (rng.random(len(cols)) >= 0.05)).to_numpy()].reset_index(drop=True)
    ang = np.deg2rad(17.0)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    xy = cols[["x_A", "y_A"]].to_numpy() @ rot.T + rng.normal(0, 0.03, (len(cols), 2))
    amp = cols.species.map(Z_COLUMN).to_numpy(float) / Z_COLUMN["Pb"] * (1 + 0.05 * rng.standard_normal(len(cols)))
    n_sp = int(0.05 * len(cols))
    sp_xy = rng.uniform(xy.min(0), xy.max(0), (n_sp, 2))
    table = pd.DataFrame({"x_A": np.r_[xy[:, 0], sp_xy[:, 0]], "y_A": np.r_[xy[:, 1], sp_xy[:, 1]],
                          "amplitude": np.r_[amp, rng.uniform(0.05, 0.2, n_sp)]})
    species = np.r_[cols.species.to_numpy(), np.full(n_sp, "unknown")]
    return table, species


def best_time(fn, repeat: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        table, species = column_table(n)
        truth_cls = Classification(columns=table.assign(species=species))
        t_cls, classified = best_time(lambda: SofsClassifier().classify(IMAGE, table), args.repeat)
        t_net, net = best_time(lambda: SofsNetwork().build(IMAGE, classified), args.repeat)
        t_near, _ = best_time(lambda: NearestNetwork().build(IMAGE, truth_cls), args.repeat)
        real = species != "unknown"
        acc = float(np.mean(classified.columns.species.to_numpy()[real] == species[real]))
        rows.append({"columns": len(table), "sofs_classify_s": t_cls, "sofs_network_s": t_net,
                     "sofs_total_s": t_cls + t_net, "nearest_network_s": t_near, "sofs_species_accuracy": acc,
                     "octahedra": len(net), "octahedra_ok": int((~net.table.edge).sum())})
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if len(df) >= 2:
        x = np.log(df["columns"].to_numpy(float))
        for name in ("sofs_total_s", "nearest_network_s"):
            slope = np.polyfit(x, np.log(df[name].to_numpy(float)), 1)[0]
            print(f"scaling exponent {name}: {slope:.2f} (time ~ N^k)")
    for r in rows:
        print(f"{r['columns']} columns: SOFS {r['columns'] / r['sofs_total_s']:.0f} columns/s, "
              f"SOFS / nearest time ratio {r['sofs_total_s'] / r['nearest_network_s']:.1f}")


if __name__ == "__main__":
    main()
