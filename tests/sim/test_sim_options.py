"""octascope.sim options: each step's parameters declared once, mirrored by the YAML, checked before
anything is simulated, and nothing from a config pasted into LAMMPS or handed to mpirun unfiltered."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from octascope.app.cli import conf_dir
from octascope.core.errors import ConfigError, InputError
from octascope.sim.imaging import ImagingOptions
from octascope.sim.md import MDOptions, lammps_setup_commands
from octascope.sim.noise import NoiseOptions
from octascope.sim.options import SimulationParameterError
from octascope.sim.structure import StructureOptions, build_nanocube
from octascope.sim.support import SupportOptions

STEPS = {"structure": StructureOptions, "md": MDOptions, "imaging": ImagingOptions, "noise": NoiseOptions,
         "support": SupportOptions}


def _defaults(cls) -> dict:
    return cls().to_dict()


def _yaml(name: str) -> dict:
    return yaml.safe_load((conf_dir() / name).read_text())


@pytest.mark.parametrize("group", ["structure", "md", "imaging", "noise"])
def test_simulated_yaml_lists_every_field_with_its_default(group):
    listed = _yaml("source/simulated.yaml")[group]
    fields = [f.name for f in dataclasses.fields(STEPS[group])]
    assert sorted(listed) == sorted(fields), f"{group}: YAML and {STEPS[group].__name__} differ"
    assert listed == _defaults(STEPS[group])


def test_support_preset_lists_every_field_with_its_default():
    assert _yaml("source/simulated.yaml")["support"] is None  # the default: vacuum
    assert _yaml("simulation/carbon_support.yaml")["support"] == _defaults(SupportOptions)


def test_every_field_has_a_doc_and_the_physical_ones_a_unit():
    for cls in STEPS.values():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no doc"
            if f.name.endswith(("_A", "_K", "_fs", "_deg", "_eV", "_mrad", "_g_cm3", "_px", "_A2")):
                assert f.metadata.get("unit"), f"{cls.__name__}.{f.name} has no unit"


def test_step_functions_take_options_or_keywords():
    a = build_nanocube(n_cells=2, br_fraction=0.25, seed=1)
    b = build_nanocube(StructureOptions(n_cells=2, br_fraction=0.25, seed=1))
    np.testing.assert_array_equal(a.get_positions(), b.get_positions())
    assert a.get_chemical_symbols() == b.get_chemical_symbols()
    with pytest.raises(SimulationParameterError, match="not both"):
        build_nanocube(StructureOptions(), n_cells=2)
    with pytest.raises(SimulationParameterError, match="must be StructureOptions"):
        build_nanocube(MDOptions())  # type: ignore[arg-type]


@pytest.mark.parametrize("cls, params, match", [
    (StructureOptions, {"n_cell": 3}, r"unknown structure parameter\(s\) \['n_cell'\]; allowed: \[.*'n_cells'"),
    (StructureOptions, {"mixing": "stripes"}, r"structure\.mixing must be one of"),
    (StructureOptions, {"tilt_deg": [1.0, 2.0]}, r"structure\.tilt_deg must have 3 values"),
    (MDOptions, {"temperature_K": "300\nshell ls"}, r"md\.temperature_K must be a number"),
    (MDOptions, {"temperature_K": float("nan")}, r"md\.temperature_K=nan must be a number > 0"),
    (MDOptions, {"seed": 2**31}, r"md\.seed=2147483648 must lie in"),
    (MDOptions, {"seed": 1.5}, r"md\.seed must be an integer"),
    (MDOptions, {"n_steps": 100, "snapshot_every": 500}, r"md\.n_steps=100 must be >= snapshot_every"),
    (MDOptions, {"mpi_ranks": 0}, r"md\.n_threads=1 and mpi_ranks=0 must be >= 1"),
    (ImagingOptions, {"mode": "holography"}, r"imaging\.mode must be one of"),
    (ImagingOptions, {"scan_window_A": [5.0, 0.0, 1.0, 4.0]}, r"imaging\.scan_window_A=\[5\.0, 0\.0, 1\.0, 4\.0\] must be"),
    (NoiseOptions, {"dose_e_per_A2": 0.0}, r"noise\.dose_e_per_A2=0\.0 must be > 0"),
    (SupportOptions, {"thickness": 3.0}, r"unknown support parameter"),
])
def test_bad_parameters_one_line_naming_the_key(cls, params, match):
    with pytest.raises(SimulationParameterError, match=match) as err:
        cls.from_config(params)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ConfigError) and isinstance(err.value, InputError)


def test_key_params_keep_the_spelling_and_leave_out_what_changes_nothing():
    given = {"scan_rotation_deg": 17, "num_workers": 4, "device": "cpu"}
    keyed = ImagingOptions.from_config(given).key_params(given)
    assert keyed["scan_rotation_deg"] == 17 and isinstance(keyed["scan_rotation_deg"], int)
    assert not {"num_workers", "device", "scan_window_A", "window_padding_A"} & set(keyed)
    assert ImagingOptions.from_config(given).scan_rotation_deg == 17.0  # the value used is a float
    md = MDOptions().key_params()
    assert not {"n_threads", "workdir", "mpi_ranks"} & set(md)
    assert "mpi_ranks" not in MDOptions(mpi_ranks=1).key_params({"mpi_ranks": 1})
    assert MDOptions(mpi_ranks=4).key_params({"mpi_ranks": 4})["mpi_ranks"] == 4


# --- the config check refuses before anything is simulated ----------------------------------------

@pytest.fixture
def no_simulation(monkeypatch):
    import octascope.sim.simulation as simulation

    def boom(*a, **k):
        raise AssertionError("simulated before the configuration was checked")

    monkeypatch.setattr(simulation, "simulate", boom)
    monkeypatch.setattr(simulation, "build_nanocube", boom)


@pytest.mark.parametrize("override, match", [
    ("source.structure.mixing=stripes", "structure.mixing"),
    ("source.md.temperature_K=-5", "md.temperature_K"),
    ("source.imaging.pixel_size_A=0", "imaging.pixel_size_A"),
    ("source.noise.drift_A=[1.0]", "noise.drift_A"),
    ("source.run_md=maybe", "run_md"),
    ("+source.support.thikness_A=3", "unknown support parameter"),
])
def test_command_line_check_refuses_bad_simulation_parameters(no_simulation, override, match):
    from octascope.app.cli import check_command_line

    with pytest.raises(ConfigError, match=match):
        check_command_line(["source=simulated", override])


def test_source_config_check_refuses_unknown_step_keys(no_simulation):
    from octascope.input.sources import check_source_config

    check_source_config({"kind": "simulated"})
    with pytest.raises(ConfigError, match=r"unknown md parameter\(s\) \['temprature_K'\]; allowed: .*temperature_K"):
        check_source_config({"kind": "simulated", "md": {"temprature_K": 300.0}})
    with pytest.raises(ConfigError, match="has no key"):
        check_source_config({"kind": "simulated", "mdd": {}})


# --- nothing from a config reaches LAMMPS as pasted text ------------------------------------------

@pytest.fixture
def no_lammps(monkeypatch):
    import octascope.sim.md as md

    def boom():
        raise AssertionError("LAMMPS was loaded")

    monkeypatch.setattr(md, "load_lammps", boom)


def test_forcefield_with_a_command_is_refused_before_lammps(no_lammps, tmp_path):
    from octascope.sim.md import run_md

    marker = tmp_path / "x"
    evil = f"{Path(__file__)}\nshell touch {marker}"
    with pytest.raises(SimulationParameterError, match="md.forcefield .* characters a LAMMPS command cannot take"):
        run_md(build_nanocube(n_cells=1), forcefield=evil, n_steps=10, snapshot_every=10, progress=False)
    with pytest.raises(ConfigError, match="cannot take"):
        lammps_setup_commands(None, evil, temperature_K=300.0, timestep_fs=1.0, minimize_steps=0, seed=0)
    assert not marker.exists()


@pytest.mark.parametrize("path", ["ff file.ff", "ff'.ff", 'ff".ff', "ff#.ff", "$HOME/ff", "ff&"])
def test_forcefield_paths_with_lammps_syntax_are_refused(path):
    with pytest.raises(SimulationParameterError, match="cannot take"):
        MDOptions(forcefield=path)


def test_forcefield_must_be_an_existing_regular_file(tmp_path):
    with pytest.raises(SimulationParameterError, match="not an existing regular file"):
        MDOptions(forcefield=str(tmp_path / "missing.ff"))
    with pytest.raises(SimulationParameterError, match="not an existing regular file"):
        MDOptions(forcefield=str(tmp_path))
    ff = tmp_path / "my.ff"
    ff.write_text("")
    assert MDOptions(forcefield=str(ff)).forcefield == str(ff)


@pytest.mark.parametrize("name, value", [("temperature_K", "300\nshell ls"), ("timestep_fs", float("inf")),
                                         ("seed", "1\nshell ls"), ("minimize_steps", 2.5), ("box_A", True)])
def test_setup_commands_take_only_finite_numbers(name, value):
    from octascope.sim.md import default_forcefield

    kw = dict(temperature_K=300.0, timestep_fs=1.0, minimize_steps=0, seed=0, box_A=200.0)
    with pytest.raises(ConfigError, match=name):
        lammps_setup_commands(None, str(default_forcefield()), **{**kw, name: value})


def test_setup_commands_unchanged_for_good_values():
    from octascope.sim.md import TYPE_ORDER, default_forcefield

    ff = str(default_forcefield())
    lines = lammps_setup_commands(None, ff, temperature_K=300.0, timestep_fs=1.0, minimize_steps=200, seed=0)
    assert f"pair_coeff * * {ff} {' '.join(TYPE_ORDER)}" in lines
    assert "velocity all create 300.0 1 mom yes rot yes dist gaussian" in lines
    assert "fix nvt all nvt temp 300.0 300.0 100.0" in lines and "minimize 0.0 1.0e-3 200 2000" in lines
    assert all("\n" not in line for line in lines)


# --- MPI: the caller hands off, with a minimal environment ----------------------------------------

def test_run_md_refuses_ranks_outside_mpi(no_lammps, monkeypatch):
    from octascope.sim import md

    for k in md.RANK_ENV:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ConfigError, match="run_md_on_ranks"):
        md.run_md(build_nanocube(n_cells=1), mpi_ranks=2, n_steps=10, snapshot_every=10)


def test_run_md_on_ranks_dispatches(monkeypatch):
    from octascope.sim import md, mpi

    for k in md.RANK_ENV:
        monkeypatch.delenv(k, raising=False)
    calls = []
    monkeypatch.setattr(mpi, "run_md_mpi", lambda atoms, opts, progress: calls.append(("mpi", opts.mpi_ranks)))
    monkeypatch.setattr(mpi, "run_md", lambda atoms, opts, progress, on_snapshot: calls.append(("here", opts.mpi_ranks)))
    atoms = build_nanocube(n_cells=1)
    mpi.run_md_on_ranks(atoms, MDOptions(mpi_ranks=3))
    mpi.run_md_on_ranks(atoms, MDOptions())
    monkeypatch.setenv("PMI_RANK", "0")  # inside mpirun: this process is one of the ranks
    mpi.run_md_on_ranks(atoms, MDOptions(mpi_ranks=3))
    assert calls == [("mpi", 3), ("here", 1), ("here", 3)]


def test_mpirun_gets_a_minimal_environment():
    from octascope.sim.mpi import mpirun_environment

    env = mpirun_environment({"PATH": "/usr/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "LC_ALL": "C",
                              "OMP_NUM_THREADS": "2", "MPICH_PORT_RANGE": "1:2", "HYDRA_LAUNCHER": "fork",
                              "SLURM_JOB_ID": "7", "OCTASCOPE_LIBMPI": "/x/libmpi.so.12",
                              "AWS_SECRET_ACCESS_KEY": "s", "MLFLOW_TRACKING_TOKEN": "t", "GITHUB_TOKEN": "g",
                              "PYTHONSTARTUP": "/tmp/evil.py", "LD_PRELOAD": "/tmp/evil.so"})
    assert set(env) == {"PATH", "HOME", "LANG", "LC_ALL", "OMP_NUM_THREADS", "MPICH_PORT_RANGE", "HYDRA_LAUNCHER",
                        "SLURM_JOB_ID", "OCTASCOPE_LIBMPI", "PYTHONPATH"}
    import octascope

    assert env["PYTHONPATH"].split(":")[0] == str(Path(octascope.__file__).resolve().parents[1])


def test_md_never_imports_mpi():
    """mpi imports md, never the other way: the caller decides the hand-off (no import cycle)."""
    import ast

    import octascope.sim.md as md

    tree = ast.parse(Path(md.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "octascope.sim.mpi" not in imported and "octascope.sim" not in imported
