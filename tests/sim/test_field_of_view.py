"""Simulated fields (octascope.sim.field): particles placed as asked, their truth tagged and cut by the frame."""

from __future__ import annotations

import numpy as np
import pytest

from octascope.sim.field import FieldParticleOptions, _blocks, _snapshots, _truth, check_field_params
from octascope.sim.options import SimulationParameterError
from octascope.sim.structure import build_nanocube


def _placed(**options):
    opts = FieldParticleOptions.from_config(options)
    atoms = build_nanocube(**opts.structure)
    pos, lattice, _ = _snapshots(atoms, opts, 2, None, False)
    return _blocks(1, opts, np.array(atoms.get_chemical_symbols(), dtype=object), lattice, pos)


def test_particle_is_centred_rotated_and_tagged():
    (block,) = _placed(structure={"n_cells": 4}, centre_A=(60.0, 50.0), rotation_deg=30.0, thermal_sigma_A=0.0)
    cols, octs = _truth([block], (400, 480), 0.25)
    assert np.allclose(cols[["x_A", "y_A"]].mean().to_numpy(), (60.0, 50.0), atol=1.0)
    pb = cols[cols.species == "Pb"]
    step = np.diff(pb.sort_values(["i", "j"])[["x_A", "y_A"]].to_numpy()[:2], axis=0)[0]  # one step along j
    assert np.degrees(np.arctan2(step[1], step[0])) == pytest.approx(120.0, abs=3.0)  # a2 = a1 rotated by 90°
    assert (cols.particle == 1).all() and cols.valid_001.all() and (cols.domain == 0).all()
    assert len(octs) == 16 and np.isfinite(octs.theta3_deg).any()


def test_particle_cut_by_the_frame_keeps_only_what_the_frame_shows():
    (block,) = _placed(structure={"n_cells": 6}, centre_A=(5.0, 30.0), thermal_sigma_A=0.0)
    cols, octs = _truth([block], (240, 240), 0.25)
    assert (cols.x_A >= 0).all() and (cols.x_A <= 239 * 0.25).all()
    assert 0.3 < len(cols) / 169 < 0.7  # about half of the 169 columns of a 6-cell cube


def test_off_axis_particle_has_no_valid_001_truth():
    (block,) = _placed(structure={"n_cells": 4}, centre_A=(40.0, 40.0), off_axis_deg=5.0, off_axis_axis="y")
    cols, _ = _truth([block], (320, 320), 0.25)
    assert not cols.valid_001.any()
    # the atoms of one column no longer stand on one beam path: their projected spread is ~t·tan 5°
    assert cols.xy_spread_A.median() > 0.5


def test_ruddlesden_popper_fault_swaps_the_pb_and_cs_sublattices():
    left, right = _placed(structure={"n_cells": 6, "phase": "cubic"}, centre_A=(50.0, 50.0), fault_at_cell=3,
                          thermal_sigma_A=0.0)
    cols, _ = _truth([left, right], (400, 400), 0.25)
    pb0 = cols[(cols.domain == 0) & (cols.species == "Pb")][["x_A", "y_A"]].to_numpy()
    pb1 = cols[(cols.domain == 1) & (cols.species == "Pb")][["x_A", "y_A"]].to_numpy()
    cs0 = cols[(cols.domain == 0) & (cols.species == "Cs")][["x_A", "y_A"]].to_numpy()
    a = 6.29
    # continue domain 0's lattice into domain 1: its Pb sits on domain 0's Cs sublattice (offset (a/2, a/2))
    frac = (pb1 - pb0[0]) / a
    assert np.allclose(frac - np.round(frac - 0.5) - 0.5, 0.0, atol=0.02)
    frac_cs = (cs0 - pb0[0]) / a
    assert np.allclose(frac_cs - np.round(frac_cs - 0.5) - 0.5, 0.0, atol=0.02)


def test_field_parameters_are_checked_before_anything_is_simulated():
    with pytest.raises(SimulationParameterError, match="particles"):
        check_field_params({"particles": []})
    with pytest.raises(SimulationParameterError, match=r"particles\[0\].*off_axis_deg"):
        check_field_params({"particles": [{"off_axis_deg": 60.0}]})
    with pytest.raises(SimulationParameterError, match="fault_at_cell"):
        check_field_params({"particles": [{"structure": {"n_cells": 4}, "fault_at_cell": 4}]})
    with pytest.raises(SimulationParameterError, match="no key"):
        check_field_params({"particles": [{}], "fields": {}})


@pytest.mark.slow
@pytest.mark.abtem
def test_small_field_is_imaged_and_analysed(tmp_path):
    """Two 3-cell particles, one 5° off [001], weak-phase iCoM at 2000 e/Å²: the on-axis one is
    analysed with every species right, the off-axis one refused or left without octahedra."""
    import octascope
    from octascope.sim.field import simulate_field

    sim = simulate_field([{"structure": {"n_cells": 5}, "centre_A": (22.0, 24.0)},
                          {"structure": {"n_cells": 5}, "centre_A": (58.0, 26.0), "rotation_deg": 20.0, "off_axis_deg": 6.0}],
                         field={"shape_px": [200, 320], "n_snapshots": 2}, imaging={"pixel_size_A": 0.25, "signal": "icom"},
                         noise={"dose_e_per_A2": 2000.0}, cache_dir=str(tmp_path), progress=False)
    assert sim.image.shape == (200, 320)
    res = octascope.analyze(sim.image, truth=sim.truth, progress=None)
    per = res.tables["accuracy_particles"].set_index("particle_true")
    assert per.loc[1, "species_accuracy"] >= 0.99 and per.loc[1, "detection_f1"] >= 0.97
    assert res.scalars["n_particles_off_axis_with_tilts"] == 0
