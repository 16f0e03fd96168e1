"""Reading microscope images with their calibration, and ground-truth tables.

Formats: TIFF (including ImageJ TIFFs calibrated in nm/µm/Å), DM3/DM4, Velox EMD and HyperSpy's
own HSPY/ZSPY through RosettaSciIO (with the pixel-size calibration stored in the file), NPY and
PNG (no calibration: give ``pixel_size_A``). A ``pixel_size_A`` argument always overrides the
file's calibration. 4D-STEM scans (HSPY/ZSPY with a 4-D signal, Merlin MIB, EMPAD XML, py4DSTEM H5)
are refused here with a pointer: :func:`octascope.input.sources.load_file` hands them to
:mod:`octascope.input.fourd`, which returns their iCoM image.

Cheap guards run before anything large is allocated: the pixel size must be a number within
:data:`PIXEL_SIZE_RANGE_A`, and the image's estimated peak memory (:func:`estimate_peak_bytes`)
must fit in the memory available.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
import hashlib
import logging
import struct
import warnings

import numpy as np
import pandas as pd

from octascope.core.errors import InputError
from octascope.core.model import Image, Truth, validate_columns

#: file suffix -> reader name
FORMATS = {
    ".tif": "tiff", ".tiff": "tiff",
    ".dm3": "dm", ".dm4": "dm",
    ".emd": "emd",
    ".hspy": "hspy", ".hdf5": "hspy", ".zspy": "zspy",  # .hdf5: HyperSpy's default extension before 1.2
    ".npy": "npy",
    ".png": "png",
    # 4D-STEM only (octascope.input.fourd); HSPY/ZSPY files holding a 4-D signal go there too
    ".mib": "mib", ".xml": "empad", ".h5": "py4dstem",
}

#: pixel sizes [Å] accepted: atomic-resolution STEM of perovskites lies well inside
PIXEL_SIZE_RANGE_A = (0.01, 5.0)
#: bytes of peak memory per image pixel for one analysis (measured, see docs/outputs.md, "Memory")
BYTES_PER_PIXEL = 160
#: largest image accepted, in pixels (a 16384 x 16384 frame)
MAX_PIXELS = 16384 * 16384

_LENGTH_TO_A = {
    "a": 1.0, "å": 1.0, "Å": 1.0, "angstrom": 1.0, "ang": 1.0,
    "nm": 10.0, "pm": 0.01, "um": 1e4, "µm": 1e4, "μm": 1e4, "micron": 1e4, "microns": 1e4, "\\u00b5m": 1e4,
    "mm": 1e7, "m": 1e10,
}

#: time units of a stack's navigation axis -> seconds
_TIME_TO_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6,
              "ns": 1e-9, "min": 60.0, "minute": 60.0, "minutes": 60.0}

PACKAGE_PREFIX = "octascope://"


def resolve_path(path: str | Path) -> Path:
    """Resolve ``octascope://...`` to a file inside the installed package; expand ``~``."""
    text = str(path)
    if text.startswith(PACKAGE_PREFIX):
        return Path(__file__).resolve().parents[1] / text[len(PACKAGE_PREFIX):]
    return Path(text).expanduser()


def _scale_to_A(scale: Any, units: Any) -> float | None:
    if units is None or scale is None:
        return None
    factor = _LENGTH_TO_A.get(str(units).strip().lower()) or _LENGTH_TO_A.get(str(units).strip())
    if factor is None:
        return None
    value = float(scale) * factor
    return value if np.isfinite(value) and value > 0 else None


def _pick_signal(signals: list[dict], signal_index: int | None, signal: str | None, path: Path) -> dict:
    images = [s for s in signals if np.ndim(s["data"]) >= 2]  # np.ndim: no read of a lazy array
    if not images:
        raise InputError(f"{path.name} holds no image data; give a file with a 2-D image")
    if signal_index is not None:
        if not 0 <= signal_index < len(images):
            raise InputError(f"{path.name} holds {len(images)} images; choose source.signal_index in 0..{len(images) - 1}")
        return images[signal_index]
    if signal is not None:
        titles = [str(s.get("metadata", {}).get("General", {}).get("title", "")) for s in images]
        # an exact title first: 'DF' must not pick 'HAADF', nor 'BF' pick 'ABF'
        hits = [s for s, t in zip(images, titles) if signal.lower() == t.lower()]
        hits = hits or [s for s, t in zip(images, titles) if signal.lower() in t.lower()]
        if not hits:
            raise InputError(f"no image titled like '{signal}' in {path.name}; titles are {titles}")
        return hits[0]
    if len(images) > 1:
        titles = [str(s.get("metadata", {}).get("General", {}).get("title", "")) for s in images]
        # Velox files hold HAADF, DF and DPC segments beside iDPC: prefer iDPC, say so otherwise
        for s, t in zip(images, titles):
            if "idpc" in t.lower():
                return s
        raise InputError(
            f"{path.name} holds {len(images)} images {titles}; choose one with source.signal=<title> or source.signal_index=N"
        )
    return images[0]


def check_pixel_size(value: Any, *, what: str = "source.pixel_size_A") -> float:
    """A pixel size [Å] as a float, or an :class:`InputError` when it is not a number or absurd."""
    if isinstance(value, bool):
        value = str(value)
    try:
        ps = float(value)
    except (TypeError, ValueError):
        raise InputError(f"pixel size {value!r} is not a number; give {what}=<Å per pixel> (e.g. 0.168)") from None
    lo, hi = PIXEL_SIZE_RANGE_A
    if not np.isfinite(ps) or ps <= 0:
        raise InputError(f"pixel size {value} Å is not positive; give {what} > 0 (e.g. 0.168)")
    if not lo <= ps <= hi:
        raise InputError(
            f"pixel size {ps:g} Å is outside {lo:g}-{hi:g} Å per pixel (atomic-resolution images); "
            f"check the unit of {what} (Å, not nm or pm)"
        )
    return ps


def estimate_peak_bytes(shape: tuple[int, ...], pixel_size_A: float) -> int:
    """Rough peak memory [bytes] of one analysis of an image of ``shape`` at ``pixel_size_A``:
    the pixel arrays of the stages (:data:`BYTES_PER_PIXEL` per pixel) plus the locator's fitting
    patches (4 columns per 6.3 Å cell in [001], a 2 x 1.6 Å patch each, 16 float32 work arrays)."""
    n_px = int(np.prod(shape[-2:]))
    area_A2 = n_px * pixel_size_A ** 2
    n_columns = 4.0 * area_A2 / 6.3 ** 2
    patch_px = (2 * 1.6 / pixel_size_A + 1) ** 2
    return int(n_px * BYTES_PER_PIXEL + n_columns * patch_px * 4 * 16)


def available_memory_bytes() -> int | None:
    """Memory available to a new allocation (``MemAvailable``), or None where unknown."""
    try:
        # lazy: psutil (~5 ms to import), not loaded at start-up
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return None


def check_image_size(shape: tuple[int, ...], pixel_size_A: float | None, name: str = "the image") -> None:
    """Refuse an image whose analysis would need more memory than is available (before allocating it).

    With ``pixel_size_A`` None (not known before the pixels are read, or absurd) the least memory
    an analysis at any accepted pixel size needs is used: a refusal then holds whatever the
    pixel size turns out to be.
    """
    n_px = int(np.prod(shape[-2:]))
    if n_px > MAX_PIXELS:
        raise InputError(f"{name} has {n_px} pixels ({shape[-1]}x{shape[-2]}), more than {MAX_PIXELS}; "
                         "crop or bin it (e.g. 2x2) first")
    lo = PIXEL_SIZE_RANGE_A[0]
    need = estimate_peak_bytes(shape, pixel_size_A if pixel_size_A is not None else lo)
    avail = available_memory_bytes()
    if avail is None or need <= avail:
        return
    if pixel_size_A is None:
        raise InputError(f"{name} ({shape[-1]}x{shape[-2]} px) needs at least {need / 2**30:.1f} GiB to analyse at any "
                         f"pixel size, {avail / 2**30:.1f} GiB are available; crop or bin the image first")
    raise InputError(
        f"{name} ({shape[-1]}x{shape[-2]} px at {pixel_size_A:g} Å/px) needs about {need / 2**30:.1f} GiB, "
        f"{avail / 2**30:.1f} GiB are available; crop or bin the image, or check source.pixel_size_A"
    )


def _short(exc: BaseException) -> str:
    """An exception as one short line: ``Class: message``."""
    text = " ".join(str(exc).split())[:200]
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


#: libraries whose log lines and warnings about a damaged file would appear beside the one-line error
_NOISY_LOGGERS = ("tifffile", "rsciio", "hyperspy", "PIL", "imageio", "h5py", "zarr", "numcodecs", "dask")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the readers' warnings, numpy's floating-point warnings and the libraries' log lines:
    what matters about a file is raised as an :class:`InputError`, in one line."""

    loggers = [logging.getLogger(n) for n in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@dataclass
class _Header:
    """What an image file says before its pixels are decoded.

    ``read(frame)`` decodes the image (one frame of a stack, or all of a 2-D image); ``shape``
    is the stored shape with colour channels removed; ``nbytes`` what decoding allocates.
    """

    read: Callable[[int | None], Any]
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes_per_frame: int
    calib: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: time between frames of a stack from the file's navigation axis [s], when it has one in time units
    frame_time_s: float | None = None
    #: the scale and unit the file gives its image axes when they are not a length (to name them in a refusal)
    raw_scale: tuple[float, str] | None = None


def check_index(value: Any, key: str) -> int | None:
    """A frame or signal index as an int (None stays None); anything else is a one-line InputError."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise InputError(f"{key}={value!r} is not a whole number; give {key}=N with N = 0, 1, ... (or -1 for the last)")


def _locate(path: str | Path) -> tuple[Path, str]:
    """The file to read and its reader name, or an InputError (missing, a folder, not a regular file,
    an unknown suffix)."""
    p = resolve_path(path)
    if not p.exists():
        raise InputError(f"image file not found: {p}; check source.path")
    kind = FORMATS.get(p.suffix.lower())
    if p.is_dir() and kind != "zspy":  # a zspy file is a zarr directory
        raise InputError(f"{p} is a directory; give source.path to an image file")
    if not p.is_dir() and not p.is_file():
        raise InputError(f"{p} is not a regular file (a pipe, a device or a socket); give source.path to an image file")
    if kind is None:
        raise InputError(
            f"unsupported image format '{p.suffix or p.name}'; use one of {', '.join(sorted(set(FORMATS)))} "
            "(or convert the file, e.g. to TIFF)"
        )
    if p.is_file() and p.stat().st_size == 0:
        raise InputError(f"{p.name} is empty (0 bytes); check the file (was it copied completely?)")
    return p, kind


def _npy_header(p: Path) -> _Header:
    """The array's shape and type from an NPY header; the pixels are memory-mapped, not read."""
    fmt = np.lib.format
    try:
        with open(p, "rb") as fh:
            start = fh.read(4)
            fh.seek(0)
            version = fmt.read_magic(fh)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(fh)
            offset = fh.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        if start.startswith(b"PK"):
            raise InputError(f"{p.name} is a zip archive (an .npz file named .npy?); save one array with numpy.save "
                             "and give that file") from None
        raise InputError(f"could not read {p.name} as NPY ({_short(exc)}); save a plain numeric array with numpy.save") from None
    if dtype.hasobject:
        raise InputError(f"{p.name} holds Python objects (a pickled array), which octascope never loads; save a numeric "
                         "array with numpy.save")
    if dtype.names is not None or dtype.kind not in "biufc":
        raise InputError(f"{p.name} holds {dtype} values (text, records or raw bytes), not pixel values; save a numeric "
                         "array with numpy.save")
    n = math.prod(shape)
    if n == 0:
        raise InputError(f"{p.name} holds an empty array (shape {shape}); check the file")
    if p.stat().st_size < offset + n * dtype.itemsize:
        raise InputError(f"{p.name} is truncated: its header declares {shape} {dtype} values ({n * dtype.itemsize} bytes), "
                         f"the file holds {p.stat().st_size - offset}; save or copy it again")

    def read(frame: int | None) -> Any:
        data = np.memmap(p, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)
        return np.array(data if frame is None else data[frame])

    per_frame = math.prod(shape[-2:]) * dtype.itemsize if len(shape) >= 2 else n * dtype.itemsize
    return _Header(read, tuple(shape), dtype, per_frame)


#: PNG colour type -> samples per pixel
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def _png_header(p: Path) -> _Header:
    """Width, height and sample size from a PNG's IHDR chunk (the first 33 bytes), before decoding."""

    with open(p, "rb") as fh:
        head = fh.read(33)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise InputError(f"{p.name} is not a PNG file (it lacks the PNG signature); check the file, or give it the suffix "
                         "of its real format")
    width, height = struct.unpack(">II", head[16:24]) if len(head) >= 26 else (0, 0)
    if head[12:16] != b"IHDR" or width == 0 or height == 0 or head[25] not in _PNG_CHANNELS:
        raise InputError(f"{p.name} has a damaged PNG header (IHDR); check the file or export it again")
    sample = 2 if head[24] == 16 else 1

    def read(_frame: int | None) -> Any:
        # lazy: imageio (~7 ms to import), only for a PNG file
        import imageio.v3 as iio

        data = np.asarray(iio.imread(p))
        if data.ndim == 3 and data.shape[-1] in (3, 4):
            data = data[..., :3].astype(np.float32).mean(axis=-1)
        elif data.ndim == 3 and data.shape[-1] == 2:  # grey + alpha
            data = data[..., 0]
        return data

    dtype = np.dtype(np.uint16 if sample == 2 else np.uint8)
    per_frame = width * height * max(4 * _PNG_CHANNELS[head[25]], sample)  # RGB is averaged in float32
    return _Header(read, (height, width), dtype, per_frame)


def _tiff_precheck(p: Path) -> str | None:
    """Refuse a TIFF whose first page declares too many pixels (a tile or decompression bomb) from
    its header; return the ImageJ length unit (``unit=nm``) if the file has one."""
    # lazy: tifffile (~8 ms to import), only for a TIFF file
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            page = tif.pages.first
            shape = (int(page.imagelength), int(page.imagewidth))
            meta = tif.imagej_metadata or {}
    except Exception as exc:
        raise InputError(f"could not read {p.name} as TIFF ({_short(exc)}); the file is damaged or not a TIFF: "
                         "check it or export it again") from None
    n_px = shape[0] * shape[1]
    if n_px > MAX_PIXELS:  # before RosettaSciIO maps the tiles: the calibration comes with it, the size cannot wait
        raise InputError(f"{p.name} has {n_px} pixels ({shape[1]}x{shape[0]}), more than {MAX_PIXELS}; "
                         "crop or bin it (e.g. 2x2) first")
    unit = str(meta.get("unit", "")).strip()
    return None if unit.lower() in ("pixel", "pixels", "") else unit


def _rsciio_header(p: Path, kind: str, signal_index: int | None, signal: str | None) -> _Header:
    """Shape, type, calibration and title of the chosen image of a TIFF/DM/EMD/HSPY/ZSPY file, read
    lazily: the pixels stay in the file until ``read``."""
    imagej_unit = _tiff_precheck(p) if kind == "tiff" else None
    sig = _pick_signal(_read_rsciio(p, kind), signal_index, signal, p)
    data = sig["data"]  # lazy (dask): read once its size is known to fit
    axes = [a for a in sig.get("axes", []) if not a.get("navigate", False)]
    units = [a.get("units") for a in axes[-2:]]
    if kind == "tiff" and all(u is None for u in units):
        units = [imagej_unit] * len(units)  # ImageJ keeps the unit in its own metadata
    scales = [_scale_to_A(a.get("scale"), u) for a, u in zip(axes[-2:], units)]
    known = [s for s in scales if s is not None]
    calib = None
    if len(scales) == 2 and len(known) == 2:
        if abs(known[0] - known[1]) > 0.01 * max(known):
            raise InputError(
                f"{p.name} has non-square pixels ({known[1]:.4g} x {known[0]:.4g} Å); resample to square pixels first"
            )
        calib = float(np.mean(known))
    raw_scale = None
    if calib is None and axes[-2:]:
        a0 = axes[-1]
        try:
            value = float(a0.get("scale", 1.0))
        except (TypeError, ValueError):
            value = float("nan")
        unit = str(a0.get("units") if a0.get("units") not in (None, "") else "")
        if np.isfinite(value):
            raw_scale = (value, unit)
    nav = [a for a in sig.get("axes", []) if a.get("navigate", False)]
    frame_time_s = None
    if len(nav) == 1:
        factor = _TIME_TO_S.get(str(nav[0].get("units", "")).strip().lower())
        try:
            step = float(nav[0].get("scale", float("nan"))) * factor if factor else None
        except (TypeError, ValueError):
            step = None
        frame_time_s = step if step is not None and np.isfinite(step) and step > 0 else None
    metadata: dict[str, Any] = {}
    title = sig.get("metadata", {}).get("General", {}).get("title")
    if title:
        metadata["title"] = str(title)
    dtype = np.dtype(data.dtype)

    def read(frame: int | None) -> Any:
        return np.asarray(data if frame is None else data[frame])

    shape = tuple(int(n) for n in data.shape)
    return _Header(read, shape, dtype, math.prod(shape[-2:]) * dtype.itemsize, calib, metadata, frame_time_s, raw_scale)


def _read_rsciio(path: Path, kind: str) -> list[dict]:
    if kind == "tiff":
        # lazy: RosettaSciIO reader (20-200 ms to import), only for that file format
        from rsciio.tiff import file_reader
    elif kind == "dm":
        # lazy: RosettaSciIO reader (20-200 ms to import), only for that file format
        from rsciio.digitalmicrograph import file_reader
    elif kind == "hspy":
        # lazy: RosettaSciIO reader (20-200 ms to import), only for that file format
        from rsciio.hspy import file_reader
    elif kind == "zspy":
        # lazy: RosettaSciIO reader (20-200 ms to import), only for that file format
        from rsciio.zspy import file_reader
    else:
        # lazy: RosettaSciIO reader (20-200 ms to import), only for that file format
        from rsciio.emd import file_reader
    try:  # lazily: the shape and calibration without reading the pixels
        return file_reader(str(path), lazy=True)
    except Exception as exc:  # the readers raise many kinds of errors for damaged files
        if kind == "hspy" and _is_atom_lattice(path):
            raise InputError(f"{path.name} is an Atomap Atom_Lattice file (atom positions), not a HyperSpy image; load it "
                             "with atomap.io.load_atom_lattice_from_hdf5 and save its image (atom_lattice.signal.save("
                             "'image.hspy')) to analyse that") from None
        raise InputError(f"could not read {path.name} as {kind.upper()}: {_short(exc)}; check the file") from None


def _is_atom_lattice(path: Path) -> bool:
    """Whether an HDF5 file is Atomap's Atom_Lattice format (a group holding ``atom_positions``)."""
    try:
        # lazy: h5py (~16 ms to import), only for an HDF5 file
        import h5py  # type: ignore[import-untyped]

        with h5py.File(path, "r") as f:
            return any(isinstance(g, h5py.Group) and "atom_positions" in g for g in f.values())
    except Exception:
        return False


def _open_header(p: Path, kind: str, signal_index: int | None, signal: str | None) -> _Header:
    """The header of any supported file (:class:`_Header`), read without decoding the pixels."""
    if kind == "npy":
        return _npy_header(p)
    if kind == "png":
        return _png_header(p)
    return _rsciio_header(p, kind, signal_index, signal)


def _check_header(h: _Header, frame: int | None, pixel_size_A: float | None, p: Path) -> None:
    """What the header alone tells: complex values, a stack without a frame (or a frame without a
    stack), the dimensions, and whether the image can be analysed in the memory available."""
    if h.dtype.kind == "c":
        raise InputError(
            f"{p.name} holds complex values; save the real image (e.g. numpy.abs or .real for a phase image) and give that file"
        )
    ndim = len(h.shape)
    if ndim == 3 and frame is None:
        raise InputError(
            f"{p.name} is a stack of {h.shape[0]} frames (shape {h.shape}); pick one with "
            f"source.frame=N (0..{h.shape[0] - 1}), analyse every frame as a time series with source.frames=all, "
            "or sum the stack first"
        )
    if frame is not None and ndim == 2:
        raise InputError(f"source.frame={frame} given but {p.name} is a single 2-D image; drop source.frame")
    if ndim == 3 and frame is not None and not -h.shape[0] <= frame < h.shape[0]:
        raise InputError(f"frame {frame} out of range: {p.name} has {h.shape[0]} frames; give source.frame=0..{h.shape[0] - 1}")
    if ndim == 4:  # 4D-STEM: octascope.input.sources.load_file hands these to input.fourd
        raise InputError(f"{p.name} has 4 dimensions (shape {h.shape}): a 4D-STEM scan; give it as source.path (or "
                         "read it with octascope.input.fourd.read_fourd_image), which forms its iCoM image")
    if ndim not in (2, 3):
        raise InputError(f"{p.name} has {ndim} dimensions (shape {h.shape}); a 2-D image is needed")
    lo, hi = PIXEL_SIZE_RANGE_A
    ps = pixel_size_A if pixel_size_A is not None else (h.calib if h.calib and lo <= h.calib <= hi else None)
    check_image_size(h.shape, ps, p.name)
    avail = available_memory_bytes()
    if avail is not None and 2 * h.nbytes_per_frame > avail:
        raise InputError(f"{p.name} decodes to {h.nbytes_per_frame / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB are "
                         "available; crop or bin the image first")


def _decode(h: _Header, frame: int | None, p: Path) -> np.ndarray:
    """The pixels as a 2-D float32 array: decoding errors of a truncated or damaged file are InputErrors."""
    try:
        data = np.asarray(h.read(frame if len(h.shape) == 3 else None))
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"not enough memory to decode {p.name}; crop or bin the image first") from None
    except Exception as exc:
        raise InputError(f"could not decode {p.name} ({_short(exc)}); the file is truncated or damaged: check it or "
                         "export it again") from None
    if np.iscomplexobj(data):
        raise InputError(
            f"{p.name} holds complex values; save the real image (e.g. numpy.abs or .real for a phase image) and give that file"
        )
    if data.ndim != 2 or data.dtype.kind not in "biuf":
        raise InputError(f"{p.name} decodes to {data.dtype} values of shape {data.shape}; a 2-D image of numbers is needed")
    return data.astype(np.float32)


def _check_pixels(data: np.ndarray, p: Path) -> None:
    """Refuse NaN/Inf pixels (or values beyond float32) and a constant image."""
    finite = np.isfinite(data)
    if not finite.all():
        raise InputError(
            f"{p.name} has {int((~finite).sum())} NaN/Inf pixels (or values beyond float32); replace them (e.g. numpy.nan_to_num) and save again"
        )
    if float(data.max() - data.min()) <= 1e-12 * max(1.0, float(np.abs(data).max())):
        raise InputError(f"{p.name} is a constant image (every pixel = {float(data.flat[0]):g}); check that the right file/frame is given")


def _pixel_size(pixel_size_A: float | None, calib: float | None, p: Path, metadata: dict[str, Any],
                raw_scale: tuple[float, str] | None = None) -> float:
    """The pixel size: the override, else the file's calibration (checked), else an InputError that
    names the scale the file gives (without a length unit) and the override to use."""
    if pixel_size_A is not None:
        metadata["pixel_size_from"] = "override"
        return float(pixel_size_A)
    if calib is not None:
        metadata["pixel_size_from"] = "file"
        lo, hi = PIXEL_SIZE_RANGE_A
        if not lo <= calib <= hi:
            raise InputError(f"the calibration of {p.name} gives {calib:.4g} Å per pixel, outside {lo:g}-{hi:g} Å "
                             "(atomic-resolution images): is it an atomic-resolution image? If the calibration is "
                             "wrong, give source.pixel_size_A=<Å per pixel>")
        return check_pixel_size(calib, what=f"the calibration of {p.name} (override it with source.pixel_size_A)")
    if raw_scale is not None and raw_scale[0] == 1.0 and raw_scale[1] in ("", "<undefined>", "px", "pixel", "pixels"):
        raise InputError(f"{p.name} carries no pixel-size calibration (its axes have scale 1 and "
                         f"{'no unit' if raw_scale[1] in ('', '<undefined>') else 'unit ' + repr(raw_scale[1])}: pixels); "
                         "give it with source.pixel_size_A=<Å per pixel> (e.g. 0.168)")
    if raw_scale is not None:
        value, unit = raw_scale
        said = "no unit" if unit in ("", "<undefined>") else f"unit '{unit}', not a length"
        lo, hi = PIXEL_SIZE_RANGE_A
        guesses = [f"in {u}: source.pixel_size_A={value * f:.4g}" for u, f in (("Å", 1.0), ("nm", 10.0), ("µm", 1e4))
                   if lo <= value * f <= hi]
        example = f"({'; '.join(guesses)})" if guesses else "(e.g. source.pixel_size_A=0.168)"
        raise InputError(f"{p.name} gives its pixels a scale of {value:.4g} with {said}; give the pixel size with "
                         f"source.pixel_size_A=<Å per pixel> {example}")
    raise InputError(
        f"{p.name} carries no pixel-size calibration; give it with source.pixel_size_A=<Å per pixel> (e.g. 0.168)"
    )


def _signal_type(title: str | None, signal_type: str) -> str:
    if signal_type != "unknown" or not title:
        return signal_type
    for key in ("idpc", "haadf", "abf", "icom", "dpc"):
        if key in title.lower():
            return key
    return signal_type


def read_image(
    path: str | Path,
    *,
    pixel_size_A: float | None = None,
    frame: int | None = None,
    signal_index: int | None = None,
    signal: str | None = None,
    signal_type: str = "unknown",
    invert: bool = False,
) -> Image:
    """Read a 2-D microscope image with its pixel size.

    The file's header is read first (shape, type, calibration) and the image refused from it when
    it cannot be analysed — a stack without ``frame``, more pixels than :data:`MAX_PIXELS` or than
    the memory available allows (at the pixel size, or at the smallest accepted one when none is
    known yet) — so a decompression or tile bomb is never decoded. Only then are the pixels
    (of one frame) decoded.

    Parameters
    ----------
    path : str or Path
        TIFF, DM3/DM4, Velox EMD, HSPY/ZSPY, NPY or PNG file (``octascope://`` = inside the package).
    pixel_size_A : float, optional
        Pixel size [Å]; overrides the file's calibration; required for NPY/PNG and uncalibrated files.
    frame : int, optional
        Frame to take from a 3-D stack (frames along the first axis).
    signal_index : int, optional
        Which image of a multi-image file (EMD) to take.
    signal : str, optional
        Take the image of a multi-image file whose title contains this text (e.g. ``iDPC``).
    signal_type : str
        Kind of contrast stored in the returned Image (``idpc``, ``haadf``, ...).
    invert : bool
        Invert the contrast (:func:`invert_contrast`): dark columns on a bright background (ABF, an
        inverted iDPC) become bright columns.

    Returns
    -------
    Image

    Raises
    ------
    InputError
        One line naming the file: missing, empty, damaged or of an unsupported format; a stack
        without ``frame`` (or ``frame`` for a 2-D image); complex, text or object values; NaN/Inf
        or constant pixels; a missing or absurd pixel size; too large for the memory available.
    """
    if pixel_size_A is not None:
        pixel_size_A = check_pixel_size(pixel_size_A)
    frame = check_index(frame, "source.frame")
    signal_index = check_index(signal_index, "source.signal_index")
    p, kind = _locate(path)
    if kind in ("mib", "empad", "py4dstem"):  # 4D-STEM: octascope.input.sources.load_file hands these to input.fourd
        raise InputError(f"{p.name} is a 4D-STEM file; give it as source.path (or read it with "
                         "octascope.input.fourd.read_fourd_image), which forms its iCoM image")
    with _quiet():
        header = _open_header(p, kind, signal_index, signal)
        _check_header(header, frame, pixel_size_A, p)
        metadata: dict[str, Any] = {"path": str(p), "format": kind, **header.metadata}
        ps = _pixel_size(pixel_size_A, header.calib, p, metadata, header.raw_scale)
        data = _decode(header, frame, p)
        _check_pixels(data, p)
    check_image_size(data.shape, ps, p.name)
    if check_flag(invert, "source.invert"):
        data = invert_contrast(data)
        metadata["inverted"] = True
    return Image(data=data, pixel_size_A=ps, signal=_signal_type(metadata.get("title"), signal_type), source=str(p),
                 metadata=metadata)


def invert_contrast(data: np.ndarray) -> np.ndarray:
    """The image with its contrast inverted within its own range: ``max + min − data`` (the
    values stay in the range they had, so a non-negative image stays non-negative)."""
    return (float(data.max()) + float(data.min()) - data).astype(np.float32)


def check_flag(value: Any, key: str) -> bool:
    """A yes/no option as a bool; anything but true/false is a one-line InputError."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value is None:
        return False
    raise InputError(f"{key}={value!r} is not true or false; give {key}=true or {key}=false")


def parse_frames(value: Any, n_frames: int, key: str = "source.frames") -> list[int]:
    """The frame indices a ``source.frames`` value selects from a stack of ``n_frames``.

    ``all``; ``[first, last]`` (both included, e.g. ``[0, 19]`` for twenty frames; negative counts
    from the end); or a Python slice as text, ``"start:stop"`` or ``"start:stop:step"`` (``stop``
    excluded, e.g. ``"0:20:2"`` every second of the first twenty frames). Anything else, or a
    selection with no frame in the stack, is a one-line InputError with the forms to use.
    """
    forms = f"give {key}=all, {key}=[first,last] (both included) or {key}='start:stop:step'"
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "all":
            return list(range(n_frames))
        parts = text.split(":")
        if len(parts) in (2, 3):
            try:
                bounds = [int(x) if x.strip() else None for x in parts]
            except ValueError:
                raise InputError(f"{key}={value!r} is not a slice of whole numbers; {forms}") from None
            if len(bounds) == 3 and bounds[2] == 0:
                raise InputError(f"{key}={value!r} has a step of 0; {forms}")
            picked = list(range(n_frames))[slice(*bounds)]
            if not picked:
                raise InputError(f"{key}={value!r} selects no frame of the {n_frames} in the stack; {forms}")
            return picked
        raise InputError(f"{key}={value!r} is not a frame selection; {forms}")
    if isinstance(value, (list, tuple)) and len(value) == 2:
        first, last = (check_index(v, key) for v in value)
        assert first is not None and last is not None
        lo, hi = (first + n_frames if first < 0 else first), (last + n_frames if last < 0 else last)
        if not (0 <= lo <= hi < n_frames):
            raise InputError(f"{key}={list(value)} is outside the stack's frames 0..{n_frames - 1} (or first > last); {forms}")
        return list(range(lo, hi + 1))
    raise InputError(f"{key}={value!r} is not a frame selection; {forms}")


@dataclass
class ImageStack:
    """The frames of a stack, decoded one at a time (a lazy sequence of :class:`Image`).

    ``frames``: the stack indices selected; ``frame_time_s``: the time between frames from the
    file's time axis [s] (None when the file has none); ``metadata``: as an image read from the
    file has it (path, format, where the pixel size came from).
    """

    path: Path
    frames: list[int]
    pixel_size_A: float
    n_stack: int
    frame_time_s: float | None
    metadata: dict[str, Any]
    signal: str
    invert: bool
    _header: _Header

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, k: int) -> Image:
        frame = self.frames[k]
        with _quiet():
            data = _decode(self._header, frame, self.path)
            try:
                _check_pixels(data, self.path)
            except InputError as exc:
                raise InputError(f"frame {frame}: {exc}") from None
        if self.invert:
            data = invert_contrast(data)
        return Image(data=data, pixel_size_A=self.pixel_size_A, signal=self.signal, source=f"{self.path} frame {frame}",
                     metadata={**self.metadata, "frame": frame})


def read_stack(
    path: str | Path,
    *,
    frames: Any = "all",
    pixel_size_A: float | None = None,
    signal_index: int | None = None,
    signal: str | None = None,
    signal_type: str = "unknown",
    invert: bool = False,
) -> ImageStack:
    """Open a 3-D stack (frames along the first axis) for a time series, reading its header only.

    Parameters
    ----------
    path : str or Path
        NPY, TIFF stack, DM3/DM4, Velox EMD or HSPY/HDF5/ZSPY stack.
    frames : str or list
        Which frames (:func:`parse_frames`): ``all``, ``[first, last]`` or ``"start:stop:step"``.
    pixel_size_A, signal_index, signal, signal_type, invert
        As for :func:`read_image`.

    Returns
    -------
    ImageStack
        The selected frames, decoded when indexed.

    Raises
    ------
    InputError
        As :func:`read_image`; also a file that is not a stack, or a selection outside it.
    """
    if pixel_size_A is not None:
        pixel_size_A = check_pixel_size(pixel_size_A)
    signal_index = check_index(signal_index, "source.signal_index")
    invert = check_flag(invert, "source.invert")
    p, kind = _locate(path)
    with _quiet():
        header = _open_header(p, kind, signal_index, signal)
        if len(header.shape) != 3:
            raise InputError(f"source.frames given but {p.name} is not a stack of frames (shape {header.shape}); "
                             "drop source.frames (a 2-D image is analysed as it is)")
        picked = parse_frames(frames, header.shape[0])
        _check_header(header, picked[0], pixel_size_A, p)
        metadata: dict[str, Any] = {"path": str(p), "format": kind, **header.metadata}
        ps = _pixel_size(pixel_size_A, header.calib, p, metadata, header.raw_scale)
    check_image_size(header.shape, ps, p.name)
    return ImageStack(p, picked, ps, header.shape[0], header.frame_time_s, metadata,
                      _signal_type(metadata.get("title"), signal_type), invert, header)


def input_checksum(image: Image) -> str:
    """``sha256:<hex>`` of the input: the file's bytes when the image came from a file, else the pixel data."""

    h = hashlib.sha256()
    path = image.metadata.get("path") if image.metadata else None
    if path and Path(path).is_file():
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    else:
        h.update(np.ascontiguousarray(image.data).tobytes())
    return "sha256:" + h.hexdigest()


#: largest ground-truth table read [bytes] (a table of a 4096² image's columns is about 1 MB)
TRUTH_MAX_BYTES = 256 << 20


def _read_table(path: str | Path, what: str, key: str) -> tuple[Path, pd.DataFrame]:
    """A CSV table as a DataFrame, or a one-line InputError naming the file and the problem."""
    p = resolve_path(path)
    if not p.exists():
        raise InputError(f"{what} file not found: {p}; check {key}")
    if p.is_dir():
        raise InputError(f"{what} file {p} is a folder; give {key} to a CSV file")
    if not p.is_file():
        raise InputError(f"{what} file {p} is not a regular file (a pipe or a device); give {key} to a CSV file")
    size = p.stat().st_size
    if size == 0:
        raise InputError(f"{what} file {p.name} is empty; give a CSV with a header line and one row per entry ({key})")
    if size > TRUTH_MAX_BYTES:
        raise InputError(f"{what} file {p.name} is {size / 2**20:.0f} MB, more than {TRUTH_MAX_BYTES >> 20} MB; "
                         f"check {key} (a table of columns is a few MB at most)")
    try:
        with _quiet():
            table = pd.read_csv(p)
    except pd.errors.EmptyDataError:
        raise InputError(f"{what} file {p.name} holds no table; give a CSV with a header line ({key})") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"{what} file {p.name} is not a valid CSV ({' '.join(str(exc).split())[:160]}); every row needs "
                         "as many fields as the header") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} file {p.name} is not a text (CSV) file; check {key}") from None
    except Exception as exc:
        raise InputError(f"could not read {what} file {p.name} ({_short(exc)}); check {key}") from None
    if table.empty:
        raise InputError(f"{what} file {p.name} has a header but no rows; check {key}")
    return p, table


def _numeric_columns(table: pd.DataFrame, names: tuple[str, ...], p: Path, what: str) -> pd.DataFrame:
    """The columns ``names`` as finite floats, or an InputError naming the first bad row."""
    table = table.copy()
    for name in names:
        values = pd.to_numeric(table[name], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            row = int(np.argmax(bad))
            raise InputError(f"{what} file {p.name}: column {name} has a non-numeric, empty or infinite value in row "
                             f"{row + 1} ({table[name].iloc[row]!r}); positions must be numbers in Å")
        table[name] = values.astype(float)
    return table


def read_truth(columns_path: str | Path, octahedra_path: str | Path | None = None) -> Truth:
    """Read ground truth: a CSV of columns (``x_A, y_A, species``) and optionally of octahedra.

    Raises
    ------
    InputError
        A file that is missing, a folder, empty, not a CSV (ragged rows, binary), without rows,
        without the required columns, or with non-numeric positions or unknown species; each
        message is one line naming the file.
    """
    cp, cols = _read_table(columns_path, "truth", "source.truth_path")
    missing = [c for c in ("x_A", "y_A", "species") if c not in cols]
    if missing:
        raise InputError(f"truth file {cp.name} lacks columns {missing}; it needs x_A, y_A, species")
    cols = _numeric_columns(cols, ("x_A", "y_A"), cp, "truth")
    try:
        validate_columns(cols)
    except InputError as exc:
        raise InputError(f"truth file {cp.name}: {exc}") from None
    octs = None
    if octahedra_path is not None:
        op, octs = _read_table(octahedra_path, "truth octahedra", "source.truth_octahedra_path")
        if not {"x_A", "y_A"} <= set(octs):
            raise InputError(f"truth octahedra file {op.name} lacks x_A, y_A columns; give a CSV with x_A, y_A in Å")
        octs = _numeric_columns(octs, ("x_A", "y_A"), op, "truth octahedra")
    return Truth(columns=cols, octahedra=octs, metadata={"columns_path": str(cp)})


def sidecar(path: str | Path, suffix: str) -> Path | None:
    """``<image>.<suffix>`` beside an image file if it exists (e.g. ``particle.truth_columns.csv``)."""
    p = resolve_path(path)
    candidate = p.with_name(p.stem + suffix)
    return candidate if candidate.exists() else None
