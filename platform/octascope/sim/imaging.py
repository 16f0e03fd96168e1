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
    averaged over the snapshots): seconds per image. ``icom``: convolved with the abTEM probe
    intensity as above (exact for a thin phase object); ``idpc``: the first-order (weak-phase) signal
    of the four quadrants (below). ``signal`` also selects the detector's noise model in
    :mod:`octascope.sim.noise`. The projection has no depth of field; ``depth_resolved`` convolves
    each potential slice with the probe propagated (in vacuum) to its depth, focused ``defocus_A``
    below the cell's entrance, which follows multislice much more closely for a thick particle
    (``docs/simulated-dose.md``).
``multislice``
    abTEM multislice of a focused probe over a :class:`abtem.GridScan`, averaged over the snapshots
    (:class:`abtem.AtomsEnsemble`, frozen-phonon style). ``signal="icom"``: pixelated detector
    and abTEM's ``center_of_mass`` (which divides by the captured intensity: checked against the
    thin-object case above in ``experiments/validation/icom_normalisation.py``); ``signal="idpc"``: a
    four-quadrant :class:`abtem.SegmentedDetector` (``inner``..``outer`` mrad). With
    ``prism_interpolation`` the scan uses abTEM's PRISM S-matrix instead of one multislice per
    probe position (a whole particle in minutes rather than hours on a CPU; :func:`_scanner`).

Four-quadrant DPC in CoM units
------------------------------
The quadrants are centred on +x, +y, -x, -y and DPC_x = S₊ₓ - S₋ₓ, the difference of the intensities
of opposite quadrants as fractions of the incident beam (an analogue iDPC detector: normalised by
the beam current, not by the counts of each probe position). For a small shift δ of a uniform
bright-field disc of radius k_α whose edge lies on the detector, only the edge moves and
S₊ₓ - S₋ₓ = 2√2 δ / (π k_α), so CoM_x ≈ π k_α / (2√2) · (S₊ₓ - S₋ₓ) (:func:`dpc_com_scale`). At higher
spatial frequencies the quadrant transfer is not the CoM's: the weak-phase mode computes it
(:func:`segment_transfer`), so that both modes image the same detector. The detector's outer edge
must lie outside the disc: abTEM tapers the aperture over one reciprocal pixel centred on α, and a
detector edge at exactly α would see half the taper (half the low-frequency signal); ``null`` puts
it at 1.05 α (:data:`DEFAULT_OUTER_FACTOR`). ``docs/simulated-dose.md`` derives this and the noise.

Detector signals for counting noise
-----------------------------------
Multislice images also keep, per probe position, what the noise model needs to count electrons
(:attr:`SimulatedImage.detector`): for ``idpc`` the four segment intensities, for ``icom`` the
captured fraction and the second moments of the diffraction pattern.

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
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Mapping, Sequence

import numpy as np

from octascope.core.errors import InputError
from octascope.core.params import param, require
from octascope.sim.options import StepOptions, finite, resolve_options
from octascope.sim.support import SupportOptions, amorphous_carbon
from octascope.sim.thermal import frozen_phonon_configurations

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
    detector : numpy.ndarray or None
        Per probe position, what the noise model counts (multislice only; ``None``: the noise uses
        the vacuum formula). ``idpc``: (4, H, W) intensities of the quadrants centred on +x, +y, -x,
        -y [fraction of the incident beam]. ``icom``: (4, H, W) captured fraction [1] and the
        pattern's second moments ⟨k_x²⟩, ⟨k_y²⟩, ⟨k_x k_y⟩ about k = 0 [1/Å²] (over the captured
        electrons).
    """

    com: np.ndarray
    image: np.ndarray
    pixel_size_A: float
    signal: str
    frame: Frame
    info: dict = field(default_factory=dict)
    detector: np.ndarray | None = None


#: ``detector_outer_mrad`` when null, relative to the convergence semi-angle: the bright-field disc's
#: tapered edge (one reciprocal pixel around α in abTEM) then lies wholly on the segments
DEFAULT_OUTER_FACTOR = 1.05


def bright_field_radius(energy_eV: float, semiangle_mrad: float) -> float:
    """Radius k_α = α/λ of the bright-field disc [1/Å]."""
    # lazy: abTEM (~1.6 s to import), only when simulating
    from abtem.core.energy import energy2wavelength

    return float(semiangle_mrad * 1e-3 / energy2wavelength(energy_eV))


def dpc_com_scale(energy_eV: float, semiangle_mrad: float) -> float:
    """CoM per unit quadrant difference S₊ - S₋ (fractions of the incident beam): π k_α / (2√2) [1/Å].

    A shift δ of the uniform bright-field disc moves only its edge; with the edge on the detector,
    the quadrant centred on +x gains δ k_α √2 / (π k_α²) of the beam and the one on -x loses as much,
    so S₊ₓ - S₋ₓ = 2√2 δ / (π k_α) (``docs/simulated-dose.md``).
    """
    return float(np.pi * bright_field_radius(energy_eV, semiangle_mrad) / (2.0 * np.sqrt(2.0)))


def detector_outer(semiangle_mrad: float, detector_outer_mrad: float | None) -> float:
    """The segmented detector's outer radius [mrad] (``None``: :data:`DEFAULT_OUTER_FACTOR` × α)."""
    return DEFAULT_OUTER_FACTOR * semiangle_mrad if detector_outer_mrad is None else float(detector_outer_mrad)


def quadrant_masks(kx: np.ndarray, ky: np.ndarray, wavelength_A: float, inner_mrad: float,
                   outer_mrad: float) -> np.ndarray:
    """The four quadrants centred on +x, +y, -x, -y (4, ...) as 0/1 masks over spatial frequencies [1/Å].

    The same segments as ``abtem.SegmentedDetector(nbins_radial=1, nbins_azimuthal=4, rotation=-π/4)``:
    scattering angle in [inner, outer), bin b for azimuth in [b·90° - 45°, b·90° + 45°).
    """
    kx, ky = np.broadcast_arrays(np.asarray(kx, float), np.asarray(ky, float))
    alpha = np.hypot(kx, ky) * wavelength_A * 1e3
    ring = (alpha >= inner_mrad) & (alpha < outer_mrad)
    phi = (np.arctan2(ky, kx) + np.pi / 4) % (2 * np.pi)
    b = np.clip(np.floor(4 * phi / (2 * np.pi)), 0, 3).astype(int)
    return np.stack([(ring & (b == i)).astype(float) for i in range(4)])


def segment_transfer(aperture: np.ndarray, detector: np.ndarray) -> np.ndarray:
    """First-order (weak-phase) transfer of detector functions, K(q) with ΔS(r₀) = Σ_q φ̃(q) K(q) e^{2πiq·r₀}/N.

    For a thin object exp(iφ) ≈ 1 + iφ and a probe a(k) (Σ|a|² = 1) the intensity of detector
    function D changes by ``ifft2(fft2(φ) · K)`` with K(q) = i[W(q) - W*(-q)] and
    W(q) = Σ_k D(k) a*(k) a(k - q) (``docs/simulated-dose.md``); ``D = k_x`` gives the CoM.

    Parameters
    ----------
    aperture : numpy.ndarray
        The probe's wave function in reciprocal space (numpy FFT order), any normalisation.
    detector : numpy.ndarray
        Detector functions (..., same shape) over the same frequencies.

    Returns
    -------
    numpy.ndarray
        K (complex), the shape of ``detector``, over the frequencies of ``numpy.fft.fft2``.
    """
    a = np.asarray(aperture, complex)
    a = a / np.sqrt(np.sum(np.abs(a) ** 2))
    g = np.conj(np.fft.fft2(np.conj(a)))
    w = np.fft.ifft2(np.fft.fft2(np.asarray(detector) * np.conj(a)) * g)
    w_neg = np.roll(w[..., ::-1, ::-1], 1, axis=(-2, -1))  # W(-q)
    return 1j * (w - np.conj(w_neg))


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
    # lazy: ASE (ase.io ~60 ms to import), only when simulating
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
        # lazy: CuPy is optional (GPU only)
        import cupy  # noqa: F401
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    except Exception:
        return "cpu"


@dataclass(frozen=True, kw_only=True)
class ImagingOptions(StepOptions):
    """Parameters of :func:`simulate_image` (config group ``imaging``)."""

    group: ClassVar[str] = "imaging"
    not_keyed: ClassVar[frozenset[str]] = frozenset({"num_workers", "device"})
    keyed_unless: ClassVar[dict[str, Any]] = {"scan_window_A": None, "window_padding_A": 8.0,
                                              "thermal_configurations": None, "thermal_seed": 0,
                                              "depth_resolved": False, "prism_interpolation": None}
    #: revision of the ``idpc`` detector model, in the image key of ``idpc`` images: 2 = weak-phase
    #: quadrant transfer, CoM scale π k_α/(2√2), beam-current normalisation, outer edge 1.05 α by
    #: default, segment signals kept for counting (docs/simulated-dose.md); images of the old model
    #: (without the entry) are not reused
    idpc_model: ClassVar[int] = 2

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
    defocus_A: float = param(0.0, unit="Å", doc="probe focus below the entrance surface of the simulated cell (2 Å "
                             "above the particle's top atom); multislice, and weak-phase with depth_resolved")
    depth_resolved: bool = param(False, doc="weak-phase mode: every potential slice is convolved with the probe at its "
                                 "own depth (vacuum propagation, focus defocus_A), not the projected potential with the "
                                 "focused probe: the depth of field of a thick particle (docs/simulated-dose.md)")
    sampling_A: float = param(0.1, unit="Å", doc="finest allowed potential sampling; the grid is "
                              "pixel_size_A / m with integer m")
    slice_thickness_A: float = param(2.0, unit="Å", doc="multislice slice thickness")
    detector_inner_mrad: float = param(0.0, unit="mrad", doc="inner radius of the segmented (iDPC) detector")
    detector_outer_mrad: float | None = param(None, unit="mrad", doc="outer radius of the segmented (iDPC) "
                                              "detector, at least the convergence semi-angle; null: just outside "
                                              "the bright-field disc (1.05 x semiangle_mrad)")
    max_snapshots: int | None = param(8, doc="use at most this many snapshots, evenly spaced; null: all")
    thermal_configurations: int | None = param(
        None, doc="image this many frozen-phonon configurations drawn from the MD instead of its snapshots: "
        "each atom at its mean position over all snapshots plus a Gaussian displacement with its own MD "
        "covariance (octascope.sim.thermal; max_snapshots is then not used); null: the MD snapshots")
    thermal_seed: int = param(0, doc="seed of the frozen-phonon configurations")
    prism_interpolation: int | None = param(
        None, doc="multislice mode: scan with abTEM's PRISM S-matrix interpolated by this factor (the probe is "
        "computed in a window of the cell's size / factor) instead of one multislice per probe position; "
        "null: one multislice per position (exact, ~20-40x slower for a whole particle; docs/simulation.md)")
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
        if self.signal == "idpc":  # the disc's edge must lie on the segments, or there is no low-frequency DPC
            require(self.detector_inner_mrad < self.semiangle_mrad,
                    f"detector_inner_mrad={self.detector_inner_mrad} must be below semiangle_mrad={self.semiangle_mrad} "
                    "(the bright-field disc's edge must fall on the segments)")
            require(outer is None or outer >= self.semiangle_mrad,
                    f"detector_outer_mrad={outer} must be >= semiangle_mrad={self.semiangle_mrad} (the bright-field "
                    "disc's edge must fall on the segments; null: 1.05 x semiangle_mrad)")
        win = self.scan_window_A
        require(win is None or (all(finite(v) for v in win) and 0 <= win[0] < win[2] and 0 <= win[1] < win[3]),
                f"scan_window_A={None if win is None else list(win)} must be [x0, y0, x1, y1] in Å with "
                "0 <= x0 < x1 and 0 <= y0 < y1")
        require(self.max_snapshots is None or self.max_snapshots >= 1, f"max_snapshots={self.max_snapshots} must be >= 1 or null")
        n_fp = self.thermal_configurations
        require(n_fp is None or n_fp >= 1, f"thermal_configurations={n_fp} must be >= 1 or null")
        require(self.thermal_seed >= 0, f"thermal_seed={self.thermal_seed} must be >= 0")
        require(self.num_workers >= 1, f"num_workers={self.num_workers} must be >= 1")
        f = self.prism_interpolation
        require(f is None or f >= 1, f"prism_interpolation={f} must be an integer >= 1 or null")
        require(f is None or self.mode == "multislice", f"prism_interpolation={f} needs mode=multislice (or null)")

    def key_params(self, given: Mapping[str, Any] | StepOptions | None = None) -> dict[str, Any]:
        """The image key's parameters (:meth:`StepOptions.key_params`), with :attr:`idpc_model` for ``idpc``."""
        out = super().key_params(given)
        if self.signal == "idpc":
            out["idpc_model"] = self.idpc_model
        return out


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
    positions = _imaged_positions(positions, opts)
    p = opts.pixel_size_A
    frame, n_px = make_frame(positions, pixel_size_A=p, field_of_view_A=opts.field_of_view_A, margin_A=opts.margin_A,
                             scan_rotation_deg=opts.scan_rotation_deg)
    frame, geometry = _scan_geometry(frame, n_px, opts)
    specimen, support_atoms, carbon = _specimen(symbols, positions, frame, geometry, film, opts)
    dev = _device() if opts.device == "auto" else opts.device
    m = max(1, int(np.ceil(p / opts.sampling_A - 1e-9)))
    t0 = time.perf_counter()
    com, detector, extra = _simulate_com(specimen, support_atoms, geometry, m, opts, dev, progress=progress)
    elapsed = time.perf_counter() - t0
    boundary = "periodic" if opts.scan_window_A is None else "mirror"
    image = integrate_gradient(com[0], com[1], p, boundary=boundary)
    rows, cols = geometry.cell_shape
    info = dict(_settings(opts), field_of_view_A=frame.field_of_view_A, sampling_A=p / m, n_snapshots=len(positions),
                device=dev, seconds=elapsed, shape=[int(v) for v in geometry.window_shape], integration=boundary,
                scan_window_A=None if opts.scan_window_A is None else [float(v) for v in opts.scan_window_A],
                cell_A=[cols * p, rows * p], n_atoms_in_cell=int(len(specimen[0])),
                support_n_atoms=0 if carbon is None else int(len(carbon)), **extra)
    return SimulatedImage(com=com.astype(np.float32), image=image.astype(np.float32), pixel_size_A=p,
                          signal=opts.signal, frame=frame, info=info,
                          detector=None if detector is None else detector.astype(np.float32))


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
    positions = _imaged_positions(positions, opts)
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
    com, detector, extra = _simulate_com(specimen, support_atoms, geometry, m, opts, dev, progress=progress)
    image = integrate_gradient(com[0], com[1], p, boundary="mirror")
    info = dict(_settings(opts), field_of_view_A=None, sampling_A=p / m, n_snapshots=len(positions), device=dev,
                seconds=time.perf_counter() - t0, shape=[rows, cols], integration="mirror", padding_A=pad * p,
                cell_A=list(cell_xy_A), n_atoms_in_cell=int(len(specimen[0])),
                support_n_atoms=0 if carbon is None else int(len(carbon)), **extra)
    return SimulatedImage(com=com.astype(np.float32), image=image.astype(np.float32), pixel_size_A=p,
                          signal=opts.signal, frame=identity, info=info,
                          detector=None if detector is None else detector.astype(np.float32))


def _settings(opts: ImagingOptions) -> dict[str, Any]:
    """The settings an image's ``info`` records first (the noise model reads the beam and detector ones)."""
    names = ("mode", "signal", "pixel_size_A", "field_of_view_A", "scan_rotation_deg", "energy_eV", "semiangle_mrad",
             "defocus_A", "detector_inner_mrad", "detector_outer_mrad", "prism_interpolation")
    return {name: getattr(opts, name) for name in names}


def _select_snapshots(positions: np.ndarray, max_snapshots: int | None) -> np.ndarray:
    """Positions (S, N, 3) [Å] of at most ``max_snapshots`` evenly spaced snapshots (``None``: all)."""
    positions = np.asarray(positions, float)
    if positions.ndim == 2:
        positions = positions[None]
    if max_snapshots is not None and len(positions) > max_snapshots:
        positions = positions[np.linspace(0, len(positions) - 1, max_snapshots).round().astype(int)]
    return positions


def _imaged_positions(positions: np.ndarray, opts: ImagingOptions) -> np.ndarray:
    """The configurations imaged (S, N, 3) [Å]: at most ``max_snapshots`` of the snapshots, or
    ``thermal_configurations`` frozen-phonon configurations drawn from all of them."""
    if opts.thermal_configurations is None:
        return _select_snapshots(positions, opts.max_snapshots)

    positions = np.asarray(positions, float)
    if positions.ndim != 3 or len(positions) < 2:
        raise InputError(f"imaging.thermal_configurations={opts.thermal_configurations} needs MD snapshots (S, N, 3) "
                         f"with S >= 2, got shape {positions.shape}; set it to null for a static structure")
    return frozen_phonon_configurations(positions, opts.thermal_configurations, seed=opts.thermal_seed)


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
                  dev: str, *, progress: bool) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """The CoM field (2, rows, columns) [1/Å] of the scan window (see the module docstring).

    ``specimen`` holds the Atoms of each snapshot (averaged as an abTEM ensemble). The simulated
    periodic cell is ``geometry.cell_shape`` (rows, columns) [px] of ``pixel_size_A`` [Å]; the
    potential grid is ``m`` times finer. ``support_atoms`` (weak-phase mode only) are added as a
    separate, static projected potential. ``dev`` is abTEM's device (``cpu`` or ``gpu``). Also returns
    the detector signals (multislice only, else ``None``) and info entries for the noise model.
    """
    # lazy: abTEM (~1.6 s to import), only when simulating
    import abtem

    with abtem.config.set({"diagnostics.progress_bar": bool(progress)}):
        if opts.mode == "weak_phase":
            return _weak_phase_com(abtem, specimen, support_atoms, geometry, m, opts, dev), None, {}
        atoms = abtem.AtomsEnsemble(specimen) if len(specimen) > 1 else specimen[0]
        return _multislice_com(abtem, atoms, geometry, m, opts, dev)


def _weak_phase_com(abtem: ModuleType, specimen: list, support_atoms: Atoms | None,
                    geometry: _ScanGeometry, m: int, opts: ImagingOptions, dev: str) -> np.ndarray:
    """CoM field (2, rows, columns) [1/Å] of the thin-object model of the snapshots' mean potential."""
    ny, nx = geometry.cell_shape
    gpts = (nx * m, ny * m)  # abTEM order: (x, y)

    def projected(a: Atoms | AtomsEnsemble) -> np.ndarray:
        """Summed over the configurations: [x, y] eV·Å, or [slice, x, y] with ``depth_resolved``."""
        pot = abtem.Potential(a, gpts=gpts, slice_thickness=opts.slice_thickness_A, projection="infinite", device=dev)
        built = pot.build() if opts.depth_resolved else pot.build().project()
        v = np.asarray(_to_numpy(built.compute().array))  # maybe with an ensemble axis first
        return v.sum(0) if v.ndim == (4 if opts.depth_resolved else 3) else v

    batch = 16  # snapshots per abTEM ensemble: bounds the memory of many frozen-phonon configurations
    v: np.ndarray | float = 0.0
    for i in range(0, len(specimen), batch):
        part = specimen[i:i + batch]
        v = v + projected(abtem.AtomsEnsemble(part) if len(part) > 1 else part[0])
    v = np.asarray(v) / len(specimen)
    if support_atoms is not None:
        v = v + projected(support_atoms)
    return _weak_phase_com_of_potential(abtem, np.swapaxes(v, -1, -2), geometry, m, opts, dev)


def _weak_phase_com_of_potential(abtem: ModuleType, v: np.ndarray, geometry: _ScanGeometry, m: int,
                                 opts: ImagingOptions, dev: str) -> np.ndarray:
    """CoM field (2, rows, columns) [1/Å] of the window from the potential ``v`` of the cell [eV·Å]:
    projected (y, x) with the focused probe, or per slice (slice, y, x) with the probe at each slice's
    depth (``depth_resolved``: focus ``defocus_A`` below the entrance surface; the sum over slices).

    ``icom``: Σ ∇(σ·V ⊗ probe intensity)/(2π). ``idpc``: the quadrant differences to first order
    in σ·V (:func:`segment_transfer`) times :func:`dpc_com_scale`.
    """
    # lazy: abTEM (~1.6 s to import), only when simulating
    from abtem.core.energy import energy2sigma, energy2wavelength

    p = opts.pixel_size_A
    ny, nx = geometry.cell_shape
    gpts = (nx * m, ny * m)  # abTEM order: (x, y)
    extent = (nx * p, ny * p)
    s = p / m
    ky = np.fft.fftfreq(gpts[1], d=s)[:, None]
    kx = np.fft.fftfreq(gpts[0], d=s)[None, :]
    (c0, r0), (h, w) = geometry.scan_in_cell, geometry.window_shape
    slices = v[None] if v.ndim == 2 else v
    depths = [None] if v.ndim == 2 else list((np.arange(len(v)) + 0.5) * opts.slice_thickness_A)
    seg = None
    if opts.signal == "idpc":
        seg = quadrant_masks(kx, ky, energy2wavelength(opts.energy_eV), opts.detector_inner_mrad,
                             detector_outer(opts.semiangle_mrad, opts.detector_outer_mrad))
        seg = np.stack([seg[0] - seg[2], seg[1] - seg[3]])
    need = 16 * gpts[0] * gpts[1]

    def aperture(focus_A: float) -> np.ndarray:
        probe = abtem.Probe(energy=opts.energy_eV, semiangle_cutoff=opts.semiangle_mrad, gpts=gpts, extent=extent,
                            device=dev, aberrations={"C10": -focus_A} if focus_A else None)
        # one probe over the whole field: abTEM's 128 MB auto-chunk limit refuses a 4096² complex
        # wave (a 2048² image at 2x oversampling); it is a single array either way
        with abtem.config.set({"dask.chunk-size": max(128 * 2**20, 2 * need)}):
            wave = _to_numpy(np.asarray(probe.build((0.0, 0.0)).compute().array)).squeeze().T  # [y, x]
        return np.fft.fft2(wave)

    a0 = aperture(0.0)
    # the defocus phase is linear in the focus: measured once on abTEM's probe (its sign convention)
    phase_per_A = np.angle(aperture(1.0) * np.conj(a0)) if depths[0] is not None else None
    g = np.zeros((2, gpts[1], gpts[0]))
    for v_slice, z in zip(slices, depths):
        if not np.any(v_slice):
            continue
        a = a0 if z is None or phase_per_A is None else a0 * np.exp(1j * phase_per_A * (opts.defocus_A - z))
        fp = np.fft.fft2(energy2sigma(opts.energy_eV) * v_slice)
        if seg is not None:
            transfer = segment_transfer(a, seg)
            g += np.stack([np.fft.ifft2(fp * t).real for t in transfer]) * dpc_com_scale(opts.energy_eV, opts.semiangle_mrad)
        else:
            pr = np.abs(np.fft.ifft2(a)) ** 2
            ff = fp * np.fft.fft2(pr / pr.sum()) / (2 * np.pi)
            g += np.stack([np.fft.ifft2(2j * np.pi * kx * ff).real, np.fft.ifft2(2j * np.pi * ky * ff).real])
    return g[:, ::m, ::m][:, r0:r0 + h, c0:c0 + w]


def _multislice_com(abtem: ModuleType, atoms: Atoms | AtomsEnsemble, geometry: _ScanGeometry, m: int,
                    opts: ImagingOptions, dev: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """CoM field (2, rows, columns) [1/Å] of an abTEM multislice scan of the window, the detector
    signals (:attr:`SimulatedImage.detector`) and what the noise model needs besides.

    ``icom``: the centre of mass of the pattern on a pixelated detector (up to abTEM's ``valid``
    angle), divided by the captured intensity. ``idpc``: four quadrants of ``detector_inner_mrad``..
    the outer radius (:func:`detector_outer`); CoM = :func:`dpc_com_scale` × (S₊ - S₋ - the same
    difference in vacuum, which the discrete grid makes slightly non-zero).
    """
    # lazy: ASE (ase.io ~60 ms to import), only when simulating
    import ase

    p = opts.pixel_size_A
    ny, nx = geometry.cell_shape
    (c0, r0), (h, w) = geometry.scan_in_cell, geometry.window_shape
    gpts = (nx * m, ny * m)
    pot = abtem.Potential(atoms, gpts=gpts, slice_thickness=opts.slice_thickness_A, device=dev)
    probe = abtem.Probe(energy=opts.energy_eV, semiangle_cutoff=opts.semiangle_mrad, device=dev,
                        aberrations={"C10": -opts.defocus_A} if opts.defocus_A else None)
    scan = abtem.GridScan(start=(c0 * p, r0 * p), end=((c0 + w) * p, (r0 + h) * p), gpts=(w, h), endpoint=False)
    scanned = _scanner(abtem, pot, probe, gpts, opts, dev)
    if opts.signal == "icom":
        meas = scanned(scan, abtem.PixelatedDetector(max_angle="valid"))
        kx, ky = (np.asarray(v, float) for v in meas.coordinates)
        kx2, ky2 = kx[:, None], ky[None, :]
        weights = np.stack([np.ones_like(kx2 * ky2), kx2 + 0 * ky2, ky2 + 0 * kx2, kx2**2 + 0 * ky2, ky2**2 + 0 * kx2,
                            kx2 * ky2], axis=-1)  # (Kx, Ky, 6): one lazy pass over the patterns
        sums = (meas.array[..., None] * weights).sum(axis=(-3, -2)).compute(num_workers=opts.num_workers)
        tot, sx, sy, sxx, syy, sxy = (np.asarray(_to_numpy(sums[..., i]), float).T for i in range(6))
        tot_safe = np.where(tot > 0, tot, 1.0)
        detector = np.stack([tot, sxx / tot_safe, syy / tot_safe, sxy / tot_safe])
        return np.stack([sx / tot_safe, sy / tot_safe]), detector, {}
    outer = detector_outer(opts.semiangle_mrad, opts.detector_outer_mrad)
    det = abtem.SegmentedDetector(nbins_radial=1, nbins_azimuthal=4, inner=opts.detector_inner_mrad, outer=outer,
                                  rotation=-np.pi / 4)
    seg = np.asarray(_to_numpy(scanned(scan, det).compute(num_workers=opts.num_workers).array))
    seg = seg.reshape(w, h, 4).transpose(2, 1, 0).astype(float)  # [bin, y, x]; bin b centred on angle b·90°
    vacuum = abtem.Potential(ase.Atoms(cell=pot.extent + (2.0,), pbc=True), gpts=gpts, slice_thickness=2.0, device=dev)
    one = abtem.GridScan(start=(0.0, 0.0), end=(p, p), gpts=(1, 1), endpoint=False)
    # the same scan method as the specimen's: the grid's vacuum offset differs between them
    seg0 = np.asarray(_to_numpy(_scanner(abtem, vacuum, probe, gpts, opts, dev)(one, det).compute().array),
                      float).reshape(4)
    scale = dpc_com_scale(opts.energy_eV, opts.semiangle_mrad)
    com = scale * np.stack([seg[0] - seg[2] - (seg0[0] - seg0[2]), seg[1] - seg[3] - (seg0[1] - seg0[3])])
    return com, seg, {"detector_vacuum": [float(v) for v in seg0]}


def _scanner(abtem: ModuleType, pot: Any, probe: Any, gpts: tuple[int, int], opts: ImagingOptions,
             dev: str) -> Callable[[Any, Any], Any]:
    """``scan(grid_scan, detector)`` -> abTEM's lazy measurement: one multislice per probe position,
    or with ``prism_interpolation`` = f the PRISM S-matrix (Ophus 2017): the plane waves inside the
    aperture, f times sparser in k, are each propagated once and every probe is their sum in a window
    of the cell's size / f. The patterns keep the full angular range (``downsample=False``), so a
    pixelated detector's ``valid`` angle is the same as the exact scan's. Checked against the exact
    scan on a rattled CsPbI3 slab (docs/simulation.md): CoM maps correlate to 0.9999 and differ
    by 1-4 % r.m.s. of the signal, nearly all of it a uniform scale."""
    f = opts.prism_interpolation
    if f is None:
        return lambda scan, det: probe.scan(pot, scan=scan, detectors=det)
    if any(g % f for g in gpts):
        fits = [d for d in range(2, 9) if not (gpts[0] % d or gpts[1] % d)]
        raise InputError(f"imaging.prism_interpolation={f} must divide the potential grid {gpts[0]} x {gpts[1]} points: "
                         f"use {' or '.join(map(str, fits)) if fits else '1 or null'}")
    s_matrix = abtem.SMatrix(potential=pot, energy=opts.energy_eV, semiangle_cutoff=opts.semiangle_mrad,
                             interpolation=f, downsample=False, device=dev)
    ctf = (abtem.CTF(semiangle_cutoff=opts.semiangle_mrad, energy=opts.energy_eV,
                     aberration_coefficients={"C10": -opts.defocus_A}) if opts.defocus_A else None)
    return lambda scan, det: s_matrix.scan(scan=scan, detectors=det, ctf=ctf)


def _to_numpy(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)
