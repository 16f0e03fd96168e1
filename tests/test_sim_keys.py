"""Simulation cache keys of the presets are pinned: a refactor that changed them would orphan every
cached MD trajectory (hours of LAMMPS) and image."""

from __future__ import annotations

import pytest

#: keys (structure, md, image) that simulate() computes for each configuration, recorded before the
#: simulation parameters became Options; the cache in ~/.cache/octascope holds entries under them
PINNED = {
    "default": ("990950c5101eeb25", "a7c5c003d1153704", "7afb2602ec3d9e9e"),
    "mixed_halide": ("aea4fa0326dda4e8", "60919bcfe9fdfe52", "0205b4e4ff7f4779"),
    "carbon_support": ("990950c5101eeb25", "a7c5c003d1153704", "fdf6d15fff6dc967"),
    "multislice_crop": ("990950c5101eeb25", "a7c5c003d1153704", "b79689d6a3e82410"),
    "scan_rotation_17": ("990950c5101eeb25", "a7c5c003d1153704", "e07d5cfad692957e"),
    "paper_cluster": ("ffaadcb17545f96e", "c6f3bf35b9ab5e19", "5f2a62d83ff9a616"),
}
OVERRIDES = {
    "default": [], "mixed_halide": ["+simulation=mixed_halide"], "carbon_support": ["+simulation=carbon_support"],
    "multislice_crop": ["+simulation=multislice_crop"], "scan_rotation_17": ["source.imaging.scan_rotation_deg=17"],
    "paper_cluster": ["+simulation=paper_cluster"],
}


def _source(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from octascope.app.cli import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["source=simulated", *overrides])
    source = OmegaConf.to_container(cfg)["source"]
    source.pop("kind")
    return source


def _keys(source: dict) -> tuple[str, str, str]:
    from octascope.sim.simulation import check_source_params

    keys = check_source_params(source).keys
    return keys["structure"], keys["md"], keys["image"]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_cache_keys_of_the_presets_are_unchanged(name):
    assert _keys(_source(OVERRIDES[name])) == PINNED[name]
