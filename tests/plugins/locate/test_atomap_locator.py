"""The ``atomap`` locator (a wrapper of the real Atomap package) on a tiny image with known columns."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

import octascope
from octascope.core.errors import PluginError
from octascope.core.model import COLUMN_FIELDS, Image
from octascope.input.synthetic import SyntheticSpec, make_synthetic
from octascope_plugins.locate.atomap_locator import AtomapLocator
from octascope_plugins.locate.ellipse import covariance_from_axes

pytest.importorskip("atomap")


@pytest.mark.slow
def test_atomap_locator_finds_columns_of_a_small_particle():
    # 3 x 3 cells: 49 columns, dose 2000 e/Å², 0.2 Å/px
    image, truth = make_synthetic(SyntheticSpec(n_cells=(3, 3), dose_e_per_A2=2000.0, seed=2))
    cols = octascope.get_registry().create("locator", "atomap").locate(image)
    assert list(cols.columns[: len(COLUMN_FIELDS)]) == list(COLUMN_FIELDS)
    t = truth.columns[["x_A", "y_A"]].to_numpy()
    d, j = cKDTree(t).query(cols[["x_A", "y_A"]].to_numpy())
    assert len(cols) == len(t) and (d < 0.6).all() and len(set(j)) == len(t)
    # Atomap's per-column fit on this image: measured 3.2 pm RMSE; 8 pm bound
    assert 100 * np.sqrt(np.mean(d**2)) < 8.0
    assert cols.fit_ok.mean() > 0.9
    ok = cols[cols.fit_ok]
    np.testing.assert_allclose(np.median(ok.sigma_minor_A), 0.45, atol=0.05)
    assert (ok.ellipticity >= 1).all()


def test_atomap_rotation_matches_octascope_convention():
    """Major axis at 30° from +x towards +y, widths 0.30 x 0.18 Å, noise-free."""
    h = w = 80
    yy, xx = np.mgrid[:h, :w]
    cxx, cxy, cyy = covariance_from_axes(3.0, 1.8, np.radians(30))
    prec = np.linalg.inv([[cxx, cxy], [cxy, cyy]])
    data = np.full((h, w), 0.05)
    for cy in (20, 45):
        for cx in (20, 45):
            dx, dy = xx - cx - 0.3, yy - cy + 0.2
            data += np.exp(-0.5 * (prec[0, 0] * dx * dx + 2 * prec[0, 1] * dx * dy + prec[1, 1] * dy * dy))
    cols = AtomapLocator().locate(Image(data, pixel_size_A=0.1))
    assert len(cols) == 4
    np.testing.assert_allclose(cols.rotation_deg, 30.0, atol=0.5)
    np.testing.assert_allclose(cols.ellipticity, 3.0 / 1.8, rtol=0.01)
    np.testing.assert_allclose(cols.amplitude, 1.0, rtol=0.05)
    np.testing.assert_allclose(cols.x_px % 25, 20.3 % 25, atol=0.01)


def test_atomap_locator_rejects_unknown_candidate_finder():
    with pytest.raises(PluginError, match="candidates"):
        AtomapLocator(candidates="magic")
