"""Cost of a frame against its number of particles: synthetic fields of 1 to 16 identical particles.

Each field is a row of ``k`` particles of ``--cells`` octahedra (rotated alike, 8 Å apart) on a
frame that grows with ``k``; the default pipeline runs on each (``octascope.analyze``, no figures,
no MLflow). Printed per ``k``: the time of every stage, the time per particle of the particle
steps (segmentation, classification, network, geometry) and of the whole analysis (figures off), and
the time per column. Linear cost shows as a constant time per particle.

Usage::

    python experiments/benchmarks/particles_scaling.py                 # k = 1, 2, 4, 8, 16
    python experiments/benchmarks/particles_scaling.py --counts 1,4 --cells 10 --dose 220
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MPLBACKEND", "Agg")


def field(k: int, cells: int, dose: float, pixel_size_A: float, a_A: float = 6.25):
    """A row of ``k`` particles and its truth."""
    from octascope.input.synthetic_field import FieldParticle, FieldSpec, make_synthetic_field

    size = cells * a_A
    pitch = size * 1.5 + 8.0
    width = pitch * k + 10.0
    height = pitch + 10.0
    particles = [FieldParticle((cells, cells), (5.0 + pitch * (i + 0.5), 5.0 + pitch / 2), angle_deg=10.0 * (i % 3))
                 for i in range(k)]
    spec = FieldSpec(particles=particles, shape_px=(int(height / pixel_size_A), int(width / pixel_size_A)),
                     pixel_size_A=pixel_size_A, a_A=a_A, dose_e_per_A2=dose, seed=k)
    return make_synthetic_field(spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1,2,4,8,16", help="numbers of particles")
    parser.add_argument("--cells", type=int, default=8, help="octahedra per particle edge")
    parser.add_argument("--dose", type=float, default=300.0, help="dose [e/Å²]")
    parser.add_argument("--pixel-size", type=float, default=0.2, help="pixel size [Å]")
    args = parser.parse_args(argv)
    import octascope

    steps = ("particles", "classifier:lattice", "network:nearest", "geometry")
    print(f"{args.cells}x{args.cells}-cell particles, {args.dose:g} e/Å², {args.pixel_size} Å/px")
    print("| particles | frame [px] | columns | locator [s] | region [s] | particle steps [s] | metrics [s] | "
          "total [s] | particle steps per particle [ms] | total per particle [ms] | total per column [ms] |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k in (int(v) for v in args.counts.split(",")):
        image, truth = field(k, args.cells, args.dose, args.pixel_size)
        t0 = time.perf_counter()
        res = octascope.analyze(image, truth=truth, progress=None, metrics=[
            ("octahedral", {"figures": False}), ("lattice", {"figures": False}), "accuracy"])
        wall = time.perf_counter() - t0
        t = res.timings_s
        part = sum(t.get(s, 0.0) for s in steps)
        metrics = sum(v for key, v in t.items() if key.startswith("metric:"))
        n_found = sum(p.analysed for p in res.particles)
        n_cols = len(res.columns)
        print(f"| {k} ({n_found} analysed) | {image.shape[1]}x{image.shape[0]} | {n_cols} | {t['locator:gaussian']:.2f} | "
              f"{t['region']:.2f} | {part:.2f} | {metrics:.2f} | {wall:.2f} | {1000 * part / k:.0f} | {1000 * wall / k:.0f} | "
              f"{1000 * wall / max(n_cols, 1):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
