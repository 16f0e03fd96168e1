"""octascope.analysis.polygon_fill gives exactly scikit-image's polygon pixels, faster."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import polygon

from octascope.analysis.polygon_fill import polygon_pixels


def _mask(rr, cc, shape):
    m = np.zeros(shape, bool)
    m[rr, cc] = True
    return m


def _random_polygon(rng, kind):
    n = int(rng.integers(3, 40))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = rng.uniform(3, 30, n)
    cy, cx = rng.uniform(-10, 70, 2)  # some cut by the image edge, some outside it
    r, c = cy + rad * np.sin(ang), cx + rad * np.cos(ang)
    if kind == "half-integer":  # vertices on pixel centres and edges through them
        r, c = np.round(r * 2) / 2, np.round(c * 2) / 2
    elif kind == "self-intersecting":
        perm = rng.permutation(n)
        r, c = r[perm], c[perm]
    return r, c


@pytest.mark.parametrize("kind", ["smooth", "half-integer", "self-intersecting"])
def test_same_pixels_as_scikit_image(kind):
    rng = np.random.default_rng({"smooth": 0, "half-integer": 1, "self-intersecting": 2}[kind])
    shape = (64, 64)
    for _ in range(150):
        r, c = _random_polygon(rng, kind)
        got = polygon_pixels(r, c, shape)
        ref = polygon(r, c, shape=shape)
        assert np.array_equal(_mask(*got, shape), _mask(*ref, shape))
        assert np.array_equal(got[0], np.sort(got[0], kind="stable"))  # row-major order


def test_degenerate_and_outside_polygons():
    shape = (20, 20)
    for r, c in (([5, 5, 5], [2, 8, 12]),            # a line along a row of pixel centres
                 ([2, 2, 6, 6], [3, 9, 9, 3]),        # an axis-aligned rectangle on pixel centres
                 ([-9, -9, -5], [-9, -3, -6]),        # wholly outside
                 ([30, 30, 40], [5, 9, 7])):          # below the image
        got = polygon_pixels(np.array(r, float), np.array(c, float), shape)
        ref = polygon(np.array(r, float), np.array(c, float), shape=shape)
        assert np.array_equal(_mask(*got, shape), _mask(*ref, shape))


def test_a_particle_outline_on_a_large_frame():
    t = np.linspace(0, 2 * np.pi, 733, endpoint=False)  # a 10 nm particle's outline at 0.168 Å/px
    r = 1000 + 300 * np.sin(t) + 5 * np.sin(37 * t)
    c = 1000 + 310 * np.cos(t) + 5 * np.cos(23 * t)
    shape = (2048, 2048)
    assert np.array_equal(_mask(*polygon_pixels(r, c, shape), shape), _mask(*polygon(r, c, shape=shape), shape))
