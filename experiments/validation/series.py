"""Time-series validation: a 20-frame stack of a particle rotating by 2° (linearly over the series)
and drifting, analysed with :func:`octascope.analysis.series.analyse_series` and the default stages.

The stack (``octascope.input.synthetic_series.make_synthetic_series``): an 8 x 8-cell CsPbI3-like
particle (a = 6.25 Å, octahedral rotation 8°) at 0.2 Å/px, Gaussian columns, Poisson noise at the
stated dose per frame, starting at 10° in the image and turning by 2.0° over the 20 frames; the
drift is a random walk of 1 Å rms per axis and frame plus 1 Å per frame along x (up to ~20 Å).

Printed per dose and seed (a markdown table): the rotation change recovered (straight-line fit of
the per-frame lattice rotation against frame, × 19 frames) with its 1σ, its error against 2.0°,
the registration error (rms and largest, px) against the known drift, the number of tracks, the
mean θ3 and |a1| against the truth, and the CPU time. A second pass over the first stack reads
every frame back from the per-frame cache.

Usage::

    python experiments/validation/series.py --doses 1000,200 --seeds 1,2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("MPLBACKEND", "Agg")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--doses", default="1000,200")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--cells", type=int, default=8)
    args = parser.parse_args(argv)
    import numpy as np

    from octascope.analysis.series import analyse_series
    from octascope.input.synthetic import SyntheticSpec
    from octascope.input.synthetic_series import make_synthetic_series

    print("| dose/frame [e/Å²] | seed | rotation change [deg] (truth 2.00) | error [deg] | drift error rms / max [px] "
          "| tracks | mean θ3 [deg] (truth 8.00) | mean abs(a1) [Å] (truth 6.25) | CPU [s] |")
    print("|---|---|---|---|---|---|---|---|---|")
    cache = tempfile.mkdtemp(prefix="series-validation-")
    first = None
    for dose in (float(d) for d in args.doses.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            spec = SyntheticSpec(n_cells=(args.cells, args.cells), particle_angle_deg=10.0, dose_e_per_A2=dose, seed=seed)
            frames, truth = make_synthetic_series(spec, n_frames=args.frames, rotation_total_deg=2.0)
            t0 = time.process_time()
            res = analyse_series(frames, cache_dir=cache, cache_config={"validation": "defaults"})
            cpu = time.process_time() - t0
            first = first or (frames, cpu)
            true_drift_px = (truth.drift_A - truth.drift_A[0]) / spec.pixel_size_A
            err = np.hypot(*(res.drift_px - true_drift_px).T)
            tracks = res.series["particle"].unique()
            pid = int(res.series["particle"].value_counts().idxmax())
            change, change_err = res.rotation_change_deg(pid)
            mine = res.series[res.series["particle"] == pid]
            print(f"| {dose:g} | {seed} | {change:.3f} ± {change_err:.3f} | {change - 2.0:+.3f} | "
                  f"{np.sqrt(np.mean(err**2)):.2f} / {err.max():.2f} | {len(tracks)} (longest {len(mine)} frames) | "
                  f"{mine['theta3_deg'].mean():.2f} | {mine['a1_A'].mean():.3f} | {cpu:.0f} |", flush=True)
    frames, cpu = first
    t0 = time.process_time()
    res = analyse_series(frames, cache_dir=cache, cache_config={"validation": "defaults"})
    print(f"\nresume: the first stack again: {res.n_cached} of {len(frames)} frames from the cache, "
          f"CPU {time.process_time() - t0:.1f} s (first pass {cpu:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
