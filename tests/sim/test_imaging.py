"""octascope.sim.imaging: tiny abTEM images in weak-phase and multislice modes, frame and errors."""

from __future__ import annotations

import numpy as np
import pytest

from octascope.core.errors import InputError
from octascope.sim.imaging import simulate_image
from octascope.sim.structure import build_nanocube

pytestmark = pytest.mark.abtem

KW = dict(pixel_size_A=0.5, margin_A=3.0, sampling_A=0.125, num_workers=1)


@pytest.fixture(scope="module")
def tiny():
    atoms = build_nanocube(n_cells=1, phase="cubic", charge_balance=False)  # 1 Pb column, 4 X, 4 Cs
    return atoms.get_chemical_symbols(), atoms.get_positions()


@pytest.fixture(scope="module")
def weak(tiny):
    return {sig: simulate_image(*tiny, mode="weak_phase", signal=sig, **KW) for sig in ("icom", "idpc")}


def test_weak_phase_peak_on_pb_column(tiny, weak):
    symbols, pos = tiny
    sim = weak["idpc"]
    pb = pos[np.array(symbols) == "Pb", :2]
    xy = sim.frame.to_image(pb)[0]
    r, c = np.unravel_index(np.argmax(sim.image), sim.image.shape)
    assert abs(c * 0.5 - xy[0]) <= 0.5 and abs(r * 0.5 - xy[1]) <= 0.5
    # the Pb+2I column (Z 188) is brighter than a 2Cs column (Z 110): iDPC ~ projected potential
    cs = sim.frame.to_image(pos[np.array(symbols) == "Cs", :2])
    cs_val = sim.image[np.rint(cs[:, 1] / 0.5).astype(int), np.rint(cs[:, 0] / 0.5).astype(int)]
    assert sim.image.max() > 1.1 * cs_val.max()
    assert abs(np.median(sim.image[:2])) < 0.05 * sim.image.max()  # vacuum ~ 0


@pytest.mark.slow  # 6 s on 2 shared cores (900 probe positions); the window test below is the default-run check
def test_multislice_icom_matches_weak_phase(tiny, weak):
    """Thin specimen: the multislice iCoM equals φ⊗P/2π, the weak-phase result, in absolute units."""
    ms = simulate_image(*tiny, mode="multislice", signal="icom", **KW)
    wp = weak["icom"]
    assert ms.image.shape == wp.image.shape
    assert np.corrcoef(ms.image.ravel(), wp.image.ravel())[0, 1] > 0.99
    assert ms.image.max() / wp.image.max() == pytest.approx(1.0, abs=0.1)


def test_multislice_icom_window_matches_weak_phase(tiny):
    """The same in absolute units over a 8x6 Å scan window around the Pb column (192 probe positions,
    2.6 s; measured: correlation 0.999, max ratio 0.95)."""
    box = [4.0, 4.0, 12.0, 10.0]
    ms = simulate_image(*tiny, mode="multislice", signal="icom", scan_window_A=box, window_padding_A=8.0, **KW)
    wp = simulate_image(*tiny, mode="weak_phase", signal="icom", scan_window_A=box, **KW)
    assert ms.image.shape == wp.image.shape == (12, 16)
    assert np.corrcoef(ms.image.ravel(), wp.image.ravel())[0, 1] > 0.99
    assert ms.image.max() / wp.image.max() == pytest.approx(1.0, abs=0.1)


@pytest.mark.slow  # 5 s on 2 shared cores; multislice iDPC over a window runs by default (test_sim_support)
def test_multislice_idpc(tiny, weak):
    ms = simulate_image(*tiny, mode="multislice", signal="idpc", **KW)
    assert np.corrcoef(ms.image.ravel(), weak["idpc"].image.ravel())[0, 1] > 0.95
    assert ms.com.shape == (2,) + ms.image.shape


def test_scan_rotation_moves_columns(tiny):
    sim = simulate_image(*tiny, mode="weak_phase", scan_rotation_deg=30.0, **KW)
    symbols, pos = tiny
    cs = sim.frame.to_image(pos[np.array(symbols) == "Cs", :2])
    vec = cs - sim.frame.to_image(pos[np.array(symbols) == "Pb", :2])[0]
    angles = np.degrees(np.arctan2(vec[:, 1], vec[:, 0])) % 90
    assert angles == pytest.approx(np.full(len(angles), 75.0), abs=1e-6)  # 45° diagonals rotated by 30°
    vals = sim.image[np.rint(cs[:, 1] / 0.5).astype(int), np.rint(cs[:, 0] / 0.5).astype(int)]
    assert np.all(vals > 0.3 * vals.max()) and vals.min() > np.percentile(sim.image, 75)


def test_bad_imaging_inputs(tiny):
    with pytest.raises(InputError, match="mode"):
        simulate_image(*tiny, mode="holography")
    with pytest.raises(InputError, match="field of view"):
        simulate_image(*tiny, field_of_view_A=5.0)


def _probe_grid(n=256, s=0.1):
    import abtem

    probe = abtem.Probe(energy=300e3, semiangle_cutoff=29.9, gpts=(n, n), extent=(n * s, n * s))
    wave = np.asarray(probe.build((0.0, 0.0)).compute().array).squeeze().T  # [y, x]
    k = np.fft.fftfreq(n, d=s)
    return wave, k[None, :], k[:, None]


def test_segment_transfer_of_k_x_is_the_com():
    """The first-order detector transfer with D = k_x is the CoM's, i q_x P̃(q) (P the probe intensity)."""
    from octascope.sim.imaging import segment_transfer

    wave, kx, ky = _probe_grid(128, 0.125)
    pr = np.abs(wave) ** 2
    k_com = 1j * kx * np.fft.fft2(pr / pr.sum())
    k_d = segment_transfer(np.fft.fft2(wave), np.broadcast_to(kx, wave.shape))
    assert np.abs(k_d - k_com).max() < 1e-5 * np.abs(k_com).max()


def test_quadrant_transfer_against_the_com():
    """π k_α/(2√2) × the quadrant difference is the CoM at low frequency and 1.1 / 1.24 / 1.41 times it at
    0.5 / 1.0 / 1.5 Å⁻¹ along x (the uniform-disc values, docs/simulated-dose.md); with the detector's
    edge at exactly α half of abTEM's tapered disc edge is missed and the lowest frequencies drop."""
    from octascope.sim.imaging import DEFAULT_OUTER_FACTOR, dpc_com_scale, quadrant_masks, segment_transfer

    n, s = 512, 0.1
    wave, kx, ky = _probe_grid(n, s)
    pr = np.abs(wave) ** 2
    k_com = 1j * kx * np.fft.fft2(pr / pr.sum())
    scale = dpc_com_scale(300e3, 29.9)

    def ratio(outer, q):
        seg = quadrant_masks(kx, ky, 0.019687, 0.0, outer)
        k_d = segment_transfer(np.fft.fft2(wave), seg[0] - seg[2]) * scale
        i = int(round(q * n * s))
        return float((k_d[0, i] / k_com[0, i]).real)

    outer = DEFAULT_OUTER_FACTOR * 29.9
    assert ratio(outer, 0.02) == pytest.approx(1.0, abs=0.01)
    for q, expected in ((0.5, 1.10), (1.0, 1.234), (1.5, 1.40)):
        assert ratio(outer, q) == pytest.approx(expected, abs=0.02)
    assert ratio(29.9, 0.02) < 0.9


def test_multislice_detector_signals(tiny):
    """Multislice keeps what the noise counts: four segments (iDPC) whose difference is the CoM field,
    the captured fraction and second moments of the pattern (iCoM); in vacuum the disc's values."""
    from octascope.sim.imaging import bright_field_radius, dpc_com_scale

    box = [0.0, 0.0, 3.0, 3.0]  # a vacuum corner and the particle's edge
    dpc = simulate_image(*tiny, mode="multislice", signal="idpc", scan_window_A=box, window_padding_A=6.0, **KW)
    seg, vac = dpc.detector, np.asarray(dpc.info["detector_vacuum"])
    assert seg.shape == (4,) + dpc.image.shape and vac.sum() == pytest.approx(1.0, abs=1e-3)
    com_x = dpc_com_scale(300e3, 29.9) * (seg[0] - seg[2] - (vac[0] - vac[2]))
    np.testing.assert_allclose(dpc.com[0], com_x, atol=1e-5)
    com = simulate_image(*tiny, mode="multislice", signal="icom", scan_window_A=box, window_padding_A=6.0, **KW)
    captured, kxx, kyy, kxy = com.detector
    assert np.all(captured <= 1.001) and np.all(kxx >= com.com[0] ** 2 - 1e-6)
    k2 = bright_field_radius(300e3, 29.9) ** 2 / 4
    assert kxx[0, 0] == pytest.approx(k2, rel=0.05) and kyy[0, 0] == pytest.approx(k2, rel=0.05)


def test_depth_resolved_weak_phase(tiny):
    """Each slice with the probe at its own depth: a 6 Å thin cell focused in its middle images like the
    projected model; focused 30 Å away, its columns blur (lower peak)."""
    kw = dict(KW, pixel_size_A=0.25)
    proj = simulate_image(*tiny, mode="weak_phase", signal="icom", **kw)
    mid = simulate_image(*tiny, mode="weak_phase", signal="icom", depth_resolved=True, defocus_A=5.0, **kw)
    far = simulate_image(*tiny, mode="weak_phase", signal="icom", depth_resolved=True, defocus_A=35.0, **kw)
    assert np.corrcoef(mid.image.ravel(), proj.image.ravel())[0, 1] > 0.99
    assert mid.image.max() / proj.image.max() == pytest.approx(1.0, abs=0.05)
    assert far.image.max() < 0.8 * proj.image.max()
    dpc = simulate_image(*tiny, mode="weak_phase", signal="idpc", depth_resolved=True, defocus_A=5.0, **kw)
    assert np.corrcoef(dpc.image.ravel(), proj.image.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("signal", [pytest.param("icom", marks=pytest.mark.slow), "idpc"])  # icom: 5-7 s
def test_prism_scan_matches_one_multislice_per_position(tiny, signal):
    """``prism_interpolation``: abTEM's PRISM S-matrix gives the exact scan's image (the probe in
    half the cell; iDPC with the vacuum offset of the same scan method): on the 8x6 Å window
    around the Pb column, correlation > 0.999 and the same scale within 3 %."""
    box = [4.0, 4.0, 12.0, 10.0]
    kw = dict(KW, mode="multislice", signal=signal, scan_window_A=box, window_padding_A=8.0)
    exact = simulate_image(*tiny, **kw)
    prism = simulate_image(*tiny, prism_interpolation=2, **kw)
    a, b = exact.image - exact.image.mean(), prism.image - prism.image.mean()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999
    assert (a * b).sum() / (a * a).sum() == pytest.approx(1.0, abs=0.03)
    assert prism.info["prism_interpolation"] == 2


def test_prism_options_are_checked(tiny):
    from octascope.sim.imaging import ImagingOptions

    for bad, match in ((0, "integer >= 1"), (True, "must be an integer"), (2.5, "must be an integer")):
        with pytest.raises(InputError, match=match):
            ImagingOptions(mode="multislice", prism_interpolation=bad)
    with pytest.raises(InputError, match="needs mode=multislice"):
        ImagingOptions(prism_interpolation=2)
    # the potential grid of this window is 2 x 64 = 128 points a side... 3 does not divide it
    with pytest.raises(InputError, match="must divide the potential grid"):
        simulate_image(*tiny, **dict(KW, mode="multislice", signal="icom", scan_window_A=[4.0, 4.0, 12.0, 10.0],
                                     window_padding_A=8.0, prism_interpolation=3))
