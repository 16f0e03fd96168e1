"""Plugin discovery: built-ins, an out-of-tree plugin package found through its entry point,
selection from a config by name, and clear errors."""

import textwrap

import numpy as np
import pytest

import octascope
from octascope.core.errors import PluginError
from octascope.core.registry import get_registry

EXT_MODULE = '''
from typing import ClassVar
import numpy as np
from scipy import ndimage
import octascope


class MedianDenoiser:
    """Median filter (an out-of-tree test plugin)."""

    name: ClassVar[str] = "ext-median"

    def __init__(self, *, size_px: int = 3):
        self.size_px = size_px

    def denoise(self, image):
        return image.replace(data=ndimage.median_filter(image.data, size=self.size_px))


@octascope.hookimpl
def octascope_register_denoisers():
    return [MedianDenoiser]
'''


@pytest.fixture
def external_plugin(tmp_path, monkeypatch):
    """An installed distribution 'octa-ext' exposing module octa_ext through group 'octascope'."""
    (tmp_path / "octa_ext").mkdir()
    (tmp_path / "octa_ext" / "__init__.py").write_text(textwrap.dedent(EXT_MODULE))
    info = tmp_path / "octa_ext-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: octa-ext\nVersion: 0.3.1\n")
    (info / "entry_points.txt").write_text("[octascope]\next = octa_ext\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("OCTASCOPE_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    yield "ext-median"


def test_builtins_registered_per_stage():
    reg = get_registry(load_entrypoints=False)
    assert "none" in reg.names("denoiser")
    assert "lattice" in reg.names("classifier")
    assert "nearest" in reg.names("network")
    assert "accuracy" in reg.names("metric")


def test_external_plugin_found_and_selected_from_config(external_plugin):
    from hydra import compose, initialize_config_dir

    from octascope.app.cli import conf_dir
    from octascope.app.run import build_stages

    reg = get_registry()
    assert external_plugin in reg.names("denoiser")
    info = {p.name: p for p in reg.info("denoiser")}[external_plugin]
    assert (info.distribution, info.version) == ("octa-ext", "0.3.1")

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["denoiser=none", f"denoiser.name={external_plugin}", "+denoiser.size_px=5"])
    from omegaconf import OmegaConf

    stages = build_stages(OmegaConf.to_container(cfg, resolve=True), reg)
    den = stages["denoiser"]
    assert den.name == external_plugin and den.size_px == 5
    img = octascope.Image(np.pad(np.ones((3, 3)), 10) * 0 + np.eye(23), pixel_size_A=0.2)
    assert np.abs(den.denoise(img).data).sum() < np.abs(img.data).sum()  # the median removes the thin diagonal


def test_autoload_switch_hides_external_plugin(external_plugin, monkeypatch):
    monkeypatch.setenv("OCTASCOPE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert external_plugin not in get_registry().names("denoiser")


def test_unknown_name_lists_known():
    reg = get_registry(load_entrypoints=False)
    with pytest.raises(PluginError, match=r"unknown denoiser 'nope'; known denoisers: .*none"):
        reg.create("denoiser", "nope")


def test_unknown_parameter_lists_parameters():
    reg = get_registry(load_entrypoints=False)
    with pytest.raises(PluginError, match="search_radius_frac"):
        reg.create("network", "nearest", radius=3)


def test_duplicate_names_rejected():
    class Dup:
        """Second 'none'."""

        name = "none"

        def denoise(self, image):
            return image

    class Plugin:
        @octascope.hookimpl
        def octascope_register_denoisers(self):
            return [Dup]

    with pytest.raises(PluginError, match="registered twice"):
        get_registry(load_entrypoints=False, extra=[Plugin()])


def test_class_without_method_rejected():
    class Broken:
        name = "broken"

    class Plugin:
        @octascope.hookimpl
        def octascope_register_locators(self):
            return [Broken]

    with pytest.raises(PluginError, match="locate"):
        get_registry(load_entrypoints=False, extra=[Plugin()])
