"""SOFS classifier and network builder on column tables with known species and geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import octascope
from octascope.core.errors import InputError, PluginParameterError
from octascope.core.model import Classification, Image, Result
from octascope.core.params import describe
from octascope.input.synthetic import Z_COLUMN, SyntheticSpec, perovskite_columns
from octascope_plugins.classify.sofs_classifier import SofsClassifier
from octascope.analysis.octahedral_geometry import octahedra_from_indices
from octascope_plugins.metric.octahedral import OctahedralMetric
from octascope_plugins.network.sofs_network import SofsNetwork

IMAGE = Image(np.zeros((16, 16), np.float32), pixel_size_A=0.2)
CONF = Path(__file__).resolve().parents[3] / "conf"


def particle(angle_deg=0.0, n=12, shape="square", missing=0.05, spurious=0.05, tilt_deg=10.0, pos_noise_A=0.03, seed=0):
    """Column table of a particle with amplitudes, missing columns and background peaks.

    Returns the table (``x_A``, ``y_A``, ``amplitude``) and the truth (``species`` incl.
    ``spurious``, ``i``, ``j``, ``interior``: every Pb site within 1.5 cells present).
    """
    rng = np.random.default_rng(seed)
    cols, _ = perovskite_columns(SyntheticSpec(n_cells=(n, n), a_A=6.25, rotation_deg=tilt_deg))
    if shape == "L":  # remove the top-right quarter
        cols = cols[~((cols.i > n / 2 - 0.5) & (cols.j > n / 2 - 0.5)).to_numpy()]
    pb_sites = {(int(i), int(j)) for i, j in cols.loc[cols.species == "Pb", ["i", "j"]].to_numpy()}
    interior = np.ones(len(cols), bool)
    ci, cj = cols.i.to_numpy(), cols.j.to_numpy()
    for di in np.arange(-2, 3):
        for dj in np.arange(-2, 3):
            I, J = np.floor(ci) + di, np.floor(cj) + dj
            near = (np.abs(I - ci) <= 1.5) & (np.abs(J - cj) <= 1.5)
            present = np.array([(int(a), int(b)) in pb_sites for a, b in zip(I, J)])
            interior &= ~near | present
    cols = cols.assign(interior=interior)
    cols = cols[((cols.species == "Pb") | (rng.random(len(cols)) >= missing)).to_numpy()].reset_index(drop=True)
    ang = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    xy = cols[["x_A", "y_A"]].to_numpy() @ rot.T + 200.0 + rng.normal(0, pos_noise_A, (len(cols), 2))
    amp = cols.species.map(Z_COLUMN).to_numpy(float) / Z_COLUMN["Pb"] * (1 + 0.05 * rng.standard_normal(len(cols)))
    n_sp = int(round(spurious * len(cols)))
    lo, hi = xy.min(0) - 6, xy.max(0) + 6
    sp_xy = rng.uniform(lo, hi, (n_sp, 2))
    table = pd.DataFrame({"x_A": np.r_[xy[:, 0], sp_xy[:, 0]], "y_A": np.r_[xy[:, 1], sp_xy[:, 1]],
                          "amplitude": np.r_[amp, rng.uniform(0.05, 0.25, n_sp)]})
    truth = pd.DataFrame({"species": np.r_[cols.species.to_numpy(), np.full(n_sp, "spurious")],
                          "i": np.r_[cols.i, np.full(n_sp, np.nan)], "j": np.r_[cols.j, np.full(n_sp, np.nan)],
                          "interior": np.r_[cols.interior.to_numpy(), np.zeros(n_sp, bool)]})
    return table, truth


CASES = [(0.0, "square"), (17.0, "square"), (45.0, "square"), (17.0, "L")]


@pytest.mark.parametrize("angle_deg,shape", CASES)
def test_species_accuracy_interior(angle_deg, shape):
    table, truth = particle(angle_deg, shape=shape)
    out = SofsClassifier().classify(IMAGE, table).columns
    assert out.index.equals(table.index) and "species" not in table  # a copy, input untouched
    sp = out.species.to_numpy()
    interior = truth.interior.to_numpy()
    assert interior.sum() > 200
    acc = np.mean(sp[interior] == truth.species.to_numpy()[interior])
    assert acc >= 0.99, f"interior species accuracy {acc:.4f}"
    spurious = truth.species.to_numpy() == "spurious"
    assert not (sp[spurious] == "Pb").any()
    assert np.mean(sp[spurious] == "X") <= 0.15
    # X confidence is a link probability in (0, 1]
    conf = out.species_confidence.to_numpy()[sp == "X"]
    assert ((conf > 0) & (conf <= 1)).all()


@pytest.mark.parametrize("spurious", [0.0, 0.05])
@pytest.mark.parametrize("angle_deg,shape", CASES)
def test_network_matches_truth_neighbours_and_tilt(angle_deg, shape, spurious):
    table, truth = particle(angle_deg, shape=shape, pos_noise_A=0.0, spurious=spurious)
    classified = SofsClassifier().classify(IMAGE, table)
    net = SofsNetwork().build(IMAGE, classified)
    # truth network from the lattice indices of the real columns
    real = truth.species.to_numpy() != "spurious"
    ref = octahedra_from_indices(pd.concat([table[real], truth[real]], axis=1)).table.set_index("pb")
    got = net.table.set_index("pb")
    assert set(got.index) == set(ref.index)
    ok = ~got["edge"].to_numpy()
    assert ok.mean() > 0.6
    names = ["x_right", "x_left", "x_up", "x_down"]
    wrong = got.loc[ok, names].to_numpy() != ref.loc[got.index[ok], names].to_numpy()
    # a background peak sitting on the site of a missing X may take its place: allow 1 % of bonds then
    assert wrong.mean() <= (0.01 if spurious else 0.0), f"{wrong.sum()} of {wrong.size} bonds differ from the truth"
    # every edge octahedron lacks an X or has a one-sided rim X; complete interior ones are not edge
    complete_ref = (ref[["x_right", "x_left", "x_up", "x_down"]] >= 0).all(1)
    interior_pb = pd.Series(truth.interior[real].to_numpy(), index=table.index[real])
    must_be_ok = complete_ref & interior_pb.reindex(ref.index).to_numpy()
    assert not got.loc[must_be_ok[must_be_ok].index, "edge"].any()
    # the metric on this network recovers the 10° tilt exactly (no position noise)
    res = Result(image=IMAGE, denoised=IMAGE, columns=classified.columns, octahedra=net)
    octs = OctahedralMetric(figures=False, uncertainty=False).compute(res, None).tables["octahedra"]
    good = octs[~octs.edge]
    if spurious:
        assert np.median(good.theta3_deg) == pytest.approx(10.0, abs=1e-6)
    else:
        np.testing.assert_allclose(good.theta3_deg, 10.0, atol=1e-6)
    assert set(np.unique(net.table.shell)) >= {0, 1, 2}


def test_depth_limit_reseeds_and_still_covers():
    table, truth = particle(17.0, shape="L")
    full = SofsClassifier().classify(IMAGE, table)
    short = SofsClassifier(depth_limit=1).classify(IMAGE, table)
    assert short.search.stats["n_seeds"] > full.search.stats["n_seeds"]
    interior = truth.interior.to_numpy()
    assert np.mean(short.columns.species.to_numpy()[interior] == truth.species.to_numpy()[interior]) >= 0.99


def test_branching_one_keeps_single_links_but_reseeds():
    table, truth = particle(0.0, missing=0.0, spurious=0.0)
    out = SofsClassifier(branching=1).classify(IMAGE, table).columns
    assert (out.species.to_numpy() == truth.species.to_numpy()).mean() >= 0.99


def test_rim_x_found_from_one_side_only_is_flagged():
    table, truth = particle(0.0, missing=0.0, spurious=0.0, pos_noise_A=0.0)
    # outer X left of Pb (0, 5): drop its two X-X neighbours (the vertical X of Pb (0, 5))
    gone = ((truth.i == 0) & truth.j.isin([4.5, 5.5])).to_numpy()
    table, truth = table[~gone], truth[~gone]
    classified = SofsClassifier().classify(IMAGE, table)
    out = classified.columns
    rim = ((truth.i == -0.5) & (truth.j == 5)).to_numpy()
    assert out.species.to_numpy()[rim][0] == "X" and out.edge.to_numpy()[rim][0]
    other_rim = ((truth.i == -0.5) & (truth.j == 8)).to_numpy()
    assert out.species.to_numpy()[other_rim][0] == "X" and not out.edge.to_numpy()[other_rim][0]
    net = SofsNetwork().build(IMAGE, classified)
    pb = net.table[(net.table.i - net.table.i.min() == 0)]
    assert pb.edge.sum() >= 1


def test_bad_inputs():
    table, _ = particle(0.0, n=4, missing=0.0, spurious=0.0)
    with pytest.raises(InputError, match="Pb"):
        SofsClassifier().classify(IMAGE, table.assign(amplitude=0.4))  # all columns of equal intensity
    small = table[(table.amplitude < 0.7) | (np.arange(len(table)) < 3)]  # three Pb: less than one unit cell
    with pytest.raises(InputError, match="unit cell|Pb|lattice"):
        SofsClassifier().classify(IMAGE, small)
    with pytest.raises(InputError, match="amplitude"):
        SofsClassifier().classify(IMAGE, table.drop(columns="amplitude"))
    with pytest.raises(InputError, match="species"):
        SofsNetwork().build(IMAGE, Classification(columns=table))
    # no X at all: an empty, fully flagged network, no crash
    classified = SofsClassifier().classify(IMAGE, table).columns
    only_pb_cs = classified.assign(species=np.where(classified.species == "X", "unknown", classified.species))
    net = SofsNetwork().build(IMAGE, Classification(columns=only_pb_cs))
    assert len(net.table) == 16 and net.table.edge.all() and (net.table.x_right == -1).all()
    with pytest.raises(PluginParameterError, match="branching"):
        SofsClassifier(branching=0)
    with pytest.raises(PluginParameterError, match="site_tolerance_frac"):
        SofsNetwork(site_tolerance_frac=0.4)


def test_registered_and_configs_document_every_parameter():
    reg = octascope.get_registry()
    for stage, path, cls in (("classifier", "classifier/sofs.yaml", SofsClassifier), ("network", "network/sofs.yaml", SofsNetwork)):
        assert reg.get(stage, "sofs") is cls
        conf = yaml.safe_load((CONF / path).read_text())
        params = {p.name: p.default for p in describe(cls)}
        assert conf.pop("name") == "sofs"
        assert conf == params
        reg.create(stage, "sofs", **conf)


def test_pipeline_on_synthetic_image_recovers_core_and_shell_tilt():
    from octascope.input.synthetic import make_synthetic

    image, truth = make_synthetic(SyntheticSpec(n_cells=(7, 7), rotation_deg=10.0, shell_rotation_deg=5.0, shell_depth=2,
                                                particle_angle_deg=17.0, dose_e_per_A2=5000.0, seed=2))
    result = octascope.analyze(image, denoiser="none", locator="gaussian", classifier="sofs", network="sofs",
                               metrics=[("octahedral", {"shell_depth_cells": 2, "figures": False}),
                                        ("lattice", {"figures": False})], progress=None)
    s = result.scalars
    t = truth.octahedra
    assert s["n_octahedra"] == 49 and s["n_octahedra_edge"] <= 4
    # the located columns carry fit errors of ~0.01 Å, so tilts come out within a few tenths of a degree
    assert s["theta3_deg_mean_core"] == pytest.approx(t[t.shell >= 2].theta3_deg.mean(), abs=0.3)
    assert s["theta3_deg_mean_shell"] == pytest.approx(t[t.shell < 2].theta3_deg.mean(), abs=0.3)
    assert 0 < s["theta3_err_deg_median"] < 1.0
    assert s["P1_A_mean"] == pytest.approx(6.25, abs=0.02) and s["C2_A_mean"] == pytest.approx(6.25, abs=0.02)


def test_search_options_declared_once():
    """classifier=sofs and network=sofs share one declaration of the search's options."""
    from octascope_plugins.sites.sofs_search import SofsSearchOptions

    assert issubclass(SofsClassifier.Options, SofsSearchOptions) and SofsNetwork.Options is SofsSearchOptions
    search = {p.name for p in describe(SofsNetwork)}
    assert search < {p.name for p in describe(SofsClassifier)}
    assert {p.name for p in describe(SofsClassifier)} - search == {"min_pb_posterior", "site_fdr"}


def _counting(monkeypatch):
    import octascope_plugins.sites.sofs_search as sofs_module

    calls = []
    real = sofs_module.sofs_search

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sofs_module, "sofs_search", counted)
    return calls


def _network_frame(octs):
    return octs.table.reset_index(drop=True), np.asarray(octs.bonds)


@pytest.mark.parametrize("angle, shape, seed", [(0.0, "square", 0), (17.0, "L", 1), (30.0, "square", 3)])
def test_classifier_and_network_search_once(monkeypatch, angle, shape, seed):
    """classifier=sofs then network=sofs runs the spiral search once: the network builds the
    octahedra from the classifier's search (its ``search`` record), and they are the same octahedra
    as a search of its own over the X columns gives (what the network did before it reused one)."""
    table, _ = particle(angle, shape=shape, seed=seed)
    calls = _counting(monkeypatch)
    classified = SofsClassifier().classify(IMAGE, table)
    assert len(calls) == 1
    reused = SofsNetwork().build(IMAGE, classified)
    assert len(calls) == 1  # no second search
    # the network's own search (as before: over the columns labelled X) gives the same octahedra
    own = SofsNetwork().build(IMAGE, _without_record(classified))
    assert len(calls) == 2
    pd.testing.assert_frame_equal(_network_frame(reused)[0], _network_frame(own)[0])
    assert np.array_equal(_network_frame(reused)[1], _network_frame(own)[1])
    assert len(reused.table) > 50 and (~reused.table.edge).sum() > 30


def _without_record(classification):
    return Classification(columns=classification.columns, lattice_basis_A=classification.lattice_basis_A)


def test_network_searches_when_the_record_does_not_apply(monkeypatch):
    """The record is used only for the same search options and unchanged Pb/X rows; otherwise the
    network searches itself (classifier=lattice, other options, moved positions)."""
    from octascope_plugins.classify.sublattice_classifier import LatticeClassifier

    table, _ = particle(17.0, seed=2)
    classified = SofsClassifier().classify(IMAGE, table)
    calls = _counting(monkeypatch)
    SofsNetwork(min_probability=0.3).build(IMAGE, classified)  # other options
    assert len(calls) == 1
    cols = classified.columns
    moved = classified.with_columns(cols.assign(x_A=cols.x_A + 1e-3))  # e.g. refined positions
    SofsNetwork().build(IMAGE, moved)
    assert len(calls) == 2
    dropped = classified.with_columns(cols[cols.species != "Cs"])  # rows dropped in between: still the same Pb and X
    SofsNetwork().build(IMAGE, dropped)
    assert len(calls) == 2
    lattice = LatticeClassifier().classify(IMAGE, table)  # classifier=lattice: no record, the network searches
    assert lattice.search is None
    net = SofsNetwork().build(IMAGE, lattice)
    assert len(calls) == 3 and len(net.table) > 50


def _weak_peaks_on_vacant_x_sites(seed: int = 4):
    """A particle with a fifth of its interior X columns missing and a weak background peak
    (25 % of an X column's amplitude) on each vacant site: what the registry alone takes for X."""
    rng = np.random.default_rng(seed)
    table, truth = particle(0.0, missing=0.0, spurious=0.0, seed=seed)
    vacant = (truth.species == "X").to_numpy() & truth.interior.to_numpy() & (rng.random(len(truth)) < 0.2)
    amp = table["amplitude"].to_numpy().copy()
    amp[vacant] = 0.25 * np.median(amp[(truth.species == "X").to_numpy()])
    return table.assign(amplitude=amp), vacant


def test_sofs_discards_weak_peaks_the_registry_takes_for_halides():
    """Where SOFS differs from the registry classification: a weak peak sitting on a vacant X site
    continues the lattice (the registry calls it X) but is no halide column (its intensity term
    keeps the spiral search from linking it). Replacing the search by the registry fails this test."""
    from octascope_plugins.classify.sublattice_classifier import LatticeClassifier

    table, vacant = _weak_peaks_on_vacant_x_sites()
    assert vacant.sum() >= 20
    registry = LatticeClassifier().classify(IMAGE, table).columns["species"].to_numpy()
    sofs = SofsClassifier().classify(IMAGE, table).columns["species"].to_numpy()
    assert np.mean(registry[vacant] == "X") >= 0.9  # the registry alone: X
    assert np.mean(sofs[vacant] == "X") <= 0.1  # the search: not linked
    assert np.mean(sofs[~vacant] == registry[~vacant]) >= 0.99  # elsewhere they agree
