"""octascope.sim: amorphous-carbon support film and scan-window (crop) imaging, with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from octascope.core.errors import ConfigError, InputError
from octascope.sim.imaging import integrate_gradient, simulate_image
from octascope.sim.structure import build_nanocube
from octascope.sim.support import amorphous_carbon, carbon_number_density_per_A3

KW = dict(pixel_size_A=0.5, sampling_A=0.125, num_workers=1, field_of_view_A=16.0)
FILM = dict(thickness_A=10.0, density_g_cm3=2.0, min_distance_A=1.35, seed=3)


# --- the film itself (no abTEM) -------------------------------------------------------------------

def test_number_density_of_carbon():
    # 2.0 g/cm³ / 12.011 g/mol × N_A = 1.0028e23 /cm³ = 0.10028 /Å³
    assert carbon_number_density_per_A3(2.0) == pytest.approx(0.10028, rel=1e-4)


@pytest.mark.parametrize("density, d_min", [(2.0, 1.35), (1.8, 1.4), (2.2, 1.3)])
def test_film_count_density_and_min_distance(density, d_min):
    ext, t = (40.0, 30.0), 25.0
    xyz = amorphous_carbon(ext, thickness_A=t, density_g_cm3=density, min_distance_A=d_min, seed=1)
    # atoms × mass per atom / volume = the density asked for (to the rounding of one atom)
    mass_g = len(xyz) * 12.011 / 6.02214076e23
    assert mass_g / (ext[0] * ext[1] * t * 1e-24) == pytest.approx(density, rel=2e-3)
    assert (xyz >= 0).all() and (xyz[:, 0] < ext[0]).all() and (xyz[:, 1] < ext[1]).all() and (xyz[:, 2] < t).all()
    # no C–C pair closer than the hard core, across the periodic x/y boundaries too
    d, _ = cKDTree(xyz, boxsize=[ext[0], ext[1], 1e4]).query(xyz, k=2)
    assert d[:, 1].min() >= d_min
    # random, not a lattice: the film fills its slab evenly (each third of the thickness holds ~1/3)
    thirds = np.histogram(xyz[:, 2], bins=3, range=(0, t))[0] / len(xyz)
    assert np.abs(thirds - 1 / 3).max() < 0.03


def test_film_seeded():
    a = amorphous_carbon((20.0, 20.0), thickness_A=10.0, seed=5)
    np.testing.assert_array_equal(a, amorphous_carbon((20.0, 20.0), thickness_A=10.0, seed=5))
    assert not np.array_equal(a, amorphous_carbon((20.0, 20.0), thickness_A=10.0, seed=6))


def test_film_bad_inputs():
    with pytest.raises(InputError, match="packing"):
        amorphous_carbon((10.0, 10.0), thickness_A=10.0, density_g_cm3=2.0, min_distance_A=2.5)
    with pytest.raises(InputError, match="> 0"):
        amorphous_carbon((10.0, 0.0), thickness_A=10.0)


def test_mirror_integration_of_a_window():
    """A window cut from a smooth field whose gradient vanishes at the window's edges integrates back
    to the field (up to the constant) with mirror boundaries; periodic boundaries do not."""
    p = 0.25
    y, x = np.mgrid[0:80, 0:100] * p
    f = np.exp(-((x - 10.0) ** 2 + (y - 12.0) ** 2) / (2 * 3.0**2)) + 0.05 * x  # a ramp: not periodic
    gx = np.exp(-((x - 10.0) ** 2 + (y - 12.0) ** 2) / (2 * 3.0**2)) * -(x - 10.0) / 9.0 + 0.05
    gy = np.exp(-((x - 10.0) ** 2 + (y - 12.0) ** 2) / (2 * 3.0**2)) * -(y - 12.0) / 9.0
    mirror = integrate_gradient(gx, gy, p, boundary="mirror")
    periodic = integrate_gradient(gx, gy, p)
    err_m = np.abs((mirror - mirror.mean()) - (f - f.mean())).max()
    err_p = np.abs((periodic - periodic.mean()) - (f - f.mean())).max()
    assert err_m < 0.02 * np.ptp(f) and err_p > 10 * err_m
    with pytest.raises(InputError):
        integrate_gradient(gx, gy, p, boundary="zero")


# --- imaging with a film and with a window (abTEM) ------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    atoms = build_nanocube(n_cells=1, phase="cubic", charge_balance=False)
    return atoms.get_chemical_symbols(), atoms.get_positions()


@pytest.mark.abtem
def test_weak_phase_film_adds_only_the_carbon_term(tiny):
    """The weak-phase image is linear in the projected potential: (with film - without) is the same
    for two different particles in the same field of view, i.e. the film adds its own term only."""
    symbols, pos = tiny
    other = ["Cs" if s == "Pb" else s for s in symbols]
    d = []
    for sy in (symbols, other):
        bare = simulate_image(sy, pos, **KW)
        film = simulate_image(sy, pos, support=FILM, **KW)
        assert film.info["support_n_atoms"] == round(carbon_number_density_per_A3(2.0) * 16.0 * 16.0 * 10.0)
        assert film.frame == bare.frame
        d.append(film.image - bare.image)
    scale = np.abs(bare.image).max()
    assert np.abs(d[0]).std() > 0.01 * scale  # the film is visible
    np.testing.assert_allclose(d[0], d[1], atol=1e-5 * scale)


@pytest.mark.abtem
def test_weak_phase_window_is_the_cut_field(tiny):
    symbols, pos = tiny
    full = simulate_image(symbols, pos, **KW)
    win = simulate_image(symbols, pos, scan_window_A=[4.0, 3.0, 12.0, 9.0], **KW)
    assert win.image.shape == (12, 16) and win.frame.origin_A == (4.0, 3.0)
    np.testing.assert_array_equal(win.com, full.com[:, 6:18, 8:24])
    # the frame maps particle positions to the window's pixels
    pb = pos[np.array(symbols) == "Pb", :2]
    np.testing.assert_allclose(win.frame.to_image(pb), full.frame.to_image(pb) - [4.0, 3.0])
    with pytest.raises(InputError, match="scan_window_A"):
        simulate_image(symbols, pos, scan_window_A=[4.0, 3.0, 30.0, 9.0], **KW)


@pytest.mark.abtem
def test_multislice_window(tiny):
    """Multislice over a window (padded cell) agrees with the weak-phase window on this thin particle."""
    symbols, pos = tiny
    box = [4.0, 4.0, 12.0, 10.0]
    ms = simulate_image(symbols, pos, mode="multislice", scan_window_A=box, window_padding_A=8.0, **KW)
    wp = simulate_image(symbols, pos, scan_window_A=box, **KW)
    assert ms.image.shape == wp.image.shape == (12, 16)
    assert np.corrcoef(ms.com.ravel(), wp.com.ravel())[0, 1] > 0.98
    assert np.corrcoef(ms.image.ravel(), wp.image.ravel())[0, 1] > 0.95


@pytest.mark.abtem
@pytest.mark.slow
def test_multislice_film_in_every_snapshot(tiny):
    symbols, pos = tiny
    box = [4.0, 4.0, 12.0, 10.0]
    ms = simulate_image(symbols, pos, mode="multislice", scan_window_A=box, window_padding_A=8.0, **KW)
    film = simulate_image(symbols, pos, mode="multislice", scan_window_A=box, window_padding_A=8.0,
                          support=dict(FILM, thickness_A=10.0), **KW)
    assert film.info["support_n_atoms"] == round(carbon_number_density_per_A3(2.0) * 24.0 * 22.0 * 10.0)
    assert np.abs(film.image - ms.image).std() > 0.01 * np.abs(ms.image).max()


@pytest.mark.abtem
def test_simulate_with_film_truth_unchanged_and_keyed(tmp_path):
    from octascope.sim.simulation import simulate

    common = dict(structure=dict(n_cells=2), run_md=False, imaging=dict(pixel_size_A=0.4, margin_A=4.0),
                  noise=dict(dose_e_per_A2=None), cache_dir=str(tmp_path), progress=False)
    bare = simulate(**common)
    film = simulate(support=dict(thickness_A=15.0, seed=2), **common)
    pd.testing.assert_frame_equal(bare.truth.columns, film.truth.columns)
    pd.testing.assert_frame_equal(bare.truth.octahedra, film.truth.octahedra)
    assert film.keys["image"] != bare.keys["image"]
    assert not np.array_equal(bare.image.data, film.image.data)
    assert film.truth.metadata["support"]["thickness_A"] == 15.0 and bare.truth.metadata["support"] is None
    # another film seed is another image; the same parameters come from the cache
    film2 = simulate(support=dict(thickness_A=15.0, seed=3), **common)
    assert film2.keys["image"] not in (film.keys["image"], bare.keys["image"])
    assert simulate(support=dict(thickness_A=15.0, seed=2), **common).keys == film.keys
    with pytest.raises(ConfigError, match="unknown support parameter"):
        simulate(support=dict(thickness=15.0), **common)
    with pytest.raises(ConfigError, match="own group"):
        simulate(**{**common, "imaging": dict(pixel_size_A=0.4, support={"thickness_A": 1.0})})


@pytest.mark.abtem
def test_simulate_window_truth_inside(tmp_path):
    from octascope.sim.simulation import simulate

    common = dict(structure=dict(n_cells=2), run_md=False, noise=dict(dose_e_per_A2=None), cache_dir=str(tmp_path),
                  progress=False)
    full = simulate(imaging=dict(pixel_size_A=0.4, margin_A=4.0), **common)
    box = [6.0, 6.0, 16.0, 14.0]
    crop = simulate(imaging=dict(pixel_size_A=0.4, margin_A=4.0, scan_window_A=box), **common)
    h, w = crop.image.shape
    assert (h, w) == (20, 25)
    cols = crop.truth.columns
    assert len(cols) and cols["x_A"].between(0, (w - 1) * 0.4).all() and cols["y_A"].between(0, (h - 1) * 0.4).all()
    # the same columns as the full image's inside the box, shifted by the window's origin
    f = full.truth.columns
    inside = f["x_A"].between(6.0, 6.0 + (w - 1) * 0.4) & f["y_A"].between(6.0, 6.0 + (h - 1) * 0.4)
    np.testing.assert_allclose(np.sort(cols["x_A"].to_numpy()), np.sort(f.loc[inside, "x_A"].to_numpy() - 6.0), atol=1e-9)
    assert crop.keys["image"] != full.keys["image"]


def test_presets_compose_and_cli_overrides():
    """The presets reach simulate() through Hydra and the sim CLI; the default has no film."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from octascope.app.cli import conf_dir
    from octascope.sim.__main__ import load_params

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        plain = OmegaConf.to_container(compose(config_name="config", overrides=["source=simulated"]))["source"]
        film = OmegaConf.to_container(compose(config_name="config", overrides=[
            "source=simulated", "+simulation=carbon_support"]))["source"]
        crop = OmegaConf.to_container(compose(config_name="config", overrides=[
            "source=simulated", "+simulation=multislice_crop"]))["source"]
    assert plain["support"] is None and plain["imaging"]["scan_window_A"] is None
    assert film["support"] == {"thickness_A": 30.0, "density_g_cm3": 2.0, "min_distance_A": 1.35, "seed": 0, "gap_A": 3.0}
    assert film["structure"] == plain["structure"] and film["md"] == plain["md"]  # the same particle and MD
    assert crop["imaging"]["mode"] == "multislice" and len(crop["imaging"]["scan_window_A"]) == 4
    assert load_params(None, ["support.thickness_A=30"])["support"] == {"thickness_A": 30}
    assert load_params(None, [])["support"] is None


def test_image_keys_without_film_or_window_are_unchanged():
    """Cache entries made before the film and crops existed stay valid: unset, they are not keyed."""
    from octascope.sim.imaging import ImagingOptions
    from octascope.sim.simulation import plan_simulation
    from octascope.sim.support import SupportOptions

    keyed = ImagingOptions().key_params()
    assert not {"support", "scan_window_A", "window_padding_A", "num_workers", "device"} & set(keyed)
    assert set(plan_simulation().image_params) == set(keyed)
    crop = ImagingOptions(scan_window_A=(0.0, 0.0, 5.0, 5.0)).key_params()
    assert crop["scan_window_A"] == [0.0, 0.0, 5.0, 5.0] and "window_padding_A" not in crop
    film = plan_simulation(support={"thickness_A": 20.0}).image_params["support"]
    assert film == {**SupportOptions(thickness_A=20.0).to_dict(), "gap_A": 3.0}
