"""A frame of several particles: each found, analysed on its own lattice, or refused with its reason.

Synthetic fields (:mod:`octascope.input.synthetic_field`) with known truth: particles rotated
differently, touching, cut by the frame edge, off the [001] zone axis, with a planar fault. The
bounds are the targets of a frame at the paper's dose (detection F1 ≥ 0.97, species ≥ 0.99,
octahedra coverage ≥ 0.9, tilt error ≤ 0.3°, core − shell Δθ3 within 0.3°) on images whose noise is
mild enough that the targets apply to each particle.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import octascope
from octascope.analysis.lattice import surface_depth
from octascope.analysis.particles import ParticleOptions, segment_particles
from octascope.core.errors import InputError
from octascope.input.synthetic_field import FieldParticle, FieldSpec, make_synthetic_field


def _field(*particles: FieldParticle, shape=(380, 460), dose=4000.0, seed=0):
    return make_synthetic_field(FieldSpec(particles=particles, shape_px=shape, pixel_size_A=0.25, dose_e_per_A2=dose,
                                          seed=seed))


@pytest.fixture(scope="module")
def two_apart():
    """Two separated particles, rotated 0° and 25°, the second with a core/shell rotation gradient."""
    img, truth = _field(FieldParticle((7, 7), (27.0, 45.0), 0.0, rotation_deg=8.0),
                        FieldParticle((9, 9), (92.0, 47.0), 25.0, rotation_deg=9.0, shell_rotation_deg=5.0, shell_depth=2),
                        shape=(380, 520))
    return img, truth, octascope.analyze(img, truth=truth, progress=None)


@pytest.fixture(scope="module")
def mixed_field():
    """Touching particles (15° vs -10°), one off the zone axis, one cut by the frame edge."""
    img, truth = _field(FieldParticle((7, 7), (32.0, 32.0), 15.0),
                        FieldParticle((7, 7), (32.0, 87.0), -10.0, off_axis_deg=6.0, off_axis_direction_deg=20.0),
                        FieldParticle((7, 7), (84.5, 34.0), -10.0),
                        FieldParticle((8, 8), (128.0, 88.0), 5.0), shape=(460, 560))
    return img, truth, octascope.analyze(img, truth=truth, progress=None)


def _truth_particle_of(result, truth) -> np.ndarray:
    """The truth particle id of every found column (nearest truth column)."""
    from scipy.spatial import cKDTree

    _, k = cKDTree(truth.columns[["x_A", "y_A"]].to_numpy()).query(result.columns[["x_A", "y_A"]].to_numpy())
    return truth.columns["particle"].to_numpy()[k]


def test_two_particles_each_on_their_own_lattice(two_apart):
    img, truth, res = two_apart
    assert [p.verdict for p in res.particles] == ["analysed", "analysed"]
    rotations = sorted(round(p.orientation_deg) for p in res.particles)
    assert rotations == [0, 25]
    # every column of a particle belongs to one true particle
    found_of = res.columns["particle"].to_numpy()
    true_of = _truth_particle_of(res, truth)
    for pid in (1, 2):
        assert np.mean(true_of[found_of == pid] == np.bincount(true_of[found_of == pid]).argmax()) >= 0.99
    per = res.tables["accuracy_particles"]
    assert (per["detection_f1"] >= 0.97).all() and (per["species_accuracy"] >= 0.99).all()
    assert (per["coverage"] >= 0.9).all() and (per["theta_mae_deg"] <= 0.3).all()
    # octahedra and lattice rows carry their particle; the two lattices were indexed separately
    assert set(res.tables["octahedra"]["particle"]) == {1, 2}
    assert set(res.tables["lattice"]["particle"]) == {1, 2}


def test_core_shell_gradient_per_particle(two_apart):
    """The particle with 9° in the core and 5° in the outer two cells: core - shell Δθ3 as the
    truth gives it with the metric's shell depth (3 cells), within 0.3°."""
    _, _, res = two_apart
    per = res.tables["accuracy_particles"].set_index("particle_true")
    assert np.isfinite(per.loc[2, "dtheta3_true_deg"]) and per.loc[2, "dtheta3_true_deg"] > 2.0
    assert abs(per.loc[2, "dtheta3_error_deg"]) <= 0.3
    table = res.tables["particles"].set_index("particle")
    found = table["dtheta3_core_minus_shell_deg"]
    assert found.max() > 2.0 and abs(found.min()) < 0.5  # the uniform particle shows no gradient
    assert (table["dtheta3_core_minus_shell_err_deg"] > 0).all()
    # the test against the total (statistical + systematic) uncertainty tells the two apart
    graded = table["dtheta3_core_minus_shell_deg"].idxmax()
    assert table.loc[graded, "dtheta3_verdict"].startswith("significant")
    assert table.drop(index=graded)["dtheta3_verdict"].iloc[0].startswith("not significant")


def test_touching_off_axis_and_edge_particles(mixed_field):
    img, truth, res = mixed_field
    by_truth = res.tables["accuracy_particles"].set_index("particle_true")
    on_axis = by_truth[by_truth["valid_001"]]
    assert len(on_axis) == 3 and (on_axis["detection_f1"] >= 0.97).all() and (on_axis["species_accuracy"] >= 0.99).all()
    # the two touching particles are two particles (one found particle each)
    assert by_truth.loc[1, "particle_found"] != by_truth.loc[3, "particle_found"]
    assert "+" not in by_truth.loc[1, "particle_found"] and "+" not in by_truth.loc[3, "particle_found"]
    # the off-axis particle is refused and yields no octahedron
    refused = [p for p in res.particles if not p.analysed]
    assert len(refused) == 1 and "zone axis" in refused[0].reasons[0]
    assert refused[0].id not in set(res.geometry.table["particle"])
    assert res.scalars["n_particles_off_axis_with_tilts"] == 0
    assert any(f.startswith(f"particle {refused[0].id} not analysed") for f in res.flags)
    # the particle cut by the frame edge: its surface beyond the edge is unknown, never counted as core
    edge = [p for p in res.particles if p.touches_edge]
    assert len(edge) == 1
    geo = res.geometry.table
    mine = geo[geo["particle"] == edge[0].id]
    unknown = ~mine["depth_known"].astype(bool)
    assert unknown.any() and (mine.loc[unknown, "shell"] == -1).all()
    assert (mine.loc[~unknown, "shell"] >= 0).all()


def test_planar_fault_keeps_species_right_on_both_sides():
    img, truth = _field(FieldParticle((10, 8), (60.0, 45.0), -15.0, fault_at_cell=5), shape=(360, 480))
    res = octascope.analyze(img, truth=truth, progress=None)
    per = res.tables["accuracy_particles"]
    assert len(per) == 1
    assert per["species_accuracy"].iloc[0] >= 0.99
    assert per["coverage"].iloc[0] >= 0.8  # the octahedra at the fault plane itself lack a bond on one side
    assert len([p for p in res.particles if p.analysed]) == 2  # split into its two registry domains


def test_registry_is_not_split_without_a_fault():
    img, truth = _field(FieldParticle((10, 8), (60.0, 45.0), -15.0), shape=(360, 480), dose=300.0, seed=3)
    res = octascope.analyze(img, truth=truth, progress=None, metrics=[])
    assert len(res.particles) == 1


def test_frame_is_refused_only_when_no_particle_can_be_analysed():
    img, _ = _field(FieldParticle((7, 7), (35.0, 40.0), 10.0, off_axis_deg=6.0), shape=(320, 320))
    with pytest.raises(InputError, match="zone axis|square lattice"):
        octascope.analyze(img, progress=None, metrics=[])


def test_surface_depth_is_unknown_where_the_frame_cuts_the_particle():
    i, j = (g.ravel() for g in np.meshgrid(np.arange(6), np.arange(6), indexing="ij"))
    xy = np.column_stack([i * 6.0 + 1.5, j * 6.0 + 20.0])  # column i=0 lies 1.5 Å from the left border
    shell, shell_min, known = surface_depth(i, j, xy, frame_A=(100.0, 100.0), margin_A=2.0)
    whole, _, whole_known = surface_depth(i, j, xy + [30.0, 0.0], frame_A=(100.0, 100.0), margin_A=2.0)
    assert whole_known.all() and whole.max() == 2 and whole.min() == 0
    # sites nearer the cut than to any seen surface: unknown depth; the lower bound counts from the cut
    assert not known[(i == 0) & (j == 3)] and shell[(i == 0) & (j == 3)] == -1
    assert shell_min[(i == 0) & (j == 3)] == 0
    assert known[(i == 5) & (j == 3)] and shell[(i == 5) & (j == 3)] == 0  # the far side is a real surface
    assert (shell_min <= np.where(known, shell, 99)).all()


def test_segmentation_options_come_from_the_config_and_are_checked():
    import yaml
    from pathlib import Path

    from octascope.core.errors import PluginParameterError

    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "conf" / "config.yaml").read_text())
    defaults = ParticleOptions().to_dict()
    assert cfg["particles"] == defaults
    with pytest.raises(PluginParameterError, match="min_columnz"):
        octascope.analyze(_field(FieldParticle((4, 4), (20.0, 20.0)), shape=(200, 200))[0], progress=None,
                          particles={"min_columnz": 3}, metrics=[])


def test_segmentation_alone_labels_every_column_of_a_lattice():
    img, truth = _field(FieldParticle((6, 6), (32.0, 32.0), 30.0), shape=(260, 260), dose=None)
    cols = truth.columns
    seg = segment_particles(cols[["x_A", "y_A"]].to_numpy(), np.where(cols.species == "Pb", 1.0, 0.5), None,
                            row_labels=cols.index.to_numpy(), shape_px=img.shape, pixel_size_A=img.pixel_size_A)
    assert len(seg.particles) == 1 and (seg.labels == 1).all()
    p = seg.particles[0]
    assert abs(p.orientation_deg - 30.0) < 0.5
    assert p.spacing_A == pytest.approx(6.25 / 2, rel=0.03)
    assert np.allclose(p.size_A, 6 * 6.25, rtol=0.02)  # a CsX-terminated particle of 6 cells spans 6 a
    assert not p.touches_edge


def test_outputs_have_the_particle_table_and_column(two_apart, tmp_path):
    from octascope.analysis.particle_table import PARTICLES_CSV_FIRST
    from octascope.results.outputs import write_outputs
    from octascope.results.summary import format_summary, summarize

    _, _, res = two_apart
    files = write_outputs(res, tmp_path, figure_formats=())
    table = pd.read_csv(files["particles"])
    assert list(table.columns[:len(PARTICLES_CSV_FIRST)]) == PARTICLES_CSV_FIRST
    assert len(table) == 2 and set(table["verdict"]) == {"analysed"}
    for name in ("columns", "octahedra", "lattice"):
        assert "particle" in pd.read_csv(files[name]).columns
    summary = summarize(res)
    assert len(summary["particles"]) == 2
    assert [t["particle"] for t in summary["core_shell_test"]] == [1, 2]
    assert all({"dtheta3_deg", "error_deg", "z", "p", "verdict"} <= set(t) for t in summary["core_shell_test"])
    text = format_summary(res, files, tmp_path, None)
    assert "particle 1:" in text and "particle 2:" in text
    assert "core − shell Δθ3: particle 2:" in text and "z " in text


def test_a_refused_particle_keeps_only_its_significant_columns():
    """A site candidate is a column only where a lattice confirms it; a refused particle has no
    lattice, so its weak maxima are not reported (its significant peaks stay, as ``unknown``)."""
    from octascope.analysis.frame import _join_columns
    from octascope.core.model import Particle, make_columns

    significant = np.array([True, False, True, False, True])
    cols = make_columns(np.arange(5) * 10.0, np.zeros(5), 0.2, amplitude=np.ones(5)).assign(
        significant=significant, species="X")
    refused = Particle(id=1, rows=np.arange(5), centroid_A=(4.0, 0.0), orientation_deg=0.0, spacing_A=3.1,
                       area_A2=10.0, size_A=(8.0, 1.0), touches_edge=False, verdict="refused")
    out = _join_columns(cols, [refused], {})
    assert list(out.index) == [0, 2, 4]
    assert (out.species == "unknown").all() and (out.particle == 1).all()
