"""4D-STEM in: centre of mass, origin and rotation from the data (py4DSTEM), iCoM, and the file formats.

The fixture is a known phase object φ (Gaussian columns on a square lattice): every pattern is a
uniform bright-field disc shifted by the CoM = c·∇φ, turned on the detector by a known rotation
and displaced by a linear descan. The CoM, the rotation and the iCoM (∝ φ) must come back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from octascope.core.errors import InputError
from octascope.input.fourd import center_of_mass, read_fourd, read_fourd_header

STEP_A = 0.25
DK = 0.1  # 1/Å per detector pixel


def phase_object(h: int = 40, w: int = 40, period_px: float = 8.0, sigma_px: float = 1.6) -> np.ndarray:
    """φ [rad] of Gaussian columns on a square lattice (periodic over the scan)."""
    y, x = np.mgrid[0:h, 0:w].astype(float)
    phi = np.zeros((h, w))
    for cy in np.arange(period_px / 2, h, period_px):
        for cx in np.arange(period_px / 2, w, period_px):
            phi += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma_px**2))
    return phi


def disc_patterns(com_px: np.ndarray, *, rotation_deg: float = 0.0, descan_px: tuple[float, float] = (0.0, 0.0),
                  det: int = 32, radius_px: float = 8.0, total: float = 1.0) -> tuple[np.ndarray, tuple[float, float]]:
    """(H, W, det, det) discs whose centres are R(-rotation)·com + origin + descan·(col, row) [px]."""
    h, w = com_px.shape[1:]
    t = np.deg2rad(-rotation_deg)
    dx = np.cos(t) * com_px[0] - np.sin(t) * com_px[1]
    dy = np.sin(t) * com_px[0] + np.cos(t) * com_px[1]
    origin = (det / 2 - 0.3, det / 2 + 0.2)
    rows, cols = np.mgrid[0:h, 0:w]
    cx = origin[0] + dx + descan_px[0] * cols
    cy = origin[1] + dy + descan_px[1] * rows
    ky, kx = np.mgrid[0:det, 0:det].astype(float)
    r = np.hypot(kx[None, None] - cx[..., None, None], ky[None, None] - cy[..., None, None])
    disc = np.clip(radius_px + 0.5 - r, 0.0, 1.0)
    return total * disc / disc.sum(axis=(-2, -1), keepdims=True), origin


def _columns_only(a: np.ndarray) -> np.ndarray:
    """The image minus its Gaussian blur (σ 3 px) over the inner region: the columns without the smooth
    bowl that the origin's plane fit leaves in an iCoM."""
    from scipy import ndimage

    return (a - ndimage.gaussian_filter(a, 3.0))[4:-4, 4:-4]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_columns_only(a).ravel(), _columns_only(b).ravel())[0, 1])


def true_com_px(phi: np.ndarray, scale: float = 3.0) -> np.ndarray:
    gy, gx = np.gradient(phi)
    return scale * np.stack([gx, gy])


@pytest.mark.parametrize("rotation_deg", [0.0, 25.0, -120.0])
def test_center_of_mass_recovers_com_and_rotation(rotation_deg: float) -> None:
    phi = phase_object()
    com = true_com_px(phi)
    data, _ = disc_patterns(com, rotation_deg=rotation_deg, descan_px=(0.02, -0.015))
    res = center_of_mass(data, step_A=STEP_A)
    # the rotation: within the fine search step of py4DSTEM's curl minimum (0.05°) plus the disc's
    # pixel sampling; 0.5° turns 0.9 % of one component into the other
    err = (res.rotation_deg - rotation_deg + 180.0) % 360.0 - 180.0
    assert abs(err) < 0.5, (res.rotation_deg, rotation_deg)
    assert not res.transpose
    # the DPC components: the origin fit takes out a plane (the descan, and with it the specimen's own
    # linear trend, which no 4-D method can tell from a descan); what is left is the CoM
    truth, trend = _minus_plane(com)
    got, _ = _minus_plane(res.com)
    rel = np.sqrt(np.mean((got - truth) ** 2) / np.mean(truth**2))
    assert rel < 0.02, rel
    # the fitted origin follows the descan (0.02 px per column) plus the specimen's trend, turned
    assert np.median(np.diff(res.origin_px[0], axis=1)) == pytest.approx(0.02 + _turned_slope(trend, rotation_deg), abs=0.002)


def _minus_plane(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each component minus its least-squares plane; and the planes' (offset, d/dcol, d/drow) (2, 3)."""
    h, w = field.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([np.ones(h * w), xx.ravel(), yy.ravel()], 1)
    coefs = np.stack([np.linalg.lstsq(a, c.ravel(), rcond=None)[0] for c in field])
    return field - (coefs @ a.T).reshape(field.shape), coefs


def _turned_slope(trend: np.ndarray, rotation_deg: float) -> float:
    """d/dcol of the detector x origin from the specimen's CoM trend turned onto the detector."""
    t = np.deg2rad(-rotation_deg)
    return float(np.cos(t) * trend[0, 1] - np.sin(t) * trend[1, 1])


def test_center_of_mass_sign_makes_columns_bright() -> None:
    """Curl cannot see a 180° turn; the iCoM sign check must undo it."""
    phi = phase_object()
    data, _ = disc_patterns(true_com_px(phi), rotation_deg=170.0)
    res = center_of_mass(data, step_A=STEP_A)
    assert abs((res.rotation_deg - 170.0 + 180.0) % 360.0 - 180.0) < 0.5


def _write_hspy(path: Path, data: np.ndarray, *, calibrated: bool = True) -> Path:
    from octascope.sim.fourd import save_fourd

    return save_fourd(path, data, step_A=STEP_A, detector_sampling=DK if calibrated else None, origin_px=(16, 16),
                      metadata={"beam_energy": 300.0, "convergence_angle": 29.9})


@pytest.fixture(scope="module")
def counted() -> tuple[np.ndarray, np.ndarray]:
    phi = phase_object()
    data, _ = disc_patterns(true_com_px(phi), rotation_deg=25.0)
    rng = np.random.default_rng(0)
    return rng.poisson(2000 * data).astype(np.uint16), phi


@pytest.mark.parametrize("suffix", [".hspy", ".zspy"])
def test_read_hyperspy_fourd(tmp_path: Path, counted, suffix: str) -> None:
    data, phi = counted
    path = _write_hspy(tmp_path / f"scan{suffix}", data)
    head = read_fourd_header(path)
    assert head.shape == data.shape and head.step_A == pytest.approx(STEP_A) and head.detector_sampling == pytest.approx(DK)
    image, com = read_fourd(path)
    assert image.signal == "icom" and image.pixel_size_A == pytest.approx(STEP_A)
    assert image.dose_e_per_A2 == pytest.approx(data.sum(axis=(-2, -1)).mean() / STEP_A**2)
    assert abs(com.rotation_deg - 25.0) < 0.5
    # iCoM ∝ φ: the columns come out where φ has them, bright
    r = _corr(image.data, phi)
    assert r > 0.95, r


def test_read_py4dstem_h5(tmp_path: Path, counted) -> None:
    import py4DSTEM

    data, phi = counted
    cube = py4DSTEM.DataCube(data=data)
    cube.calibration.set_R_pixel_size(STEP_A)
    cube.calibration.set_R_pixel_units("A")
    cube.calibration.set_Q_pixel_size(DK)
    cube.calibration.set_Q_pixel_units("A^-1")
    path = tmp_path / "scan.h5"
    py4DSTEM.save(str(path), cube, mode="o")
    head = read_fourd_header(path)
    assert head.shape == data.shape and head.step_A == pytest.approx(STEP_A) and head.detector_sampling == pytest.approx(DK)
    image, com = read_fourd(path)
    assert abs(com.rotation_deg - 25.0) < 0.5
    assert _corr(image.data, phi) > 0.95


def _write_mib(path: Path, data: np.ndarray) -> Path:
    """A Quantum Detectors Merlin .mib (8-bit, one 384-byte header per frame) with its .hdr; the camera
    stores its rows bottom-up (RosettaSciIO flips them back)."""
    h, w, dy, dx = data.shape
    frames = data[..., ::-1, :].reshape(h * w, dy, dx).astype(np.uint8)
    with open(path, "wb") as fh:
        for i, frame in enumerate(frames):
            head = (f"MQ1,{i + 1:06d},00384,01,{dx:04d},{dy:04d},U08,   1x1,01,2021-05-07 18:56:59.151103,0.100000,0,0,0,"
                    "4.000000E+1,5.110000E+2,0.000000E+0,0.000000E+0,0.000000E+0,0.000000E+0,0.000000E+0,0.000000E+0,"
                    "3RX,068,511,000,000,000,000,000,000,100,255,100,125,100,100,080,100,090,030,128,004,255,126,128,"
                    "174,172,511,511,MQ1A,2021-05-07T16:56:59.151103718Z,100000000ns,6,")
            fh.write(head.encode().ljust(384, b"\x00"))
            fh.write(frame.tobytes())
    hdr = ("HDR,\tTime and Date Stamp (day, mnth, yr, hr, min, s):\t07/05/2021 18:56:38\n"
           "Chip ID:\tW559_G11, - , - , - \nChip Type (Medipix 3.0, Medipix 3.1, Medipix 3RX):\tMedipix 3RX\n"
           "Assembly Size (NX1, 2X2):\t   1x1\nChip Mode  (SPM, CSM, CM, CSCM):\tSPM\nCounter Depth (number):\t6\n"
           f"Frames in Acquisition (Number):\t{h * w}\nFrames per Trigger (Number):\t{w}\n"
           "Software Version:\t0.76.1.101\nEnd\t")
    path.with_suffix(".hdr").write_bytes(hdr.encode().ljust(2048, b" "))
    return path


def test_read_merlin_mib(tmp_path: Path, counted) -> None:
    data, phi = counted
    small = np.clip(data // 4, 0, 63)
    path = _write_mib(tmp_path / "scan.mib", small)
    head = read_fourd_header(path)
    assert head.shape == data.shape  # the scan shape from the .hdr (frames per trigger = a scan row)
    image, com = read_fourd(path, step_A=STEP_A)
    assert abs(com.rotation_deg - 25.0) < 0.5
    assert _corr(image.data, phi) > 0.95


def test_uncalibrated_scan_is_refused_with_the_override(tmp_path: Path, counted) -> None:
    data, _ = counted
    from octascope.sim.fourd import save_fourd

    path = tmp_path / "raw.hspy"
    import hyperspy.api as hs

    hs.signals.Signal2D(data).save(str(path))
    with pytest.raises(InputError, match="source.pixel_size_A"):
        read_fourd(path)
    assert save_fourd  # the writer is the library's


def test_fourd_memory_refused_from_the_header(tmp_path: Path, counted, monkeypatch) -> None:
    from octascope.input import fourd

    data, _ = counted
    path = _write_hspy(tmp_path / "scan.hspy", data)
    monkeypatch.setattr(fourd, "available_memory_bytes", lambda: 1000)  # the reader's memory check, as fourd calls it
    with pytest.raises(InputError, match="bin the detector"):
        read_fourd(path)


def test_source_path_dispatches_fourd_files(tmp_path: Path, counted) -> None:
    """``source.path=<4-D file>``: the iCoM image comes back, with the scan step as pixel size and the
    dose from the counts; the 2-D reader alone refuses the file with the pointer."""
    from octascope.input.readers import read_image
    from octascope.input.sources import load_source

    data, phi = counted
    path = _write_hspy(tmp_path / "scan.hspy", data)
    image, truth = load_source("file", path=str(path))
    assert truth is None and image.signal == "icom" and image.data.shape == data.shape[:2]
    assert image.metadata["format"] == "hspy" and abs(image.metadata["rotation_deg"] - 25.0) < 0.5
    assert _corr(image.data, phi) > 0.95
    with pytest.raises(InputError, match="drop source.frame"):
        load_source("file", path=str(path), frame=0)
    with pytest.raises(InputError, match="4D-STEM scan; give it as source.path"):
        read_image(path)
    mib = _write_mib(tmp_path / "scan.mib", np.clip(data // 4, 0, 63))
    with pytest.raises(InputError, match="source.pixel_size_A"):
        load_source("file", path=str(mib))  # a Merlin file has no scan calibration
    assert load_source("file", path=str(mib), pixel_size_A=STEP_A)[0].pixel_size_A == pytest.approx(STEP_A)
    with pytest.raises(InputError, match="4D-STEM file; give it as source.path"):
        read_image(mib, pixel_size_A=STEP_A)


def test_detector_calibrated_from_the_bright_field_disc(tmp_path: Path, counted) -> None:
    """No detector calibration in the file: k per pixel = k_α / (disc radius) from the mean pattern."""
    from octascope.sim.imaging import bright_field_radius

    data, _ = counted
    path = _write_hspy(tmp_path / "raw_detector.hspy", data, calibrated=False)
    assert read_fourd_header(path).detector_sampling is None
    image, com = read_fourd(path)
    # the fixture's disc has radius 8 px (edge ramp of 1 px): a 2 % error is a quarter of the ramp
    assert com.detector_sampling == pytest.approx(bright_field_radius(300e3, 29.9) / 8.0, rel=0.02)


def _write_empad(folder: Path, data: np.ndarray) -> Path:
    """An EMPAD scan: ``scan_x{W}_y{H}.raw`` (128x130 float32 frames: 128 rows of pixels, 2 footer rows)
    and the ``.xml`` that names it, with the scan's field of view [m] as EMPAD records it."""
    h, w, dy, dx = data.shape
    frames = np.zeros((h, w, 130, 128), np.float32)
    y0, x0 = (128 - dy) // 2, (128 - dx) // 2
    frames[:, :, y0:y0 + dy, x0:x0 + dx] = data
    raw = folder / f"scan_x{w}_y{h}.raw"
    frames.tofile(raw)
    fov_m = max(h, w) * STEP_A * 1e-10
    xml = (f'<root name="acquisition_1"><raw_file filename="{raw.name}"/><iom_measurements>'
           f"<full_scan_field_of_view><x>{fov_m!r}</x><y>{fov_m!r}</y><scale_factor>1.0</scale_factor>"
           "</full_scan_field_of_view></iom_measurements></root>")
    path = folder / "acquisition.xml"
    path.write_text(xml)
    return path


def test_read_empad(tmp_path: Path, counted) -> None:
    data, phi = counted
    path = _write_empad(tmp_path, data)
    head = read_fourd_header(path)
    assert head.shape == (40, 40, 128, 128) and head.step_A == pytest.approx(STEP_A, rel=1e-3)
    image, com = read_fourd(path)
    assert abs(com.rotation_deg - 25.0) < 0.5
    assert _corr(image.data, phi) > 0.95


@pytest.mark.parametrize("name, content", [
    ("empty.mib", b""),
    ("noise.mib", b"\x00\x01garbage" * 50),
    ("noise.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 64),
    ("page.xml", b"<html><body>not an EMPAD acquisition</body></html>"),
    ("missing.h5", None),
])
def test_damaged_fourd_files_are_one_line_input_errors(tmp_path: Path, name: str, content: bytes | None) -> None:
    from octascope.input.sources import load_source

    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load_source("file", path=str(path), pixel_size_A=STEP_A)
    message = str(err.value)
    assert "\n" not in message and name in message


def test_truncated_mib_is_refused(tmp_path: Path, counted) -> None:
    from octascope.input.sources import load_source

    data, _ = counted
    path = _write_mib(tmp_path / "cut.mib", np.clip(data // 4, 0, 63))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError) as err:
        load_source("file", path=str(path), pixel_size_A=STEP_A)
    assert "\n" not in str(err.value) and "cut.mib" in str(err.value)


def test_icom_noise_of_counted_vacuum_matches_the_icom_noise_model() -> None:
    """Vacuum counted at 16 e per pattern: the DPC components carry white noise of σ = k_α/2·√E[1/M]
    per position (octascope.sim.noise.com_noise_sigma, the model of simulated iCoM images), and their
    integral the 1/k² noise power that the locator measures (log-log slope ≈ -2)."""
    from octascope.analysis.noise_spectrum import estimate_noise_spectrum
    from octascope.sim.imaging import bright_field_radius, integrate_gradient
    from octascope.sim.noise import com_noise_sigma

    h = w = 64
    step, dose = 0.4, 100.0
    disc, _ = disc_patterns(np.zeros((2, h, w)), radius_px=8.0)
    counts = np.random.default_rng(3).poisson(dose * step**2 * disc).astype(np.uint16)
    dk = bright_field_radius(300e3, 29.9) / 8.0
    res = center_of_mass(counts, step_A=step, detector_sampling=dk, rotation_deg=0.0, transpose=False)
    expected = com_noise_sigma(signal="icom", dose_e_per_A2=dose, pixel_size_A=step)
    # 2 x 4096 samples: the SD of a sample SD is 1.1 %; the disc's one-pixel edge ramp adds ≈ 2 % to its variance
    assert res.com.std() == pytest.approx(expected, rel=0.05)
    icom = integrate_gradient(res.com[0], res.com[1], step, boundary="periodic")
    slope = estimate_noise_spectrum(icom, step).slope()
    assert -2.4 < slope < -1.6, slope
