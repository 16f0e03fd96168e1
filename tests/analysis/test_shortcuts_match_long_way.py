"""The fast paths give the same answers as the long way round."""

from __future__ import annotations

import numpy as np

from octascope.analysis import noise_spectrum as ns
from octascope.core.model import BraggPeaks
from octascope.input.synthetic import SyntheticSpec, make_synthetic
from octascope_plugins.locate.peaks import CandidateSearch, near_significant


def test_noise_spectrum_and_band_pass_are_shared_for_the_same_pixels_only():
    img, _ = make_synthetic(SyntheticSpec(n_cells=(4, 4), dose_e_per_A2=500.0, pixel_size_A=0.2, seed=0))
    data = img.data
    a = ns.estimate_noise_spectrum(data, 0.2)
    assert ns.estimate_noise_spectrum(data.copy(), 0.2) is a  # same pixels: computed once
    assert ns.estimate_noise_spectrum(data, 0.21) is not a  # another calibration: computed again
    changed = data.copy()
    changed[3, 3] += 1.0
    b = ns.estimate_noise_spectrum(changed, 0.2)
    assert b is not a
    fresh = ns._estimate_noise_spectrum(changed, 0.2, 1.5, 5)
    assert np.array_equal(b.power, fresh.power) and np.array_equal(b.k_A, fresh.k_A)
    bp, tr = ns.band_pass(data, 0.2, inner_sigma_A=0.25, outer_sigma_A=0.8)
    bp2, _ = ns.band_pass(data, 0.2, inner_sigma_A=0.25, outer_sigma_A=1.0)
    assert not np.array_equal(bp, bp2)


def test_ring_median_is_the_median_of_each_ring():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(64, 80))
    spec = ns._estimate_noise_spectrum(data, 0.2, 1.5, 1)  # no smoothing: the raw ring medians
    u = ns.periodic_component(data)
    power = np.abs(np.fft.fft2(u - u.mean())) ** 2 / data.size
    k = ns.radial_frequency_A(data.shape, 0.2)
    dk = 1.5 / (64 * 0.2)
    ring = np.floor(k / dk).astype(int)
    for r in (1, 5, 20):
        assert np.isclose(spec.power[r], np.median(power[ring == r]) / np.log(2.0))


def test_coarse_fringe_power_equals_the_full_grid_filtered_energy():
    """The crystal region's local lattice energy is computed per Bragg peak on a coarse grid
    (region._peak_amplitudes); it must equal the square of the image filtered at full resolution
    with the same Gaussian windows at ±k, averaged locally (the fringe's 2|c|²)."""
    from scipy import ndimage

    from octascope.analysis.region import _peak_amplitudes, upsample_periodic

    shape, ps, width = (128, 160), 0.2, 1.0 / (2 * np.pi * 3.0)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] * ps
    k = np.array([0.3125, 0.0])  # on the FFT grid: 0.3125 = 10 / (160 * 0.2)
    envelope = np.exp(-(((xx - 16.0) ** 2 + (yy - 12.8) ** 2) / (2 * 6.0**2)))
    image = envelope * np.cos(2 * np.pi * (k[0] * xx + k[1] * yy))
    u_hat = np.fft.fft2(image)
    peaks = BraggPeaks(kx_A=np.array([k[0]]), ky_A=np.array([k[1]]), snr=np.ones(1))
    power, _, step = _peak_amplitudes(u_hat, ps, peaks, width)
    kx = np.fft.fftfreq(shape[1], d=ps)[None, :]
    ky = np.fft.fftfreq(shape[0], d=ps)[:, None]
    window = sum(np.exp(-((kx - s * k[0]) ** 2 + (ky - s * k[1]) ** 2) / (2 * width**2)) for s in (1, -1))
    filtered = np.fft.ifft2(u_hat * window).real
    smooth = ndimage.gaussian_filter(filtered**2, 1.5 / ps, mode="wrap")  # averages out the 2k ripple
    coarse = upsample_periodic(ndimage.gaussian_filter(power[0], 1.5 / step, mode="wrap"), shape)
    centre = smooth > 0.5 * smooth.max()
    assert np.allclose(coarse[centre], smooth[centre], rtol=0.05)
    assert np.unravel_index(np.argmax(coarse), shape) == np.unravel_index(np.argmax(smooth), shape)


def test_site_candidates_far_from_every_significant_one_are_dropped():
    x = np.array([0.0, 10.0, 30.0, 200.0])
    y = np.zeros(4)
    keep = near_significant(x, y, np.array([True, False, False, False]), reach_px=40.0)
    assert keep.tolist() == [True, True, True, False]
    assert near_significant(x, y, np.zeros(4, bool), 40.0).tolist() == [False] * 4
    # an image: a particle in a wide vacuum keeps no site candidate far out in the vacuum
    img, _ = make_synthetic(SyntheticSpec(n_cells=(4, 4), dose_e_per_A2=300.0, pixel_size_A=0.2, margin_A=40.0, seed=0))
    search = CandidateSearch()
    x, y, z, thr = search.find(img.data, 0.2)
    sig = z >= thr
    # weak candidates must be there (else the distance check below checks nothing: 14 of 95 here)
    assert sig.any() and (~sig).any()
    from scipy.spatial import cKDTree

    d, _ = cKDTree(np.c_[x[sig], y[sig]]).query(np.c_[x[~sig], y[~sig]])
    assert d.max() * 0.2 <= search.site_reach_A


def test_second_figure_format_keeps_the_first_layout(tmp_path):
    """save_figure solves the constrained layout once: the second file is drawn with the same
    positions (the PNG saved again after the first save is pixel for pixel the same)."""
    import imageio.v3 as iio
    from matplotlib.figure import Figure

    from octascope.results.outputs import save_figure

    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(np.arange(100.0).reshape(10, 10))
    fig.colorbar(im, ax=ax, label="θ [deg]")
    ax.set_xlabel("x [Å]")
    first = tmp_path / "a"
    first.mkdir()
    written = save_figure(fig, first, "map", ("png", "svg"), dpi=50)
    assert set(written) == {"map.png", "map.svg"} and all(p.stat().st_size > 0 for p in written.values())
    assert fig.get_layout_engine() is None or not fig.get_layout_engine().__class__.__name__.startswith("Constrained")
    again = tmp_path / "b"
    again.mkdir()
    save_figure(fig, again, "map", ("png",), dpi=50)
    assert np.array_equal(iio.imread(first / "map.png"), iio.imread(again / "map.png"))
