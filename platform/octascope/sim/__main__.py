"""Command line of the simulation subsystem: ``python -m octascope.sim <command> [key=value ...]``.

Commands
--------
``structure --out qd.extxyz``   build a nanocube and write extended XYZ
``md --out traj.npz``           structure + MD (runs under ``mpirun -n K`` too)
``run --out DIR``               the whole chain; writes image.npy, truth_columns.csv,
                                truth_octahedra.csv, truth_octahedra_3d.csv, meta.json

Parameters are ``group.key=value`` overrides of conf/source/simulated.yaml (YAML values), e.g.::

    python -m octascope.sim run --out qd structure.n_cells=4 md.n_steps=2000 noise.dose_e_per_A2=500
    python -m octascope.sim run --out qd_on_carbon support.thickness_A=30      # on amorphous carbon

``--config FILE`` starts from another preset (e.g. conf/simulation/mixed_halide.yaml).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from octascope.core.errors import OctascopeError
from octascope.sim.mpi import run_md_on_ranks
from octascope.sim.simulation import check_source_params, simulate, write_bundle
from octascope.sim.structure import build_nanocube, composition_formula, write_structure

GROUPS = ("structure", "md", "imaging", "support", "noise")


def _default_config() -> Path:
    here = Path(__file__).resolve()
    for cand in (here.parents[3] / "conf" / "source" / "simulated.yaml", here.parents[1] / "conf" / "source" / "simulated.yaml"):
        if cand.exists():
            return cand
    raise OctascopeError("conf/source/simulated.yaml not found; pass --config FILE")


def load_params(config: str | None, overrides: list[str]) -> dict[str, Any]:
    """Parameters of :func:`octascope.sim.simulation.simulate` from a YAML file plus ``a.b=value`` overrides."""
    # lazy: PyYAML (~10 ms to import), not loaded at start-up
    import yaml

    base = yaml.safe_load(Path(config or _default_config()).read_text()) or {}
    if config:  # presets hold only what differs: start from the defaults
        defaults = yaml.safe_load(_default_config().read_text())
        for k, v in base.items():
            if isinstance(v, dict) and isinstance(defaults.get(k), dict):
                defaults[k].update(v)
            else:
                defaults[k] = v
        base = defaults
    base.pop("kind", None)
    for item in overrides:
        if "=" not in item:
            raise OctascopeError(f"override {item!r} is not key=value; e.g. structure.n_cells=4")
        key, value = item.split("=", 1)
        node = base
        *path, leaf = key.split(".")
        for p in path:
            if node.get(p) is None:  # e.g. support: null in the preset, then support.thickness_A=30
                node[p] = {}
            node = node[p]
        node[leaf] = yaml.safe_load(value)
    return base


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 on success, 2 (with a one-line ``error:`` message) on a user error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m octascope.sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("structure", "md", "run"))
    parser.add_argument("--out", required=True, help="output file (structure, md) or folder (run)")
    parser.add_argument("--config", default=None, help="YAML preset (default conf/source/simulated.yaml)")
    parser.add_argument("overrides", nargs="*", help="group.key=value")
    args = parser.parse_intermixed_args(argv)
    try:
        params = load_params(args.config, args.overrides)

        plan = check_source_params(params)  # every group, before anything is built or run
        if args.command == "structure":
            atoms = build_nanocube(plan.structure)
            write_structure(atoms, args.out)
            print(f"{composition_formula(atoms)} ({len(atoms)} atoms, charge {atoms.info['charge']}) -> {args.out}")
            return 0
        if args.command == "md":
            atoms = build_nanocube(plan.structure)
            traj = run_md_on_ranks(atoms, plan.md, progress=params.get("progress", True))
            if traj.info.get("rank", 0) != 0:  # under mpirun only rank 0 writes
                return 0
            traj.save(args.out)
            print(f"{len(traj.positions)} snapshots, {traj.info['steps_per_s']:.1f} steps/s, "
                  f"{traj.info['ns_per_day']:.3f} ns/day -> {args.out}")
            return 0

        sim = simulate(**params)
        octa3 = Path(args.out) / "truth_octahedra_3d.csv"
        command = "python -m octascope.sim " + " ".join(shlex.quote(a) for a in argv)
        write_bundle(sim, args.out, command=command)
        sim.octahedra_3d.to_csv(octa3, index=False, float_format="%.4f")
        print(f"{sim.truth.metadata['composition']}: image {sim.image.shape} at {sim.image.pixel_size_A} Å/px -> {args.out}")
        return 0
    except OctascopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
