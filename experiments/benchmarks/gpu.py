"""GPU benchmark: CPU vs GPU time per stage (locator, refinement, S2SRED/DIP training, BM3D) from one run.

Usage::

    python experiments/benchmarks/gpu.py --out gpu.md            # device auto: CUDA when present
    python experiments/benchmarks/gpu.py --quick --device cpu --out gpu-cpu.md   # smoke run, < 3 min on 2 cores

Every stage runs on the CPU and, when CUDA is present (``--device auto``, the default, or
``cuda``), on the GPU, on the same synthetic data made inside the script
(:mod:`octascope.input.synthetic`: no abTEM, no LAMMPS, nothing read from disk). Times are wall
clock (``torch.cuda.synchronize`` before each reading on the GPU), after a warm-up call on the same
device (CUDA context, kernel selection and first-call set-up are excluded):

- ``locator``: :class:`~octascope_plugins.locate.gaussian.GaussianLocator` ``refine`` of all
  candidates of an image (candidate search excluded: it is numpy on the CPU either way); ms per
  column and the RMSE against the truth, so a GPU path that changes the answer shows.
- ``refinement``: :func:`octascope.analysis.refine.refine_positions` (joint species-profile fit,
  image domain) from the true positions shifted by 0.1 Å RMS; ms per column and RMSE.
- ``s2sred`` / ``dip``: training step rate (network iterations per second, ``s_per_iteration``
  of the denoiser's own record) at the CPU defaults and, for S2SRED, at the paper's widths on the
  whole image (``s2sred-paper``: 64/128 features, no crops, the setting the paper ran at 2.5 h per
  1024² on a laptop GPU). RED is off, so the rate is the network's alone (RED adds one BM3D call
  per ``red_every`` steps, on the CPU). Fixed iteration counts (no early stop).
- ``bm3d``: CPU only (the ``bm3d`` package has no GPU path); listed so the table shows the whole chain.

The CPU side uses the plugins' CPU defaults (the locator's fit in NumPy, one thread; the networks
torch on the free cores); the GPU side runs the same locator code on torch tensors
(:mod:`octascope_plugins.locate.arrays`). ``--quick``: small images (441 columns, 256² networks, a few steps), for a smoke run;
the default sizes are the paper's (a 2048² frame of ~10,000 columns for the locator, 1024² networks; the
refinement on a 12 x 12-octahedra particle, ~600 columns, to bound its CPU side).
The table (markdown, with the command, date, machine, load) is printed and written to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np


@dataclass
class Sizes:
    """What each stage runs on."""

    locator_cells: int  # octahedra per side of the synthetic particle (0.168 Å/px, 300 e/Å²)
    refine_cells: int  # the same for the refinement (~50 ms/column on one CPU core)
    net_px: int  # side of the denoisers' image [px]
    paper_px: int  # side of the S2SRED paper-setting image [px]
    bm3d_px: int
    steps_cpu: dict[str, int] = field(default_factory=dict)  # network iterations timed on the CPU
    steps_gpu: dict[str, int] = field(default_factory=dict)


QUICK = Sizes(locator_cells=10, refine_cells=6, net_px=256, paper_px=128, bm3d_px=256,
              steps_cpu={"s2sred": 10, "dip": 10, "s2sred-paper": 2},
              steps_gpu={"s2sred": 50, "dip": 50, "s2sred-paper": 10})
FULL = Sizes(locator_cells=52, refine_cells=12, net_px=1024, paper_px=1024, bm3d_px=512,
             steps_cpu={"s2sred": 20, "dip": 5, "s2sred-paper": 1},
             steps_gpu={"s2sred": 200, "dip": 200, "s2sred-paper": 50})

PIXEL_SIZE_A = 0.168
DOSE = 300.0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def _rmse_pm(x_A: np.ndarray, y_A: np.ndarray, truth_xy: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    d, _ = cKDTree(truth_xy).query(np.column_stack([x_A, y_A]))
    d = d[np.isfinite(d) & (d < 0.6)]
    return float(100 * np.sqrt(np.mean(d**2))) if len(d) else float("nan")


def _image(cells: int, seed: int = 0):
    from octascope.input.synthetic import SyntheticSpec, make_synthetic

    return make_synthetic(SyntheticSpec(n_cells=(cells, cells), pixel_size_A=PIXEL_SIZE_A, dose_e_per_A2=DOSE,
                                        seed=seed))


def _square(side: int):
    """A ``side`` × ``side`` synthetic iDPC-like image (a crop of a particle at 0.168 Å/px, 300 e/Å²)."""
    from octascope.core.model import Image

    cells = int(np.ceil(side * PIXEL_SIZE_A / 6.25)) + 1
    image, _ = _image(cells)
    data = np.asarray(image.data)[:side, :side]
    return Image(np.ascontiguousarray(data), pixel_size_A=PIXEL_SIZE_A, signal="idpc", dose_e_per_A2=DOSE,
                 source=f"synthetic {side}²")


def stage_locator(sizes: Sizes) -> Callable[[str], dict[str, Any]]:
    from octascope_plugins.locate.gaussian import GaussianLocator
    from octascope_plugins.locate.peaks import refine_com

    image, truth = _image(sizes.locator_cells)
    probe = GaussianLocator(device="cpu")
    x0, y0, z, threshold = probe.options.find(image.data, image.pixel_size_A)
    xc, yc = refine_com(image.data, x0, y0, radius_px=probe.options.com_radius_A / image.pixel_size_A)
    truth_xy = truth.columns[["x_A", "y_A"]].to_numpy()

    def run(device: str) -> dict[str, Any]:
        loc = GaussianLocator(device=device)
        loc.refine(image, xc[:50], yc[:50])  # warm-up
        sec, cols = _timed(lambda: loc.refine(image, xc, yc, z, threshold), device)
        return {"s": sec, "per": 1000 * sec / len(xc), "unit": "ms/column",
                "quality": f"RMSE {_rmse_pm(cols.x_A.to_numpy(), cols.y_A.to_numpy(), truth_xy):.2f} pm",
                "what": f"{image.shape[1]}² px, {len(xc)} columns"}

    return run


def stage_refine(sizes: Sizes) -> Callable[[str], dict[str, Any]]:
    from octascope.analysis.refine import refine_positions

    image, truth = _image(sizes.refine_cells)
    t = truth.columns
    rng = np.random.default_rng(1)
    ps = image.pixel_size_A
    x = t.x_A.to_numpy() / ps + rng.normal(0, 0.1 / np.sqrt(2) / ps, len(t))
    y = t.y_A.to_numpy() / ps + rng.normal(0, 0.1 / np.sqrt(2) / ps, len(t))
    species = t.species.to_numpy()
    truth_xy = t[["x_A", "y_A"]].to_numpy()
    data = np.asarray(image.data)
    small = (slice(0, min(200, data.shape[0])), slice(0, min(200, data.shape[1])))
    inside = (x < small[1].stop - 5) & (y < small[0].stop - 5)

    def run(device: str) -> dict[str, Any]:
        if inside.sum() >= 4:  # warm-up on a corner
            refine_positions(data[small], x[inside], y[inside], species[inside], pixel_size_A=ps, domain="image",
                             device=device, noise_model="white")
        sec, res = _timed(lambda: refine_positions(data, x, y, species, pixel_size_A=ps, domain="image",
                                                   device=device), device)
        rx, ry = np.asarray(res.x) * ps, np.asarray(res.y) * ps
        return {"s": sec, "per": 1000 * sec / len(x), "unit": "ms/column",
                "quality": f"RMSE {_rmse_pm(rx, ry, truth_xy):.2f} pm", "what": f"{data.shape[1]}² px, {len(x)} columns"}

    return run


def stage_network(name: str, sizes: Sizes) -> Callable[[str], dict[str, Any]]:
    paper = name == "s2sred-paper"
    image = _square(sizes.paper_px if paper else sizes.net_px)

    def make(device: str, steps: int):
        if name == "dip":
            from octascope_plugins.denoise.dip import DIPDenoiser

            return DIPDenoiser(device=device, n_iterations=steps, early_stop=False, cpu_work_budget=None,
                               progress=False)
        from octascope_plugins.denoise.s2sred import S2SREDDenoiser

        extra = dict(encoder_width=64, decoder_width=128, patch_px=None) if paper else {}
        return S2SREDDenoiser(device=device, n_iterations=steps, early_stop=False, cpu_work_budget=None, red=False,
                              n_mc_passes=1, progress=False, **extra)

    def run(device: str) -> dict[str, Any]:
        steps = (sizes.steps_gpu if device.startswith("cuda") else sizes.steps_cpu)[name]
        make(device, 2).denoise(_square(64) if not paper else _square(min(128, image.shape[0])))  # warm-up
        sec, out = _timed(lambda: make(device, steps).denoise(image), device)
        meta = out.metadata["denoiser"]
        s_it = meta.get("s_per_iteration") or float("nan")
        return {"s": sec, "per": 1.0 / s_it if s_it > 0 else float("nan"), "unit": "iterations/s",
                "quality": f"{meta.get('iterations_run')} iterations, {meta.get('device_used')}",
                "what": f"{image.shape[1]}² px" + (" whole image, 64/128 features" if paper else " CPU defaults")}

    return run


def stage_bm3d(sizes: Sizes) -> Callable[[str], dict[str, Any]]:
    from octascope_plugins.denoise.bm3d import BM3DDenoiser

    image = _square(sizes.bm3d_px)

    def run(device: str) -> dict[str, Any]:
        sec, _ = _timed(lambda: BM3DDenoiser().denoise(image), "cpu")
        return {"s": sec, "per": sec, "unit": "s/image", "quality": "", "what": f"{image.shape[1]}² px (CPU only)"}

    return run


STAGES = ("locator", "refinement", "s2sred", "s2sred-paper", "dip", "bm3d")


def _builder(name: str, sizes: Sizes) -> Callable[[str], dict[str, Any]]:
    if name == "locator":
        return stage_locator(sizes)
    if name == "refinement":
        return stage_refine(sizes)
    if name == "bm3d":
        return stage_bm3d(sizes)
    return stage_network(name, sizes)


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "—"
    return f"{v:.3g}" if v < 100 else f"{v:,.0f}"


def machine() -> str:
    import torch

    cpu = f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return f"{cpu}; {gpu}; torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (GPU column when CUDA is present), cpu (CPU only) or cuda[:N]")
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run (< 3 min on a 2-core CPU)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="stages to run")
    parser.add_argument("--out", required=True, help="markdown file the table is written to")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import torch

    from octascope.core.devices import select_device

    gpu: str | None = None
    if args.device != "cpu":
        dev = select_device(args.device, "gpu benchmark")
        gpu = str(dev) if dev.type == "cuda" else None
    sizes = QUICK if args.quick else FULL
    start = datetime.now(timezone.utc)
    load0 = os.getloadavg()
    print(f"{machine()}; GPU column: {gpu or 'none (CPU only)'}; load average {' '.join(f'{v:.1f}' for v in load0)}",
          flush=True)
    rows = []
    for name in args.stages:
        run = _builder(name, sizes)
        cpu = run("cpu")
        print(f"  {name:13s} cpu  {cpu['s']:8.2f} s  {_fmt(cpu['per'])} {cpu['unit']}  {cpu['quality']}", flush=True)
        on_gpu = run(gpu) if gpu and name != "bm3d" else None
        if on_gpu:
            print(f"  {name:13s} {gpu:4s} {on_gpu['s']:8.2f} s  {_fmt(on_gpu['per'])} {on_gpu['unit']}  {on_gpu['quality']}",
                  flush=True)
        rows.append((name, cpu, on_gpu))
    load1 = os.getloadavg()
    lines = ["| stage | data | unit | CPU | GPU | GPU speed-up | CPU result | GPU result |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, cpu, g in rows:
        if g is None:
            speed = "—"
        elif cpu["unit"] == "iterations/s":
            speed = f"{g['per'] / cpu['per']:.1f}×"
        else:
            speed = f"{cpu['per'] / g['per']:.1f}×"
        lines.append(f"| {name} | {cpu['what']} | {cpu['unit']} | {_fmt(cpu['per'])} | {_fmt(g['per']) if g else '—'} | "
                     f"{speed} | {cpu['quality']} | {g['quality'] if g else ''} |")
    command = "python experiments/benchmarks/gpu.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    doc = [f"# CPU vs GPU per stage ({'quick' if args.quick else 'full'} sizes)", "",
           f"Command: `{command}`", "",
           f"Run {start:%Y-%m-%d %H:%M} UTC on {machine()}; load average {' '.join(f'{v:.1f}' for v in load0)} at the start, "
           f"{' '.join(f'{v:.1f}' for v in load1)} at the end; torch CPU threads {torch.get_num_threads()}.", "",
           "Wall time after a warm-up call on each device; synthetic 0.168 Å/px, 300 e/Å² data made in the script. "
           "Speed-up: CPU time / GPU time (iterations/s: GPU rate / CPU rate).", "", *lines, ""]
    text = "\n".join(doc)
    print()
    print(text)
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
