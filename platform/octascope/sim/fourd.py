"""Small simulated 4D-STEM datasets with ground truth: a diffraction pattern per probe position.

:func:`simulate_fourd` scans a particle of the simulation chain (structure → MD, cached as for every
simulated image) with a focused probe and records a ``detector_px``² pattern per position. Physics:
the projection approximation (a strong phase object): abTEM's projected potential of the snapshot
(``projection="infinite"``, one slice) gives the transmission t = exp(iσV), abTEM's probe ψ
(aperture ``semiangle_mrad``, no aberrations) is multiplied with t in a ``window_A`` window around each
position, and the pattern is |FFT(ψ·t)|² (:func:`_window_patterns`; the batched FFT of one scan row at
a time: seconds for ~20,000 positions, where abTEM's own ``probe.scan`` with a
:class:`abtem.PixelatedDetector` transforms the whole cell per position — more than 5 CPU minutes
and gigabytes at full detector resolution for the default particle on this project's machine, so it
was not used). No multislice: the depth of field of a thick particle is left out (as in the
weak-phase images of :mod:`octascope.sim.imaging`). The mean patterns over the snapshots are cached in
``<cache>/fourd/<key>/`` (:mod:`octascope.sim.cache`).

Conventions (HyperSpy's): the 4-D array is ``[scan_y, scan_x, det_y, det_x]``; scan pixel
``[r, c]`` is the probe position (x, y) = (c·step, r·step) of the image frame
(:class:`octascope.sim.imaging.Frame`, truth in the same frame); detector pixel ``[j, i]`` is the
scattering vector k = ((i - origin_x)·dk, (j - origin_y)·dk) [1/Å], with the detector axes along the
scan axes unless :func:`rotate_patterns` turns them (a scan-to-detector rotation). Pattern values
are fractions of the incident beam (a clean pattern sums to the captured fraction, ≤ 1).

:func:`count_patterns` draws Poisson counts per detector pixel at a dose [e/Å²] (N = dose·step²
electrons per probe position); :func:`save_fourd` writes them as a HyperSpy ``.hspy``/``.zspy``
file with the scan and detector calibrations, which :func:`octascope.input.fourd.read_fourd` reads.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping
import shutil
import tempfile

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from octascope.core.model import Truth
from octascope.core.params import param, require
from octascope.sim.options import StepOptions, finite, resolve_options
from octascope.sim import imaging as im
from octascope.sim.cache import cached
from octascope.sim.simulation import _true_columns, md_step, plan_simulation
from octascope.sim.structure import build_nanocube, composition_formula
from octascope.sim.truth import projected_octahedra


@dataclass(frozen=True, kw_only=True)
class FourDOptions(StepOptions):
    """Parameters of :func:`simulate_fourd` (the 4D-STEM scan of one particle)."""

    group: ClassVar[str] = "fourd"
    not_keyed: ClassVar[frozenset[str]] = frozenset({"num_workers"})
    #: revision of the pattern computation, in the cache key
    model: ClassVar[int] = 2

    step_A: float = param(0.4, unit="Å", doc="scan step = pixel size of the CoM/iCoM images")
    field_of_view_A: float | None = param(None, unit="Å", doc="edge of the square scan; null: the particle plus "
                                          "margin_A on each side (any rotation)")
    margin_A: float = param(1.5, unit="Å", doc="vacuum around the particle's circumscribed circle when the field of "
                            "view is automatic")
    energy_eV: float = param(300e3, unit="eV", doc="beam energy")
    semiangle_mrad: float = param(29.9, unit="mrad", doc="probe convergence semi-angle")
    sampling_A: float = param(0.14, unit="Å", doc="finest potential sampling (grid = step_A / m, integer m); the "
                              "potential is band-limited to 2/3 of 1/(2·sampling) [1/Å]")
    window_A: float = param(12.0, unit="Å", doc="edge of the window around each probe position in which its exit "
                            "wave is computed; the detector pixel is 1/window [1/Å]")
    detector_px: int = param(64, doc="detector pixels along each axis (pixel 1/window_A [1/Å], k = 0 at the centre)")
    max_snapshots: int = param(1, doc="MD snapshots averaged (evenly spaced)")
    num_workers: int = param(1, doc="Dask threads of the abTEM scan")

    def check(self) -> None:
        for name in ("step_A", "energy_eV", "semiangle_mrad", "sampling_A", "margin_A"):
            value = getattr(self, name)
            require(finite(value) and value > 0 or (name == "margin_A" and value == 0),
                    f"{name}={value} must be a number > 0")
        require(finite(self.window_A) and self.window_A >= 4.0, f"window_A={self.window_A} must be >= 4 Å")
        require(self.field_of_view_A is None or (finite(self.field_of_view_A) and self.field_of_view_A > 0),
                f"field_of_view_A={self.field_of_view_A} must be > 0 Å or null")
        require(8 <= self.detector_px <= 512, f"detector_px={self.detector_px} must be in 8..512")
        require(self.max_snapshots >= 1, f"max_snapshots={self.max_snapshots} must be >= 1")
        require(self.num_workers >= 1, f"num_workers={self.num_workers} must be >= 1")


@dataclass
class FourDSimulation:
    """A clean simulated 4D-STEM dataset and its truth.

    Attributes
    ----------
    patterns : numpy.ndarray
        (H, W, D, D) float32 [fraction of the incident beam per detector pixel].
    step_A : float
        Scan step [Å].
    detector_sampling : float
        Reciprocal size of one detector pixel [1/Å].
    origin_px : tuple of float
        (x, y) detector position of k = 0 [detector px].
    energy_eV, semiangle_mrad : float
        Beam energy [eV] and convergence semi-angle [mrad].
    truth : Truth
        Projected columns and octahedra in the scan frame (x_A = c·step).
    info : dict
        Settings, cache key, seconds of the abTEM run.
    """

    patterns: np.ndarray
    step_A: float
    detector_sampling: float
    origin_px: tuple[float, float]
    energy_eV: float
    semiangle_mrad: float
    truth: Truth
    info: dict = field(default_factory=dict)

    def com(self) -> np.ndarray:
        """The exact centre of mass of the clean patterns (2, H, W) [1/Å] (x then y)."""
        return pattern_moments(self.patterns, self.detector_sampling, self.origin_px)[1:3]


def pattern_moments(patterns: np.ndarray, dk: float, origin_px: tuple[float, float]) -> np.ndarray:
    """Captured fraction and moments of patterns (..., D, D): (6, ...) = (total, <kx>, <ky>, <kx²>, <ky²>,
    <kx·ky>) with k [1/Å] from ``origin_px`` (x, y) [detector px] in steps of ``dk`` [1/Å]."""
    d_y, d_x = patterns.shape[-2:]
    kx = (np.arange(d_x) - origin_px[0]) * dk
    ky = (np.arange(d_y) - origin_px[1]) * dk
    p = np.asarray(patterns, np.float64)
    tot = p.sum(axis=(-2, -1))
    px = p.sum(axis=-2)  # (..., D_x): marginal along x
    py = p.sum(axis=-1)
    safe = np.where(tot > 0, tot, 1.0)
    mx = px @ kx / safe
    my = py @ ky / safe
    mxx = px @ kx**2 / safe
    myy = py @ ky**2 / safe
    mxy = np.einsum("...ji,j,i->...", p, ky, kx) / safe
    return np.stack([tot, mx, my, mxx, myy, mxy])


def _window_patterns(atoms: Any, cell_shape: tuple[int, int], opts: FourDOptions) -> tuple[np.ndarray, float, float]:
    """Patterns [y, x, ky, kx] (fractions of the beam per detector pixel) of a probe scanned over ``atoms``.

    The projected potential V of the cell (abTEM, ``projection="infinite"``, one slice, sampling
    s = step/m) gives the transmission t = exp(iσV); abTEM's probe is built on a window of
    ``window_A`` around each position (the probe's intensity lies within a few Å of its centre);
    the pattern is |FFT(ψ·t_window)|², cropped to ``detector_px``² pixels around k = 0 (pixel
    1/window [1/Å]). Probe positions fall on the potential's grid (step = m·s), so no interpolation is
    needed; the cell is periodic (its margin of vacuum keeps the particle away from the wrap).
    """
    # lazy: abTEM (~1.6 s to import), only when simulating
    import abtem
    from abtem.core.energy import energy2sigma

    p = opts.step_A
    m = max(1, int(np.ceil(p / opts.sampling_A - 1e-9)))
    s = p / m
    ny, nx = cell_shape
    with abtem.config.set({"diagnostics.progress_bar": False}):
        pot = abtem.Potential(atoms, gpts=(nx * m, ny * m), slice_thickness=float(atoms.cell[2, 2]),
                              projection="infinite", device="cpu")
        built: Any = pot.build().project().compute()
        v = np.asarray(built.array, np.float64)
        v = (v.sum(0) if v.ndim == 3 else v).T  # [y, x] eV·Å
        n_w = int(2 * np.ceil(opts.window_A / s / 2))
        probe = abtem.Probe(energy=opts.energy_eV, semiangle_cutoff=opts.semiangle_mrad, gpts=(n_w, n_w),
                            sampling=s, device="cpu")
        wave: Any = probe.build((n_w * s / 2, n_w * s / 2)).compute()
        psi = np.asarray(wave.array).squeeze().T.astype(np.complex64)
    if n_w < opts.detector_px:
        raise ValueError(f"window_A={opts.window_A} gives {n_w} pixels, fewer than detector_px={opts.detector_px}")
    t = np.exp(1j * energy2sigma(opts.energy_eV) * v).astype(np.complex64)
    half = n_w // 2
    tp = np.pad(t, half, mode="wrap")
    norm = float(np.sum(np.abs(psi) ** 2)) * n_w * n_w  # Parseval: a pattern sums to 1 on the full window
    lo = n_w // 2 - opts.detector_px // 2
    out = np.empty((ny, nx, opts.detector_px, opts.detector_px), np.float32)

    cols = np.arange(nx) * m
    for r in range(ny):  # one scan row at a time: (nx, n_w, n_w) windows, one batched FFT
        band = tp[r * m:r * m + n_w]
        win = sliding_window_view(band, (n_w, n_w))[0, cols]
        f = np.fft.fftshift(np.fft.fft2(win * psi[None]), axes=(-2, -1))
        out[r] = (np.abs(f[:, lo:lo + opts.detector_px, lo:lo + opts.detector_px]) ** 2 / norm).astype(np.float32)
    return out, 1.0 / (n_w * s), float(n_w // 2 - lo)


def simulate_fourd(options: FourDOptions | None = None, /, *, structure: Mapping[str, Any] | None = None,
                   md: Mapping[str, Any] | None = None, run_md: bool = True, cache_dir: str | None = None,
                   progress: bool = False, **params: Any) -> FourDSimulation:
    """Simulate (or load from the cache) a clean 4D-STEM scan of a particle with its truth.

    Parameters
    ----------
    options : FourDOptions, optional
        Scan and detector parameters (or give them as keywords, see :class:`FourDOptions`).
    structure, md : Mapping, optional
        The particle and its MD (:func:`octascope.sim.simulation.simulate`'s groups; the MD is the
        cached one of the same parameters).
    run_md : bool
        Image MD snapshots (``False``: the built structure).
    cache_dir : str, optional
        Cache directory (default ``$OCTASCOPE_CACHE`` or ``~/.cache/octascope``).
    progress : bool
        Show progress bars of the MD and abTEM.

    Returns
    -------
    FourDSimulation
    """

    opts = resolve_options(FourDOptions, options, params)
    imaging = dict(mode="multislice", signal="icom", pixel_size_A=opts.step_A, field_of_view_A=opts.field_of_view_A,
                   margin_A=opts.margin_A, energy_eV=opts.energy_eV, semiangle_mrad=opts.semiangle_mrad,
                   sampling_A=opts.sampling_A, max_snapshots=opts.max_snapshots, device="cpu",
                   slice_thickness_A=2.0)
    plan = plan_simulation(structure=structure, md=md, imaging=imaging, run_md=run_md)
    atoms = build_nanocube(plan.structure)
    symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
    if run_md:
        m_key, traj, _ = md_step(atoms, plan.keys["structure"], md, cache_dir=cache_dir, progress=progress)
        positions, lattice = traj.positions, traj.lattice
    else:
        m_key = plan.keys["structure"]
        pos = atoms.get_positions()
        positions, lattice = (pos - pos.mean(0))[None], atoms.arrays["lattice"]
    positions = im._select_snapshots(positions, opts.max_snapshots)
    io = plan.imaging
    frame, n_px = im.make_frame(positions, pixel_size_A=io.pixel_size_A, field_of_view_A=io.field_of_view_A,
                                margin_A=io.margin_A, scan_rotation_deg=0.0)
    frame, geometry = im._scan_geometry(frame, n_px, io)
    specimen, _, _ = im._specimen(symbols, positions, frame, geometry, None, io)

    def compute(folder: Path) -> None:
        t0 = time.perf_counter()
        acc: np.ndarray | None = None
        dk = origin = 0.0
        for a in specimen:
            pats, dk, origin = _window_patterns(a, geometry.cell_shape, opts)
            acc = pats if acc is None else acc + pats
        assert acc is not None
        binned = np.ascontiguousarray(acc / len(specimen)).astype(np.float32)
        np.save(folder / "patterns.npy", binned)
        (folder / "fourd.json").write_text(json.dumps({
            "detector_sampling": dk, "origin_px": [origin, origin], "seconds": time.perf_counter() - t0,
            "frame": frame.as_dict(), "shape": list(binned.shape),
            "potential_sampling_A": opts.step_A / max(1, int(np.ceil(opts.step_A / opts.sampling_A - 1e-9))),
            "n_snapshots": int(len(specimen))}))

    key_params = dict(opts.key_params(options if options is not None else params), structure=plan.keys["structure"],
                      model=FourDOptions.model)
    key, folder, hit = cached("fourd", key_params, [m_key], compute, cache_dir=cache_dir)
    meta = json.loads((folder / "fourd.json").read_text())
    patterns = np.load(folder / "patterns.npy")
    clean = im.SimulatedImage(com=np.zeros((2,) + patterns.shape[:2], np.float32), image=np.zeros(patterns.shape[:2],
                              np.float32), pixel_size_A=opts.step_A, signal="icom", frame=frame, info={})
    columns = _true_columns(symbols, lattice, positions, clean, plan)
    truth = Truth(columns=columns, octahedra=projected_octahedra(columns),
                  metadata={"source": f"simulated 4D-STEM {key}", "frame": frame.as_dict()})
    info = dict(opts.to_dict(), key=key, cache_hit=hit, seconds=meta["seconds"], n_snapshots=meta["n_snapshots"],
                potential_sampling_A=meta["potential_sampling_A"], md_key=m_key,
                composition=composition_formula(atoms))
    return FourDSimulation(patterns=patterns, step_A=opts.step_A, detector_sampling=float(meta["detector_sampling"]),
                           origin_px=(float(meta["origin_px"][0]), float(meta["origin_px"][1])),
                           energy_eV=opts.energy_eV, semiangle_mrad=opts.semiangle_mrad, truth=truth, info=info)


def rotate_patterns(patterns: np.ndarray, rotation_deg: float, origin_px: tuple[float, float],
                    descan_px_per_step: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Patterns (H, W, D, D) as a detector turned by ``rotation_deg`` about ``origin_px`` (x, y) [px] records
    them, with a descan: the origin moves by ``descan_px_per_step`` = (x per scan column, y per scan row) [px].

    A scattering vector k of the scan frame lands on the detector at R(-rotation)·k + origin + descan, so
    the CoM measured on the detector must be turned by +``rotation_deg`` to come back to the scan
    frame. One affine map of the 4-D array (identity on the scan axes), linear interpolation.
    """

    t = np.deg2rad(rotation_deg)
    m = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])  # R(+t) acting on (y, x)
    o = np.array([origin_px[1], origin_px[0]], float)
    ax, ay = descan_px_per_step
    mat = np.eye(4)
    mat[2:, 2:] = m
    mat[2:, 0] = -m[:, 0] * ay  # the origin's shift (ay·r, ax·c) in (y, x), turned
    mat[2:, 1] = -m[:, 1] * ax
    offset = np.zeros(4)
    offset[2:] = o - m @ o
    return ndimage.affine_transform(np.asarray(patterns, np.float32), mat, offset=offset, order=1, mode="constant",
                                    prefilter=False)


def count_patterns(patterns: np.ndarray, dose_e_per_A2: float, step_A: float, *, seed: int = 0) -> np.ndarray:
    """Poisson counts per detector pixel (uint16, same shape) for N = dose·step² electrons per probe position.

    Parameters
    ----------
    patterns : numpy.ndarray
        (H, W, D, D) [fraction of the incident beam per pixel].
    dose_e_per_A2 : float
        Dose [e/Å²].
    step_A : float
        Scan step [Å].
    seed : int
        Seed of the generator.
    """
    n_e = float(dose_e_per_A2) * float(step_A) ** 2
    rng = np.random.default_rng(seed)
    counts = rng.poisson(n_e * np.clip(patterns, 0.0, None))
    return counts.astype(np.uint16 if counts.max() < 2**16 else np.uint32)


def save_fourd(path: str | Path, data: np.ndarray, *, step_A: float, detector_sampling: float | None,
               origin_px: tuple[float, float] = (0.0, 0.0), title: str = "4D-STEM",
               metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a 4-D dataset [scan_y, scan_x, det_y, det_x] as a HyperSpy file (``.hspy`` or ``.zspy``).

    The scan axes carry ``step_A`` in Å; the detector axes ``detector_sampling`` in 1/Å with the offset
    that puts k = 0 at ``origin_px`` (``None``: uncalibrated detector, in pixels). ``metadata`` goes to
    ``metadata.Acquisition_instrument.TEM`` (e.g. ``beam_energy`` [keV], ``convergence_angle`` [mrad]).
    """
    # lazy: HyperSpy (~50 ms to import), only for that file format
    import hyperspy.api as hs

    path = Path(path)
    s = hs.signals.Signal2D(np.asarray(data))
    s.metadata.General.title = title
    for ax, name in zip(s.axes_manager.navigation_axes, ("x", "y")):
        ax.name, ax.scale, ax.units = name, float(step_A), "Å"
    for ax, name, o in zip(s.axes_manager.signal_axes, ("kx", "ky"), origin_px):
        ax.name = name
        if detector_sampling is not None:
            ax.scale, ax.units, ax.offset = float(detector_sampling), "1/Å", -float(o) * float(detector_sampling)
    for k, v in (metadata or {}).items():
        s.metadata.set_item(f"Acquisition_instrument.TEM.{k}", v)
    if path.suffix.lower() != ".zspy":
        s.save(str(path), overwrite=True)
        return path

    with tempfile.TemporaryDirectory() as tmp:  # RosettaSciIO 0.15's ZSPY writer fails with zarr 3: via HSPY
        hspy = Path(tmp) / "signal.hspy"
        s.save(str(hspy))
        _hspy_to_zspy(hspy, path)
    return path


def _hspy_to_zspy(hspy: Path, zspy: Path) -> None:
    """Copy an HSPY (HDF5) file's tree into a zarr v2 directory, the ZSPY layout that RosettaSciIO reads
    (its own ZSPY writer needs ``zarr.storage.NestedDirectoryStore``, gone in zarr 3)."""

    # lazy: h5py (~16 ms to import), only for an HDF5 file
    import h5py  # type: ignore[import-untyped]
    # lazy: zarr (~0.13 s to import), only when a .zspy file is written
    import zarr

    def plain(v: Any) -> Any:
        if isinstance(v, bytes):
            return v.decode()
        if isinstance(v, np.ndarray):
            return v.tolist()
        return v.item() if isinstance(v, np.generic) else v

    def copy(h: Any, z: Any) -> None:
        for k, v in h.attrs.items():
            z.attrs[k] = plain(v)
        for k, item in h.items():
            if isinstance(item, h5py.Group):
                copy(item, z.create_group(k))
                continue
            arr = np.asarray(item[()])
            z.create_array(k, data=arr.astype(str) if arr.dtype.kind in "OS" else arr)
            for a, b in item.attrs.items():
                z[k].attrs[a] = plain(b)

    if zspy.exists():
        shutil.rmtree(zspy)
    with h5py.File(hspy) as f:
        copy(f, zarr.open_group(str(zspy), mode="w", zarr_format=2))
