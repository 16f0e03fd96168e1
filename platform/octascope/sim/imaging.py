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
:mod:`octascope.core.model`. :class:`Frame` maps 3-D positions to the image frame.

Scan window (crop)
------------------
``scan_window_A = (x0, y0, x1, y1)`` [Å, in the frame of the full field of view] images only that
rectangle; the image's pixel [0, 0] is then the probe position (x0, y0) (``Frame.origin_A``). In
multislice mode only the window is scanned, through a periodic cell of the window plus
``window_padding_A`` of the specimen on every side (atoms farther out are left out: the probe and its
spread through the particle reach a few Å, so 8 Å of padding keeps the wrap-around out of the
window); in weak-phase mode the full field is computed and cut. The CoM field of a window is not
periodic, so its integral is taken with mirror (even) boundary conditions instead of the periodic
ones of a full field with vacuum at its border.

Support film
------------
``support`` (parameters of :func:`octascope.sim.support.amorphous_carbon`, plus ``gap_A``) adds an
amorphous-carbon film covering the whole simulated cell, ``gap_A`` below the particle's lowest atom
on the beam-exit side, the same film in every snapshot. In weak-phase mode its projected potential is
added to the snapshot-averaged one (the model is linear in the potential); in multislice mode its
atoms are part of every snapshot's specimen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from octascope.core.errors import InputError

if TYPE_CHECKING:
    from abtem import AtomsEnsemble
    from ase import Atoms

MODES = ("weak_phase", "multislice")
SIGNALS = ("idpc", "icom")


@dataclass(frozen=True)
class Frame:
    """Map from particle coordinates [Å] to the image frame [Å].

    ``xy_image = R(rotation) (xy - centre) + fov/2 - origin``; ``origin_A`` is the position of the
    image's pixel [0, 0] in the full field of view (non-zero for a scan window).
    """

    centre_A: tuple[float, float]
    rotation_deg: float
    field_of_view_A: float
    origin_A: tuple[float, float] = (0.0, 0.0)

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Image-frame coordinates [Å] of (..., 2) particle-frame ``xy`` [Å]."""
        t = np.deg2rad(self.rotation_deg)
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        return ((np.asarray(xy, float) - np.asarray(self.centre_A)) @ rot.T + self.field_of_view_A / 2.0
                - np.asarray(self.origin_A, float))

    def as_dict(self) -> dict:
        """JSON-ready fields (read back with ``Frame.from_dict``)."""
        return {"centre_A": list(self.centre_A), "rotation_deg": self.rotation_deg,
                "field_of_view_A": self.field_of_view_A, "origin_A": list(self.origin_A)}

    @classmethod
    def from_dict(cls, d: dict) -> "Frame":
        """The frame written by :meth:`as_dict` (``origin_A`` defaults to (0, 0))."""
        return cls(tuple(d["centre_A"]), float(d["rotation_deg"]), float(d["field_of_view_A"]),
                   tuple(d.get("origin_A", (0.0, 0.0))))


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


def integrate_gradient(gx: np.ndarray, gy: np.ndarray, pixel_size_A: float, *, boundary: str = "periodic") -> np.ndarray:
    """Integrate a gradient field by Fourier division; the border mean is set to 0.

    Parameters
    ----------
    gx, gy : numpy.ndarray
        Gradient components along x (axis 1) and y (axis 0) [signal units/Å].
    pixel_size_A : float
        Pixel size [Å].
    boundary : {"periodic", "mirror"}
        ``periodic`` for a full field of view (vacuum at the border); ``mirror`` integrates the
        even extension of the field (gradients mirrored with the matching signs), for a window cut
        out of a larger specimen, whose gradients are not periodic.

    Returns
    -------
    numpy.ndarray
        The field whose gradient is closest to (gx, gy) in the least-squares sense.
    """
    if boundary == "mirror":
        h, w = gx.shape
        gx2 = np.block([[gx, -gx[:, ::-1]], [gx[::-1, :], -gx[::-1, ::-1]]])
        gy2 = np.block([[gy, gy[:, ::-1]], [-gy[::-1, :], -gy[::-1, ::-1]]])
        out = integrate_gradient(gx2, gy2, pixel_size_A)[:h, :w]
        return out - border_mean(out)
    if boundary != "periodic":
        raise InputError(f"boundary={boundary!r}: use 'periodic' or 'mirror'")
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


def _frame_atoms(symbols: Sequence[str] | np.ndarray, positions: np.ndarray, frame: Frame, padding_z_A: float = 2.0, *,
                 cell_origin_A: tuple[float, float] = (0.0, 0.0), cell_xy_A: tuple[float, float] | None = None,
                 support_xyz: np.ndarray | None = None, support_gap_A: float = 3.0) -> tuple[list, list | None]:
    """ASE Atoms per snapshot in the image frame, in a cell of the field of view (or of ``cell_xy_A``
    from ``cell_origin_A``, keeping the atoms whose mean position lies in it), and the support film
    (``support_xyz`` (N, 3), z from 0) as Atoms in the same cell, ``support_gap_A`` below the particle."""
    from ase import Atoms

    cx, cy = (frame.field_of_view_A,) * 2 if cell_xy_A is None else cell_xy_A
    origin = np.asarray(cell_origin_A, float)
    xy_all = np.stack([frame.to_image(pos[:, :2]) for pos in positions]) - origin  # (S, N, 2) in the cell
    keep = np.ones(positions.shape[1], bool)
    if cell_xy_A is not None:
        mean = xy_all.mean(0)
        keep = (mean[:, 0] >= 0) & (mean[:, 0] < cx) & (mean[:, 1] >= 0) & (mean[:, 1] < cy)
    syms = [s for s, k in zip(symbols, keep) if k]
    z0 = positions[:, :, 2].min()
    z_top = float(positions[:, :, 2].max() - z0 + padding_z_A)
    c_atoms = None
    cz = z_top + padding_z_A
    if support_xyz is not None and len(support_xyz):
        zc = support_xyz[:, 2] + z_top + support_gap_A
        cz = float(zc.max() + padding_z_A)
        c_atoms = Atoms(symbols=["C"] * len(support_xyz), positions=np.column_stack([support_xyz[:, :2], zc]),
                        cell=(cx, cy, cz), pbc=True)
    out = []
    for pos, xy in zip(positions, xy_all):
        z = pos[keep, 2] - z0 + padding_z_A
        out.append(Atoms(symbols=syms, positions=np.column_stack([xy[keep], z]), cell=(cx, cy, cz), pbc=True))
    return out, ([c_atoms] if c_atoms is not None else None)


def _device() -> str:
    try:
        import cupy  # noqa: F401
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    except Exception:
        return "cpu"


def simulate_image(
    symbols: Sequence[str] | np.ndarray,
    positions: np.ndarray,
    *,
    mode: str = "weak_phase",
    signal: str = "idpc",
    pixel_size_A: float = 0.2,
    field_of_view_A: float | None = None,
    margin_A: float = 8.0,
    scan_rotation_deg: float = 0.0,
    scan_window_A: Sequence[float] | None = None,
    window_padding_A: float = 8.0,
    energy_eV: float = 300e3,
    semiangle_mrad: float = 29.9,
    defocus_A: float = 0.0,
    sampling_A: float = 0.1,
    slice_thickness_A: float = 2.0,
    detector_inner_mrad: float = 0.0,
    detector_outer_mrad: float | None = None,
    max_snapshots: int | None = 8,
    support: Mapping[str, Any] | None = None,
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
    scan_window_A : sequence of 4 float, optional
        ``(x0, y0, x1, y1)`` [Å] in the full field of view: image only this rectangle (a crop; see
        the module docstring). ``None``: the whole field of view.
    window_padding_A : float
        Specimen kept around a scan window in multislice mode [Å].
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
    support : Mapping, optional
        Amorphous-carbon support film: keyword arguments of
        :func:`octascope.sim.support.amorphous_carbon` (``thickness_A`` [Å], ``density_g_cm3``
        [g/cm³], ``min_distance_A`` [Å], ``seed``) and ``gap_A`` [Å] (particle to film, default 3).
        ``None``: the particle in vacuum.
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

    from octascope.sim.support import amorphous_carbon

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
    p = pixel_size_A
    # scan window [px] in the full frame: origin (column, row) and shape (rows, columns)
    if scan_window_A is None:
        win_origin, win_shape = (0, 0), (n_px, n_px)
    else:
        if len(scan_window_A) != 4:
            raise InputError(f"scan_window_A={list(scan_window_A)} must be [x0, y0, x1, y1] in Å")
        x0, y0, x1, y1 = (float(v) for v in scan_window_A)
        fov = frame.field_of_view_A
        if not (0 <= x0 < x1 <= fov + 1e-6 and 0 <= y0 < y1 <= fov + 1e-6):
            raise InputError(f"scan_window_A={list(scan_window_A)} must satisfy 0 <= x0 < x1 <= {fov:.1f} and "
                             f"0 <= y0 < y1 <= {fov:.1f} Å (the field of view)")
        c0, r0 = int(round(x0 / p)), int(round(y0 / p))
        win_origin = (c0, r0)
        win_shape = (max(1, min(int(round((y1 - y0) / p)), n_px - r0)), max(1, min(int(round((x1 - x0) / p)), n_px - c0)))
        frame = Frame(frame.centre_A, frame.rotation_deg, frame.field_of_view_A, (c0 * p, r0 * p))
    if mode == "multislice" and scan_window_A is not None:  # a padded cell around the window
        pad = int(np.ceil(window_padding_A / p))
        cell_origin_px = (win_origin[0] - pad, win_origin[1] - pad)
        cell_shape = (win_shape[0] + 2 * pad, win_shape[1] + 2 * pad)
    else:
        cell_origin_px, cell_shape = (0, 0), (n_px, n_px)
    scan_in_cell = (win_origin[0] - cell_origin_px[0], win_origin[1] - cell_origin_px[1])
    cell_xy_A = (cell_shape[1] * p, cell_shape[0] * p)
    full = Frame(frame.centre_A, frame.rotation_deg, frame.field_of_view_A)
    sup = dict(support or {})
    gap_A = float(sup.pop("gap_A", 3.0))
    carbon = amorphous_carbon(cell_xy_A, **sup) if support is not None else None
    dev = _device() if device == "auto" else device
    m = max(1, int(np.ceil(pixel_size_A / sampling_A - 1e-9)))
    frames, c_frames = _frame_atoms(symbols, positions, full, cell_origin_A=(cell_origin_px[0] * p, cell_origin_px[1] * p),
                                    cell_xy_A=cell_xy_A if cell_shape != (n_px, n_px) or cell_origin_px != (0, 0) else None,
                                    support_xyz=carbon, support_gap_A=gap_A)
    if mode == "multislice" and c_frames is not None:  # the film is part of every snapshot's specimen
        frames = [f + c_frames[0] for f in frames]
        c_frames = None
    atoms = abtem.AtomsEnsemble(frames) if len(frames) > 1 else frames[0]
    t0 = time.perf_counter()
    with abtem.config.set({"diagnostics.progress_bar": bool(progress)}):
        com = _simulate_com(abtem, atoms, c_frames[0] if c_frames else None, cell_shape, m, scan_in_cell, win_shape,
                            p, mode=mode, signal=signal, energy_eV=energy_eV,
                            semiangle_mrad=semiangle_mrad, defocus_A=defocus_A, slice_thickness_A=slice_thickness_A,
                            detector_inner_mrad=detector_inner_mrad, detector_outer_mrad=detector_outer_mrad,
                            num_workers=num_workers, dev=dev)
    elapsed = time.perf_counter() - t0
    boundary = "periodic" if scan_window_A is None else "mirror"
    image = integrate_gradient(com[0], com[1], pixel_size_A, boundary=boundary)
    info = dict(mode=mode, signal=signal, pixel_size_A=pixel_size_A, field_of_view_A=frame.field_of_view_A,
                scan_rotation_deg=scan_rotation_deg, energy_eV=energy_eV, semiangle_mrad=semiangle_mrad,
                defocus_A=defocus_A, detector_inner_mrad=detector_inner_mrad, detector_outer_mrad=detector_outer_mrad,
                sampling_A=p / m, n_snapshots=len(positions),
                device=dev, seconds=elapsed, shape=[int(win_shape[0]), int(win_shape[1])], integration=boundary,
                scan_window_A=None if scan_window_A is None else [float(v) for v in scan_window_A],
                cell_A=[cell_xy_A[0], cell_xy_A[1]], n_atoms_in_cell=int(len(frames[0])),
                support_n_atoms=0 if carbon is None else int(len(carbon)))
    return SimulatedImage(com=com.astype(np.float32), image=image.astype(np.float32), pixel_size_A=pixel_size_A,
                          signal=signal, frame=frame, info=info)


def _simulate_com(abtem: ModuleType, atoms: Atoms | AtomsEnsemble, support_atoms: Atoms | None, cell_shape: tuple[int, int],
                  m: int, scan_origin: tuple[int, int], scan_shape: tuple[int, int], p: float, *, mode: str, signal: str,
                  energy_eV: float, semiangle_mrad: float, defocus_A: float, slice_thickness_A: float,
                  detector_inner_mrad: float, detector_outer_mrad: float | None, num_workers: int, dev: str) -> np.ndarray:
    """The CoM field (2, rows, columns) [1/Å] of the scan window (see the module docstring).

    ``cell_shape`` (rows, columns) [px] is the simulated periodic cell, ``scan_origin`` (column,
    row) and ``scan_shape`` (rows, columns) [px] the scanned window inside it, ``p`` the pixel size
    [Å]; the potential grid is ``m`` times finer. ``support_atoms`` (weak-phase mode only) are
    added as a separate, static projected potential.
    """
    from abtem.core.energy import energy2sigma, energy2wavelength

    ny, nx = cell_shape
    gpts = (nx * m, ny * m)  # abTEM order: (x, y)
    extent = (nx * p, ny * p)
    c0, r0 = scan_origin
    h, w = scan_shape
    if mode == "weak_phase":
        def projected(a: Atoms | AtomsEnsemble) -> np.ndarray:
            pot = abtem.Potential(a, gpts=gpts, slice_thickness=slice_thickness_A, projection="infinite", device=dev)
            v = np.asarray(_to_numpy(pot.build().project().compute().array))  # [x, y] eV·Å, maybe with ensemble axis
            return v.mean(0) if v.ndim == 3 else v

        v = projected(atoms)
        if support_atoms is not None:
            v = v + projected(support_atoms)
        v = v.T  # -> [y, x]
        probe = abtem.Probe(energy=energy_eV, semiangle_cutoff=semiangle_mrad, gpts=gpts, extent=extent, device=dev)
        # one probe over the whole field: abTEM's 128 MB auto-chunk limit refuses a 4096² complex
        # wave (a 2048² image at 2x oversampling); it is a single array either way
        need = 16 * gpts[0] * gpts[1]
        with abtem.config.set({"dask.chunk-size": max(128 * 2**20, 2 * need)}):
            pr = _to_numpy(np.asarray(probe.build((0.0, 0.0)).intensity().compute().array)).squeeze().T
        pr = pr / pr.sum()
        phase = energy2sigma(energy_eV) * v
        fine = np.fft.ifft2(np.fft.fft2(phase) * np.fft.fft2(pr)).real / (2 * np.pi)
        s = p / m
        ky = np.fft.fftfreq(gpts[1], d=s)[:, None]
        kx = np.fft.fftfreq(gpts[0], d=s)[None, :]
        ff = np.fft.fft2(fine)
        gx = np.fft.ifft2(2j * np.pi * kx * ff).real[::m, ::m]
        gy = np.fft.ifft2(2j * np.pi * ky * ff).real[::m, ::m]
        com = np.stack([gx, gy])[:, r0:r0 + h, c0:c0 + w]
    else:
        pot = abtem.Potential(atoms, gpts=gpts, slice_thickness=slice_thickness_A, device=dev)
        probe = abtem.Probe(energy=energy_eV, semiangle_cutoff=semiangle_mrad, device=dev,
                            aberrations={"C10": -defocus_A} if defocus_A else None)
        scan = abtem.GridScan(start=(c0 * p, r0 * p), end=((c0 + w) * p, (r0 + h) * p), gpts=(w, h), endpoint=False)
        if signal == "icom":
            meas = probe.scan(pot, scan=scan, detectors=abtem.PixelatedDetector(max_angle="valid"))
            c = np.asarray(_to_numpy(meas.center_of_mass().compute(num_workers=num_workers).array))
            com = np.stack([c.real.T, c.imag.T])
        else:
            outer = semiangle_mrad if detector_outer_mrad is None else detector_outer_mrad
            det = abtem.SegmentedDetector(nbins_radial=1, nbins_azimuthal=4, inner=detector_inner_mrad, outer=outer,
                                          rotation=-np.pi / 4)
            seg = np.asarray(_to_numpy(probe.scan(pot, scan=scan, detectors=det).compute(num_workers=num_workers).array))
            seg = seg.reshape(w, h, 4)  # [x, y, azimuthal bin]; bin b centred on angle b·90°
            total = seg.sum(-1)
            lam = energy2wavelength(energy_eV)
            scale = np.pi * (outer + detector_inner_mrad) * 1e-3 / lam / 4.0
            gx = ((seg[..., 0] - seg[..., 2]) / total * scale).T
            gy = ((seg[..., 1] - seg[..., 3]) / total * scale).T
            com = np.stack([gx, gy])
    return com


def _to_numpy(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)
