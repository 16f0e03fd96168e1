"""The pixels inside a polygon, as ``skimage.draw.polygon`` gives them, row by row.

scikit-image tests every pixel of the polygon's bounding box against every edge (its
``point_in_polygon``: a pixel counts when it is inside, on an edge or within 1e-12 of a vertex);
for a particle's outline of ~700 vertices on a 2048² frame that is 0.35-0.5 s per particle. Here
each row's crossings with the edges are found once and the pixels counted between them
(O(rows × edges + pixels)); a pixel within 1e-6 px of a crossing or on a vertex is decided by
scikit-image's own test, so the result is the same set of pixels (tests/analysis/test_polygon_fill.py
compares them on random, degenerate and self-intersecting polygons).
"""

from __future__ import annotations

import numpy as np

#: scikit-image's tolerance for a pixel on a vertex [px]
VERTEX_EPS = 1e-12
#: pixels this close to a row's crossing [px] are decided by the exact test
UNSURE_PX = 1e-6


def polygon_pixels(r: np.ndarray, c: np.ndarray, shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the pixels inside the polygon with vertices (``r``, ``c``) [px].

    Parameters
    ----------
    r, c : numpy.ndarray
        (N,) row and column coordinates of the vertices [px], pixel centres at integers.
    shape : tuple of int, optional
        Image shape: pixels outside it are left out.

    Returns
    -------
    rr, cc : numpy.ndarray
        Indices in row-major order, as :func:`skimage.draw.polygon` returns them.
    """
    r, c = np.asarray(r, np.float64).ravel(), np.asarray(c, np.float64).ravel()
    minr, maxr = int(max(0, r.min())), int(np.ceil(r.max()))
    minc, maxc = int(max(0, c.min())), int(np.ceil(c.max()))
    if shape is not None:
        maxr, maxc = min(shape[0] - 1, maxr), min(shape[1] - 1, maxc)
    if maxr < minr or maxc < minc:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    rows = np.arange(minr, maxr + 1, dtype=np.float64)
    cols = np.arange(minc, maxc + 1, dtype=np.float64)
    inside, unsure = _scan_rows(r, c, rows, cols)
    vr, vc = np.rint(r).astype(np.int64) - minr, np.rint(c).astype(np.int64) - minc
    on = (vr >= 0) & (vr < len(rows)) & (vc >= 0) & (vc < len(cols))
    unsure[vr[on], vc[on]] = True
    uk, uj = np.nonzero(unsure)
    if uk.size:
        inside[uk, uj] = _exact_inside(c, r, cols[uj], rows[uk])
    rr, cc = np.nonzero(inside)
    return (rr + minr).astype(np.intp), (cc + minc).astype(np.intp)


def _scan_rows(r: np.ndarray, c: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) inside flags by counting each row's edge crossings, and the pixels too close
    to a crossing to trust the count."""
    dy_this = r[None, :] - rows[:, None]  # edge (i-1, i): y0 of vertex i, y1 of vertex i-1
    dy_prev = np.roll(r, 1)[None, :] - rows[:, None]
    right = (dy_this > 0) != (dy_prev > 0)
    left = (dy_this < 0) != (dy_prev < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = (c[None, :] * dy_prev - np.roll(c, 1)[None, :] * dy_this) / (dy_prev - dy_this)
    x_right = np.sort(np.where(right, x_cross, np.inf), axis=1)
    x_left = np.sort(np.where(left, x_cross, -np.inf), axis=1)
    n_right, n_left = right.sum(1), left.sum(1)
    inside = np.zeros((len(rows), len(cols)), bool)
    unsure = np.zeros_like(inside)
    for k in range(len(rows)):  # one vector operation per row, not per pixel
        xr, xl = x_right[k, :n_right[k]], x_left[k, x_left.shape[1] - n_left[k]:]
        right_count = len(xr) - np.searchsorted(xr, cols, side="right")  # crossings right of the pixel
        left_count = np.searchsorted(xl, cols, side="left")  # crossings left of it
        inside[k] = ((right_count & 1) != (left_count & 1)) | (right_count & 1).astype(bool)
        xs = np.sort(np.concatenate([xr, xl]))
        if xs.size:
            j = np.searchsorted(xs, cols)
            gap = np.minimum(np.abs(cols - xs[np.clip(j - 1, 0, xs.size - 1)]), np.abs(cols - xs[np.clip(j, 0, xs.size - 1)]))
            unsure[k] = gap < UNSURE_PX
    return inside, unsure


def _exact_inside(xp: np.ndarray, yp: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """scikit-image's ``point_in_polygon(xp, yp, x, y) != OUTSIDE`` for points (``x``, ``y``)
    (O'Rourke's crossing test with left and right rays; on an edge or a vertex counts)."""
    x1, y1 = xp[-1] - x, yp[-1] - y
    right = np.zeros(x.shape, np.int64)
    left = np.zeros(x.shape, np.int64)
    vertex = np.zeros(x.shape, bool)
    for xi, yi in zip(xp, yp):
        x0, y0 = xi - x, yi - y
        vertex |= (np.abs(x0) < VERTEX_EPS) & (np.abs(y0) < VERTEX_EPS)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (x0 * y1 - x1 * y0) / (y1 - y0)
        right += ((y0 > 0) != (y1 > 0)) & (t > 0)
        left += ((y0 < 0) != (y1 < 0)) & (t < 0)
        x1, y1 = x0, y0
    return vertex | ((right & 1) != (left & 1)) | (right & 1).astype(bool)
