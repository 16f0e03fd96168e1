"""Reading microscope images with their calibration, and ground-truth tables.

Formats: TIFF (including ImageJ TIFFs calibrated in nm/µm/Å), DM3/DM4, Velox EMD and HyperSpy's
own HSPY/ZSPY through RosettaSciIO (with the pixel-size calibration stored in the file), NPY and
PNG (no calibration: give ``pixel_size_A``). A ``pixel_size_A`` argument always overrides the
file's calibration.

Cheap guards run before anything large is allocated: the pixel size must be a number within
:data:`PIXEL_SIZE_RANGE_A`, and the image's estimated peak memory (:func:`estimate_peak_bytes`)
must fit in the memory available.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from octascope.core.errors import InputError
from octascope.core.model import Image, Truth, validate_columns

#: file suffix -> reader name
FORMATS = {
    ".tif": "tiff", ".tiff": "tiff",
    ".dm3": "dm", ".dm4": "dm",
    ".emd": "emd",
    ".hspy": "hspy", ".zspy": "zspy",
    ".npy": "npy",
    ".png": "png",
}

#: pixel sizes [Å] accepted: atomic-resolution STEM of perovskites lies well inside
PIXEL_SIZE_RANGE_A = (0.01, 5.0)
#: bytes of peak memory per image pixel for one analysis (measured, see README "Memory")
BYTES_PER_PIXEL = 160
#: largest image accepted, in pixels (a 16384 x 16384 frame)
MAX_PIXELS = 16384 * 16384

_LENGTH_TO_A = {
    "a": 1.0, "å": 1.0, "Å": 1.0, "angstrom": 1.0, "ang": 1.0,
    "nm": 10.0, "pm": 0.01, "um": 1e4, "µm": 1e4, "μm": 1e4, "micron": 1e4, "microns": 1e4, "\\u00b5m": 1e4,
    "mm": 1e7, "m": 1e10,
}

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
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return None


def check_image_size(shape: tuple[int, ...], pixel_size_A: float, name: str = "the image") -> None:
    """Refuse an image whose analysis would need more memory than is available (before allocating it)."""
    n_px = int(np.prod(shape[-2:]))
    if n_px > MAX_PIXELS:
        raise InputError(f"{name} has {n_px} pixels ({shape[-1]}x{shape[-2]}), more than {MAX_PIXELS}; "
                         "crop or bin it (e.g. 2x2) first")
    need = estimate_peak_bytes(shape, pixel_size_A)
    avail = available_memory_bytes()
    if avail is not None and need > avail:
        raise InputError(
            f"{name} ({shape[-1]}x{shape[-2]} px at {pixel_size_A:g} Å/px) needs about {need / 2**30:.1f} GiB, "
            f"{avail / 2**30:.1f} GiB are available; crop or bin the image, or check source.pixel_size_A"
        )


def _read_rsciio(path: Path, kind: str) -> list[dict]:
    if kind == "tiff":
        from rsciio.tiff import file_reader
    elif kind == "dm":
        from rsciio.digitalmicrograph import file_reader
    elif kind == "hspy":
        from rsciio.hspy import file_reader
    elif kind == "zspy":
        from rsciio.zspy import file_reader
    else:
        from rsciio.emd import file_reader
    try:
        try:  # lazily first: the shape and calibration without reading the pixels
            return file_reader(str(path), lazy=True)
        except Exception:
            return file_reader(str(path))
    except Exception as exc:  # the readers raise many kinds of errors for damaged files
        raise InputError(f"could not read {path.name} as {kind.upper()}: {exc.__class__.__name__}: {exc}; check the file") from exc


def read_image(
    path: str | Path,
    *,
    pixel_size_A: float | None = None,
    frame: int | None = None,
    signal_index: int | None = None,
    signal: str | None = None,
    signal_type: str = "unknown",
) -> Image:
    """Read a 2-D microscope image with its pixel size.

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

    Returns
    -------
    Image

    Raises
    ------
    InputError
        Missing file, unsupported format, a stack without ``frame`` (or ``frame`` for a 2-D image),
        complex, NaN/Inf or constant pixels, a missing, non-numeric or absurd pixel size, an image
        too large for the memory available.
    """
    if pixel_size_A is not None:
        pixel_size_A = check_pixel_size(pixel_size_A)
    p = resolve_path(path)
    if not p.exists():
        raise InputError(f"image file not found: {p}; check source.path")
    if p.is_dir() and p.suffix.lower() != ".zspy":  # a zspy file is a zarr directory
        raise InputError(f"{p} is a directory; give source.path to an image file")
    kind = FORMATS.get(p.suffix.lower())
    if kind is None:
        raise InputError(
            f"unsupported image format '{p.suffix or p.name}'; use one of {', '.join(sorted(set(FORMATS)))} "
            "(or convert the file, e.g. to TIFF)"
        )
    calib: float | None = None
    metadata: dict[str, Any] = {"path": str(p), "format": kind}
    if kind == "npy":
        try:
            data = np.load(p, allow_pickle=False, mmap_mode="r")  # header first: refuse a huge array unread
            if pixel_size_A is not None and data.ndim >= 2:
                check_image_size(data.shape, pixel_size_A, p.name)
            data = np.array(data)
        except InputError:
            raise
        except ValueError as exc:
            raise InputError(f"could not read {p.name} as NPY: {exc}; save a plain numeric array with numpy.save") from exc
    elif kind == "png":
        import imageio.v3 as iio

        data = np.asarray(iio.imread(p))
        if data.ndim == 3 and data.shape[-1] in (3, 4):
            data = data[..., :3].astype(np.float32).mean(axis=-1)
    else:
        sig = _pick_signal(_read_rsciio(p, kind), signal_index, signal, p)
        data = sig["data"]  # possibly lazy (dask): read below, once its size is known to fit
        axes = [a for a in sig.get("axes", []) if not a.get("navigate", False)]
        units = [a.get("units") for a in axes[-2:]]
        if kind == "tiff" and all(u is None for u in units):
            units = [_imagej_unit(p)] * len(units)  # ImageJ keeps the unit in its own metadata
        scales = [_scale_to_A(a.get("scale"), u) for a, u in zip(axes[-2:], units)]
        known = [s for s in scales if s is not None]
        if len(scales) == 2 and len(known) == 2:
            if abs(known[0] - known[1]) > 0.01 * max(known):
                raise InputError(
                    f"{p.name} has non-square pixels ({known[1]:.4g} x {known[0]:.4g} Å); resample to square pixels first"
                )
            calib = float(np.mean(known))
        title = sig.get("metadata", {}).get("General", {}).get("title")
        if title:
            metadata["title"] = str(title)
            if signal_type == "unknown":
                for key in ("idpc", "haadf", "abf", "icom", "dpc"):
                    if key in str(title).lower():
                        signal_type = key
                        break

    if not isinstance(data, np.ndarray):
        lo, hi = PIXEL_SIZE_RANGE_A
        ps_known = pixel_size_A if pixel_size_A is not None else (calib if calib and lo <= calib <= hi else None)
        if ps_known is not None and np.ndim(data) >= 2:
            check_image_size(tuple(data.shape), ps_known, p.name)
        data = np.asarray(data)
    if np.iscomplexobj(data):
        raise InputError(
            f"{p.name} holds complex values; save the real image (e.g. numpy.abs or .real for a phase image) and give that file"
        )
    if data.ndim == 3 and frame is None:
        raise InputError(
            f"{p.name} is a stack of {data.shape[0]} frames (shape {data.shape}); pick one with "
            f"source.frame=N (0..{data.shape[0] - 1}) or sum the stack first"
        )
    if frame is not None and data.ndim == 2:
        raise InputError(f"source.frame={frame} given but {p.name} is a single 2-D image; drop source.frame")
    if data.ndim == 3:
        if not -data.shape[0] <= frame < data.shape[0]:
            raise InputError(f"frame {frame} out of range: {p.name} has {data.shape[0]} frames (0..{data.shape[0] - 1})")
        data = data[frame]
    if data.ndim != 2:
        raise InputError(f"{p.name} has {data.ndim} dimensions (shape {data.shape}); a 2-D image is needed")
    data = data.astype(np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        raise InputError(
            f"{p.name} has {int((~finite).sum())} NaN/Inf pixels; replace them (e.g. numpy.nan_to_num) and save again"
        )
    if float(data.max() - data.min()) <= 1e-12 * max(1.0, float(np.abs(data).max())):
        raise InputError(f"{p.name} is a constant image (every pixel = {float(data.flat[0]):g}); check that the right file/frame is given")
    if pixel_size_A is not None:
        ps = float(pixel_size_A)
        metadata["pixel_size_from"] = "override"
    elif calib is not None:
        ps = check_pixel_size(calib, what=f"the calibration of {p.name} (override it with source.pixel_size_A)")
        metadata["pixel_size_from"] = "file"
    else:
        raise InputError(
            f"{p.name} carries no pixel-size calibration; give it with source.pixel_size_A=<Å per pixel> (e.g. 0.168)"
        )
    check_image_size(data.shape, ps, p.name)
    return Image(data=data, pixel_size_A=ps, signal=signal_type, source=str(p), metadata=metadata)


def _imagej_unit(path: Path) -> str | None:
    """The length unit an ImageJ TIFF stores in its ImageDescription (``unit=nm``), if any."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            meta = tif.imagej_metadata or {}
    except Exception:
        return None
    unit = meta.get("unit")
    if unit is None:
        return None
    unit = str(unit).strip()
    return None if unit.lower() in ("pixel", "pixels", "") else unit


def input_checksum(image: Image) -> str:
    """``sha256:<hex>`` of the input: the file's bytes when the image came from a file, else the pixel data."""
    import hashlib

    h = hashlib.sha256()
    path = image.metadata.get("path") if image.metadata else None
    if path and Path(path).is_file():
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    else:
        h.update(np.ascontiguousarray(image.data).tobytes())
    return "sha256:" + h.hexdigest()


def read_truth(columns_path: str | Path, octahedra_path: str | Path | None = None) -> Truth:
    """Read ground truth: a CSV of columns (``x_A, y_A, species``) and optionally of octahedra.

    Raises
    ------
    InputError
        If a file is missing or lacks the required columns.
    """
    cp = resolve_path(columns_path)
    if not cp.exists():
        raise InputError(f"truth file not found: {cp}; check source.truth_path")
    cols = pd.read_csv(cp)
    missing = [c for c in ("x_A", "y_A", "species") if c not in cols]
    if missing:
        raise InputError(f"truth file {cp.name} lacks columns {missing}; it needs x_A, y_A, species")
    validate_columns(cols)
    octs = None
    if octahedra_path is not None:
        op = resolve_path(octahedra_path)
        if not op.exists():
            raise InputError(f"truth octahedra file not found: {op}; check source.truth_octahedra_path")
        octs = pd.read_csv(op)
        if not {"x_A", "y_A"} <= set(octs):
            raise InputError(f"truth octahedra file {op.name} lacks x_A, y_A columns")
    return Truth(columns=cols, octahedra=octs, metadata={"columns_path": str(cp)})


def sidecar(path: str | Path, suffix: str) -> Path | None:
    """``<image>.<suffix>`` beside an image file if it exists (e.g. ``particle.truth_columns.csv``)."""
    p = resolve_path(path)
    candidate = p.with_name(p.stem + suffix)
    return candidate if candidate.exists() else None
