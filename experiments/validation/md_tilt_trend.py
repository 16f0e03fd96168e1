"""The method paper's MD trends, checked on octascope's own simulations (truth geometry, 3-D atoms).

    python experiments/validation/md_tilt_trend.py [--n-cells 6] [--steps 15000] [--equil 5000] [--mixed-steps N] [--skip-mixed]

1. CsPbI3 QD: mean octahedral tilt θ3 of the outermost layer of octahedra (3-D shell 0) vs the core
   (shell ≥ 1), per projection (z, x, y) and averaged. The paper (9.5 nm, 2 ns): core tilt peaks near
   9°, the outer shell is lower and broader.
2. CsPbI(3-x)Br(x) QD with Br segregated by the paper's recipe (corner sites + a few random): tilt of
   Pb–Br vs Pb–I bonds over the three projections. The paper: Pb–Br ≈ 5.5°, Pb–I ≈ 9.5°.

Angles are computed per snapshot from the 3-D positions (octascope.sim.truth.octahedra_3d) and
averaged over the snapshots. MD runs are cached (octascope.sim.cache), so a re-run only re-analyses.
"""

from __future__ import annotations

import argparse

import numpy as np


def run(structure: dict, md: dict, cache_dir: str | None):
    from octascope.sim.simulation import md_step, structure_key
    from octascope.sim.structure import build_nanocube

    atoms = build_nanocube(**structure)
    _, traj, hit = md_step(atoms, structure_key(structure), md, cache_dir=cache_dir)
    return atoms, traj, hit


def summarise(label: str, traj) -> None:
    from octascope.sim.truth import octahedra_3d

    octa, bonds = octahedra_3d(traj.symbols, traj.lattice, traj.positions)
    info = traj.info
    print(f"\n{label}: {info['n_atoms']} atoms, {len(traj.positions)} snapshots over "
          f"{traj.time_ps[-1] - traj.time_ps[0] + info['snapshot_every'] * info['timestep_fs'] / 1000:.1f} ps "
          f"(after {info['equilibration_steps'] * info['timestep_fs'] / 1000:.1f} ps equilibration), "
          f"T = {traj.temperature_K.mean():.0f} ± {traj.temperature_K.std():.0f} K, {info['steps_per_s']:.1f} steps/s")
    outer = octa.shell == 0
    print(f"{'':>14} {'n':>4} {'θ3 z':>7} {'θ3 x':>7} {'θ3 y':>7} {'θ3 mean':>8} {'std':>6}")
    for name, m in (("outer shell 0", outer), ("core shell≥1", ~outer)):
        o = octa[m]
        print(f"{name:>14} {m.sum():>4} {o.theta3_z_deg.mean():>7.2f} {o.theta3_x_deg.mean():>7.2f} "
              f"{o.theta3_y_deg.mean():>7.2f} {o.theta3_deg.mean():>8.2f} {o.theta3_deg.std():>6.2f}")
    if (bonds.halide == "Br").any():
        print(f"{'bond':>14} {'n':>5} {'tilt mean':>10} {'median':>7} {'length Å':>9}")
        for hal in ("I", "Br"):
            b = bonds[bonds.halide == hal]
            print(f"{'Pb-' + hal:>14} {len(b):>5} {b.tilt_deg.mean():>10.2f} {b.tilt_deg.median():>7.2f} "
                  f"{b.length_A.mean():>9.3f}")
        core = bonds[bonds.shell > 0]
        for hal in ("I", "Br"):
            b = core[core.halide == hal]
            if len(b):
                print(f"{'core Pb-' + hal:>14} {len(b):>5} {b.tilt_deg.mean():>10.2f} {b.tilt_deg.median():>7.2f} "
                      f"{b.length_A.mean():>9.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-cells", type=int, default=6)
    ap.add_argument("--steps", type=int, default=15000)
    ap.add_argument("--equil", type=int, default=5000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--mixed-steps", type=int, default=None, help="NVT steps of the mixed-halide run (default --steps)")
    ap.add_argument("--br-fraction", type=float, default=1 / 6)
    ap.add_argument("--skip-mixed", action="store_true")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    md = dict(n_steps=args.steps, equilibration_steps=args.equil, snapshot_every=args.every)
    structure = dict(n_cells=args.n_cells)
    _, traj, hit = run(structure, md, args.cache_dir)
    summarise(f"CsPbI3 n_cells={args.n_cells}{' (cached)' if hit else ''}", traj)
    if not args.skip_mixed:
        mixed = dict(n_cells=args.n_cells, br_fraction=args.br_fraction, mixing="paper")
        md_mixed = dict(md, n_steps=args.mixed_steps or args.steps)
        _, traj, hit = run(mixed, md_mixed, args.cache_dir)
        summarise(f"CsPbI(3-x)Br(x) paper-segregated, Br fraction {args.br_fraction:.3f}{' (cached)' if hit else ''}", traj)


if __name__ == "__main__":
    main()
