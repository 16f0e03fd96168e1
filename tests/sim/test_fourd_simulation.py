"""Simulated 4D-STEM (octascope.sim.fourd): patterns, their CoM against the weak-phase iCoM model,
the detector rotation and descan, counting noise."""

from __future__ import annotations

import numpy as np
import pytest

from octascope.sim.fourd import count_patterns, pattern_moments, rotate_patterns


def _disc(det: int = 32, centre: tuple[float, float] = (16.0, 16.0), radius: float = 7.0) -> np.ndarray:
    ky, kx = np.mgrid[0:det, 0:det].astype(float)
    d = np.clip(radius + 0.5 - np.hypot(kx - centre[0], ky - centre[1]), 0, 1)
    return d / d.sum()


def test_rotate_patterns_turns_the_com_and_adds_the_descan() -> None:
    origin = (16.0, 16.0)
    shifted = _disc(centre=(19.0, 16.0))  # CoM +3 px along x in the scan frame
    pats = np.broadcast_to(shifted, (3, 4, 32, 32)).copy()
    out = rotate_patterns(pats, 30.0, origin, descan_px_per_step=(0.5, -0.25))
    m = pattern_moments(out, 1.0, origin)
    t = np.deg2rad(-30.0)  # the detector sees R(-rotation)·k
    rows, cols = np.mgrid[0:3, 0:4]
    # linear interpolation of a disc with a one-pixel edge: CoM to within 0.05 px
    assert np.allclose(m[1], 3 * np.cos(t) + 0.5 * cols, atol=0.05)
    assert np.allclose(m[2], 3 * np.sin(t) - 0.25 * rows, atol=0.05)


def test_count_patterns_dose() -> None:
    pats = np.broadcast_to(_disc(), (20, 20, 32, 32))
    counts = count_patterns(pats, 100.0, 0.4, seed=1)
    assert counts.dtype == np.uint16
    # N = 100 e/Å² · 0.16 Å² = 16 electrons per position: the mean over 400 positions to 3 %
    assert counts.sum(axis=(-2, -1)).mean() == pytest.approx(16.0, rel=0.03)


@pytest.mark.slow
@pytest.mark.abtem
def test_simulated_patterns_com_follows_the_weak_phase_icom(tmp_path) -> None:
    """The CoM of the simulated patterns and the weak-phase CoM model of octascope.sim.imaging image the
    same columns: their CoM fields correlate (the strong-phase patterns are not first order in σV, so
    not equal), the patterns conserve the beam and the truth lies in the scan frame."""
    from octascope.sim.fourd import simulate_fourd
    from octascope.sim.simulation import simulate

    kw = dict(structure={"n_cells": 2}, run_md=False, cache_dir=str(tmp_path))
    sim = simulate_fourd(step_A=0.4, detector_px=48, margin_A=4.0, **kw)
    m = pattern_moments(sim.patterns, sim.detector_sampling, sim.origin_px)
    assert m[0].max() <= 1.0 + 1e-4 and m[0].min() > 0.5
    wp = simulate(imaging={"signal": "icom", "pixel_size_A": 0.4, "margin_A": 4.0,
                           "field_of_view_A": sim.patterns.shape[0] * 0.4},
                  noise={"dose_e_per_A2": None}, progress=False, **kw)
    assert wp.clean.com.shape[1:] == sim.patterns.shape[:2]
    r = np.corrcoef(m[1:3].ravel(), wp.clean.com.ravel())[0, 1]
    assert r > 0.8, r
    assert np.allclose(np.sort(sim.truth.columns["x_A"].to_numpy()), np.sort(wp.truth.columns["x_A"].to_numpy()), atol=0.05)
