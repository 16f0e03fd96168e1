"""Dose-dependent shot noise and scan distortions for simulated iDPC / iCoM images.

Noise model
-----------
iDPC and iCoM images are not counts: they are integrals of differential signals measured at every
probe position. Shot noise therefore enters the *measured CoM field*, and the integration turns the
white noise of the gradients into the characteristic 1/|k| (low-frequency, "cloudy") noise of iDPC.
Adding Poisson noise to the final image would be wrong (its values are not counts and can be
negative) and would give the wrong spectrum. From counting statistics (derived in
``docs/simulated-dose.md``), with N = dose · pixel² electrons per probe position:

- ``icom``: the CoM of the M electrons counted at a probe position (M Poisson with mean N) is the
  mean of M single-electron momenta, so each component has variance Var_pattern(k_x) · E[1/M; M ≥ 1]
  (:func:`inverse_count_mean`, ≈ 1/N). For the uniform bright-field disc of radius k_α = α/λ,
  Var(k_x) = k_α²/4: σ_CoM = k_α/2 · √E[1/M].
- ``idpc`` (quadrants centred on ±x, ±y over the ring k_i..k_o with k_i < k_α ≤ k_o): CoM_x =
  π k_α/(2√2) · (n₊ₓ - n₋ₓ)/N (:func:`octascope.sim.imaging.dpc_com_scale`) with Poisson counts n of
  mean N f/4 each in vacuum, f = 1 - k_i²/k_α² the share of the disc on the detector:
  σ_CoM = π k_α √f / (4√N), √2 more than the version before (which paired the half-plane scale
  π k_α/4 with the variance of one opposite-quadrant pair).

Weak-phase images (and multislice images cached before detector signals were kept) get Gaussian
noise with the vacuum variance above, independent between pixels and components. Multislice images
carry their detector signals (:attr:`octascope.sim.imaging.SimulatedImage.detector`) and are counted
per probe position: ``idpc`` draws Poisson counts of the four segments at the dose and forms the
differences from them; ``icom`` adds Gaussian noise with the pattern's own covariance at that
position times E[1/M] (the first two moments of the CoM of Poisson-sampled patterns; the
validation ``experiments/validation/dose_check.py`` compares it with sampling the full patterns).
The noisy CoM field is integrated with the same FFT routine as the clean one.

Scan distortions (after the specimen, before the noise): a linear drift ``drift_A`` (dx, dy) over the
whole frame, per-line horizontal jitter of σ ``jitter_px`` [px] and per-line additive offsets of σ
``line_offset_rel`` × (std of the clean image). All draws come from one seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.ndimage import map_coordinates

from octascope.core.errors import InputError
from octascope.core.params import param, require
from octascope.sim.imaging import SimulatedImage, integrate_gradient, bright_field_radius, dpc_com_scale
from octascope.sim.options import StepOptions, finite, resolve_options


def inverse_count_mean(mean_count: float | np.ndarray) -> float | np.ndarray:
    """E[1/M; M ≥ 1] for M Poisson with mean ``mean_count`` (≈ 1/mean for large means; 0 when M = 0).

    The variance of a mean over M counted electrons is the single-electron variance times this.
    Exact for scalars; arrays are interpolated in log(mean) on a table (relative error < 1e-4).
    """
    # lazy: scipy.stats (~0.3 s to import), only here
    from scipy.stats import poisson

    def exact(n: float) -> float:
        if n <= 0:
            return 0.0
        m = np.arange(1, int(n + 12 * np.sqrt(n) + 40))
        return float(np.sum(poisson.pmf(m, n) / m))

    if np.ndim(mean_count) == 0:
        return exact(float(mean_count))
    arr = np.asarray(mean_count, float)
    pos = arr > 0
    out = np.zeros_like(arr)
    if pos.any():
        lo, hi = np.log(arr[pos].min()), np.log(arr[pos].max())
        grid = np.linspace(lo, hi, max(2, int((hi - lo) * 200) + 2))
        table = np.log([exact(float(np.exp(g))) for g in grid])
        out[pos] = np.exp(np.interp(np.log(arr[pos]), grid, table))
    return out


def com_noise_sigma(*, signal: str, dose_e_per_A2: float, pixel_size_A: float, energy_eV: float = 300e3,
                    semiangle_mrad: float = 29.9, detector_inner_mrad: float = 0.0,
                    detector_outer_mrad: float | None = None) -> float:
    """Standard deviation of each CoM component per pixel in vacuum [1/Å] at a dose (module docstring).

    ``icom``: k_α/2 · √E[1/M]; ``idpc``: π k_α √f / (4√N) with f = 1 - k_i²/k_α². The detector's
    outer radius does not enter (it must lie outside the bright-field disc).
    """

    if dose_e_per_A2 is None or not dose_e_per_A2 > 0:
        raise InputError(f"dose_e_per_A2={dose_e_per_A2} must be > 0 e/Å²; e.g. noise.dose_e_per_A2=500 (or null for no noise)")
    k_alpha = bright_field_radius(energy_eV, semiangle_mrad)
    n_e = dose_e_per_A2 * pixel_size_A**2
    if signal == "icom":
        return float(k_alpha / 2.0 * np.sqrt(inverse_count_mean(n_e)))
    if not 0 <= detector_inner_mrad < semiangle_mrad:
        raise InputError(f"detector_inner_mrad={detector_inner_mrad} must be in [0, semiangle_mrad={semiangle_mrad})")
    if detector_outer_mrad is not None and detector_outer_mrad < semiangle_mrad:
        raise InputError(f"detector_outer_mrad={detector_outer_mrad} must be >= semiangle_mrad={semiangle_mrad}")
    f = 1.0 - (detector_inner_mrad / semiangle_mrad) ** 2
    return float(np.pi * k_alpha * np.sqrt(f) / (4.0 * np.sqrt(n_e)))


def counted_com(sim: SimulatedImage, com: np.ndarray, detector: np.ndarray, n_e: float,
                rng: np.random.Generator) -> np.ndarray:
    """A noisy CoM field (2, H, W) [1/Å] counted from the detector signals at N = ``n_e`` electrons per position.

    ``idpc``: Poisson counts of the four segments, CoM = :func:`~octascope.sim.imaging.dpc_com_scale`
    × ((n₊ - n₋)/N - the vacuum difference). ``icom``: the clean CoM plus Gaussian noise with the
    pattern's covariance at each position times E[1/M], M Poisson with mean N × captured fraction.
    """

    info = sim.info
    if sim.signal == "idpc":
        counts = rng.poisson(n_e * np.clip(detector, 0.0, None)).astype(float)
        v = np.asarray(info.get("detector_vacuum", [0.0] * 4), float)
        scale = dpc_com_scale(info.get("energy_eV", 300e3), info.get("semiangle_mrad", 29.9))
        return scale * np.stack([(counts[0] - counts[2]) / n_e - (v[0] - v[2]),
                                 (counts[1] - counts[3]) / n_e - (v[1] - v[3])])
    captured, mxx, myy, mxy = detector
    cxx = np.clip(mxx - com[0] ** 2, 0.0, None)
    cyy = np.clip(myy - com[1] ** 2, 0.0, None)
    cxy = mxy - com[0] * com[1]
    w = inverse_count_mean(n_e * np.clip(captured, 0.0, None))
    l11 = np.sqrt(cxx)
    l21 = np.where(l11 > 0, cxy / np.where(l11 > 0, l11, 1.0), 0.0)
    l22 = np.sqrt(np.clip(cyy - l21**2, 0.0, None))
    z1, z2 = rng.standard_normal((2,) + com.shape[1:])
    return com + np.sqrt(w) * np.stack([l11 * z1, l21 * z1 + l22 * z2])


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


def noisy_com(sim: SimulatedImage, options: NoiseOptions | None = None, /, **params: Any) -> np.ndarray:
    """The distorted, noisy CoM field (2, H, W) [1/Å] that :func:`apply_noise` integrates (same options, same draws)."""
    opts = resolve_options(NoiseOptions, options, params)
    return _noisy_com(sim, opts, np.random.default_rng(opts.seed))


def _noisy_com(sim: SimulatedImage, opts: NoiseOptions, rng: np.random.Generator) -> np.ndarray:
    """Scan distortions, then shot noise (counted from the detector signals where the image has them)."""

    dose_e_per_A2, jitter_px, drift_A = opts.dose_e_per_A2, opts.jitter_px, opts.drift_A
    com = np.asarray(sim.com, float)
    detector = None if sim.detector is None else np.asarray(sim.detector, float)
    h, w = com.shape[1:]
    p = sim.pixel_size_A
    rows, cols = np.mgrid[0:h, 0:w].astype(float)
    dx, dy = drift_shift_A(frame_time((h, w)), drift_A)
    jitter = rng.normal(0.0, jitter_px, size=(h, 1)) if jitter_px > 0 else np.zeros((h, 1))
    if np.any(drift_A) or jitter_px > 0:
        coords = np.stack([rows + dy / p, cols + dx / p + jitter])
        com = np.stack([map_coordinates(c, coords, order=3, mode="nearest") for c in com])
        if detector is not None:
            detector = np.stack([map_coordinates(c, coords, order=3, mode="nearest") for c in detector])
    if dose_e_per_A2 is None:
        return com
    if detector is not None:
        return counted_com(sim, com, detector, dose_e_per_A2 * p**2, rng)
    info = sim.info
    sigma = com_noise_sigma(signal=sim.signal, dose_e_per_A2=dose_e_per_A2, pixel_size_A=p,
                            energy_eV=info.get("energy_eV", 300e3), semiangle_mrad=info.get("semiangle_mrad", 29.9),
                            detector_inner_mrad=info.get("detector_inner_mrad", 0.0),
                            detector_outer_mrad=info.get("detector_outer_mrad"))
    return com + rng.normal(0.0, sigma, size=com.shape)


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
    opts = resolve_options(NoiseOptions, options, params)
    rng = np.random.default_rng(opts.seed)
    com = _noisy_com(sim, opts, rng)
    p = sim.pixel_size_A
    h = com.shape[1]
    image = integrate_gradient(com[0], com[1], p, boundary=sim.info.get("integration", "periodic"))
    if opts.line_offset_rel > 0:
        image = image + rng.normal(0.0, opts.line_offset_rel * float(np.std(sim.image)), size=(h, 1))
    return image.astype(np.float32)
