"""Simulation benchmark: MD speed (Python-driven vs the lmp executable) and imaging time, over QD sizes.

    python experiments/benchmarks/simulation.py [--sizes 3 4 6] [--md-steps 400] [--scan-positions 64]

Prints, for each cube size (octahedra per edge):
- MD steps/s and ns/day driven from Python (octascope.sim.md.run_md, chunked runs with snapshot
  gathering and blow-up checks) and by the same build's ``lmp`` executable on the same data file and
  input lines in one ``run`` (LAMMPS "Loop time"), and the Python layer's overhead;
- seconds per weak-phase image and per multislice iDPC image. Multislice over the full default field
  of view takes hours on a CPU, so it is timed on ``--scan-positions`` probe positions and scaled by
  the number of positions of the full image (printed as "extrapolated").
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def md_python(atoms, steps: int, every: int) -> dict:
    from octascope.sim.md import run_md

    traj = run_md(atoms, n_steps=steps, equilibration_steps=0, snapshot_every=every, minimize_steps=50, progress=False)
    return traj.info


def md_executable(atoms, steps: int, every: int) -> float:
    """Steps/s of ``lmp -in`` on the same setup lines (LAMMPS's own Loop time of the NVT run)."""
    from octascope.sim.md import default_forcefield, lammps_setup_commands, write_lammps_data

    lmp = Path(sys.prefix) / "bin" / "lmp"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "particle.data"
        write_lammps_data(atoms, data, 200.0)
        lines = lammps_setup_commands(str(data), str(default_forcefield()), temperature_K=300.0, timestep_fs=1.0,
                                      minimize_steps=50, seed=0)
        lines += [f"thermo {every}", f"run {steps}"]
        (Path(tmp) / "in.md").write_text("\n".join(lines) + "\n")
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = f"{sys.prefix}/lib:" + env.get("LD_LIBRARY_PATH", "")
        out = subprocess.run([str(lmp), "-in", "in.md", "-log", "log.lammps", "-nocite"], cwd=tmp, env=env,
                             capture_output=True, text=True, check=True).stdout
        loops = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps", out)
        t, n = loops[-1]
        return int(n) / float(t)


def image_times(atoms, positions_limit: int) -> dict:
    from octascope.sim.imaging import make_frame, simulate_image

    sym = atoms.get_chemical_symbols()
    pos = atoms.get_positions()[None]
    t0 = time.perf_counter()
    sim = simulate_image(sym, pos, mode="weak_phase", signal="idpc")
    weak = time.perf_counter() - t0
    frame, n_px = make_frame(pos, pixel_size_A=0.2, field_of_view_A=None, margin_A=8.0, scan_rotation_deg=0.0)
    # multislice on a small patch of scan positions at the particle centre: same potential and probe
    side = int(np.sqrt(positions_limit))
    patch_fov = side * 0.2
    t0 = time.perf_counter()
    _multislice_patch(sym, pos, frame, side)
    ms = time.perf_counter() - t0
    return {"shape": sim.image.shape, "weak_s": weak, "ms_patch_s": ms, "ms_positions": side * side,
            "ms_full_s": ms / (side * side) * n_px * n_px, "patch_A": patch_fov}


def _multislice_patch(symbols, pos, frame, side: int) -> None:
    import abtem

    from octascope.sim.imaging import _frame_atoms

    atoms = _frame_atoms(symbols, pos, frame)[0]
    gpts = int(round(frame.field_of_view_A / 0.1))
    pot = abtem.Potential(atoms, gpts=(gpts, gpts), slice_thickness=2.0)
    probe = abtem.Probe(energy=300e3, semiangle_cutoff=29.9)
    c = frame.field_of_view_A / 2
    scan = abtem.GridScan(start=(c, c), end=(c + side * 0.2, c + side * 0.2), gpts=(side, side), endpoint=False)
    det = abtem.SegmentedDetector(nbins_radial=1, nbins_azimuthal=4, inner=0.0, outer=29.9, rotation=-np.pi / 4)
    with abtem.config.set({"diagnostics.progress_bar": False}):
        probe.scan(pot, scan=scan, detectors=det).compute(num_workers=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 4, 6])
    ap.add_argument("--md-steps", type=int, default=400)
    ap.add_argument("--scan-positions", type=int, default=64)
    args = ap.parse_args()
    from octascope.sim.structure import build_nanocube

    print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f} (shared machine: figures are lower bounds)")
    header = (f"{'n':>3} {'atoms':>6} {'py st/s':>8} {'lmp st/s':>8} {'py ns/day':>9} {'overhead':>8} "
              f"{'image px':>9} {'weak s':>7} {'ms s/pos':>9} {'ms s/image (extrap.)':>21}")
    print(header)
    for n in args.sizes:
        atoms = build_nanocube(n_cells=n)
        info = md_python(atoms, args.md_steps, 100)
        exe = md_executable(atoms, args.md_steps, 100)
        img = image_times(atoms, args.scan_positions)
        overhead = exe / info["steps_per_s"] - 1.0
        print(f"{n:>3} {len(atoms):>6} {info['steps_per_s']:>8.1f} {exe:>8.1f} {info['ns_per_day']:>9.4f} "
              f"{100 * overhead:>7.1f}% {img['shape'][0]:>4}x{img['shape'][1]:<4} {img['weak_s']:>7.2f} "
              f"{img['ms_patch_s'] / img['ms_positions']:>9.3f} {img['ms_full_s']:>21.0f}", flush=True)


if __name__ == "__main__":
    main()
