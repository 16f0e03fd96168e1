"""How many thermal configurations a simulated image needs: MD snapshots vs frozen phonons vs the limit.

    python experiments/validation/thermal_averaging.py [--fp 1 4 16 64 256] [--md 1 2 4 8 30] [--seeds 0 1 2]
        [--signal icom] [--out experiments/validation/results/thermal_averaging.json]

The default CsPbI3 cube (3.8 nm, ReaxFF MD at 300 K, 30 snapshots over 15 ps; cached), weak-phase
iCoM at 0.25 Å/px, analysed by the default pipeline (``octascope.analyze(image, truth=truth)``),
noise-free and at 300 e/Å² (noise seeds ``--seeds``). Images:

- ``static``: the built structure (no MD);
- ``md-S``: S MD snapshots averaged (``imaging.max_snapshots``; the simulator's way so far); truth = their mean;
- ``fp-K``: K frozen-phonon configurations drawn from the 30 snapshots (``imaging.thermal_configurations``:
  each atom at its mean position plus a Gaussian displacement with its own 3×3 MD covariance);
  truth = the mean of the 30 snapshots;
- ``fp-inf``: the limit K → ∞ of the same model, exact for the (linear) weak-phase image: each atom's
  projected potential convolved with its own in-plane Gaussian
  (:func:`octascope.sim.thermal.gaussian_projected_potential`);
- ``mean-sharp``: the MD mean positions without any thermal spread (separates the MD's mean structure
  from the thermal smearing).

Errors: position RMSE per species [pm] over all matched columns, the interior (truth shell ≥ 1) and
the outermost cell (shell 0); θ error = mean(|Δθ1|, |Δθ2|) over matched complete octahedra [deg],
all and interior; noisy values are means over the seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

IMAGING = {"signal": "icom", "pixel_size_A": 0.25}
SPECIES = ("Pb", "X", "Cs")


def trajectory():
    from octascope.sim.simulation import md_step, plan_simulation
    from octascope.sim.structure import build_nanocube

    plan = plan_simulation()
    atoms = build_nanocube(plan.structure)
    _, traj, _ = md_step(atoms, plan.keys["structure"], None, progress=False)
    return atoms, traj


def gaussian_image(atoms, traj, imaging: dict, *, sharp: bool):
    """Clean image and truth of the MD mean positions, each atom smeared by its own in-plane Gaussian
    (``sharp``: no smearing); the truth is the mean over all snapshots."""
    import abtem

    from octascope.core.model import Truth
    from octascope.sim import imaging as im
    from octascope.sim.thermal import displacement_statistics, gaussian_projected_potential
    from octascope.sim.truth import project_columns, projected_octahedra

    opts = im.ImagingOptions.from_config(imaging)
    sym = np.array(atoms.get_chemical_symbols(), dtype=object)
    mean, cov = displacement_statistics(traj.positions)
    p = opts.pixel_size_A
    frame, n_px = im.make_frame(mean[None], pixel_size_A=p, field_of_view_A=opts.field_of_view_A,
                                margin_A=opts.margin_A, scan_rotation_deg=opts.scan_rotation_deg)
    frame, geom = im._scan_geometry(frame, n_px, opts)
    cells, _, _ = im._specimen(sym, mean[None], frame, geom, None, opts)
    t = np.deg2rad(frame.rotation_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    cov_xy = np.zeros((len(sym), 2, 2)) if sharp else rot @ cov[:, :2, :2] @ rot.T
    m = max(1, int(np.ceil(p / opts.sampling_A - 1e-9)))
    ny, nx = geom.cell_shape
    t0 = time.perf_counter()
    v = gaussian_projected_potential(sym, cells[0].positions[:, :2], cov_xy, gpts=(nx * m, ny * m),
                                     extent_A=(nx * p, ny * p), slice_thickness_A=opts.slice_thickness_A)
    com = im._weak_phase_com_of_potential(abtem, v, geom, m, opts, "cpu")
    image = im.integrate_gradient(com[0], com[1], p)
    clean = im.SimulatedImage(com=com, image=image, pixel_size_A=p, signal=opts.signal, frame=frame,
                              info=dict(im._settings(opts), seconds=time.perf_counter() - t0, integration="periodic"))
    columns = project_columns(sym, traj.lattice, traj.positions, to_image=frame.to_image)
    truth = Truth(columns=columns, octahedra=projected_octahedra(columns), clean=image, metadata={})
    return clean, truth


def simulated(imaging: dict, run_md: bool = True):
    from octascope.sim.simulation import simulate

    sim = simulate(imaging=imaging, noise={"dose_e_per_A2": None}, run_md=run_md, progress=False)
    return sim.clean, sim.truth


def errors(result, truth) -> dict:
    """Position RMSE per species (all / interior / surface) [pm] and θ error (all / interior) [deg]."""
    from scipy.spatial import cKDTree

    out: dict = {}
    acc = result.tables.get("accuracy_matches")
    cols = truth.columns
    if acc is not None and len(acc):
        shell = cols["shell"].to_numpy()[acc["true_row"].to_numpy()]
        sq = (acc["dx_pm"] ** 2 + acc["dy_pm"] ** 2).to_numpy()
        sp = acc["true_species"].astype(str).to_numpy()
        for s in SPECIES:
            for part, sel in (("all", np.ones(len(sq), bool)), ("interior", shell >= 1), ("surface", shell == 0)):
                m = (sp == s) & sel
                out[f"{s}_{part}"] = float(np.sqrt(sq[m].mean())) if m.any() else float("nan")
    octs = result.tables.get("accuracy_octahedra")
    if octs is not None and len(octs):
        to = truth.octahedra
        _, idx = cKDTree(to[["x_A", "y_A"]].to_numpy()).query(octs[["octahedron_x_A", "octahedron_y_A"]].to_numpy())
        oshell = to["shell"].to_numpy()[idx]
        e = np.abs(np.stack([octs["theta1_deg_error"].to_numpy(), octs["theta2_deg_error"].to_numpy()]))
        for part, sel in (("all", np.ones(len(oshell), bool)), ("interior", oshell >= 1)):
            v = e[:, sel]
            v = v[np.isfinite(v)]
            out[f"theta_{part}"] = float(v.mean()) if len(v) else float("nan")
        out["n_octahedra"] = int(len(octs))
    out["n_columns"] = int(len(acc)) if acc is not None else 0
    return out


def analyse(clean, truth, dose: float | None, seed: int) -> dict:
    from octascope import analyze
    from octascope.core.model import Image
    from octascope.sim.noise import apply_noise

    data = apply_noise(clean, dose_e_per_A2=dose, seed=seed)
    image = Image(data=data, pixel_size_A=clean.pixel_size_A, signal=clean.signal, dose_e_per_A2=dose, source="thermal-study")
    return errors(analyze(image, truth=truth, progress=None), truth)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp", type=int, nargs="*", default=[1, 4, 16, 64, 256])
    ap.add_argument("--fp-seeds", type=int, nargs="*", default=[0], help="configuration seeds of each fp-K image")
    ap.add_argument("--md", type=int, nargs="*", default=[1, 2, 4, 8, 30])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--dose", type=float, default=300.0)
    ap.add_argument("--signal", default="icom")
    ap.add_argument("--out", default="experiments/validation/results/thermal_averaging.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    imaging = dict(IMAGING, signal=args.signal)
    atoms, traj = trajectory()
    rows: dict[str, dict] = {}
    jobs: list[tuple[str, object]] = [("static", lambda: simulated(imaging, run_md=False)),
                                      ("mean-sharp", lambda: gaussian_image(atoms, traj, imaging, sharp=True)),
                                      ("fp-inf", lambda: gaussian_image(atoms, traj, imaging, sharp=False))]
    jobs += [(f"md-{s}", lambda s=s: simulated(dict(imaging, max_snapshots=s))) for s in args.md]
    jobs += [(f"fp-{k}" + (f"-s{fs}" if fs else ""), lambda k=k, fs=fs: simulated(dict(imaging, thermal_configurations=k,
                                                                                       thermal_seed=fs)))
             for k in args.fp for fs in args.fp_seeds]
    for name, make in jobs:
        t0 = time.perf_counter()
        clean, truth = make()  # type: ignore[operator]
        t_img = time.perf_counter() - t0
        row = {"clean": analyse(clean, truth, None, 0), "image_s": t_img}
        noisy = [analyse(clean, truth, args.dose, s) for s in args.seeds]
        row["noisy"] = {k: float(np.mean([n[k] for n in noisy])) for k in noisy[0]}
        row["noisy_sd"] = {k: float(np.std([n[k] for n in noisy])) for k in noisy[0]}
        rows[name] = row
        c, n = row["clean"], row["noisy"]
        print(f"{name:>10} ({t_img:5.0f} s) clean X {c['X_all']:.1f} / int {c['X_interior']:.1f} pm, Pb {c['Pb_all']:.1f}, "
              f"Cs {c['Cs_all']:.1f}, θ {c['theta_all']:.2f}° | {args.dose:g} e/Å²: X {n['X_all']:.1f} / int "
              f"{n['X_interior']:.1f} / surf {n['X_surface']:.1f}, Pb {n['Pb_all']:.1f}, Cs {n['Cs_all']:.1f}, "
              f"θ {n['theta_all']:.2f}° / int {n['theta_interior']:.2f}°", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"imaging": imaging, "dose": args.dose, "seeds": args.seeds, "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
