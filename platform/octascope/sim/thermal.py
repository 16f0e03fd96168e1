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

from typing import Any

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


def gaussian_projected_potential(symbols: np.ndarray | list, xy_A: np.ndarray, cov_xy_A2: np.ndarray, *,
                                 gpts: tuple[int, int], extent_A: tuple[float, float], slice_thickness_A: float = 2.0,
                                 chunk: int = 32) -> np.ndarray:
    """Projected potential (ny, nx) [eV·Å] of atoms with Gaussian position spreads: the infinite-configuration limit.

    Each atom's abTEM projected potential (``projection="infinite"``, periodic cell) is convolved with
    its own 2-D Gaussian: in Fourier space the structure factor of element Z is
    Σ_a exp(-2πi q·r_a) exp(-2π² qᵀ Σ_a q). With ``cov_xy_A2 = 0`` this is abTEM's potential of the
    positions ``xy_A``.

    Parameters
    ----------
    symbols : sequence of str
        Element per atom (N,).
    xy_A : numpy.ndarray
        Mean positions (N, 2) [Å] in the cell.
    cov_xy_A2 : numpy.ndarray
        In-plane displacement covariance (N, 2, 2) [Å²] in the same frame.
    gpts, extent_A : tuple
        Grid points (nx, ny) and cell size (x, y) [Å].
    """
    # lazy: abTEM (~1.6 s to import), only when simulating
    import abtem
    # lazy: ASE (ase.io ~60 ms to import), only when simulating
    import ase

    sym = np.asarray(symbols).astype(str)
    xy = np.asarray(xy_A, float)
    cov = np.asarray(cov_xy_A2, float)
    nx, ny = gpts
    qx = np.fft.fftfreq(nx, d=extent_A[0] / nx)[None, None, :]
    qy = np.fft.fftfreq(ny, d=extent_A[1] / ny)[None, :, None]
    total = np.zeros((ny, nx), complex)
    for el in np.unique(sym):
        one = ase.Atoms(el, positions=[(0.0, 0.0, 1.0)], cell=(extent_A[0], extent_A[1], 2.0), pbc=True)
        pot = abtem.Potential(one, gpts=gpts, slice_thickness=slice_thickness_A, projection="infinite", device="cpu")
        with abtem.config.set({"diagnostics.progress_bar": False}):
            built: Any = pot.build().project().compute()
        v1 = np.asarray(built.array, dtype=np.float64).T  # [y, x], the atom at the origin
        idx = np.flatnonzero(sym == el)
        sf = np.zeros((ny, nx), complex)
        for i in range(0, len(idx), chunk):
            a = idx[i:i + chunk]
            x, y = xy[a, 0][:, None, None], xy[a, 1][:, None, None]
            cxx, cyy, cxy = (cov[a, 0, 0][:, None, None], cov[a, 1, 1][:, None, None], cov[a, 0, 1][:, None, None])
            arg = -2j * np.pi * (qx * x + qy * y) - 2 * np.pi**2 * (cxx * qx**2 + 2 * cxy * qx * qy + cyy * qy**2)
            sf += np.exp(arg).sum(0)
        total += np.fft.fft2(v1) * sf
    return np.fft.ifft2(total).real
