"""Dose-dependent shot noise and scan distortions for simulated iDPC / iCoM images.

Noise model
-----------
iDPC and iCoM images are not counts: they are integrals of differential signals measured at every
probe position. Shot noise therefore enters the *measured CoM field*, and the integration turns the
white noise of the gradients into the characteristic 1/|k| (low-frequency, "cloudy") noise of iDPC.
Adding Poisson noise to the final image would be wrong (its values are not counts and can be
negative) and would give the wrong spectrum. We adopt:

- N = dose · pixel² electrons per probe position.
- ``icom``: each CoM component is the mean of N single-electron momenta with variance ⟨k²⟩ per
  component; for the uniform bright-field disc of radius k_α = α/λ, ⟨k_x²⟩ = k_α²/4, so
  σ_CoM = k_α / (2√N) [1/Å].
- ``idpc`` (four quadrants of a ring k_i..k_o): (S₊ - S₋)/ΣS has variance ≈ 1/(2N) (each electron
  lands in one of four equally lit quadrants), scaled to CoM units by π(k_o + k_i)/4 as in
  :mod:`octascope.sim.imaging`: σ = π(k_o + k_i)/(4√(2N)).

The noise is Gaussian with these exact first two moments (the Poisson counts of ≥ a few electrons
per segment are close to Gaussian; below that the skew is not modelled). It is independent between
pixels and components, then integrated with the same FFT routine as the clean field.

Scan distortions (after the specimen, before the noise): a linear drift ``drift_A`` (dx, dy) over the
whole frame, per-line horizontal jitter of σ ``jitter_px`` [px] and per-line additive offsets of σ
``line_offset_rel`` × (std of the clean image). All draws come from one seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from octascope.core.errors import InputError
from octascope.core.params import param, require
from octascope.sim.imaging import SimulatedImage, integrate_gradient
from octascope.sim.options import StepOptions, finite, resolve_options


def com_noise_sigma(*, signal: str, dose_e_per_A2: float, pixel_size_A: float, energy_eV: float = 300e3,
                    semiangle_mrad: float = 29.9, detector_inner_mrad: float = 0.0,
                    detector_outer_mrad: float | None = None) -> float:
    """Standard deviation of each CoM component per pixel [1/Å] at a dose (see module docstring)."""
    from abtem.core.energy import energy2wavelength

    if dose_e_per_A2 is None or not dose_e_per_A2 > 0:
        raise InputError(f"dose_e_per_A2={dose_e_per_A2} must be > 0 e/Å²; e.g. noise.dose_e_per_A2=500 (or null for no noise)")
    lam = energy2wavelength(energy_eV)
    n_e = dose_e_per_A2 * pixel_size_A**2
    if signal == "icom":
        return (semiangle_mrad * 1e-3 / lam) / (2.0 * np.sqrt(n_e))
    outer = semiangle_mrad if detector_outer_mrad is None else detector_outer_mrad
    return np.pi * (outer + detector_inner_mrad) * 1e-3 / lam / (4.0 * np.sqrt(2.0 * n_e))


def frame_time(shape: tuple[int, int]) -> np.ndarray:
    """Fraction of the frame time at which each pixel is scanned (row-major raster) [0-1]."""
    h, w = shape
    return (np.arange(h * w, dtype=float).reshape(h, w)) / (h * w)


def drift_shift_A(t: np.ndarray, drift_A: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Specimen displacement seen by the probe at frame time ``t`` [Å]."""
    return drift_A[0] * t, drift_A[1] * t


def distort_positions(xy_A: np.ndarray, *, shape: tuple[int, int], pixel_size_A: float,
                      drift_A: tuple[float, float]) -> np.ndarray:
    """Where a specimen point ``xy_A`` (N, 2) [Å] appears in the drifted image [Å].

    The probe at nominal r sees the specimen point r + d(t); solved by fixed-point iteration.
    """
    xy = np.asarray(xy_A, float).copy()
    if not np.any(drift_A):
        return xy
    h, w = shape
    r = xy.copy()
    for _ in range(5):
        row = np.clip(r[:, 1] / pixel_size_A, 0, h - 1)
        col = np.clip(r[:, 0] / pixel_size_A, 0, w - 1)
        t = (row * w + col) / (h * w)
        r = xy - np.column_stack(drift_shift_A(t, drift_A))
    return r


@dataclass(frozen=True, kw_only=True)
class NoiseOptions(StepOptions):
    """Parameters of :func:`apply_noise` (config group ``noise``)."""

    group: ClassVar[str] = "noise"

    dose_e_per_A2: float | None = param(2000.0, unit="e/Å²", doc="electron dose; null for no shot noise")
    line_offset_rel: float = param(0.0, unit="1", doc="σ of per-scan-line additive offsets, relative to the clean "
                                   "image's standard deviation")
    jitter_px: float = param(0.0, unit="px", doc="σ of per-scan-line horizontal shifts")
    drift_A: tuple[float, float] = param((0.0, 0.0), unit="Å", doc="linear specimen drift (dx, dy) over the whole frame")
    seed: int = param(0, doc="random seed of the noise, jitter and offsets")

    def check(self) -> None:
        dose = self.dose_e_per_A2
        require(dose is None or (finite(dose) and dose > 0),
                f"dose_e_per_A2={dose} must be > 0 e/Å²; e.g. noise.dose_e_per_A2=500 (or null for no noise)")
        require(finite(self.jitter_px) and self.jitter_px >= 0, f"jitter_px={self.jitter_px} must be >= 0 px")
        require(finite(self.line_offset_rel) and self.line_offset_rel >= 0,
                f"line_offset_rel={self.line_offset_rel} must be >= 0")
        require(all(finite(d) for d in self.drift_A), f"drift_A={list(self.drift_A)} must be two finite numbers [Å]")
        require(self.seed >= 0, f"seed={self.seed} must be >= 0")


def apply_noise(sim: SimulatedImage, options: NoiseOptions | None = None, /, **params: Any) -> np.ndarray:
    """A noisy, distorted image from a clean simulated CoM field.

    Parameters
    ----------
    sim : SimulatedImage
        Output of :func:`octascope.sim.imaging.simulate_image`.
    options : NoiseOptions, optional
        The noise; or give its fields as keywords: ``dose_e_per_A2`` [e/Å²] (``None``: no shot
        noise), ``line_offset_rel`` [1], ``jitter_px`` [px], ``drift_A`` (dx, dy) [Å], ``seed``.

    Returns
    -------
    numpy.ndarray
        The noisy image (H, W), float32, vacuum level ~0.

    Raises
    ------
    SimulationParameterError
        An unknown parameter or a value out of range.
    """
    from scipy.ndimage import map_coordinates

    opts = resolve_options(NoiseOptions, options, params)
    dose_e_per_A2, jitter_px, drift_A = opts.dose_e_per_A2, opts.jitter_px, opts.drift_A
    rng = np.random.default_rng(opts.seed)
    com = np.asarray(sim.com, float)
    h, w = com.shape[1:]
    p = sim.pixel_size_A
    rows, cols = np.mgrid[0:h, 0:w].astype(float)
    dx, dy = drift_shift_A(frame_time((h, w)), drift_A)
    jitter = rng.normal(0.0, jitter_px, size=(h, 1)) if jitter_px > 0 else np.zeros((h, 1))
    if np.any(drift_A) or jitter_px > 0:
        coords = np.stack([rows + dy / p, cols + dx / p + jitter])
        com = np.stack([map_coordinates(c, coords, order=3, mode="nearest") for c in com])
    if dose_e_per_A2 is not None:
        info = sim.info
        sigma = com_noise_sigma(signal=sim.signal, dose_e_per_A2=dose_e_per_A2, pixel_size_A=p,
                                energy_eV=info.get("energy_eV", 300e3), semiangle_mrad=info.get("semiangle_mrad", 29.9),
                                detector_inner_mrad=info.get("detector_inner_mrad", 0.0),
                                detector_outer_mrad=info.get("detector_outer_mrad"))
        com = com + rng.normal(0.0, sigma, size=com.shape)
    image = integrate_gradient(com[0], com[1], p, boundary=sim.info.get("integration", "periodic"))
    if opts.line_offset_rel > 0:
        image = image + rng.normal(0.0, opts.line_offset_rel * float(np.std(sim.image)), size=(h, 1))
    return image.astype(np.float32)
