"""Hydra composition: defaults, overrides, every group option instantiable through the registry."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from octascope.app.cli import conf_dir
from octascope.app.run import build_stages
from octascope.core.registry import get_registry

STAGE_GROUPS = {"denoiser": "denoiser", "locator": "locator", "classifier": "classifier", "network": "network"}


def _compose(overrides=()):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=True)


def test_default_composition_has_one_plugin_per_stage():
    cfg = _compose()
    for stage in STAGE_GROUPS:
        assert isinstance(cfg[stage]["name"], str)
    assert cfg["denoiser"]["name"] == "none"  # see docs/denoisers.md, "Which denoiser is the default"
    assert set(cfg["metric"]) >= {"octahedral", "lattice", "accuracy"}
    assert cfg["source"]["kind"] == "example"
    assert cfg["tracking"]["enabled"] is True


def test_group_and_parameter_overrides():
    cfg = _compose(["source=synthetic", "classifier.site_tolerance_frac=0.3", "network.search_radius_frac=0.25", "metric=[accuracy]",
                    "source.spec.rotation_deg=4.5"])
    assert cfg["classifier"]["site_tolerance_frac"] == 0.3
    assert cfg["network"]["search_radius_frac"] == 0.25
    assert list(cfg["metric"]) == ["accuracy"]
    assert cfg["source"]["spec"]["rotation_deg"] == 4.5
    stages = build_stages(cfg, get_registry(load_entrypoints=False))
    assert stages["classifier"].options.site_tolerance_frac == 0.3
    assert [m.name for m in stages["metrics"]] == ["accuracy"]


def _options(group):
    return sorted(p.stem for p in (Path(conf_dir()) / group).glob("*.yaml"))


@pytest.mark.parametrize("group", list(STAGE_GROUPS))
def test_every_option_instantiates_through_the_registry(group):
    reg = get_registry(load_entrypoints=False)
    options = _options(group)
    assert options, f"no options in conf/{group}"
    for option in options:
        cfg = _compose([f"{group}={option}"])
        node = dict(cfg[group])
        assert "_target_" not in node, "plugins are chosen by registered name, never by import path"
        stage = reg.create(group, node.pop("name"), **node)
        assert stage.name in reg.names(group)


def test_every_metric_option_instantiates():
    reg = get_registry(load_entrypoints=False)
    options = _options("metric")
    cfg = _compose([f"metric=[{','.join(options)}]"])
    stages = build_stages(cfg, reg)
    names = [m.name for m in stages["metrics"]]
    assert len(names) == len(options)
    # the one ordering rule: a metric runs after those it names in ``after`` (denoise-quality reads accuracy)
    assert names.index("denoise-quality") > names.index("accuracy")


def test_metric_order_follows_after_declarations():
    from octascope.core.errors import PluginError
    from octascope.analysis.pipeline import order_metrics

    reg = get_registry(load_entrypoints=False)
    dq, acc, octa = (reg.create("metric", n) for n in ("denoise-quality", "accuracy", "octahedral"))
    assert [m.name for m in order_metrics([dq, octa, acc])] == ["octahedral", "accuracy", "denoise-quality"]
    assert [m.name for m in order_metrics([dq, octa])] == ["denoise-quality", "octahedral"]  # accuracy absent: kept

    class A:
        name, after = "a", ("b",)

    class B:
        name, after = "b", ("a",)

    with pytest.raises(PluginError, match="wait on each other"):
        order_metrics([A(), B()])


def test_plugins_never_import_hydra():
    root = Path(__file__).resolve().parents[2] / "plugins"
    offenders = [p for p in root.rglob("*.py") if "hydra" in p.read_text() or "omegaconf" in p.read_text()]
    assert offenders == []
