"""Simulation cache keys of the presets are pinned: a refactor that changed them would orphan every
cached MD trajectory (hours of LAMMPS) and image."""

from __future__ import annotations

import pytest

#: keys (structure, md, image) that simulate() computes for each configuration, recorded before the
#: simulation parameters became Options; the cache in ~/.cache/octascope holds entries under them.
#: The iDPC image keys changed once on purpose (ImagingOptions.idpc_model = 2, issue 19: the quadrant
#: detector's transfer, CoM scale and segment signals); structure and MD keys never did.
PINNED = {
    "default": ("990950c5101eeb25", "a7c5c003d1153704", "3c13b11bf56f3adc"),
    "mixed_halide": ("aea4fa0326dda4e8", "60919bcfe9fdfe52", "8f2a1beedcf2b53b"),
    "carbon_support": ("990950c5101eeb25", "a7c5c003d1153704", "ca3a5dfc2c88d633"),
    "multislice_crop": ("990950c5101eeb25", "a7c5c003d1153704", "b2697165a56676e1"),
    "scan_rotation_17": ("990950c5101eeb25", "a7c5c003d1153704", "aec57e6a7e91b6d9"),
    "paper_cluster": ("ffaadcb17545f96e", "c6f3bf35b9ab5e19", "7d3a1f42e725459f"),
    # iCoM images keep the keys they had before issue 19 (the thermal option is left out while null)
    "icom": ("990950c5101eeb25", "a7c5c003d1153704", "dc4fcaf1a498a33a"),
    "icom_025": ("990950c5101eeb25", "a7c5c003d1153704", "fd0582c86c113c34"),
    "multislice_crop_icom": ("990950c5101eeb25", "a7c5c003d1153704", "b1273ae17ec4b908"),
    # issue 20: scanned with PRISM (imaging.prism_interpolation: 4) since its first simulation; the
    # key of the exact scan it had before (813f2e87b276335e) was never filled
    "multislice_full": ("990950c5101eeb25", "a7c5c003d1153704", "69ec78374656e654"),
}
OVERRIDES = {
    "default": [], "mixed_halide": ["+simulation=mixed_halide"], "carbon_support": ["+simulation=carbon_support"],
    "multislice_crop": ["+simulation=multislice_crop"], "scan_rotation_17": ["source.imaging.scan_rotation_deg=17"],
    "paper_cluster": ["+simulation=paper_cluster"], "icom": ["source.imaging.signal=icom"],
    "icom_025": ["source.imaging.signal=icom", "source.imaging.pixel_size_A=0.25"],
    "multislice_crop_icom": ["+simulation=multislice_crop", "source.imaging.signal=icom"],
    "multislice_full": ["+simulation=multislice_full"],
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


def test_thermal_configurations_enter_the_image_key_only():
    base = _keys(_source(["source.imaging.signal=icom"]))
    fp = _keys(_source(["source.imaging.signal=icom", "source.imaging.thermal_configurations=64"]))
    seed = _keys(_source(["source.imaging.signal=icom", "source.imaging.thermal_configurations=64",
                          "source.imaging.thermal_seed=1"]))
    assert fp[:2] == base[:2] and len({base[2], fp[2], seed[2]}) == 3
