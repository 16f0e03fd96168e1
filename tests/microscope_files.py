"""Writers of small but structurally valid microscope files for the I/O tests.

RosettaSciIO's own test files are downloaded from the internet, which the tests cannot
reach, so these helpers write the files from a numpy array and a pixel size:

* :func:`write_dm` - Gatan DigitalMicrograph DM3 / DM4 (tag-group binary format).
* :func:`write_velox_emd` - Thermo Fisher Velox EMD (HDF5), one or more images.
* :func:`write_tiff` - TIFF with a nm calibration, through ``rsciio.tiff.file_writer``.

A 3-D array (frames along the first axis) writes a stack in every format. The files are
accepted by the real readers (``rsciio.digitalmicrograph.file_reader``,
``rsciio.emd.file_reader``, ``rsciio.tiff.file_reader``), which is checked by
``python tests/microscope_files.py``.

DM layout written (little-endian data, big-endian tag headers, as Gatan writes it)::

    header: version (4 B), root length (4 B DM3 / 8 B DM4), byte order (4 B, 1 = little)
    root group: sorted (1 B), open (1 B), n tags (4 B DM3 / 8 B DM4)
      ImageList/
        [0] thumbnail image (uint8)          (optional, listed in Thumbnails)
        [1] ImageData/{Calibrations/{Brightness, Dimension/[x, y(, z)]}, Data, DataType,
                       Dimensions/[nx, ny(, nz)], PixelDepth}
            ImageTags/{Microscope Info/...}
            Name
      Thumbnails/[0]/ImageIndex
    end: two zero lengths

A tag is: type (1 B: 20 group, 21 data), name length (2 B), name, then in DM4 only the
tag's byte size (8 B). A data tag continues with ``%%%%``, the length of its info array and
the info array (4 B each in DM3, 8 B in DM4) that encodes the type, then the value.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------
# DigitalMicrograph
# --------------------------------------------------------------------------------------------

#: DM simple-type codes of the tag encoding
_SHORT, _LONG, _USHORT, _ULONG, _FLOAT, _DOUBLE, _BOOL, _CHAR, _OCTET = 2, 3, 4, 5, 6, 7, 8, 9, 10
_INT64, _UINT64 = 11, 12
_STRUCT, _STRING, _ARRAY = 15, 18, 20
_GROUP_TAG, _DATA_TAG = 20, 21

_SIMPLE_FORMAT = {
    _SHORT: "h", _LONG: "i", _USHORT: "H", _ULONG: "I", _FLOAT: "f", _DOUBLE: "d",
    _BOOL: "B", _CHAR: "b", _OCTET: "b", _INT64: "q", _UINT64: "Q",
}

#: numpy dtype -> (ImageData.DataType, element type code of ImageData.Data)
_DM_IMAGE_TYPES = {
    np.dtype("int16"): (1, _SHORT),
    np.dtype("float32"): (2, _FLOAT),
    np.dtype("uint8"): (6, _OCTET),
    np.dtype("int32"): (7, _LONG),
    np.dtype("int8"): (9, _CHAR),
    np.dtype("uint16"): (10, _USHORT),
    np.dtype("uint32"): (11, _ULONG),
    np.dtype("float64"): (12, _DOUBLE),
}

#: how many of a unit make one nm
_PER_NM = {"nm": 1.0, "pm": 1e3, "Å": 10.0, "A": 10.0, "µm": 1e-3, "um": 1e-3, "m": 1e-9}


class _Value:
    """A typed DM tag value (scalar, string or array)."""

    def __init__(self, kind: str, etype: int, value):
        self.kind, self.etype, self.value = kind, etype, value


def _scalar(etype: int, value) -> _Value:
    return _Value("simple", etype, value)


def _string(text: str) -> _Value:
    # DM stores text as an array of 2-byte (UTF-16) characters
    return _Value("array", _USHORT, np.frombuffer(text.encode("utf-16-le"), dtype="<u2"))


def _array(etype: int, values: np.ndarray) -> _Value:
    return _Value("array", etype, values)


class _DMEncoder:
    def __init__(self, version: int):
        if version not in (3, 4):
            raise ValueError(f"DM version must be 3 or 4, not {version}")
        self.version = version
        self.len_fmt = ">i" if version == 3 else ">q"  # lengths in headers: 4 or 8 bytes, big-endian

    def _len(self, n: int) -> bytes:
        return struct.pack(self.len_fmt, n)

    def _header(self, tag_id: int, name: str) -> bytes:
        raw = name.encode("latin-1")
        return struct.pack(">bh", tag_id, len(raw)) + raw

    def _payload(self, v: _Value) -> tuple[list[int], bytes]:
        """(info array, value bytes) of a data tag."""
        if v.kind == "simple":
            return [v.etype], struct.pack("<" + _SIMPLE_FORMAT[v.etype], v.value)
        arr = np.ascontiguousarray(v.value).astype(np.dtype(_SIMPLE_FORMAT[v.etype]).newbyteorder("<"))
        return [_ARRAY, v.etype, arr.size], arr.tobytes(order="C")

    def data_tag(self, name: str, v: _Value) -> bytes:
        info, payload = self._payload(v)
        body = b"%%%%" + self._len(len(info)) + b"".join(self._len(i) for i in info) + payload
        size = self._len(len(body)) if self.version == 4 else b""
        return self._header(_DATA_TAG, name) + size + body

    def group_body(self, items: list[tuple[str, object]]) -> bytes:
        """sorted, open, number of tags, then the tags."""
        parts = [self.tag(name, item) for name, item in items]
        return struct.pack(">bb", 1, 1) + self._len(len(parts)) + b"".join(parts)

    def group_tag(self, name: str, items: list[tuple[str, object]]) -> bytes:
        body = self.group_body(items)
        size = self._len(len(body)) if self.version == 4 else b""
        return self._header(_GROUP_TAG, name) + size + body

    def tag(self, name: str, item) -> bytes:
        if isinstance(item, _Value):
            return self.data_tag(name, item)
        return self.group_tag(name, item)

    def file(self, root: list[tuple[str, object]]) -> bytes:
        body = self.group_body(root)
        trailer = self._len(0) * 2
        # header: version, length of what follows the header, byte order of the data (1 = little)
        head = struct.pack(">i", self.version) + self._len(len(body) + len(trailer)) + struct.pack(">i", 1)
        return head + body + trailer


def _dm_image(data: np.ndarray, scales: list[float], units: list[str], title: str, tags: list) -> list:
    """The tag group of one image (axes ordered x, y, z as DM lists them)."""
    dtype = np.dtype(data.dtype).newbyteorder("=")
    if dtype not in _DM_IMAGE_TYPES:
        raise ValueError(f"no DM data type for {data.dtype}; use one of {sorted(map(str, _DM_IMAGE_TYPES))}")
    data_type, etype = _DM_IMAGE_TYPES[dtype]
    dims_xyz = list(data.shape[::-1])
    calib_dims = [
        ("", [("Origin", _scalar(_FLOAT, 0.0)), ("Scale", _scalar(_FLOAT, s)), ("Units", _string(u))])
        for s, u in zip(scales, units)
    ]
    return [
        ("ImageData", [
            ("Calibrations", [
                ("Brightness", [
                    ("Origin", _scalar(_FLOAT, 0.0)),
                    ("Scale", _scalar(_FLOAT, 1.0)),
                    ("Units", _string("Counts")),
                ]),
                ("Dimension", calib_dims),
                ("DisplayCalibratedUnits", _scalar(_BOOL, 1)),
            ]),
            ("Data", _array(etype, data.ravel(order="C"))),
            ("DataType", _scalar(_LONG, data_type)),
            ("Dimensions", [("", _scalar(_ULONG, n)) for n in dims_xyz]),
            ("PixelDepth", _scalar(_LONG, dtype.itemsize)),
        ]),
        ("ImageTags", tags),
        ("Name", _string(title)),
    ]


def write_dm(
    path: str | Path,
    data: np.ndarray,
    pixel_size_nm: float,
    version: int = 3,
    *,
    title: str = "HAADF",
    units: str = "nm",
    thumbnail: bool = True,
) -> Path:
    """Write a DigitalMicrograph DM3 (``version=3``) or DM4 (``version=4``) image file.

    Parameters
    ----------
    path : str or Path
        File to write (``.dm3`` / ``.dm4``).
    data : ndarray
        2-D image ``(y, x)`` or 3-D stack ``(frame, y, x)``; int8/16/32, uint8/16/32,
        float32/64.
    pixel_size_nm : float
        Pixel size [nm] of both image axes.
    version : {3, 4}
        DM3 stores lengths in 4 bytes, DM4 in 8 bytes and adds each tag's byte size.
    title : str
        Image name (the reader's ``metadata.General.title``).
    units : str
        Unit the calibration is stored in (``nm``, ``pm``, ``µm``, ...); the scale is
        converted from ``pixel_size_nm``.
    thumbnail : bool
        Also write a small uint8 thumbnail image first, as DigitalMicrograph does (the
        reader skips it because ``Thumbnails`` lists it).
    """
    data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise ValueError(f"data must be 2-D or 3-D, not shape {data.shape}")
    scale = float(pixel_size_nm) * _PER_NM[units]
    scales, unit_list = [scale, scale], [units, units]
    if data.ndim == 3:
        scales.append(1.0)
        unit_list.append("")
    tags = [("Microscope Info", [
        ("Illumination Mode", _string("STEM")),
        ("Voltage", _scalar(_FLOAT, 300000.0)),
        ("Name", _string("octascope test fixture")),
    ])]
    images = []
    if thumbnail:
        frame = data if data.ndim == 2 else data[0]
        small = frame[:: max(1, frame.shape[0] // 8), :: max(1, frame.shape[1] // 8)].astype(np.float64)
        small = np.nan_to_num(small, nan=0.0, posinf=0.0, neginf=0.0)  # NaN/Inf test images
        span = float(small.max() - small.min()) or 1.0
        small = np.round(255 * (small - small.min()) / span).astype(np.uint8)
        images.append(("", _dm_image(small, [1.0, 1.0], ["", ""], "", [])))
    images.append(("", _dm_image(data, scales, unit_list, title, tags)))
    root: list = [("ImageList", images)]
    if thumbnail:
        root.append(("Thumbnails", [("", [("ImageIndex", _scalar(_LONG, 0))])]))
    out = Path(path)
    out.write_bytes(_DMEncoder(version).file(root))
    return out


# --------------------------------------------------------------------------------------------
# Velox EMD
# --------------------------------------------------------------------------------------------


def _velox_id(index: int, title: str) -> str:
    """A 32-hex-digit UUID-like group name; sorts in the order the images are given."""
    return f"{index:04x}" + hashlib.md5(title.encode()).hexdigest()[4:]


def _json_bytes(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)


def write_velox_emd(
    path: str | Path,
    images: dict[str, np.ndarray],
    pixel_size_nm: float,
    *,
    version: int = 11,
) -> Path:
    """Write a Velox EMD (HDF5) file holding one or more images.

    Parameters
    ----------
    path : str or Path
        File to write (``.emd``).
    images : dict
        ``title -> array``: each a 2-D image ``(y, x)`` or 3-D stack ``(frame, y, x)``, e.g.
        ``{"HAADF": haadf, "iDPC": idpc}``. The title is stored as the detector name, which
        the reader returns as ``metadata.General.title``; images are read in the given order.
    pixel_size_nm : float
        Pixel size [nm]; stored as Velox does, in metres (``BinaryResult.PixelSize``).
    version : int
        Velox file version written in ``/Version`` (11: titles from ``Detectors``).

    Layout::

        /Version                      JSON {"format": "Velox", "version": "11"}
        /Data/Image/<uuid>/Data       (y, x, frames) array
        /Data/Image/<uuid>/Metadata   (n bytes, frames) uint8 JSON per frame
        /Presentation/Displays/ImageDisplay/<uuid>   JSON {"dataPath", "display": {"label"}}
    """
    import h5py

    if not images:
        raise ValueError("give at least one image")
    out = Path(path)
    size_m = float(pixel_size_nm) * 1e-9
    with h5py.File(out, "w") as f:
        f.create_dataset("Version", data=np.array([json.dumps({"format": "Velox", "version": str(version)}).encode()]))
        image_group = f.create_group("Data").create_group("Image")
        displays = f.create_group("Presentation").create_group("Displays").create_group("ImageDisplay")
        for index, (title, arr) in enumerate(images.items()):
            arr = np.asarray(arr)
            if arr.ndim == 2:
                arr = arr[np.newaxis]
            if arr.ndim != 3:
                raise ValueError(f"image '{title}' must be 2-D or 3-D, not shape {arr.shape}")
            n_frames, ny, nx = arr.shape
            key = _velox_id(index, title)
            meta = {
                "Acquisition": {"AcquisitionStartDatetime": {"DateTime": "1700000000"}},
                "BinaryResult": {
                    "AcquisitionUnit": "",
                    "CompositionType": "Summed" if n_frames == 1 else "Frames",
                    "DetectorIndex": "0",
                    "Detector": title,
                    "ImageSize": {"width": str(nx), "height": str(ny)},
                    "Offset": {"x": "0", "y": "0"},
                    "PixelSize": {"width": repr(size_m), "height": repr(size_m)},
                    "PixelUnitX": "m",
                    "PixelUnitY": "m",
                },
                "Detectors": {"Detector-0": {"DetectorName": title, "DetectorType": "ScanningDetector", "Enabled": "true"}},
                "Instrument": {"InstrumentClass": "Titan", "Manufacturer": "FEI Company"},
                "Optics": {"AccelerationVoltage": "300000"},
                "Scan": {"FrameTime": "2.5", "DwellTime": "5e-06", "ScanSize": {"width": str(nx), "height": str(ny)}},
                "Stage": {"AlphaTilt": "0", "BetaTilt": "0"},
            }
            raw = _json_bytes(meta)
            sub = image_group.create_group(key)
            sub.create_dataset("Data", data=np.moveaxis(arr, 0, -1), chunks=(ny, nx, 1))
            # one metadata column per frame, zero-padded like Velox
            md = np.zeros((raw.size + 16, n_frames), dtype=np.uint8)
            md[: raw.size, :] = raw[:, np.newaxis]
            sub.create_dataset("Metadata", data=md)
            display = {"dataPath": f"/Data/Image/{key}", "display": {"label": title}, "id": title}
            displays.create_dataset(key, data=np.array([json.dumps(display).encode()]))
    return out


# --------------------------------------------------------------------------------------------
# TIFF
# --------------------------------------------------------------------------------------------


def write_tiff(path: str | Path, data: np.ndarray, pixel_size_nm: float, *, title: str = "HAADF") -> Path:
    """Write a TIFF with a nm calibration through ``rsciio.tiff.file_writer`` (ImageJ style)."""
    from rsciio.tiff import file_writer

    data = np.asarray(data)
    axes = []
    names = ["y", "x"] if data.ndim == 2 else ["frame", "y", "x"]
    for i, (name, n) in enumerate(zip(names, data.shape)):
        spatial = name in ("x", "y")
        axes.append({
            "name": name, "size": n, "index_in_array": i, "offset": 0.0,
            "scale": float(pixel_size_nm) if spatial else 1.0,
            "units": "nm" if spatial else "", "navigate": not spatial,
        })
    signal = {"data": data, "axes": axes, "metadata": {"General": {"title": title}, "Signal": {}}}
    out = Path(path)
    file_writer(str(out), signal)
    return out


# --------------------------------------------------------------------------------------------
# self-check: python tests/microscope_files.py
# --------------------------------------------------------------------------------------------


def _self_check(folder: Path) -> None:  # pragma: no cover - manual check of the fixtures
    from rsciio.digitalmicrograph import file_reader as dm_reader
    from rsciio.emd import file_reader as emd_reader

    rng = np.random.default_rng(0)
    img = rng.random((24, 32)).astype(np.float32)
    for v in (3, 4):
        for arr in (img, np.stack([img, img + 1, img + 2])):
            p = write_dm(folder / f"t{arr.ndim}.dm{v}", arr, 0.0168, version=v)
            (sig,) = dm_reader(str(p))
            assert np.array_equal(sig["data"], arr), (v, arr.shape)
            print(f"DM{v} {arr.shape}:", [(a["scale"], a["units"], a["navigate"]) for a in sig["axes"]], sig["metadata"]["General"])
    p = write_velox_emd(folder / "t.emd", {"HAADF": img, "iDPC": -img}, 0.0168)
    for sig in emd_reader(str(p)):
        print("EMD:", sig["data"].shape, [(a["scale"], a["units"]) for a in sig["axes"]], sig["metadata"]["General"]["title"])


if __name__ == "__main__":  # pragma: no cover
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        _self_check(Path(tmp))
