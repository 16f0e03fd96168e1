"""read_image on real file formats: TIFF, DM3, DM4, Velox EMD, NPY, PNG - data, calibration, errors.

The DM and EMD files are written by ``tests/microscope_files.py`` (RosettaSciIO's own test
files need the internet) and read back through the real RosettaSciIO readers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest


from microscope_files import write_dm, write_tiff, write_velox_emd  # noqa: E402

from octascope.core.errors import InputError  # noqa: E402
from octascope.input.readers import read_image  # noqa: E402

PIXEL_NM = 0.0168
PIXEL_A = 0.168
TOL_A = 1e-6


def _image(seed: int = 0, shape=(24, 32)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100.0 + 50.0 * rng.standard_normal(shape)).astype(np.float32)


def _stack(shape=(24, 32)) -> np.ndarray:
    return np.stack([_image(s, shape) for s in range(3)])


def _input_error(*args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        read_image(*args, **kwargs)
    msg = str(info.value)
    assert msg and "\n" not in msg, repr(msg)
    return msg


# --------------------------------------------------------------------------------------------
# calibrated formats: TIFF, DM3, DM4, Velox EMD
# --------------------------------------------------------------------------------------------


def test_tiff_data_and_nm_calibration(tmp_path):
    data = _image()
    path = write_tiff(tmp_path / "haadf.tif", data, PIXEL_NM)
    img = read_image(path)
    assert img.data.dtype == np.float32 and img.data.shape == data.shape
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size_A == pytest.approx(PIXEL_A, abs=TOL_A)
    assert img.metadata["format"] == "tiff" and img.metadata["pixel_size_from"] == "file"


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("dtype", ["float32", "int16", "uint16"])
def test_dm_data_and_calibration(tmp_path, version, dtype):
    data = _image().astype(dtype)
    path = write_dm(tmp_path / f"haadf.dm{version}", data, PIXEL_NM, version=version, title="HAADF")
    img = read_image(path)
    np.testing.assert_array_equal(img.data, data.astype(np.float32))
    assert img.pixel_size_A == pytest.approx(PIXEL_A, abs=TOL_A)
    assert img.metadata["format"] == "dm" and img.metadata["title"] == "HAADF"
    assert img.signal == "haadf"


@pytest.mark.parametrize("version", [3, 4])
def test_dm_pm_units_and_no_thumbnail(tmp_path, version):
    data = _image(1, (20, 20))
    path = write_dm(tmp_path / f"x.dm{version}", data, PIXEL_NM, version=version, units="pm", thumbnail=False)
    img = read_image(path)
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size_A == pytest.approx(PIXEL_A, abs=TOL_A)


def test_emd_default_picks_idpc_by_title(tmp_path):
    haadf, idpc = _image(1), _image(2)
    path = write_velox_emd(tmp_path / "scan.emd", {"HAADF": haadf, "iDPC": idpc}, PIXEL_NM)
    img = read_image(path)
    np.testing.assert_array_equal(img.data, idpc)
    assert img.metadata["title"] == "iDPC" and img.signal == "idpc"
    assert img.pixel_size_A == pytest.approx(PIXEL_A, abs=TOL_A)


def test_emd_select_by_signal_title_and_index(tmp_path):
    haadf, idpc = _image(1), _image(2)
    path = write_velox_emd(tmp_path / "scan.emd", {"HAADF": haadf, "iDPC": idpc}, PIXEL_NM)
    by_title = read_image(path, signal="idpc")
    np.testing.assert_array_equal(by_title.data, idpc)
    assert by_title.signal == "idpc"
    np.testing.assert_array_equal(read_image(path, signal="HAADF").data, haadf)
    first, second = read_image(path, signal_index=0), read_image(path, signal_index=1)
    np.testing.assert_array_equal(first.data, haadf)
    assert first.signal == "haadf" and first.pixel_size_A == pytest.approx(PIXEL_A, abs=TOL_A)
    np.testing.assert_array_equal(second.data, idpc)
    assert "signal_index" in _input_error(path, signal_index=2)
    assert "titles" in _input_error(path, signal="ABF")


def test_emd_ambiguous_without_idpc_and_exact_title_first(tmp_path):
    images = {"HAADF": _image(1), "DF": _image(2), "ABF": _image(3), "BF": _image(4)}
    path = write_velox_emd(tmp_path / "four.emd", images, PIXEL_NM)
    msg = _input_error(path)
    assert "source.signal" in msg and "source.signal_index" in msg
    # an exact title wins over a title that merely contains the text ('DF' in 'HAADF')
    for title, data in images.items():
        np.testing.assert_array_equal(read_image(path, signal=title.lower()).data, data)
    np.testing.assert_array_equal(read_image(path, signal="AAD").data, images["HAADF"])


def test_emd_single_image(tmp_path):
    data = _image(3)
    path = write_velox_emd(tmp_path / "one.emd", {"HAADF": data}, PIXEL_NM)
    img = read_image(path)
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size_A == pytest.approx(PIXEL_A, abs=TOL_A)


@pytest.mark.parametrize("kind", ["dm3", "dm4", "emd", "tif", "npy"])
def test_stack_needs_frame(tmp_path, kind):
    stack = _stack()
    path = tmp_path / f"stack.{kind}"
    if kind in ("dm3", "dm4"):
        write_dm(path, stack, PIXEL_NM, version=int(kind[-1]))
    elif kind == "emd":
        write_velox_emd(path, {"HAADF": stack}, PIXEL_NM)
    elif kind == "tif":
        write_tiff(path, stack, PIXEL_NM)
    else:
        np.save(path, stack)
    extra = {"pixel_size_A": PIXEL_A} if kind == "npy" else {}
    msg = _input_error(path, **extra)
    assert "source.frame" in msg and "3 frames" in msg
    img = read_image(path, frame=1, **extra)
    np.testing.assert_array_equal(img.data, stack[1])
    assert img.pixel_size_A == pytest.approx(PIXEL_A, abs=TOL_A)
    np.testing.assert_array_equal(read_image(path, frame=-1, **extra).data, stack[2])
    assert "out of range" in _input_error(path, frame=3, **extra)


@pytest.mark.parametrize("kind", ["dm3", "dm4", "emd", "tif"])
def test_override_wins_over_file_calibration(tmp_path, kind):
    data = _image()
    path = tmp_path / f"img.{kind}"
    if kind in ("dm3", "dm4"):
        write_dm(path, data, PIXEL_NM, version=int(kind[-1]))
    elif kind == "emd":
        write_velox_emd(path, {"iDPC": data}, PIXEL_NM)
    else:
        write_tiff(path, data, PIXEL_NM)
    img = read_image(path, pixel_size_A=0.5)
    assert img.pixel_size_A == 0.5 and img.metadata["pixel_size_from"] == "override"
    np.testing.assert_array_equal(img.data, data)


# --------------------------------------------------------------------------------------------
# uncalibrated formats: NPY, PNG
# --------------------------------------------------------------------------------------------


def test_npy_needs_pixel_size(tmp_path):
    data = _image()
    path = tmp_path / "img.npy"
    np.save(path, data.astype(np.float64))
    img = read_image(path, pixel_size_A=PIXEL_A)
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size_A == PIXEL_A and img.data.dtype == np.float32
    assert "pixel_size_A" in _input_error(path)


def test_png_grey_and_rgb(tmp_path):
    import imageio.v3 as iio

    grey = np.random.default_rng(0).integers(0, 65535, (24, 32), dtype=np.uint16)
    iio.imwrite(tmp_path / "grey.png", grey)
    img = read_image(tmp_path / "grey.png", pixel_size_A=PIXEL_A)
    np.testing.assert_array_equal(img.data, grey.astype(np.float32))
    assert img.pixel_size_A == PIXEL_A

    rgb = np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "rgb.png", rgb)
    img = read_image(tmp_path / "rgb.png", pixel_size_A=PIXEL_A)
    assert img.data.shape == (24, 32)
    np.testing.assert_allclose(img.data, rgb.astype(np.float32).mean(axis=-1), rtol=1e-6)
    assert "pixel_size_A" in _input_error(tmp_path / "rgb.png")


# --------------------------------------------------------------------------------------------
# bad input: one-line InputError each
# --------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    assert "not found" in _input_error(tmp_path / "nope.dm4")


def test_directory(tmp_path):
    (tmp_path / "dir.tif").mkdir()
    assert "directory" in _input_error(tmp_path / "dir.tif")


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "atoms.xyz"
    path.write_text("1\n\nCs 0 0 0\n")
    msg = _input_error(path)
    assert ".xyz" in msg and ".dm4" in msg


def test_damaged_dm_file(tmp_path):
    path = tmp_path / "broken.dm3"
    path.write_bytes(b"\x00\x00\x00\x07" + b"garbage" * 5)
    assert "could not read broken.dm3" in _input_error(path)


def test_nan_pixel(tmp_path):
    data = _image()
    data[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", data)
    assert "NaN" in _input_error(tmp_path / "nan.npy", pixel_size_A=PIXEL_A)
    data[3, 4] = np.inf
    write_dm(tmp_path / "inf.dm3", data, PIXEL_NM)
    assert "1 NaN/Inf" in _input_error(tmp_path / "inf.dm3")


def test_constant_image(tmp_path):
    np.save(tmp_path / "flat.npy", np.full((16, 16), 7.0))
    assert "constant" in _input_error(tmp_path / "flat.npy", pixel_size_A=PIXEL_A)
    write_velox_emd(tmp_path / "flat.emd", {"iDPC": np.zeros((16, 16), np.float32)}, PIXEL_NM)
    assert "constant" in _input_error(tmp_path / "flat.emd")


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan")])
def test_non_positive_pixel_size(tmp_path, bad):
    np.save(tmp_path / "img.npy", _image())
    assert "pixel_size_A > 0" in _input_error(tmp_path / "img.npy", pixel_size_A=bad)


def test_one_dimensional_array(tmp_path):
    np.save(tmp_path / "line.npy", np.arange(10.0))
    assert "2-D image is needed" in _input_error(tmp_path / "line.npy", pixel_size_A=PIXEL_A)
