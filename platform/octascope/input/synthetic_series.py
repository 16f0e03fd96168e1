"""Synthetic time series: a perovskite particle (:mod:`octascope.input.synthetic`) that rotates in
the image plane and drifts, one Poisson-noise frame per time step, with the truth of every frame.

Cheap (Gaussian columns, no simulation), for the tests and the time-series validation
(``experiments/validation/series.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from octascope.core.errors import InputError
from octascope.core.model import Image
from octascope.input.synthetic import Z_COLUMN, SyntheticSpec, perovskite_columns, render_columns


@dataclass(frozen=True)
class SeriesTruth:
    """What each frame of a synthetic series holds.

    Parameters
    ----------
    rotation_deg : numpy.ndarray
        In-plane rotation of the particle in each frame [deg].
    drift_A : numpy.ndarray
        (n, 2) shift (x, y) of the whole frame content against the first frame [Å].
    centre_A : numpy.ndarray
        (n, 2) particle centre in each frame [Å].
    tilt_deg : float
        The octahedral rotation α of the particle (θ1 = θ2 = θ3 = α) [deg].
    a_A : float
        Pb-Pb spacing [Å].
    """

    rotation_deg: np.ndarray
    drift_A: np.ndarray
    centre_A: np.ndarray
    tilt_deg: float
    a_A: float


def random_drift_A(n_frames: int, step_A: float, seed: int = 0) -> np.ndarray:
    """A drift path [Å], (n, 2): a random walk of ``step_A`` rms per axis and frame plus a steady
    component of ``step_A`` per frame along x, starting at (0, 0)."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, step_A, size=(n_frames, 2)) + np.array([step_A, 0.0])
    steps[0] = 0.0
    return np.cumsum(steps, axis=0)


def make_synthetic_series(spec: SyntheticSpec | None = None, *, n_frames: int = 20, rotation_total_deg: float = 2.0,
                          drift_A: np.ndarray | None = None) -> tuple[list[Image], SeriesTruth]:
    """A stack of frames of one particle rotating linearly by ``rotation_total_deg`` over the series.

    Parameters
    ----------
    spec : SyntheticSpec, optional
        The particle (cells, lattice, octahedral rotation, column width, pixel size, dose per frame
        [e/Å²], seed); ``particle_angle_deg`` is its rotation in the first frame.
    n_frames : int
        Number of frames.
    rotation_total_deg : float
        Rotation of the particle from the first to the last frame [deg], linear in time.
    drift_A : numpy.ndarray, optional
        (n, 2) shift (x, y) of each frame's content [Å]; default :func:`random_drift_A` with 1 Å steps.

    Returns
    -------
    frames : list of Image
        The noisy frames (one shape, the spec's pixel size and dose).
    truth : SeriesTruth
    """
    spec = spec or SyntheticSpec()
    if n_frames < 1:
        raise InputError(f"n_frames must be >= 1, got {n_frames}")
    drift = random_drift_A(n_frames, 1.0, spec.seed) if drift_A is None else np.asarray(drift_A, float)
    if drift.shape != (n_frames, 2):
        raise InputError(f"drift_A must have shape ({n_frames}, 2), got {drift.shape}")
    cols, _ = perovskite_columns(spec)
    n1, n2 = spec.n_cells
    centre_p = np.array([(n1 - 1) / 2, (n2 - 1) / 2]) * spec.a_A
    xy0 = cols[["x_A", "y_A"]].to_numpy() - centre_p
    radius = float(np.hypot(*xy0.T).max())
    half = radius + spec.margin_A + float(np.abs(drift - drift.mean(axis=0)).max())
    size = int(np.ceil(2 * half / spec.pixel_size_A)) + 1
    shape = (size, size)
    centre = (np.array([size, size]) - 1) / 2 * spec.pixel_size_A - drift.mean(axis=0)
    amp = cols.species.map(Z_COLUMN).to_numpy(float) / Z_COLUMN["Pb"]
    rng = np.random.default_rng(spec.seed)
    angles = spec.particle_angle_deg + rotation_total_deg * (np.arange(n_frames) / max(n_frames - 1, 1))
    frames = []
    for k, ang_deg in enumerate(angles):
        ang = np.deg2rad(ang_deg)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        xy = xy0 @ rot.T + centre + drift[k]
        clean = render_columns(xy[:, 0] / spec.pixel_size_A, xy[:, 1] / spec.pixel_size_A, amp, shape,
                               spec.sigma_A / spec.pixel_size_A) + spec.background
        if spec.dose_e_per_A2 is None:
            data = clean
        else:
            electrons = spec.dose_e_per_A2 * spec.pixel_size_A**2
            data = rng.poisson(clean * electrons) / electrons
        frames.append(Image(data=data.astype(np.float32), pixel_size_A=spec.pixel_size_A, signal="idpc",
                            dose_e_per_A2=spec.dose_e_per_A2,
                            source=f"synthetic series frame {k}: {n1}x{n2} cells at {ang_deg:.3f} deg"))
    truth = SeriesTruth(rotation_deg=angles, drift_A=drift, centre_A=centre + drift, tilt_deg=spec.rotation_deg,
                        a_A=spec.a_A)
    return frames, truth
