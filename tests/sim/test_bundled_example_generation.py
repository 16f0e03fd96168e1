"""The bundled simulated example (platform/octascope/data/examples/cspbi3_qd) is complete and consistent."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

EXAMPLE = Path(str(resources.files("octascope") / "data" / "examples" / "cspbi3_qd"))


def test_files_and_size():
    names = {"image.npy", "truth_columns.csv", "truth_octahedra.csv", "meta.json"}
    assert names <= {p.name for p in EXAMPLE.iterdir()}
    assert sum(p.stat().st_size for p in EXAMPLE.iterdir()) < 400_000


def test_meta_and_truth_consistent():
    meta = json.loads((EXAMPLE / "meta.json").read_text())
    img = np.load(EXAMPLE / "image.npy")
    assert list(img.shape) == meta["shape"] and img.dtype == np.float32
    assert meta["signal"] == "idpc" and meta["pixel_size_A"] == pytest.approx(0.2)
    assert meta["regenerate"].startswith("python -m octascope.sim run --out platform/octascope/data/examples/cspbi3_qd")
    assert meta["composition"] == "Cs324Pb216I756"
    cols = pd.read_csv(EXAMPLE / "truth_columns.csv")
    n = meta["parameters"]["structure"]["n_cells"]
    assert cols["species"].value_counts().to_dict() == {"X": 2 * n * (n + 1), "Cs": (n + 1) ** 2, "Pb": n * n}
    assert cols["n_atoms"].sum() == 324 + 216 + 756
    octa = pd.read_csv(EXAMPLE / "truth_octahedra.csv")
    assert len(octa) == n * n and octa["theta3_deg"].between(0, 20).all()
    # Pb columns sit on bright pixels of the image
    ps = meta["pixel_size_A"]
    pb = cols[cols.species == "Pb"]
    vals = img[np.rint(pb.y_A / ps).astype(int), np.rint(pb.x_A / ps).astype(int)]
    assert np.median(vals) > np.percentile(img, 97)
