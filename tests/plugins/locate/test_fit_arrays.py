"""The locator's fit on NumPy (the CPU) and on torch (a GPU; here torch on the CPU runs the same code):
the same fit from either, no torch import for a CPU fit, and the few functions that differ."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from octascope.input.synthetic import SyntheticSpec, make_synthetic
from octascope_plugins.locate import arrays as arrays_mod
from octascope_plugins.locate.arrays import NUMPY, TorchArrays, fit_arrays
from octascope_plugins.locate.gaussian import GaussianLocator
from octascope_plugins.locate.gaussian_fit import fit_gaussians
from octascope_plugins.locate.peaks import refine_com


@pytest.fixture(scope="module")
def starts():
    """6 x 6 cells at 300 e/Å² and 0.2 Å/px: weak and strong columns, restarts and edge patches."""
    image, _ = make_synthetic(SyntheticSpec(n_cells=(6, 6), dose_e_per_A2=300.0, pixel_size_A=0.2, seed=4))
    loc = GaussianLocator(device="cpu")
    x0, y0, _, _ = loc.options.find(image.data, image.pixel_size_A)
    x, y = refine_com(image.data, x0, y0, radius_px=loc.options.com_radius_A / image.pixel_size_A)
    return image, x, y, loc.options


def test_numpy_and_torch_give_the_same_fit(starts):
    image, x, y, options = starts
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    a = fit_gaussians(np.asarray(image.data), x, y, options, pixel_size_A=image.pixel_size_A, arrays=NUMPY)
    b = fit_gaussians(np.asarray(image.data), x, y, options, pixel_size_A=image.pixel_size_A, arrays=TorchArrays("cpu"))
    assert len(a.x) > 100 and a.ok.sum() > 100
    np.testing.assert_array_equal(a.ok, b.ok)
    assert a.iterations == b.iterations
    # the same arithmetic in float64 in both: positions to 1e-8 px (measured: ≤ 3e-11 px at 100-5,000 e/Å²)
    np.testing.assert_allclose(a.x, b.x, rtol=0, atol=1e-8)
    np.testing.assert_allclose(a.y, b.y, rtol=0, atol=1e-8)
    np.testing.assert_allclose(a.x_err[a.ok], b.x_err[b.ok], rtol=1e-7)
    np.testing.assert_allclose(a.amplitude[a.ok], b.amplitude[b.ok], rtol=1e-7)
    np.testing.assert_array_equal(a.pairs, b.pairs)
    np.testing.assert_allclose(a.pair_cov, b.pair_cov, rtol=1e-6, atol=1e-12)


def test_cpu_fit_does_not_import_torch():
    code = ("import sys\n"
            "from octascope.input.synthetic import SyntheticSpec, make_synthetic\n"
            "from octascope_plugins.locate.gaussian import GaussianLocator\n"
            "image, _ = make_synthetic(SyntheticSpec(n_cells=(3, 3), dose_e_per_A2=1000.0, seed=1))\n"
            "cols = GaussianLocator(device='cpu').locate(image)\n"
            "assert len(cols) > 20 and cols.fit_ok.all(), cols\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_auto_device_asks_torch_only_where_an_nvidia_driver_is(monkeypatch):
    def torch_import(*_args, **_kwargs):
        raise AssertionError("select_device (which imports torch) was called")

    monkeypatch.setattr(arrays_mod, "select_device", torch_import)
    monkeypatch.setattr(arrays_mod, "nvidia_driver_present", lambda: False)
    assert fit_arrays("auto") is NUMPY
    assert fit_arrays("cpu") is NUMPY
    monkeypatch.setattr(arrays_mod, "nvidia_driver_present", lambda: True)
    with pytest.raises(AssertionError, match="imports torch"):
        fit_arrays("auto")  # with a driver, torch is asked whether CUDA is there
    with pytest.raises(AssertionError, match="imports torch"):
        fit_arrays("cuda")


@pytest.mark.parametrize("xp", ["numpy", "torch"])
def test_batched_solve_reports_singular_matrices(xp):
    arrays = NUMPY if xp == "numpy" else TorchArrays("cpu")
    a = np.array([[[2.0, 0.0], [0.0, 4.0]], [[1.0, 2.0], [2.0, 4.0]], [[1.0, 1.0], [0.0, 1.0]]])
    b = np.array([[[2.0], [4.0]], [[1.0], [1.0]], [[3.0], [1.0]]])
    x, ok = arrays.solve(arrays.asarray(a), arrays.asarray(b))
    x, ok = arrays.to_numpy(x), arrays.to_numpy(ok)
    assert ok.tolist() == [True, False, True]
    np.testing.assert_allclose(x[[0, 2], :, 0], [[1.0, 1.0], [2.0, 1.0]])
    out = arrays.index_add(arrays.zeros((3, 2)), arrays.index([0, 2, 0]), arrays.asarray(np.ones((3, 2))))
    np.testing.assert_array_equal(arrays.to_numpy(out), [[2.0, 2.0], [0.0, 0.0], [1.0, 1.0]])


@pytest.mark.parametrize("xp", ["numpy", "torch"])
def test_nanquantile_of_rows_with_missing_pixels(xp):
    import warnings

    arrays = NUMPY if xp == "numpy" else TorchArrays("cpu")
    rng = np.random.default_rng(0)
    a = rng.random((200, 37))
    a[rng.random(a.shape) < 0.3] = np.nan  # pixels off the image or outside the background window
    a[5] = np.nan
    a[7, 1:] = np.nan
    a[7, 0] = 0.25
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanquantile(a, 0.1, axis=1)
    got = arrays.to_numpy(arrays.nanquantile(arrays.asarray(a), 0.1, 1))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
    assert np.isnan(got[5]) and got[7] == 0.25
