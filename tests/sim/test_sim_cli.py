"""python -m octascope.sim: parameter loading and the structure / run commands."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from octascope.sim.__main__ import load_params, main
from octascope.sim.structure import read_structure


def test_load_params_defaults_presets_overrides():
    p = load_params(None, ["structure.n_cells=4", "noise.drift_A=[1.0, 0.0]", "run_md=false"])
    assert p["structure"]["n_cells"] == 4 and p["structure"]["a_A"] == 6.29
    assert p["noise"]["drift_A"] == [1.0, 0.0] and p["run_md"] is False
    assert "kind" not in p


def test_structure_command(tmp_path, capsys):
    out = tmp_path / "qd.extxyz"
    assert main(["structure", "--out", str(out), "structure.n_cells=3", "structure.br_fraction=0.25",
                 "structure.mixing=shell"]) == 0
    atoms = read_structure(out)
    assert atoms.get_chemical_symbols().count("Br") == round(0.25 * 3 * 9 * 4)
    assert "charge 0" in capsys.readouterr().out


def test_bad_override_is_one_line_error(tmp_path, capsys):
    assert main(["structure", "--out", str(tmp_path / "x.extxyz"), "structure.mixing=stripes"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "mixing" in err and "\n" not in err


@pytest.mark.abtem
def test_run_command_writes_bundle(tmp_path):
    out = tmp_path / "bundle"
    argv = ["run", "--out", str(out), "structure.n_cells=2", "run_md=false", "imaging.pixel_size_A=0.4",
            f"cache_dir={tmp_path / 'cache'}", "progress=false"]
    assert main(argv) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["regenerate"].startswith("python -m octascope.sim run --out")
    cols = pd.read_csv(out / "truth_columns.csv")
    assert cols["species"].value_counts().to_dict() == {"X": 12, "Cs": 9, "Pb": 4}
    assert (out / "image.npy").exists() and (out / "truth_octahedra_3d.csv").exists()
