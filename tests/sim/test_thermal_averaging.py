"""octascope.sim.thermal: frozen-phonon configurations from MD statistics and their Gaussian limit."""

from __future__ import annotations

import numpy as np
import pytest

from octascope.core.errors import InputError
from octascope.sim.thermal import displacement_statistics, frozen_phonon_configurations, gaussian_projected_potential


def _snapshots(s=40, seed=0):
    rng = np.random.default_rng(seed)
    mean = np.array([[0.0, 0.0, 0.0], [3.0, 1.0, 2.0]])
    cov = np.array([[[0.04, 0.01, 0.0], [0.01, 0.02, 0.0], [0.0, 0.0, 0.01]], np.diag([0.09, 0.09, 0.09])])
    return np.stack([rng.multivariate_normal(m, c, size=s) for m, c in zip(mean, cov)], axis=1), mean, cov


def test_configurations_reproduce_each_atoms_mean_and_covariance():
    snaps, _, _ = _snapshots()
    mean, cov = displacement_statistics(snaps)
    conf = frozen_phonon_configurations(snaps, 20000, seed=1)
    assert conf.shape == (20000, 2, 3)
    np.testing.assert_allclose(conf.mean(0), mean, atol=0.01)
    for a in range(2):
        np.testing.assert_allclose(np.cov(conf[:, a].T), cov[a], atol=0.004)
    np.testing.assert_array_equal(conf[:5], frozen_phonon_configurations(snaps, 20000, seed=1)[:5])
    with pytest.raises(InputError, match="n_configurations"):
        frozen_phonon_configurations(snaps, 0)
    with pytest.raises(InputError, match="S >= 2"):
        displacement_statistics(snaps[:1])


@pytest.mark.abtem
def test_gaussian_limit_is_the_mean_of_smeared_atoms():
    """Without spread it is abTEM's projected potential (after a probe-sized blur: the core sampling
    differs); with spread it keeps each atom's integral and lowers its peak."""
    import abtem
    from ase import Atoms
    from scipy.ndimage import gaussian_filter

    xy = np.array([[4.13, 5.07], [9.61, 8.22]])
    cell, n = (14.0, 14.0), (112, 112)
    atoms = Atoms("PbI", positions=np.column_stack([xy, [1.0, 1.0]]), cell=(*cell, 2.0), pbc=True)
    ref = np.asarray(abtem.Potential(atoms, gpts=n, slice_thickness=2.0, projection="infinite").build().project()
                     .compute().array).T
    sharp = gaussian_projected_potential(["Pb", "I"], xy, np.zeros((2, 2, 2)), gpts=n, extent_A=cell)
    blur = dict(sigma=0.5 / 0.125, mode="wrap")
    assert np.corrcoef(gaussian_filter(sharp, **blur).ravel(), gaussian_filter(ref, **blur).ravel())[0, 1] > 0.999
    smeared = gaussian_projected_potential(["Pb", "I"], xy, np.tile(np.diag([0.05, 0.02]), (2, 1, 1)), gpts=n, extent_A=cell)
    assert smeared.sum() == pytest.approx(sharp.sum(), rel=1e-6)
    assert smeared.max() < 0.7 * sharp.max()


@pytest.mark.abtem
def test_imaging_draws_configurations_from_snapshots():
    from octascope.sim.imaging import simulate_image
    from octascope.sim.structure import build_nanocube

    atoms = build_nanocube(n_cells=1, phase="cubic", charge_balance=False)
    rng = np.random.default_rng(0)
    snaps = atoms.get_positions()[None] + rng.normal(0, 0.1, (3, len(atoms), 3))
    kw = dict(pixel_size_A=0.5, margin_A=3.0, sampling_A=0.125)
    sim = simulate_image(atoms.get_chemical_symbols(), snaps, thermal_configurations=4, **kw)
    assert sim.info["n_snapshots"] == 4
    with pytest.raises(InputError, match="thermal_configurations"):
        simulate_image(atoms.get_chemical_symbols(), atoms.get_positions(), thermal_configurations=4, **kw)
