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
``support`` (:class:`octascope.sim.support.SupportOptions`) adds an amorphous-carbon film covering
the whole simulated cell, ``gap_A`` below the particle's lowest atom on the beam-exit side, the same
film in every snapshot. In weak-phase mode its projected potential is
added to the snapshot-averaged one (the model is linear in the potential); in multislice mode its
atoms are part of every snapshot's specimen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping, Sequence

import numpy as np

from octascope.core.errors import InputError
from octascope.core.params import param, require
from octascope.sim.options import StepOptions, finite, resolve_options
from octascope.sim.support import SupportOptions, amorphous_carbon

if TYPE_CHECKING:
    from abtem import AtomsEnsemble
    from ase import Atoms

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


@dataclass(frozen=True, kw_only=True)
class ImagingOptions(StepOptions):
    """Parameters of :func:`simulate_image` (config group ``imaging``)."""

    group: ClassVar[str] = "imaging"
    not_keyed: ClassVar[frozenset[str]] = frozenset({"num_workers", "device"})
    keyed_unless: ClassVar[dict[str, Any]] = {"scan_window_A": None, "window_padding_A": 8.0}

    mode: Literal["weak_phase", "multislice"] = param("weak_phase", doc="fast projected-potential ⊗ "
                                                      "probe-intensity model, or abTEM multislice")
    signal: Literal["idpc", "icom"] = param("idpc", doc="segmented-detector integrated DPC, or integrated CoM "
                                            "from a pixelated detector")
    pixel_size_A: float = param(0.2, unit="Å", doc="scan step = image pixel size")
    field_of_view_A: float | None = param(None, unit="Å", doc="edge of the square field of view; null: the "
                                          "particle plus margin_A on each side")
    margin_A: float = param(8.0, unit="Å", doc="vacuum around the particle when the field of view is automatic")
    scan_rotation_deg: float = param(0.0, unit="deg", doc="rotation of the particle in the image (scan rotation)")
    scan_window_A: tuple[float, float, float, float] | None = param(
        None, unit="Å", doc="(x0, y0, x1, y1) in the full field of view: image only this rectangle (a crop); "
        "null: the whole field of view")
    window_padding_A: float = param(8.0, unit="Å", doc="specimen kept around a scan window in multislice mode")
    energy_eV: float = param(300e3, unit="eV", doc="beam energy")
    semiangle_mrad: float = param(29.9, unit="mrad", doc="probe convergence semi-angle")
    defocus_A: float = param(0.0, unit="Å", doc="probe defocus (multislice only)")
    sampling_A: float = param(0.1, unit="Å", doc="finest allowed potential sampling; the grid is "
                              "pixel_size_A / m with integer m")
    slice_thickness_A: float = param(2.0, unit="Å", doc="multislice slice thickness")
    detector_inner_mrad: float = param(0.0, unit="mrad", doc="inner radius of the segmented (iDPC) detector")
    detector_outer_mrad: float | None = param(None, unit="mrad", doc="outer radius of the segmented (iDPC) "
                                              "detector; null: the convergence semi-angle")
    max_snapshots: int | None = param(8, doc="use at most this many snapshots, evenly spaced; null: all")
    num_workers: int = param(1, doc="Dask threads of the multislice scan")
    device: Literal["auto", "cpu", "gpu"] = param("auto", doc="abTEM device; auto uses CuPy on a GPU when present")

    def check(self) -> None:
        for name in ("pixel_size_A", "energy_eV", "semiangle_mrad", "sampling_A", "slice_thickness_A"):
            value = getattr(self, name)
            require(finite(value) and value > 0, f"{name}={value} must be a number > 0")
        for name in ("margin_A", "window_padding_A", "detector_inner_mrad"):
            value = getattr(self, name)
            require(finite(value) and value >= 0, f"{name}={value} must be a number >= 0")
        require(finite(self.scan_rotation_deg) and finite(self.defocus_A),
                f"scan_rotation_deg={self.scan_rotation_deg} and defocus_A={self.defocus_A} must be finite numbers")
        fov = self.field_of_view_A
        require(fov is None or (finite(fov) and fov > 0), f"field_of_view_A={fov} must be > 0 Å or null")
        outer = self.detector_outer_mrad
        require(outer is None or (finite(outer) and outer > self.detector_inner_mrad),
                f"detector_outer_mrad={outer} must exceed detector_inner_mrad={self.detector_inner_mrad} (or be null)")
        win = self.scan_window_A
        require(win is None or (all(finite(v) for v in win) and 0 <= win[0] < win[2] and 0 <= win[1] < win[3]),
                f"scan_window_A={None if win is None else list(win)} must be [x0, y0, x1, y1] in Å with "
                "0 <= x0 < x1 and 0 <= y0 < y1")
        require(self.max_snapshots is None or self.max_snapshots >= 1, f"max_snapshots={self.max_snapshots} must be >= 1 or null")
        require(self.num_workers >= 1, f"num_workers={self.num_workers} must be >= 1")


@dataclass(frozen=True)
class _ScanGeometry:
    """Where the scan lies [px]: the window imaged inside the full field of view, and the periodic
    cell simulated around it. Origins are (column, row), shapes (rows, columns)."""

    n_px: int
    window_origin: tuple[int, int]
    window_shape: tuple[int, int]
    cell_origin: tuple[int, int]
    cell_shape: tuple[int, int]

    @property
    def scan_in_cell(self) -> tuple[int, int]:
        """Origin of the window inside the cell (column, row) [px]."""
        return self.window_origin[0] - self.cell_origin[0], self.window_origin[1] - self.cell_origin[1]

    @property
    def is_full_field(self) -> bool:
        """True when the simulated cell is the full field of view."""
        return self.cell_shape == (self.n_px, self.n_px) and self.cell_origin == (0, 0)


def simulate_image(symbols: Sequence[str] | np.ndarray, positions: np.ndarray, options: ImagingOptions | None = None,
                   /, *, support: SupportOptions | Mapping[str, Any] | None = None, progress: bool = False,
                   **params: Any) -> SimulatedImage:
    """Simulate a noise-free iDPC or iCoM image of a particle, averaged over MD snapshots.

    Parameters
    ----------
    symbols : sequence of str
        Element per atom (N,).
    positions : numpy.ndarray
        Atom positions (S, N, 3) or (N, 3) [Å]; the beam runs along z.
    options : ImagingOptions, optional
        The imaging parameters (units in :class:`ImagingOptions`); or give them as keywords.
    support : SupportOptions or Mapping, optional
        Amorphous-carbon support film (:class:`octascope.sim.support.SupportOptions`); ``None``: vacuum.
    progress : bool
        Show abTEM's task progress bars.

    Returns
    -------
    SimulatedImage

    Raises
    ------
    InputError
        A parameter out of range (:class:`~octascope.sim.options.SimulationParameterError`), a
        field of view smaller than the particle, or a scan window outside it.
    """
    opts = resolve_options(ImagingOptions, options, params)
    film = None if support is None else SupportOptions.from_config(support)
    positions = _select_snapshots(positions, opts.max_snapshots)
    p = opts.pixel_size_A
    frame, n_px = make_frame(positions, pixel_size_A=p, field_of_view_A=opts.field_of_view_A, margin_A=opts.margin_A,
                             scan_rotation_deg=opts.scan_rotation_deg)
    frame, geometry = _scan_geometry(frame, n_px, opts)
    specimen, support_atoms, carbon = _specimen(symbols, positions, frame, geometry, film, opts)
    dev = _device() if opts.device == "auto" else opts.device
    m = max(1, int(np.ceil(p / opts.sampling_A - 1e-9)))
    t0 = time.perf_counter()
    com = _simulate_com(specimen, support_atoms, geometry, m, opts, dev, progress=progress)
    elapsed = time.perf_counter() - t0
    boundary = "periodic" if opts.scan_window_A is None else "mirror"
    image = integrate_gradient(com[0], com[1], p, boundary=boundary)
    rows, cols = geometry.cell_shape
    info = dict(_settings(opts), field_of_view_A=frame.field_of_view_A, sampling_A=p / m, n_snapshots=len(positions),
                device=dev, seconds=elapsed, shape=[int(v) for v in geometry.window_shape], integration=boundary,
                scan_window_A=None if opts.scan_window_A is None else [float(v) for v in opts.scan_window_A],
                cell_A=[cols * p, rows * p], n_atoms_in_cell=int(len(specimen[0])),
                support_n_atoms=0 if carbon is None else int(len(carbon)))
    return SimulatedImage(com=com.astype(np.float32), image=image.astype(np.float32), pixel_size_A=p,
                          signal=opts.signal, frame=frame, info=info)


def image_field(symbols: Sequence[str] | np.ndarray, positions: np.ndarray, shape_px: tuple[int, int],
                options: ImagingOptions | None = None, /, *, support: SupportOptions | Mapping[str, Any] | None = None,
                padding_A: float = 12.0, progress: bool = False, **params: Any) -> SimulatedImage:
    """Simulate a frame of given size over atoms placed in the frame's own coordinates.

    Unlike :func:`simulate_image` (one particle, centred, rotated by the scan rotation), the atoms
    here are already where they are in the image: x, y [Å] from the centre of pixel [0, 0]
    (``x_A = x_px·p``), so several particles, and particles cut by the frame edge, can be imaged
    together. The simulated periodic cell is the frame plus ``padding_A`` on every side (atoms whose
    mean position lies beyond it are left out), so nothing outside wraps into the frame; the
    frame's CoM field is then integrated with mirror boundaries, as for a scan window.
    ``field_of_view_A``, ``margin_A``, ``scan_rotation_deg`` and ``scan_window_A`` of the options
    are not used.

    Parameters
    ----------
    symbols : sequence of str
        Element per atom (N,).
    positions : numpy.ndarray
        (S, N, 3) or (N, 3) [Å] in the frame (z along the beam).
    shape_px : tuple of int
        Frame size (rows, columns) [px].
    options : ImagingOptions, optional
        Imaging parameters (or as keywords).
    support : SupportOptions or Mapping, optional
        Amorphous-carbon film under the whole cell.
    padding_A : float
        Specimen kept around the frame [Å].
    progress : bool
        Show abTEM's task progress bars.
    """
    opts = resolve_options(ImagingOptions, options, params)
    film = None if support is None else SupportOptions.from_config(support)
    positions = _select_snapshots(positions, opts.max_snapshots)
    p = opts.pixel_size_A
    rows, cols = (int(v) for v in shape_px)
    pad = int(np.ceil(padding_A / p))
    side = max(rows, cols) * p
    identity = Frame((side / 2, side / 2), 0.0, side)
    geometry = _ScanGeometry(max(rows, cols) + 2 * pad, (pad, pad), (rows, cols), (0, 0), (rows + 2 * pad, cols + 2 * pad))
    cell_xy_A = ((cols + 2 * pad) * p, (rows + 2 * pad) * p)
    carbon = amorphous_carbon(cell_xy_A, film) if film is not None else None
    specimen, c_frames = _frame_atoms(symbols, positions, identity, cell_origin_A=(-pad * p, -pad * p), cell_xy_A=cell_xy_A,
                                      support_xyz=carbon, support_gap_A=film.gap_A if film is not None else 3.0)
    support_atoms = c_frames[0] if c_frames else None
    if opts.mode == "multislice" and support_atoms is not None:
        specimen, support_atoms = [f + support_atoms for f in specimen], None
    dev = _device() if opts.device == "auto" else opts.device
    m = max(1, int(np.ceil(p / opts.sampling_A - 1e-9)))
    t0 = time.perf_counter()
    com = _simulate_com(specimen, support_atoms, geometry, m, opts, dev, progress=progress)
    image = integrate_gradient(com[0], com[1], p, boundary="mirror")
    info = dict(_settings(opts), field_of_view_A=None, sampling_A=p / m, n_snapshots=len(positions), device=dev,
                seconds=time.perf_counter() - t0, shape=[rows, cols], integration="mirror", padding_A=pad * p,
                cell_A=list(cell_xy_A), n_atoms_in_cell=int(len(specimen[0])),
                support_n_atoms=0 if carbon is None else int(len(carbon)))
    return SimulatedImage(com=com.astype(np.float32), image=image.astype(np.float32), pixel_size_A=p,
                          signal=opts.signal, frame=identity, info=info)


def _settings(opts: ImagingOptions) -> dict[str, Any]:
    """The settings an image's ``info`` records first (the noise model reads the beam and detector ones)."""
    names = ("mode", "signal", "pixel_size_A", "field_of_view_A", "scan_rotation_deg", "energy_eV", "semiangle_mrad",
             "defocus_A", "detector_inner_mrad", "detector_outer_mrad")
    return {name: getattr(opts, name) for name in names}


def _select_snapshots(positions: np.ndarray, max_snapshots: int | None) -> np.ndarray:
    """Positions (S, N, 3) [Å] of at most ``max_snapshots`` evenly spaced snapshots (``None``: all)."""
    positions = np.asarray(positions, float)
    if positions.ndim == 2:
        positions = positions[None]
    if max_snapshots is not None and len(positions) > max_snapshots:
        positions = positions[np.linspace(0, len(positions) - 1, max_snapshots).round().astype(int)]
    return positions


def _scan_geometry(frame: Frame, n_px: int, opts: ImagingOptions) -> tuple[Frame, _ScanGeometry]:
    """The image's frame (its origin at the scan window) and the scan geometry [px].

    Without a window the whole ``n_px``² field of view is scanned and simulated. A window
    ``(x0, y0, x1, y1)`` [Å] is scanned alone; in multislice mode the simulated periodic cell is the
    window plus ``window_padding_A`` on every side, in weak-phase mode the full field (then cut).
    """
    p = opts.pixel_size_A
    window = opts.scan_window_A
    if window is None:
        full = _ScanGeometry(n_px, (0, 0), (n_px, n_px), (0, 0), (n_px, n_px))
        return frame, full
    x0, y0, x1, y1 = window
    fov = frame.field_of_view_A
    if not (x1 <= fov + 1e-6 and y1 <= fov + 1e-6):
        raise InputError(f"scan_window_A={list(window)} must satisfy 0 <= x0 < x1 <= {fov:.1f} and "
                         f"0 <= y0 < y1 <= {fov:.1f} Å (the field of view)")
    c0, r0 = int(round(x0 / p)), int(round(y0 / p))
    shape = (max(1, min(int(round((y1 - y0) / p)), n_px - r0)), max(1, min(int(round((x1 - x0) / p)), n_px - c0)))
    frame = Frame(frame.centre_A, frame.rotation_deg, frame.field_of_view_A, (c0 * p, r0 * p))
    if opts.mode == "multislice":
        pad = int(np.ceil(opts.window_padding_A / p))
        return frame, _ScanGeometry(n_px, (c0, r0), shape, (c0 - pad, r0 - pad), (shape[0] + 2 * pad, shape[1] + 2 * pad))
    return frame, _ScanGeometry(n_px, (c0, r0), shape, (0, 0), (n_px, n_px))


def _specimen(symbols: Sequence[str] | np.ndarray, positions: np.ndarray, frame: Frame, geometry: _ScanGeometry,
              film: SupportOptions | None, opts: ImagingOptions) -> tuple[list, Atoms | None, np.ndarray | None]:
    """The specimen in the simulated cell: ``(atoms per snapshot, support atoms, film positions)``.

    The particle's snapshots are placed in the full frame (``frame`` without its window origin).
    The film (``film`` parameters, ``None``: none) covers the cell; in multislice mode it is part
    of every snapshot and the support atoms are ``None``, in weak-phase mode it stays separate
    (its projected potential is added once). Film positions are (N, 3) [Å] with z from 0.
    """
    p = opts.pixel_size_A
    rows, cols = geometry.cell_shape
    cell_xy_A = (cols * p, rows * p)
    full = Frame(frame.centre_A, frame.rotation_deg, frame.field_of_view_A)
    carbon = amorphous_carbon(cell_xy_A, film) if film is not None else None
    origin = (geometry.cell_origin[0] * p, geometry.cell_origin[1] * p)
    frames, c_frames = _frame_atoms(symbols, positions, full, cell_origin_A=origin,
                                    cell_xy_A=None if geometry.is_full_field else cell_xy_A,
                                    support_xyz=carbon, support_gap_A=film.gap_A if film is not None else 3.0)
    if opts.mode == "multislice" and c_frames is not None:  # the film is part of every snapshot's specimen
        return [f + c_frames[0] for f in frames], None, carbon
    return frames, (c_frames[0] if c_frames else None), carbon


def _simulate_com(specimen: list, support_atoms: Atoms | None, geometry: _ScanGeometry, m: int, opts: ImagingOptions,
                  dev: str, *, progress: bool) -> np.ndarray:
    """The CoM field (2, rows, columns) [1/Å] of the scan window (see the module docstring).

    ``specimen`` holds the Atoms of each snapshot (averaged as an abTEM ensemble). The simulated
    periodic cell is ``geometry.cell_shape`` (rows, columns) [px] of ``pixel_size_A`` [Å]; the
    potential grid is ``m`` times finer. ``support_atoms`` (weak-phase mode only) are added as a
    separate, static projected potential. ``dev`` is abTEM's device (``cpu`` or ``gpu``).
    """
    import abtem

    atoms = abtem.AtomsEnsemble(specimen) if len(specimen) > 1 else specimen[0]
    with abtem.config.set({"diagnostics.progress_bar": bool(progress)}):
        if opts.mode == "weak_phase":
            return _weak_phase_com(abtem, atoms, support_atoms, geometry, m, opts, dev)
        return _multislice_com(abtem, atoms, geometry, m, opts, dev)


def _weak_phase_com(abtem: ModuleType, atoms: Atoms | AtomsEnsemble, support_atoms: Atoms | None,
                    geometry: _ScanGeometry, m: int, opts: ImagingOptions, dev: str) -> np.ndarray:
    """CoM field (2, rows, columns) [1/Å] of the thin-object model: ∇(σ·V_proj ⊗ probe intensity)/(2π)."""
    from abtem.core.energy import energy2sigma

    p = opts.pixel_size_A
    ny, nx = geometry.cell_shape
    gpts = (nx * m, ny * m)  # abTEM order: (x, y)
    extent = (nx * p, ny * p)

    def projected(a: Atoms | AtomsEnsemble) -> np.ndarray:
        pot = abtem.Potential(a, gpts=gpts, slice_thickness=opts.slice_thickness_A, projection="infinite", device=dev)
        v = np.asarray(_to_numpy(pot.build().project().compute().array))  # [x, y] eV·Å, maybe with ensemble axis
        return v.mean(0) if v.ndim == 3 else v

    v = projected(atoms)
    if support_atoms is not None:
        v = v + projected(support_atoms)
    v = v.T  # -> [y, x]
    probe = abtem.Probe(energy=opts.energy_eV, semiangle_cutoff=opts.semiangle_mrad, gpts=gpts, extent=extent, device=dev)
    # one probe over the whole field: abTEM's 128 MB auto-chunk limit refuses a 4096² complex
    # wave (a 2048² image at 2x oversampling); it is a single array either way
    need = 16 * gpts[0] * gpts[1]
    with abtem.config.set({"dask.chunk-size": max(128 * 2**20, 2 * need)}):
        pr = _to_numpy(np.asarray(probe.build((0.0, 0.0)).intensity().compute().array)).squeeze().T
    pr = pr / pr.sum()
    phase = energy2sigma(opts.energy_eV) * v
    fine = np.fft.ifft2(np.fft.fft2(phase) * np.fft.fft2(pr)).real / (2 * np.pi)
    s = p / m
    ky = np.fft.fftfreq(gpts[1], d=s)[:, None]
    kx = np.fft.fftfreq(gpts[0], d=s)[None, :]
    ff = np.fft.fft2(fine)
    gx = np.fft.ifft2(2j * np.pi * kx * ff).real[::m, ::m]
    gy = np.fft.ifft2(2j * np.pi * ky * ff).real[::m, ::m]
    (c0, r0), (h, w) = geometry.scan_in_cell, geometry.window_shape
    return np.stack([gx, gy])[:, r0:r0 + h, c0:c0 + w]


def _multislice_com(abtem: ModuleType, atoms: Atoms | AtomsEnsemble, geometry: _ScanGeometry, m: int,
                    opts: ImagingOptions, dev: str) -> np.ndarray:
    """CoM field (2, rows, columns) [1/Å] of an abTEM multislice scan of the window.

    ``icom``: abTEM's centre of mass on a pixelated detector. ``idpc``: four quadrants of
    ``detector_inner_mrad``..``detector_outer_mrad``, (S₊ - S₋)/ΣS scaled to CoM units by π(k_o + k_i)/4.
    """
    from abtem.core.energy import energy2wavelength

    p = opts.pixel_size_A
    ny, nx = geometry.cell_shape
    (c0, r0), (h, w) = geometry.scan_in_cell, geometry.window_shape
    pot = abtem.Potential(atoms, gpts=(nx * m, ny * m), slice_thickness=opts.slice_thickness_A, device=dev)
    probe = abtem.Probe(energy=opts.energy_eV, semiangle_cutoff=opts.semiangle_mrad, device=dev,
                        aberrations={"C10": -opts.defocus_A} if opts.defocus_A else None)
    scan = abtem.GridScan(start=(c0 * p, r0 * p), end=((c0 + w) * p, (r0 + h) * p), gpts=(w, h), endpoint=False)
    if opts.signal == "icom":
        meas = probe.scan(pot, scan=scan, detectors=abtem.PixelatedDetector(max_angle="valid"))
        c = np.asarray(_to_numpy(meas.center_of_mass().compute(num_workers=opts.num_workers).array))
        return np.stack([c.real.T, c.imag.T])
    outer = opts.semiangle_mrad if opts.detector_outer_mrad is None else opts.detector_outer_mrad
    det = abtem.SegmentedDetector(nbins_radial=1, nbins_azimuthal=4, inner=opts.detector_inner_mrad, outer=outer,
                                  rotation=-np.pi / 4)
    seg = np.asarray(_to_numpy(probe.scan(pot, scan=scan, detectors=det).compute(num_workers=opts.num_workers).array))
    seg = seg.reshape(w, h, 4)  # [x, y, azimuthal bin]; bin b centred on angle b·90°
    total = seg.sum(-1)
    scale = np.pi * (outer + opts.detector_inner_mrad) * 1e-3 / energy2wavelength(opts.energy_eV) / 4.0
    gx = ((seg[..., 0] - seg[..., 2]) / total * scale).T
    gy = ((seg[..., 1] - seg[..., 3]) / total * scale).T
    return np.stack([gx, gy])


def _to_numpy(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)
