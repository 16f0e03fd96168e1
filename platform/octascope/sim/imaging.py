"""iDPC / iCoM STEM images of a particle with abTEM, beam along [001] (the z axis).

Signal and units
----------------
Every mode produces the *centre-of-mass (CoM) field* first, the mean transverse momentum of the
electrons leaving the specimen [1/Å] at each probe position (for iDPC, the segment differences
scaled to CoM-equivalent units), and the image is its integral, done here by one FFT routine
(:func:`integrate_gradient`) so that the noise model (:mod:`octascope.sim.noise`) can act on the
measured gradients before integration. For a thin phase object φ = σ·V_proj and an aberration-free
probe of intensity P (∫P = 1), CoM = ∇(φ ⊗ P)/(2π), so the integrated image is φ ⊗ P / (2π) [rad/2π]
(the weak-phase result of Lazić et al., Ultramicroscopy 160, 265 (2016)).

Modes
-----
``weak_phase``
    Projected potential from abTEM (``Potential(..., projection="infinite")`` summed over slices and
    averaged over the snapshots) convolved with the abTEM probe intensity: seconds per image. Both
    signals give the same clean image here (the thin-object limit); ``signal`` then selects the
    detector's noise model in :mod:`octascope.sim.noise`.
``multislice``
    abTEM multislice of a focused probe over a :class:`abtem.GridScan`, averaged over the snapshots
    (:class:`abtem.AtomsEnsemble`, frozen-phonon style). ``signal="icom"``: pixelated detector
    and abTEM's ``center_of_mass`` (which divides by the captured intensity: checked against the
    thin-object case above in ``experiments/validation/icom_normalisation.py``); ``signal="idpc"``: a
    four-quadrant :class:`abtem.SegmentedDetector` (``inner``..``outer`` mrad), DPC_x = (S₊ₓ - S₋ₓ)/ΣS
    times π(k_o + k_i)/4 (the CoM of a uniform disc shifted by δ gives exactly this difference ×4/(π(k_o+k_i))).

Image frame
-----------
The particle (its mean position) is rotated by ``scan_rotation_deg`` about z and centred in a square
field of view; pixel [r, c] is the probe position (x, y) = (c·p, r·p), so ``x_A = x_px·p`` as in
:mod:`octascope.model`. :class:`Frame` maps 3-D positions to the image frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import InputError

MODES = ("weak_phase", "multislice")
SIGNALS = ("idpc", "icom")


@dataclass(frozen=True)
class Frame:
    """Map from particle coordinates [Å] to the image frame [Å].

    ``xy_image = R(rotation) (xy - centre) + fov/2``.
    """

    centre_A: tuple[float, float]
    rotation_deg: float
    field_of_view_A: float

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Image-frame coordinates [Å] of (..., 2) particle-frame ``xy`` [Å]."""
        t = np.deg2rad(self.rotation_deg)
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        return (np.asarray(xy, float) - np.asarray(self.centre_A)) @ rot.T + self.field_of_view_A / 2.0


@dataclass
class SimulatedImage:
    """A noise-free simulated image with its CoM field.

    Attributes
    ----------
    com : numpy.ndarray
        CoM field (2, H, W) [1/Å]: x and y components.
    image : numpy.ndarray
        Integrated signal (H, W) [rad/2π], vacuum (border) level 0.
    pixel_size_A : float
        Pixel size [Å].
    signal : str
        ``idpc`` or ``icom``.
    frame : Frame
        Particle-to-image transform.
    info : dict
        Settings and timing.
    """

    com: np.ndarray
    image: np.ndarray
    pixel_size_A: float
    signal: str
    frame: Frame
    info: dict = field(default_factory=dict)


def integrate_gradient(gx: np.ndarray, gy: np.ndarray, pixel_size_A: float) -> np.ndarray:
    """Integrate a gradient field by Fourier division; the border mean is set to 0.

    Parameters
    ----------
    gx, gy : numpy.ndarray
        Gradient components along x (axis 1) and y (axis 0) [signal units/Å].
    pixel_size_A : float
        Pixel size [Å].

    Returns
    -------
    numpy.ndarray
        The field whose gradient is closest to (gx, gy) in the least-squares sense (periodic).
    """
    h, w = gx.shape
    kx = np.fft.fftfreq(w, d=pixel_size_A)[None, :]
    ky = np.fft.fftfreq(h, d=pixel_size_A)[:, None]
    k2 = kx**2 + ky**2
    k2[0, 0] = 1.0
    f = (kx * np.fft.fft2(gx) + ky * np.fft.fft2(gy)) / (2j * np.pi * k2)
    f[0, 0] = 0.0
    out = np.fft.ifft2(f).real
    return out - border_mean(out)


def border_mean(a: np.ndarray, width: int = 3) -> float:
    """Mean of the outer ``width`` pixels of an image (the vacuum level around a particle)."""
    mask = np.ones(a.shape, bool)
    mask[width:-width, width:-width] = False
    return float(a[mask].mean())


def make_frame(positions: np.ndarray, *, pixel_size_A: float, field_of_view_A: float | None, margin_A: float,
               scan_rotation_deg: float) -> tuple[Frame, int]:
    """Frame and image size [px] for snapshots ``positions`` (S, N, 3) [Å]."""
    xy = positions.reshape(-1, 3)[:, :2]
    centre = (xy.max(0) + xy.min(0)) / 2.0
    half_diag = float(np.max(np.linalg.norm(xy - centre, axis=1)))
    need = 2 * half_diag + 2 * margin_A
    fov = need if field_of_view_A is None else float(field_of_view_A)
    if fov < 2 * half_diag:
        raise InputError(
            f"field of view {fov:.1f} Å is smaller than the particle ({2 * half_diag:.1f} Å across, any rotation); "
            f"set imaging.field_of_view_A >= {need:.0f} or leave it null"
        )
    n_px = int(np.ceil(fov / pixel_size_A))
    fov = n_px * pixel_size_A
    return Frame((float(centre[0]), float(centre[1])), float(scan_rotation_deg), fov), n_px


def _frame_atoms(symbols: Sequence[str], positions: np.ndarray, frame: Frame, padding_z_A: float = 2.0) -> list:
    """ASE Atoms per snapshot in the image frame, in a cell of the field of view."""
    from ase import Atoms

    out = []
    z0 = positions[:, :, 2].min()
    cell = (frame.field_of_view_A, frame.field_of_view_A, float(positions[:, :, 2].max() - z0 + 2 * padding_z_A))
    for pos in positions:
        xy = frame.to_image(pos[:, :2])
        z = pos[:, 2] - z0 + padding_z_A
        out.append(Atoms(symbols=list(symbols), positions=np.column_stack([xy, z]), cell=cell, pbc=True))
    return out


def _device() -> str:
    try:
        import cupy  # noqa: F401
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    except Exception:
        return "cpu"


def simulate_image(
    symbols: Sequence[str],
    positions: np.ndarray,
    *,
    mode: str = "weak_phase",
    signal: str = "idpc",
    pixel_size_A: float = 0.2,
    field_of_view_A: float | None = None,
    margin_A: float = 8.0,
    scan_rotation_deg: float = 0.0,
    energy_eV: float = 300e3,
    semiangle_mrad: float = 29.9,
    defocus_A: float = 0.0,
    sampling_A: float = 0.1,
    slice_thickness_A: float = 2.0,
    detector_inner_mrad: float = 0.0,
    detector_outer_mrad: float | None = None,
    max_snapshots: int | None = 8,
    num_workers: int = 1,
    device: str = "auto",
    progress: bool = False,
) -> SimulatedImage:
    """Simulate a noise-free iDPC or iCoM image of a particle, averaged over MD snapshots.

    Parameters
    ----------
    symbols : sequence of str
        Element per atom (N,).
    positions : numpy.ndarray
        Atom positions (S, N, 3) or (N, 3) [Å]; the beam runs along z.
    mode : {"weak_phase", "multislice"}
        Fast projected-potential ⊗ probe-intensity model, or abTEM multislice.
    signal : {"idpc", "icom"}
        Segmented-detector integrated DPC, or integrated CoM from a pixelated detector.
    pixel_size_A : float
        Scan step = image pixel size [Å].
    field_of_view_A : float, optional
        Edge of the square field of view [Å]; default the particle plus ``margin_A`` on each side.
    margin_A : float
        Vacuum around the particle when the field of view is automatic [Å].
    scan_rotation_deg : float
        Rotation of the particle in the image (scan rotation) [deg].
    energy_eV : float
        Beam energy [eV] (300 kV).
    semiangle_mrad : float
        Probe convergence semi-angle [mrad] (29.9).
    defocus_A : float
        Probe defocus [Å] (multislice only).
    sampling_A : float
        Finest allowed potential sampling [Å]; the grid is ``pixel_size_A / m`` with integer m.
    slice_thickness_A : float
        Multislice slice thickness [Å].
    detector_inner_mrad, detector_outer_mrad : float
        Segmented (iDPC) detector radii [mrad]; outer defaults to the convergence angle.
    max_snapshots : int, optional
        Use at most this many snapshots, evenly spaced (``None``: all).
    num_workers : int
        Dask threads for the multislice scan.
    device : {"auto", "cpu", "gpu"}
        abTEM device; ``auto`` uses CuPy on a GPU when present.
    progress : bool
        Show abTEM's task progress bars.

    Returns
    -------
    SimulatedImage
    """
    import time

    import abtem

    if mode not in MODES:
        raise InputError(f"imaging mode {mode!r} is unknown; use one of {list(MODES)}")
    if signal not in SIGNALS:
        raise InputError(f"imaging signal {signal!r} is unknown; use one of {list(SIGNALS)}")
    if not pixel_size_A > 0:
        raise InputError(f"pixel_size_A={pixel_size_A} must be > 0 Å; e.g. 0.2")
    positions = np.asarray(positions, float)
    if positions.ndim == 2:
        positions = positions[None]
    if max_snapshots is not None and len(positions) > max_snapshots:
        positions = positions[np.linspace(0, len(positions) - 1, max_snapshots).round().astype(int)]
    frame, n_px = make_frame(positions, pixel_size_A=pixel_size_A, field_of_view_A=field_of_view_A, margin_A=margin_A,
                             scan_rotation_deg=scan_rotation_deg)
    dev = _device() if device == "auto" else device
    m = max(1, int(np.ceil(pixel_size_A / sampling_A - 1e-9)))
    frames = _frame_atoms(symbols, positions, frame)
    atoms = abtem.AtomsEnsemble(frames) if len(frames) > 1 else frames[0]
    t0 = time.perf_counter()
    with abtem.config.set({"diagnostics.progress_bar": bool(progress)}):
        com = _simulate_com(abtem, atoms, frame, n_px, m, mode=mode, signal=signal, energy_eV=energy_eV,
                            semiangle_mrad=semiangle_mrad, defocus_A=defocus_A, slice_thickness_A=slice_thickness_A,
                            detector_inner_mrad=detector_inner_mrad, detector_outer_mrad=detector_outer_mrad,
                            num_workers=num_workers, dev=dev)
    elapsed = time.perf_counter() - t0
    image = integrate_gradient(com[0], com[1], pixel_size_A)
    info = dict(mode=mode, signal=signal, pixel_size_A=pixel_size_A, field_of_view_A=frame.field_of_view_A,
                scan_rotation_deg=scan_rotation_deg, energy_eV=energy_eV, semiangle_mrad=semiangle_mrad,
                defocus_A=defocus_A, detector_inner_mrad=detector_inner_mrad, detector_outer_mrad=detector_outer_mrad,
                sampling_A=frame.field_of_view_A / (n_px * m), n_snapshots=len(positions),
                device=dev, seconds=elapsed, shape=[n_px, n_px])
    return SimulatedImage(com=com.astype(np.float32), image=image.astype(np.float32), pixel_size_A=pixel_size_A,
                          signal=signal, frame=frame, info=info)


def _simulate_com(abtem, atoms, frame: Frame, n_px: int, m: int, *, mode, signal, energy_eV, semiangle_mrad, defocus_A,
                  slice_thickness_A, detector_inner_mrad, detector_outer_mrad, num_workers, dev) -> np.ndarray:
    """The CoM field (2, H, W) [1/Å] (see the module docstring)."""
    from abtem.core.energy import energy2sigma, energy2wavelength

    gpts = n_px * m
    if mode == "weak_phase":
        pot = abtem.Potential(atoms, gpts=(gpts, gpts), slice_thickness=slice_thickness_A, projection="infinite", device=dev)
        v = np.asarray(pot.build().project().compute().array)  # [x, y] eV·Å, possibly with ensemble axis
        if v.ndim == 3:
            v = v.mean(0)
        v = _to_numpy(v).T  # -> [y, x]
        probe = abtem.Probe(energy=energy_eV, semiangle_cutoff=semiangle_mrad, gpts=(gpts, gpts),
                            extent=frame.field_of_view_A, device=dev)
        p = _to_numpy(np.asarray(probe.build((0.0, 0.0)).intensity().compute().array)).squeeze().T
        p = p / p.sum()
        phase = energy2sigma(energy_eV) * v
        fine = np.fft.ifft2(np.fft.fft2(phase) * np.fft.fft2(p)).real / (2 * np.pi)
        s = frame.field_of_view_A / gpts
        ky = np.fft.fftfreq(gpts, d=s)[:, None]
        kx = np.fft.fftfreq(gpts, d=s)[None, :]
        ff = np.fft.fft2(fine)
        gx = np.fft.ifft2(2j * np.pi * kx * ff).real[::m, ::m]
        gy = np.fft.ifft2(2j * np.pi * ky * ff).real[::m, ::m]
        com = np.stack([gx, gy])
    else:
        pot = abtem.Potential(atoms, gpts=(gpts, gpts), slice_thickness=slice_thickness_A, device=dev)
        probe = abtem.Probe(energy=energy_eV, semiangle_cutoff=semiangle_mrad, device=dev,
                            aberrations={"C10": -defocus_A} if defocus_A else None)
        scan = abtem.GridScan(start=(0.0, 0.0), end=(frame.field_of_view_A,) * 2, gpts=(n_px, n_px), endpoint=False)
        if signal == "icom":
            meas = probe.scan(pot, scan=scan, detectors=abtem.PixelatedDetector(max_angle="valid"))
            c = np.asarray(_to_numpy(meas.center_of_mass().compute(num_workers=num_workers).array))
            com = np.stack([c.real.T, c.imag.T])
        else:
            outer = semiangle_mrad if detector_outer_mrad is None else detector_outer_mrad
            det = abtem.SegmentedDetector(nbins_radial=1, nbins_azimuthal=4, inner=detector_inner_mrad, outer=outer,
                                          rotation=-np.pi / 4)
            seg = np.asarray(_to_numpy(probe.scan(pot, scan=scan, detectors=det).compute(num_workers=num_workers).array))
            seg = seg.reshape(n_px, n_px, 4)  # [x, y, azimuthal bin]; bin b centred on angle b·90°
            total = seg.sum(-1)
            lam = energy2wavelength(energy_eV)
            scale = np.pi * (outer + detector_inner_mrad) * 1e-3 / lam / 4.0
            gx = ((seg[..., 0] - seg[..., 2]) / total * scale).T
            gy = ((seg[..., 1] - seg[..., 3]) / total * scale).T
            com = np.stack([gx, gy])
    return com


def _to_numpy(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)
