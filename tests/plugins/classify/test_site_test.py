"""The site candidates' test: a weak maximum on an empty rim site is a column only when the rim's
evidence, counted over every empty site looked at, says so (a false discovery rate).

A particle's rim has an empty lattice site next to every outer column; at 2.5σ a disc of the
site tolerance holds a noise maximum that high a fifth to a quarter of the time, so a fixed floor
keeps a noise peak on many of them (the benchmark field's rim ghosts). The columns here are a
square particle of known species; the site candidates carry the significance a locator would
give them and the table the noise roughness λ of a band-passed iDPC image (≈ 5 /Å² for the
candidate search's 0.25/0.8 Å band-pass, measured on the benchmark field).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from octascope.analysis.frame import drop_unconfirmed_site_candidates
from octascope.analysis.noise_spectrum import PEAK_ROUGHNESS_ATTR, false_peak_probability
from octascope.core.model import make_columns
from octascope.input.synthetic import SyntheticSpec, make_synthetic
from octascope_plugins.classify.sofs_classifier import SofsClassifier
from octascope_plugins.classify.sublattice_classifier import LatticeClassifier

ROUGHNESS = 5.0  # [1/Å²]
AMP = {"Pb": 1.0, "X": 0.39, "Cs": 0.41}
SPACING_A = 3.125  # a/2 of the synthetic lattice


def particle(n=(12, 12)):
    """An upright square particle: every column significant (z = 12)."""
    image, truth = make_synthetic(SyntheticSpec(n_cells=n, rotation_deg=9.0, seed=0, dose_e_per_A2=None))
    t = truth.columns
    cols = make_columns(t.x_A / image.pixel_size_A, t.y_A / image.pixel_size_A, image.pixel_size_A,
                        amplitude=t.species.map(AMP).to_numpy())
    return image, truth, cols.assign(significance=12.0, significant=True)


def rim_sites(truth) -> np.ndarray:
    """(M, 2) positions [Å] of the empty a/2-lattice sites one step (diagonals included) outside the particle."""
    xy = truth.columns[["x_A", "y_A"]].to_numpy()
    origin = xy.min(0)
    held = {tuple(v) for v in np.rint((xy - origin) / SPACING_A).astype(int)}
    out = {(i + di, j + dj) for i, j in held for di in (-1, 0, 1) for dj in (-1, 0, 1)} - held
    return origin + SPACING_A * np.array(sorted(out), float)


def with_candidates(image, cols, xy_A, significance, roughness=ROUGHNESS, amplitude=0.4):
    extra = make_columns(xy_A[:, 0] / image.pixel_size_A, xy_A[:, 1] / image.pixel_size_A, image.pixel_size_A,
                         amplitude=np.broadcast_to(amplitude, len(xy_A)).astype(float)).assign(
        significance=significance, significant=False)
    table = pd.concat([cols, extra], ignore_index=True)
    if roughness is not None:
        table.attrs[PEAK_ROUGHNESS_ATTR] = roughness
    return table


def kept_candidates(classifier, image, table) -> int:
    out = drop_unconfirmed_site_candidates(classifier.classify(image, table).columns)
    return int((~out.significant).sum())


@pytest.fixture(scope="module")
def scene():
    image, truth, cols = particle()
    sites = rim_sites(truth)
    rng = np.random.default_rng(1)
    ghosts = rng.choice(len(sites), size=len(sites) // 4, replace=False)  # a quarter of the rim: noise at 2.5-3.2σ
    return image, truth, cols, sites, ghosts, rng.uniform(2.5, 3.2, len(ghosts))


def test_noise_peaks_on_the_rim_are_dropped(scene):
    classifier = LatticeClassifier()
    image, truth, cols, sites, ghosts, z = scene
    assert len(sites) > 100 and len(ghosts) > 25
    # each is a likely noise maximum: p of 2.5-3.2σ within the site tolerance is 3-20 %
    p = false_peak_probability(z, ROUGHNESS, 0.35 * SPACING_A)
    assert 0.03 < p.min() and p.max() < 0.2
    table = with_candidates(image, cols, sites[ghosts], z)
    assert kept_candidates(classifier, image, table) == 0
    # the test is what drops them: off, or without the noise's roughness, those the amplitude does
    # not rule out (a weak peak on a Pb site is not Pb) are kept
    floor_only = kept_candidates(type(classifier)(site_fdr=0), image, table)
    assert floor_only > 0.4 * len(ghosts)
    assert kept_candidates(classifier, image, with_candidates(image, cols, sites[ghosts], z, roughness=None)) == floor_only


def test_sofs_indexes_only_the_site_candidates_that_pass(scene):
    """SOFS shares the registry: the rim's noise peaks do not join its lattice (they would with the test off)."""
    image, truth, cols, sites, ghosts, z = scene
    table = with_candidates(image, cols, sites[ghosts], z)
    weak = ~table.significant.to_numpy()
    assert not SofsClassifier().classify(image, table).columns.on_lattice.to_numpy()[weak].any()
    assert SofsClassifier(site_fdr=0).classify(image, table).columns.on_lattice.to_numpy()[weak].mean() > 0.9


def test_a_clear_column_on_the_rim_is_kept(scene):
    """A 6σ maximum on one rim site among the noise peaks of the others: p ≈ 1e-6, a column (as
    bright as a Pb column, so no site's species rules it out)."""
    image, truth, cols, sites, ghosts, z = scene
    lone = np.setdiff1d(np.arange(len(sites)), ghosts)[0]
    table = with_candidates(image, cols, sites[np.r_[ghosts, lone]], np.r_[z, 6.0],
                            amplitude=np.r_[np.full(len(ghosts), 0.4), 1.0])
    out = drop_unconfirmed_site_candidates(LatticeClassifier().classify(image, table).columns)
    weak = out[~out.significant]
    assert len(weak) == 1
    assert np.hypot(*(weak[["x_A", "y_A"]].to_numpy()[0] - sites[lone])) < 0.1
    assert weak.species.iloc[0] != "unknown"


def test_weak_columns_inside_the_lattice_keep_the_floor():
    """An empty site with held sites on both sides is inside the crystal, where a column is
    expected: a 2.6σ maximum there is kept (a third of the X and Cs columns weak)."""
    image, truth, cols = particle()
    t = truth.columns
    weak = (t.species != "Pb").to_numpy() & (np.arange(len(t)) % 3 == 0)
    cols = cols.assign(significant=~weak, significance=np.where(weak, 2.6, 12.0))
    cols.attrs[PEAK_ROUGHNESS_ATTR] = ROUGHNESS
    out = drop_unconfirmed_site_candidates(LatticeClassifier().classify(image, cols).columns)
    inner = weak & (t.shell > 0).to_numpy()
    assert inner.sum() > 20
    kept = set(map(tuple, np.round(out[["x_A", "y_A"]].to_numpy(), 6)))
    assert all(tuple(v) in kept for v in np.round(cols[["x_A", "y_A"]].to_numpy()[inner], 6))


def test_a_rim_that_holds_weak_columns_everywhere_keeps_them(scene):
    """The bar follows the evidence of the whole rim (Storey's share of empty sites): 3.3σ maxima
    on every rim site are a surface layer, kept; the same maxima on one site in ten could be
    noise (p ≈ 3 % each, ~3 expected among the rim's 104 sites) and are dropped."""
    image, truth, cols, sites, ghosts, z = scene
    every = with_candidates(image, cols, sites, np.full(len(sites), 3.3))
    # all but those on Pb sites (a peak that weak is not Pb)
    assert kept_candidates(LatticeClassifier(), image, every) == kept_candidates(LatticeClassifier(site_fdr=0), image, every) > 0.4 * len(sites)
    few = np.arange(0, len(sites), 10)
    some = with_candidates(image, cols, sites[few], np.full(len(few), 3.3))
    assert kept_candidates(LatticeClassifier(), image, some) == 0


def test_site_fdr_is_checked():
    from octascope.core.errors import PluginParameterError

    for bad in (-0.1, 1.0):
        with pytest.raises(PluginParameterError, match="site_fdr"):
            LatticeClassifier(site_fdr=bad)
        with pytest.raises(PluginParameterError, match="site_fdr"):
            SofsClassifier(site_fdr=bad)
