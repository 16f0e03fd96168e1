"""Every ``conf/<stage>/*.yaml`` names a registered plugin and only parameters it declares.

The test fails when a YAML file gains a key no plugin reads, loses a declared parameter (for
plugins with an options dataclass the YAML lists them all, so ``--cfg job`` shows every knob),
or holds a value the plugin refuses.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from octascope.core.errors import PluginParameterError
from octascope.core.params import describe, parameter_names
from octascope.core.registry import get_registry

CONF = Path(__file__).resolve().parents[2] / "conf"
STAGE_DIRS = {"denoiser": "denoiser", "locator": "locator", "classifier": "classifier", "network": "network",
              "metric": "metric"}
FILES = [(stage, p) for stage, d in STAGE_DIRS.items() for p in sorted((CONF / d).glob("*.yaml"))]


@pytest.fixture(scope="module")
def registry():
    return get_registry(load_entrypoints=False)


def _steps(stage: str, cfg: dict):
    """(name, params) of a config, expanding a denoiser chain into its steps."""
    cfg = dict(cfg)
    name = cfg.pop("name")
    if stage == "denoiser" and name == "chain":
        out = [(name, {"steps": cfg["steps"]})]
        for step in cfg.pop("steps"):
            if isinstance(step, str):
                out.append((step, {}))
            else:
                step = dict(step)
                out.append((step.pop("name"), step))
        assert not cfg, f"chain keys besides steps: {sorted(cfg)}"
        return out
    return [(name, cfg)]


@pytest.mark.parametrize("stage,path", FILES, ids=[f"{s}/{p.name}" for s, p in FILES])
def test_stage_config_matches_plugin_parameters(registry, stage, path):
    cfg = yaml.safe_load(path.read_text())
    assert isinstance(cfg, dict) and "name" in cfg, f"{path} must be a mapping with 'name'"
    for name, params in _steps(stage, cfg):
        assert name in registry.names(stage), f"{path}: '{name}' is not a registered {stage}"
        cls = registry.get(stage, name)
        declared = parameter_names(cls)
        if declared is not None and params:
            assert set(params) <= set(declared), f"{path}: {sorted(set(params) - set(declared))} not declared by {name}"
        if declared is not None and path.stem == name:
            # the option named after the plugin documents every parameter
            missing = sorted(set(declared) - set(params))
            assert not missing, f"{path} omits declared parameters {missing}"
        if stage == "denoiser" and name == "chain":
            continue
        registry.create(stage, name, **params)  # values accepted


def test_unknown_and_bad_values_are_one_error_type(registry):
    with pytest.raises(PluginParameterError, match="no parameter"):
        registry.create("denoiser", "absf", step_pixels=3)
    with pytest.raises(PluginParameterError, match="step_px must be >= 2"):
        registry.create("denoiser", "absf", step_px=1)
    with pytest.raises(PluginParameterError, match="must be an integer"):
        registry.create("denoiser", "absf", step_px="five")


def test_describe_gives_defaults_and_units(registry):
    info = {p.name: p for p in describe(registry.get("denoiser", "absf"))}
    assert info["step_px"].default == 5 and info["step_px"].unit == "Fourier px"
    assert info["search_band_per_A"].unit == "1/Å"
