"""Shared fixtures: small synthetic images with known answers, an isolated working directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

# The helpers beside this file (cli_run, microscope_files) are imported by name from every folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def small_synthetic():
    """A 6x6-cell particle, 8° rotation, 0.2 Å/px, dose 2000 e/Å², rotated by 7° in the frame."""
    from octascope.input.synthetic import SyntheticSpec, make_synthetic

    return make_synthetic(SyntheticSpec(n_cells=(6, 6), rotation_deg=8.0, particle_angle_deg=7.0, seed=1))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty directory (outputs and the MLflow store land there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path
