"""Chained denoisers: same as applying the steps by hand, variance of the last step, clear errors, Hydra configs."""

from __future__ import annotations

import numpy as np
import pytest

from octascope.core.errors import PluginError
from octascope.core.model import Image
from octascope.core.registry import get_registry

# a tiny S2SRED: deterministic on the CPU, a second or so
TINY_S2S = {"n_iterations": 2, "patch_px": None, "encoder_width": 4, "decoder_width": 8, "n_mc_passes": 3,
            "red_every": 1, "device": "cpu", "progress": False, "cpu_threads": 1}


@pytest.fixture(scope="module")
def registry():
    return get_registry(load_entrypoints=False)


@pytest.fixture(scope="module")
def image():
    from octascope.input.synthetic import make_synthetic

    img, _ = make_synthetic(n_cells=(2, 2), pixel_size_A=0.25, dose_e_per_A2=300.0, seed=2)
    return img


def test_chain_equals_the_steps_applied_by_hand(registry, image):
    chain = registry.create("denoiser", "chain", steps=["absf", {"name": "bm3d", "sigma_scale": 1.5}])
    out = chain.denoise(image)
    by_hand = registry.create("denoiser", "bm3d", sigma_scale=1.5).denoise(registry.create("denoiser", "absf").denoise(image))
    # BM3D runs on one thread by default (threads: 1), so the same steps give the same pixels; with
    # all cores its aggregation order varies and a loaded machine changed 2.6 % of them by up to 3e-4
    np.testing.assert_array_equal(out.data, by_hand.data)
    assert out.pixel_size_A == image.pixel_size_A and out.shape == image.shape
    meta = out.metadata["denoiser"]
    assert meta["name"] == "chain"
    assert [s["name"] for s in meta["steps"]] == ["absf", "bm3d"]
    assert meta["steps"][1]["sigma_scale"] == 1.5
    assert out.variance is None and meta["variance_from"] is None


@pytest.mark.slow
def test_absf_then_s2sred_carries_the_s2sred_variance(registry, image):
    chain = registry.create("denoiser", "chain", steps=["absf", {"name": "s2sred", **TINY_S2S}])
    out = chain.denoise(image)
    pre = registry.create("denoiser", "absf").denoise(image)
    by_hand = registry.create("denoiser", "s2sred", **TINY_S2S).denoise(pre)
    # BM3D runs on one thread by default (threads: 1), so the same steps give the same pixels; with
    # all cores its aggregation order varies and a loaded machine changed 2.6 % of them by up to 3e-4
    np.testing.assert_array_equal(out.data, by_hand.data)
    assert out.variance is not None
    np.testing.assert_array_equal(out.variance, by_hand.variance)
    assert out.metadata["denoiser"]["variance_from"] == "2:s2sred"
    assert out.metadata["denoiser"]["variance_dropped"] == []


@pytest.mark.slow
def test_an_earlier_steps_variance_is_dropped_once_a_later_step_changes_the_image(registry, image):
    out = registry.create("denoiser", "chain", steps=[("s2sred", TINY_S2S), "bm3d"]).denoise(image)
    assert out.variance is None
    assert out.metadata["denoiser"]["variance_dropped"] == ["1:s2sred"]
    # the identity keeps it: the image has not changed
    kept = registry.create("denoiser", "chain", steps=[("s2sred", TINY_S2S), "none"]).denoise(image)
    assert kept.variance is not None and kept.metadata["denoiser"]["variance_from"] == "1:s2sred"


def test_a_step_that_passes_a_stale_variance_on_loses_it(registry, image):
    class Shift:
        """Changes the data but keeps whatever variance came in (a careless third-party step)."""

        name = "shift"

        def denoise(self, img):
            return img.replace(data=img.data + 1.0)

    var_image = image.replace(variance=np.ones(image.shape, np.float32))
    out = registry.create("denoiser", "chain", steps=[Shift()]).denoise(var_image)
    assert out.variance is None
    assert out.metadata["denoiser"]["variance_dropped"] == ["input"]


def test_unknown_step_is_a_one_line_error_naming_the_valid_ones(registry):
    with pytest.raises(PluginError) as info:
        registry.create("denoiser", "chain", steps=["absf", "nosuch"])
    msg = str(info.value)
    assert "\n" not in msg
    assert "step 2" in msg and "'nosuch'" in msg
    for known in ("absf", "bm3d", "s2sred", "dip", "none"):
        assert known in msg


@pytest.mark.parametrize("steps, fragment", [
    ([], "at least one step"),
    ([{"sigma": 1.0}], "no 'name'"),
    ([{"name": "bm3d", "nosuch": 1}], "nosuch"),
    ([3], "step 1"),
])
def test_bad_steps_are_one_line_errors(registry, steps, fragment):
    with pytest.raises(PluginError, match=fragment) as info:
        registry.create("denoiser", "chain", steps=steps)
    assert "\n" not in str(info.value)


def test_comma_string_and_python_api(registry, image):
    import octascope

    chain = registry.create("denoiser", "chain", steps="absf, bm3d")
    assert [s.name for s in chain.steps] == ["absf", "bm3d"]
    result = octascope.analyze(image, denoiser=("chain", {"steps": ["absf", "bm3d"]}), metrics=[], progress=None,
                               registry=registry)
    # same steps, same image; BM3D's threaded transforms may round differently run to run (a few float32 ulp)
    direct = chain.denoise(image).data
    np.testing.assert_allclose(result.denoised.data, direct, rtol=0, atol=8 * np.finfo(np.float32).eps * float(np.abs(direct).max()))


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from octascope.app.cli import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=True)


def test_hydra_paper_chain_composes(registry):
    from octascope.app.run import build_stages

    cfg = _compose(["denoiser=absf_s2sred"])
    assert cfg["denoiser"]["name"] == "chain"
    chain = build_stages(cfg, registry)["denoiser"]
    assert [s.name for s in chain.steps] == ["absf", "s2sred"]


def test_hydra_chain_steps_override(registry):
    from octascope.app.run import build_stages

    cfg = _compose(["denoiser=chain", "denoiser.steps=[absf,bm3d]"])
    assert [s.name for s in build_stages(cfg, registry)["denoiser"].steps] == ["absf", "bm3d"]
    cfg = _compose(["denoiser=chain", "denoiser.steps=[absf,{name:bm3d,sigma_scale:2.0}]"])
    steps = build_stages(cfg, registry)["denoiser"].steps
    assert steps[1].name == "bm3d" and steps[1].options.sigma_scale == 2.0


def test_chain_options_write_only_what_differs_from_the_steps_defaults(registry):
    """Steps by name take their plugin's defaults; the paper chain's S2SRED step is s2sred_paper.yaml."""
    from octascope.app.run import build_stages

    assert _compose(["denoiser=absf_s2sred"])["denoiser"]["steps"] == ["absf", "s2sred"]
    paper_chain = build_stages(_compose(["denoiser=absf_s2sred_paper"]), registry)["denoiser"]
    paper = build_stages(_compose(["denoiser=s2sred_paper"]), registry)["denoiser"]
    assert paper_chain.steps[1].options == paper.options
    assert paper_chain.steps[0].options == registry.create("denoiser", "absf").options
    step = _compose(["denoiser=absf_s2sred_paper"])["denoiser"]["steps"][1]
    defaults = registry.create("denoiser", "s2sred").options.to_dict()
    repeated = sorted(k for k, v in step.items() if k != "name" and defaults[k] == v)
    assert not repeated, f"absf_s2sred_paper.yaml repeats s2sred defaults {repeated}"


def test_hydra_step_parameter_override(registry):
    from octascope.app.run import build_stages

    cfg = _compose(["denoiser=absf_s2sred_paper", "denoiser.steps.1.n_iterations=7"])
    assert build_stages(cfg, registry)["denoiser"].steps[1].options.n_iterations == 7
    cfg = _compose(["denoiser=absf_s2sred", "denoiser.steps=[absf,{name:s2sred,n_iterations:7}]"])
    assert build_stages(cfg, registry)["denoiser"].steps[1].options.n_iterations == 7


def test_analyze_takes_a_list_of_denoisers_as_a_chain():
    import octascope
    from octascope.analysis.pipeline import resolve_stage
    from octascope.core.registry import get_registry

    chain = resolve_stage(get_registry(), "denoiser", ["absf", "none"])
    assert chain.name == "chain" and len(chain.steps) == 2


def test_chain_steps_are_flattened_for_mlflow():
    from octascope.results.tracking import flatten

    flat = flatten({"denoiser": {"name": "chain", "steps": [{"name": "absf", "n_cycles": 20}, {"name": "s2sred"}]}})
    assert flat["denoiser.steps.0.name"] == "absf" and flat["denoiser.steps.1.name"] == "s2sred"
    assert flatten({"figure_formats": ["png", "svg"]})["figure_formats"] == ["png", "svg"]
