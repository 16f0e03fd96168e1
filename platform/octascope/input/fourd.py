"""4D-STEM in: a diffraction pattern per probe position → centre of mass → DPC components and iCoM.

Reading
-------
:func:`read_fourd_header` opens a 4-D dataset lazily through the maintained readers and returns its
shape, type and calibrations before a byte of pixels is read; :func:`check_fourd_size` refuses it
from the header when the centre-of-mass step would not fit in memory. Formats:

- HyperSpy ``.hspy`` / ``.zspy`` holding a 4-D signal (RosettaSciIO);
- Quantum Detectors Merlin ``.mib`` (RosettaSciIO ``quantumdetector``; the scan shape from the
  ``.hdr`` beside it, or square);
- EMPAD ``.xml`` (with its ``.raw``; RosettaSciIO ``empad``);
- py4DSTEM ``.h5`` (the first 4-D ``DataCube`` in the file; shape from h5py, pixels through
  :func:`py4DSTEM.read`).

Centre of mass
--------------
:func:`center_of_mass` hands the patterns to py4DSTEM's :class:`py4DSTEM.process.phase.DPC`
preprocessing: the CoM of every pattern, the diffraction-pattern origin as a plane fitted to the
CoM over the scan (which also takes out a linear descan), and the scan-to-detector rotation (and a
possible transpose) as the angle that minimises the curl of the CoM field (a phase gradient has
none), searched in 1° steps and then refined in 0.05° steps around the best one, on the CoM field
smoothed by a Gaussian of σ = 1 scan pixel (at low dose the curl is mostly shot noise). Curl cannot tell
a rotation from the same rotation plus 180°; the sign is fixed by the physics: the beam is drawn
towards the columns, so the integrated CoM (iCoM) must show the columns bright (positive skewness
of its band-passed image).

Axes: the 4-D array is ``[scan_y, scan_x, det_y, det_x]`` (HyperSpy's order). The CoM field is
returned in the image frame of octascope (``x`` along the scan columns, ``y`` along the rows) [1/Å],
and ``rotation_deg`` is the angle by which a CoM measured on the detector is turned to land in the
scan frame.

Noise
-----
The CoM of M counted electrons has white noise per probe position (variance of the pattern ×
E[1/M]); iCoM integrates it, so its noise power falls as 1/k² — the same model as for a simulated
iCoM image (:mod:`octascope.sim.noise`), which the locator estimates from the image itself
(:mod:`octascope.analysis.noise_spectrum`). The returned :class:`~octascope.core.model.Image` is
therefore ``signal="icom"`` with the dose [e/Å²] (given, or from the counts: mean electrons per
pattern / step²), and is analysed as any iDPC/iCoM image (pixel size = scan step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
import re
import warnings

import numpy as np
from scipy import ndimage

from octascope.core.errors import InputError
from octascope.core.model import Image
from octascope.input.readers import (
    _quiet, _read_rsciio, _scale_to_A, _short, available_memory_bytes, check_image_size, check_index, check_pixel_size,
    resolve_path,
)
from octascope.sim.imaging import bright_field_radius, integrate_gradient

#: file suffix -> 4-D reader name (``.hspy``/``.zspy`` are 4-D when their signal is)
FOURD_FORMATS = {".mib": "mib", ".xml": "empad", ".h5": "py4dstem"}

#: bytes of peak memory per detector pixel of the dataset in the CoM step (py4DSTEM's float32
#: copy of the intensities and its weighted copies in the vectorised CoM)
BYTES_PER_VOXEL = 16

_RECIPROCAL_TO_INV_A = {"1/å": 1.0, "1/a": 1.0, "å^-1": 1.0, "a^-1": 1.0, "1 / å": 1.0, "1 / a": 1.0, "å⁻¹": 1.0,
                        "1/nm": 0.1, "nm^-1": 0.1, "1 / nm": 0.1, "nm⁻¹": 0.1}


@dataclass
class FourDHeader:
    """What a 4-D file says before its pixels are read.

    Attributes
    ----------
    shape : tuple of int
        (scan_y, scan_x, det_y, det_x).
    dtype : numpy.dtype
        Stored type of the patterns.
    step_A : float or None
        Scan step [Å] from the file (None: not calibrated).
    detector_sampling : float or None
        Reciprocal size of a detector pixel [1/Å] from the file (None: not calibrated).
    read : callable
        Returns the 4-D array (numpy) when called.
    metadata : dict
        Format, title, beam energy [eV] and convergence angle [mrad] where the file has them.
    """

    shape: tuple[int, int, int, int]
    dtype: np.dtype
    step_A: float | None
    detector_sampling: float | None
    read: Callable[[], Any]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class CenterOfMass:
    """Centre of mass of a 4-D dataset in the scan frame.

    Attributes
    ----------
    com : numpy.ndarray
        (2, H, W) CoM [1/Å] (or [detector px] when the detector is not calibrated), x then y
        components, relative to the fitted origin (the DPC components).
    origin_px : numpy.ndarray
        (2, H, W) fitted diffraction-pattern origin (x, y) [detector px] at each probe position.
    rotation_deg : float
        Angle turning a detector CoM into the scan frame [deg].
    transpose : bool
        Whether the detector axes are swapped relative to the scan axes.
    detector_sampling : float or None
        Reciprocal size of a detector pixel [1/Å] used (None: CoM in pixels).
    counts_per_pattern : float
        Mean summed intensity of a pattern (electrons for a counting detector).
    """

    com: np.ndarray
    origin_px: np.ndarray
    rotation_deg: float
    transpose: bool
    detector_sampling: float | None
    counts_per_pattern: float


def _scale_A(scale: Any, units: Any) -> float | None:
    return _scale_to_A(scale, units)


def _reciprocal(scale: Any, units: Any) -> float | None:
    if scale is None or units is None:
        return None
    factor = _RECIPROCAL_TO_INV_A.get(str(units).strip().lower())
    if factor is None:
        return None
    value = float(scale) * factor
    return value if np.isfinite(value) and value > 0 else None


def _rsciio_fourd(p: Path, kind: str) -> FourDHeader:
    """Header of a 4-D HSPY/ZSPY/MIB/EMPAD file read lazily through RosettaSciIO."""

    if kind == "hspy":
        # lazy: RosettaSciIO reader (20-200 ms to import), only for that file format
        from rsciio.hspy import file_reader
    elif kind == "zspy":
        # lazy: RosettaSciIO reader (20-200 ms to import), only for that file format
        from rsciio.zspy import file_reader
    elif kind == "mib":
        # lazy: RosettaSciIO reader (20-200 ms to import), only for that file format
        from rsciio.quantumdetector import file_reader
    else:
        # lazy: RosettaSciIO reader (20-200 ms to import), only for that file format
        from rsciio.empad import file_reader
    try:
        signals = file_reader(str(p), lazy=True)
    except Exception as exc:
        raise InputError(f"could not read {p.name} as {kind.upper()}: {_short(exc)}; check the file") from None
    cubes = [s for s in signals if np.ndim(s["data"]) == 4]
    if not cubes:
        shapes = [tuple(np.shape(s["data"])) for s in signals]
        raise InputError(f"{p.name} holds no 4-D dataset (shapes {shapes}); a 4D-STEM file has a diffraction pattern "
                         "per probe position (scan_y, scan_x, det_y, det_x)")
    sig = cubes[0]
    data = sig["data"]
    axes = sig.get("axes", [])
    nav = [a for a in axes if a.get("navigate", False)]
    det = [a for a in axes if not a.get("navigate", False)]
    steps = [_scale_A(a.get("scale"), a.get("units")) for a in nav]
    known = [s for s in steps if s is not None]
    step = float(np.mean(known)) if steps and len(known) == len(steps) else None
    recs = [_reciprocal(a.get("scale"), a.get("units")) for a in det]
    known_r = [r for r in recs if r is not None]
    rec = float(np.mean(known_r)) if recs and len(known_r) == len(recs) else None
    md = sig.get("metadata", {})
    tem = md.get("Acquisition_instrument", {}).get("TEM", {})
    meta: dict[str, Any] = {"format": kind}
    if md.get("General", {}).get("title"):
        meta["title"] = str(md["General"]["title"])
    if tem.get("beam_energy") is not None:
        meta["energy_eV"] = float(tem["beam_energy"]) * 1e3  # HyperSpy: keV
    if tem.get("convergence_angle") is not None:
        meta["semiangle_mrad"] = float(tem["convergence_angle"])
    shape = tuple(int(n) for n in data.shape)
    if kind == "mib":
        _check_mib_frames(p, shape)
    return FourDHeader(shape, np.dtype(data.dtype), step, rec, lambda: np.asarray(data), meta)  # type: ignore[arg-type]


def _check_mib_frames(p: Path, shape: tuple[int, ...]) -> None:
    """Refuse a Merlin file with fewer frames than its ``.hdr`` declares (RosettaSciIO reads what is there)."""

    hdr = p.with_suffix(".hdr")
    if not hdr.is_file():
        return
    m = re.search(r"Frames in Acquisition \(Number\):\s*(\d+)", hdr.read_text(errors="replace"))
    if m and int(m.group(1)) != shape[0] * shape[1]:
        raise InputError(f"{p.name} holds {shape[0] * shape[1]} frames, its {hdr.name} declares {m.group(1)}: the file "
                         "is truncated (or the .hdr belongs to another scan); copy it again")


def _find_py4dstem_cube(p: Path) -> tuple[str, tuple[int, ...], np.dtype, dict[str, Any]]:
    """Path, shape, type and calibration of the first 4-D dataset of a py4DSTEM (EMD 1.0) HDF5 file."""
    # lazy: h5py (~16 ms to import), only for an HDF5 file
    import h5py  # type: ignore[import-untyped]

    found: list[tuple[str, tuple[int, ...], np.dtype]] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.ndim == 4 and not found:
            found.append((name, tuple(int(n) for n in obj.shape), np.dtype(obj.dtype)))

    calib: dict[str, Any] = {}
    with h5py.File(p, "r") as f:
        f.visititems(visit)
        if found:  # py4DSTEM keeps the calibration in <root>/metadatabundle/calibration
            group = f[found[0][0]].parent
            while True:
                for sub in ("metadatabundle/calibration", "calibration"):
                    if sub in group and isinstance(group[sub], h5py.Group) and not calib:
                        for key, ds in group[sub].items():
                            if isinstance(ds, h5py.Dataset) and ds.shape == ():
                                v = ds[()]
                                calib[key] = v.decode() if isinstance(v, bytes) else v
                if group.name == "/" or calib:
                    break
                group = group.parent
    if not found:
        raise InputError(f"{p.name} holds no 4-D dataset; a py4DSTEM file with a DataCube is needed")
    return found[0][0], found[0][1], found[0][2], calib


def _py4dstem_fourd(p: Path) -> FourDHeader:
    """Header of a py4DSTEM HDF5 file (h5py), pixels through :func:`py4DSTEM.read`."""

    try:
        name, shape, dtype, calib = _find_py4dstem_cube(p)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"could not read {p.name} as HDF5: {_short(exc)}; check the file") from None
    r_units = str(calib.get("R_pixel_units", "pixels"))
    step = _scale_A(calib.get("R_pixel_size"), "Å" if r_units == "A" else r_units)
    q_units = str(calib.get("Q_pixel_units", "pixels"))
    rec = _reciprocal(calib.get("Q_pixel_size"), "1/Å" if q_units == "A^-1" else q_units)

    def read() -> Any:
        # lazy: py4DSTEM (~3.5 s to import), only for a 4D-STEM file
        import py4DSTEM

        dc = py4DSTEM.read(str(p), datapath=name.rsplit("/", 1)[0], verbose=False)
        return np.asarray(dc.data)

    return FourDHeader(shape, dtype, step, rec, read, {"format": "py4dstem", "title": name})  # type: ignore[arg-type]


def read_fourd_header(path: str | Path) -> FourDHeader:
    """The shape, type and calibrations of a 4-D dataset, without reading its pixels.

    Raises
    ------
    InputError
        Missing or damaged file, no 4-D dataset, an unsupported suffix.
    """

    p = resolve_path(path)
    if not p.exists():
        raise InputError(f"4D-STEM file not found: {p}; check source.path")
    suffix = p.suffix.lower()
    kind = {".hspy": "hspy", ".hdf5": "hspy", ".zspy": "zspy", **FOURD_FORMATS}.get(suffix)
    if kind is None:
        raise InputError(f"unsupported 4D-STEM format '{suffix}'; use .hspy/.hdf5, .zspy, .mib, EMPAD .xml or py4DSTEM .h5")
    with _quiet():
        return _py4dstem_fourd(p) if kind == "py4dstem" else _rsciio_fourd(p, kind)


def check_fourd_size(header: FourDHeader, name: str) -> None:
    """Refuse, from the header, a dataset whose centre-of-mass step would not fit in the memory available."""

    n = math.prod(header.shape)
    need = n * (BYTES_PER_VOXEL + header.dtype.itemsize)
    avail = available_memory_bytes()
    if avail is not None and need > avail:
        h, w, dy, dx = header.shape
        raise InputError(f"{name} ({w}x{h} probe positions, {dx}x{dy} detector px) needs about {need / 2**30:.1f} GiB "
                         f"for the centre of mass, {avail / 2**30:.1f} GiB are available; bin the detector (e.g. 2x2) "
                         "or crop the scan first")


def _skew(a: np.ndarray) -> float:
    a = a - a.mean()
    sd = a.std()
    return float(np.mean(a**3) / sd**3) if sd > 0 else 0.0


def _band_passed(image: np.ndarray, step_A: float) -> np.ndarray:
    """The image minus its Gaussian blur of σ 2 Å (columns stand out, the particle's plateau does not)."""

    return image - ndimage.gaussian_filter(image, 2.0 / step_A)


def center_of_mass(data: np.ndarray, *, step_A: float | None = None, detector_sampling: float | None = None,
                   fit_function: str = "plane", rotation_deg: float | None = None,
                   transpose: bool | None = None, rotation_smooth_px: float = 1.0) -> CenterOfMass:
    """Centre of mass per probe position, with the pattern origin and scan-to-detector rotation from the data.

    Parameters
    ----------
    data : numpy.ndarray
        (scan_y, scan_x, det_y, det_x) intensities or counts.
    step_A : float, optional
        Scan step [Å] (only recorded with the datacube's calibration; CoM is per position).
    detector_sampling : float, optional
        Reciprocal size of a detector pixel [1/Å]; None: the CoM stays in detector pixels.
    fit_function : str
        py4DSTEM's fit of the origin over the scan: ``plane`` (a linear descan), ``parabola`` or
        ``bezier_two``.
    rotation_deg, transpose : optional
        Force the rotation [deg] (our convention, see :class:`CenterOfMass`) or the transpose
        instead of finding them.
    rotation_smooth_px : float
        Gaussian σ [scan px] applied to the measured CoM for the rotation search only (the curl
        of a low-dose CoM field is mostly shot noise: on the simulated particle at 16 e per pattern
        σ = 1 px halved the rotation error of two seeds, 1.55° → 0.85° and 0.25°); 0: none.

    Returns
    -------
    CenterOfMass
    """

    # lazy: py4DSTEM (~3.5 s to import), only for a 4D-STEM file
    import py4DSTEM
    from py4DSTEM.process.phase import DPC

    if data.ndim != 4:
        raise InputError(f"a 4-D dataset (scan_y, scan_x, det_y, det_x) is needed, got shape {data.shape}")
    h, w = data.shape[:2]
    if min(h, w) < 4:
        raise InputError(f"the scan is {w}x{h} probe positions; the rotation search needs at least 4x4")
    totals = data.sum(axis=(-2, -1), dtype=np.float64)
    if not np.all(totals > 0):
        raise InputError(f"{int(np.sum(totals <= 0))} of {h * w} diffraction patterns hold no intensity; "
                         "crop the scan to positions with a beam, or check the detector")
    cube = py4DSTEM.DataCube(data=data)
    if step_A is not None:
        cube.calibration.set_R_pixel_size(float(step_A))
        cube.calibration.set_R_pixel_units("A")
    if detector_sampling is not None:
        cube.calibration.set_Q_pixel_size(float(detector_sampling))
        cube.calibration.set_Q_pixel_units("A^-1")
    forced = None if rotation_deg is None else -float(rotation_deg)  # py4DSTEM turns in (row, col) = (y, x)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        dpc = DPC(datacube=cube, energy=300e3, verbose=False)
        dpc.preprocess(fit_function=fit_function, force_com_rotation=forced, force_com_transpose=transpose,
                       plot_rotation=False, plot_center_of_mass=False, vectorized_com_calculation=True,
                       rotation_angles_deg=np.arange(-89.0, 90.5, 1.0))
        measured = (np.asarray(dpc._com_measured_x), np.asarray(dpc._com_measured_y))
        fitted = (np.asarray(dpc._com_fitted_x), np.asarray(dpc._com_fitted_y))
        if forced is None:  # refine around the best whole degree, on the CoM already measured
            search = measured
            if rotation_smooth_px > 0:  # the search on the smoothed DPC components (measured - origin)
                search = tuple(f + ndimage.gaussian_filter(c - f, rotation_smooth_px) for c, f in zip(measured, fitted))
            coarse = _dpc_on(cube, search, fitted, None, None, np.arange(-89.0, 90.5, 1.0))
            best = float(np.rad2deg(coarse._rotation_best_rad))
            tr0 = bool(coarse._rotation_best_transpose)
            fine = _dpc_on(cube, search, fitted, None, tr0, np.arange(best - 1.5, best + 1.5001, 0.05))
            dpc = _dpc_on(cube, measured, fitted, float(np.rad2deg(fine._rotation_best_rad)), tr0, None)
    rot_p4d = float(np.rad2deg(dpc._rotation_best_rad))
    tr = bool(dpc._rotation_best_transpose)
    # py4DSTEM's (Rx, Ry) are (scan_y, scan_x): com_x is our y component, com_y our x component
    com = np.stack([np.asarray(dpc._com_y, np.float64), np.asarray(dpc._com_x, np.float64)])
    origin = np.stack([fitted[1], fitted[0]])  # (x, y) = (det column, det row)
    rot = -rot_p4d
    if rotation_deg is None:  # curl is blind to 180°: the columns must come out bright in the iCoM
        icom = integrate_gradient(com[0], com[1], float(step_A or 1.0), boundary="mirror")
        if _skew(_band_passed(icom, float(step_A or 1.0))) < 0:
            com, rot = -com, rot + 180.0
    rot = (rot + 180.0) % 360.0 - 180.0
    return CenterOfMass(com=com, origin_px=origin, rotation_deg=rot, transpose=tr,
                        detector_sampling=detector_sampling, counts_per_pattern=float(totals.mean()))


def _dpc_on(cube: Any, measured: tuple, fitted: tuple, rotation_p4d_deg: float | None, transpose: bool | None,
            angles: np.ndarray | None) -> Any:
    """py4DSTEM's DPC preprocessing on a CoM already measured: the rotation search over ``angles``
    [deg, py4DSTEM's convention] or the rotation given, and the rotated DPC components."""
    # lazy: py4DSTEM (~3.5 s to import), only for a 4D-STEM file
    from py4DSTEM.process.phase import DPC

    dpc = DPC(datacube=None, energy=300e3, verbose=False)
    dpc._datacube = cube
    dpc.preprocess(force_com_measured=measured, force_com_shifts=fitted, force_com_rotation=rotation_p4d_deg,
                   force_com_transpose=transpose, rotation_angles_deg=angles, plot_rotation=False,
                   plot_center_of_mass=False)
    return dpc


def detector_sampling_from_disc(data_mean: np.ndarray, *, energy_eV: float, semiangle_mrad: float) -> float:
    """Reciprocal size of a detector pixel [1/Å] from the bright-field disc of the mean pattern
    (py4DSTEM's ``get_probe_size``: its radius in pixels) and the probe's semi-angle: k_α / r."""
    # lazy: py4DSTEM (~3.5 s to import), only for a 4D-STEM file
    from py4DSTEM.process.calibration import get_probe_size

    r, _, _ = get_probe_size(np.asarray(data_mean, float))
    if not np.isfinite(r) or r <= 0:
        raise InputError("no bright-field disc found in the mean diffraction pattern; give the detector calibration "
                         "in the file (reciprocal Å per pixel)")
    return bright_field_radius(energy_eV, semiangle_mrad) / float(r)


def read_fourd(path: str | Path, *, step_A: float | None = None, detector_sampling: float | None = None,
               dose_e_per_A2: float | None = None, energy_eV: float | None = None,
               semiangle_mrad: float | None = None, boundary: str = "mirror",
               rotation_smooth_px: float = 1.0) -> tuple[Image, CenterOfMass]:
    """Read a 4D-STEM file and form its iCoM image (with the DPC components) for analysis.

    The header is read first and the dataset refused from it when the centre-of-mass step would
    not fit in memory (:func:`check_fourd_size`); then the patterns are read, their centre of mass
    found with py4DSTEM (:func:`center_of_mass`) and integrated (FFT, ``boundary``) into the iCoM image.

    Parameters
    ----------
    path : str or Path
        ``.hspy``/``.zspy`` (4-D signal), Merlin ``.mib``, EMPAD ``.xml`` or py4DSTEM ``.h5``.
    step_A : float, optional
        Scan step [Å]; overrides the file's scan calibration (required when it has none).
    detector_sampling : float, optional
        Reciprocal size of a detector pixel [1/Å]; overrides the file's; when neither is known it is
        found from the bright-field disc with ``energy_eV`` and ``semiangle_mrad`` (else the CoM
        stays in detector pixels, which scales the image but changes no position).
    dose_e_per_A2 : float, optional
        Dose [e/Å²]; None: from the counts (mean electrons per pattern / step²) for integer data.
    energy_eV, semiangle_mrad : float, optional
        Beam energy [eV] and convergence semi-angle [mrad] (the file's where it has them).
    boundary : str
        Integration boundary of the CoM field: ``mirror`` (a crop) or ``periodic``.
    rotation_smooth_px : float
        Smoothing [scan px] of the CoM for the rotation search only (:func:`center_of_mass`).

    Returns
    -------
    (Image, CenterOfMass)
        The iCoM image (``signal="icom"``, [rad/2π] when calibrated, pixel size = scan step) and the
        centre-of-mass result (the DPC components in ``CenterOfMass.com``).
    """

    p = resolve_path(path)
    header = read_fourd_header(p)
    check_fourd_size(header, p.name)
    if header.dtype.kind not in "biuf":
        raise InputError(f"{p.name} holds {header.dtype} values; diffraction patterns of counts or intensities are needed")
    step = step_A if step_A is not None else header.step_A
    if step is None:
        raise InputError(f"{p.name} carries no scan-step calibration; give it with source.pixel_size_A=<Å per probe step>")
    step = check_pixel_size(step, what=f"the scan step of {p.name} (source.pixel_size_A)")
    with _quiet():
        try:
            data = np.asarray(header.read())
        except MemoryError:
            raise InputError(f"not enough memory to read {p.name}; bin the detector or crop the scan first") from None
        except Exception as exc:
            raise InputError(f"could not read the patterns of {p.name} ({_short(exc)}); the file is truncated or "
                             "damaged") from None
        if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
            raise InputError(f"{p.name} has NaN/Inf detector pixels; replace them (e.g. numpy.nan_to_num) and save again")
        energy = energy_eV or header.metadata.get("energy_eV")
        alpha = semiangle_mrad or header.metadata.get("semiangle_mrad")
        dk = detector_sampling if detector_sampling is not None else header.detector_sampling
        if dk is None and energy and alpha:
            dk = detector_sampling_from_disc(data.mean(axis=(0, 1)), energy_eV=float(energy), semiangle_mrad=float(alpha))
        com = center_of_mass(data, step_A=step, detector_sampling=dk, rotation_smooth_px=rotation_smooth_px)
        icom = integrate_gradient(com.com[0], com.com[1], step, boundary=boundary).astype(np.float32)
    dose = dose_e_per_A2
    if dose is None and data.dtype.kind in "iu":
        dose = com.counts_per_pattern / step**2
    meta = {"path": str(p), "format": header.metadata.get("format"), "pixel_size_from": "override" if step_A else "file",
            "fourd_shape": list(header.shape), "rotation_deg": com.rotation_deg, "transpose": com.transpose,
            "detector_sampling_inv_A": dk, "counts_per_pattern": com.counts_per_pattern}
    if header.metadata.get("title"):
        meta["title"] = header.metadata["title"]
    return Image(data=icom, pixel_size_A=step, signal="icom", dose_e_per_A2=dose, source=str(p), metadata=meta), com


def is_fourd_file(path: str | Path) -> bool:
    """Whether ``path`` is a 4D-STEM file: a Merlin/EMPAD/py4DSTEM suffix, or an HSPY/ZSPY file whose
    signal is 4-D (its header only; a damaged or missing file is left to the image reader's messages)."""

    p = resolve_path(path)
    suffix = p.suffix.lower()
    if suffix in FOURD_FORMATS:
        return True
    kind = {".hspy": "hspy", ".hdf5": "hspy", ".zspy": "zspy"}.get(suffix)
    if kind is None or not p.exists():
        return False
    try:
        with _quiet():
            return any(np.ndim(s["data"]) == 4 for s in _read_rsciio(p, kind))
    except InputError:
        return False


def read_fourd_image(path: str | Path, *, pixel_size_A: float | None = None, frame: int | None = None) -> Image:
    """The iCoM image of a 4D-STEM file for a run (``source.path``): :func:`read_fourd` with the scan step
    ``pixel_size_A`` [Å] (overrides the file's), then the image's own memory check.

    Raises
    ------
    InputError
        ``frame`` given (a scan is one image), or any refusal of :func:`read_fourd`.
    """

    p = resolve_path(path)
    if check_index(frame, "source.frame") is not None:
        raise InputError(f"source.frame={frame} given but {p.name} is a 4D-STEM scan (one image); drop source.frame")
    if pixel_size_A is not None:
        pixel_size_A = check_pixel_size(pixel_size_A)
    image, _ = read_fourd(p, step_A=pixel_size_A)
    check_image_size(image.data.shape, image.pixel_size_A, p.name)
    return image
