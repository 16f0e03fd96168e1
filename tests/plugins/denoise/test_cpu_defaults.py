"""CPU defaults of the network denoisers: thread choice, iterations sized to the image, early stops.

Each test fails if its feature is removed: the thread rule (always torch's default), the work
budget (always n_iterations), the DIP whitened stop or the S2SRED convergence stop (runs to the end).
"""

import numpy as np
import pytest

import octascope
from octascope.core import devices as torch_runtime
from octascope.core.errors import PluginParameterError
from octascope.input.synthetic import make_synthetic
from octascope_plugins.denoise.dip import DIPOptions
from octascope_plugins.denoise.s2sred import S2SREDOptions

QUIET = dict(progress=False, device="cpu")


@pytest.fixture(scope="module")
def noisy():
    return make_synthetic(n_cells=(2, 2), pixel_size_A=0.3, margin_A=3.0, dose_e_per_A2=300.0, seed=2)


def _load(monkeypatch, cores, load):
    monkeypatch.setattr(torch_runtime.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(torch_runtime.os, "getloadavg", lambda: (load, load, load))


@pytest.mark.parametrize("cores, load, expected", [
    (2, 5.7, 1),   # the shared 2-core machine under load: one thread
    (2, 0.8, 1),   # round(1.2)
    (2, 0.2, 2),   # idle: both cores
    (16, 3.0, 13),
    (4, 0.0, 4),   # never more than the cores
])
def test_threads_are_the_free_cores(monkeypatch, cores, load, expected):
    _load(monkeypatch, cores, load)
    assert torch_runtime.free_cpu_threads() == expected
    assert torch_runtime.resolve_cpu_threads(None) == expected


def test_cpu_threads_parameter_overrides_the_rule(monkeypatch):
    _load(monkeypatch, 2, 9.0)
    assert torch_runtime.resolve_cpu_threads(3) == 3
    assert torch_runtime.resolve_cpu_threads(0) is None  # torch's own setting


@pytest.mark.slow
def test_denoisers_use_the_rule_by_default(monkeypatch, noisy):
    image, _ = noisy
    reg = octascope.get_registry()
    _load(monkeypatch, 2, 9.0)
    out = reg.create("denoiser", "dip", n_iterations=2, early_stop=False, **QUIET).denoise(image)
    assert out.metadata["denoiser"]["cpu_threads_used"] == 1
    _load(monkeypatch, 8, 0.0)
    out = reg.create("denoiser", "s2sred", n_iterations=1, n_mc_passes=1, encoder_width=4, decoder_width=8,
                     **QUIET).denoise(image)
    assert out.metadata["denoiser"]["cpu_threads_used"] == 8
    out = reg.create("denoiser", "s2sred", n_iterations=1, n_mc_passes=1, encoder_width=4, decoder_width=8,
                     cpu_threads=2, **QUIET).denoise(image)
    assert out.metadata["denoiser"]["cpu_threads_used"] == 2


def test_iterations_are_sized_to_the_image():
    dip = DIPOptions()  # defaults: budget 32 Mpx·iterations, cap 2000
    assert dip.iterations_for(256 * 256, on_cpu=True) == 488
    assert dip.iterations_for(512 * 512, on_cpu=True) == 122
    assert dip.iterations_for(64 * 64, on_cpu=True) == 2000  # small: the cap n_iterations binds
    assert dip.iterations_for(512 * 512, on_cpu=False) == 2000  # the budget is for the CPU only
    assert DIPOptions(cpu_work_budget=None).iterations_for(512 * 512, on_cpu=True) == 2000
    s2s = S2SREDOptions()
    assert s2s.iterations_for(4 * 64 * 64, on_cpu=True) == 300  # crops: n_iterations binds
    assert s2s.iterations_for(256 * 256, on_cpu=True) == 76  # whole-image training of a 256² image
    with pytest.raises(PluginParameterError, match="cpu_work_budget"):
        DIPOptions(cpu_work_budget=0.0)


def test_dip_budget_caps_the_run(noisy):
    image, _ = noisy  # 63² -> padded 64²
    out = octascope.get_registry().create("denoiser", "dip", cpu_work_budget=5 * 64 * 64 / 1e6, early_stop=False,
                                          **QUIET).denoise(image)
    meta = out.metadata["denoiser"]
    assert meta["iterations_planned"] == 5 and meta["iterations_run"] == 5
    assert meta["stop_reason"] == "cpu_work_budget reached"


@pytest.mark.slow
def test_dip_defaults_stop_by_the_discrepancy_principle(noisy):
    image, _ = noisy
    meta = octascope.get_registry().create("denoiser", "dip", **QUIET).denoise(image).metadata["denoiser"]
    assert meta["stop_reason"] == "discrepancy principle"
    assert meta["stopped_at"] < meta["iterations_planned"]


@pytest.mark.slow
def test_s2sred_stops_when_the_estimate_converges(noisy):
    image, truth = noisy
    tiny = dict(batch_size=2, patch_px=32, encoder_width=8, decoder_width=16, n_mc_passes=4, red_every=20,
                red_passes=2, learning_rate=3e-3, min_iterations=40, check_every=20, n_iterations=400, **QUIET)
    reg = octascope.get_registry()
    meta = reg.create("denoiser", "s2sred", **tiny).denoise(image).metadata["denoiser"]
    assert meta["stop_reason"] == "estimate converged", meta["change_over_noise"]
    assert meta["stopped_at"] < 400
    assert meta["change_over_noise"][-1] <= 0.3  # the default stop_tolerance
    assert all(c > 0.3 for c in meta["change_over_noise"][:-1])
    # without the early stop it runs to n_iterations
    off = reg.create("denoiser", "s2sred", **{**tiny, "n_iterations": 100, "early_stop": False}).denoise(image)
    assert off.metadata["denoiser"]["iterations_run"] == 100 and off.metadata["denoiser"]["stopped_at"] is None
