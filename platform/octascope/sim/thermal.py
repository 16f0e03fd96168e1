"""Frozen-phonon configurations with each atom's own MD displacement spread.

A real scan integrates ~10⁶ lattice vibrations per pixel; the simulator averages a handful of MD
snapshots. :func:`frozen_phonon_configurations` draws any number of configurations from the
trajectory's statistics instead: every atom at its mean position over all snapshots plus a Gaussian
displacement with the atom's own 3×3 covariance over the snapshots (anisotropic, so the elliptical
halide columns of the tilted lattice keep their shape). Displacements of different atoms are drawn
independently; the weak-phase image is linear in the potential, so its thermal average depends on
each atom's own displacement distribution only, not on correlations between atoms.

Used by :func:`octascope.sim.simulation.simulate` when ``imaging.thermal_configurations`` is set;
``docs/thermal-averaging.md`` has the study that decides how many configurations are needed.
"""

from __future__ import annotations

import numpy as np

from octascope.core.errors import InputError


def displacement_statistics(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean position (N, 3) [Å] and displacement covariance (N, 3, 3) [Å²] of each atom over snapshots (S, N, 3)."""
    pos = np.asarray(positions, float)
    if pos.ndim != 3 or pos.shape[-1] != 3 or len(pos) < 2:
        raise InputError(f"positions must be (S, N, 3) with S >= 2 snapshots, got shape {pos.shape}")
    mean = pos.mean(0)
    d = pos - mean
    cov = np.einsum("sni,snj->nij", d, d) / (len(pos) - 1)
    return mean, cov


def frozen_phonon_configurations(positions: np.ndarray, n_configurations: int, *, seed: int = 0) -> np.ndarray:
    """``n_configurations`` configurations (n, N, 3) [Å]: mean + Gaussian displacements of each atom's covariance.

    Parameters
    ----------
    positions : numpy.ndarray
        MD snapshots (S, N, 3) [Å], S >= 2.
    n_configurations : int
        How many configurations to draw (>= 1).
    seed : int
        Seed of the draws.
    """
    if n_configurations < 1:
        raise InputError(f"n_configurations={n_configurations} must be >= 1")
    mean, cov = displacement_statistics(positions)
    w, v = np.linalg.eigh(cov)
    root = v * np.sqrt(np.clip(w, 0.0, None))[:, None, :]  # (N, 3, 3): cov = root rootᵀ
    z = np.random.default_rng(seed).standard_normal((n_configurations,) + mean.shape)
    return mean[None] + np.einsum("nij,snj->sni", root, z)
