"""Circular pixel patches around columns, stacked for the batched fit (no state between calls)."""

from __future__ import annotations

from typing import Any

import numpy as np

from octascope_plugins.locate.arrays import arrays_of


def disk_offsets(radius_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel offsets of a disk and its pairs of horizontally adjacent pixels.

    Computed on every call (a few hundred offsets, microseconds next to a fit round), so there is
    no module-level cache to share between threads or to go stale.

    Parameters
    ----------
    radius_px : int
        Disk radius [px]; a pixel belongs when ``ox² + oy² <= radius_px²``.

    Returns
    -------
    ox, oy : numpy.ndarray
        (M,) offsets along x (axis 1) and y (axis 0) [px], row-major order.
    pair_a, pair_b : numpy.ndarray
        Indices into ``ox``/``oy`` of horizontally adjacent pixels (``pair_b`` one pixel right of ``pair_a``).
    """
    off = np.arange(-radius_px, radius_px + 1)
    gy, gx = np.meshgrid(off, off, indexing="ij")
    disk = (gx**2 + gy**2 <= radius_px**2 + 1e-9).ravel()
    ox, oy = gx.ravel()[disk], gy.ravel()[disk]
    key = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(ox.tolist(), oy.tolist()))}
    pairs = [(k, key[(a + 1, b)]) for (a, b), k in key.items() if (a + 1, b) in key]
    return (ox, oy, np.array([a for a, _ in pairs], dtype=np.int64), np.array([b for _, b in pairs], dtype=np.int64))


class Patches:
    """Pixel coordinates and values of the circular patch around each column.

    Parameters
    ----------
    img : array
        (H, W) image (a NumPy array or a torch tensor, see :mod:`.arrays`; the attributes are of
        the same kind).
    x0, y0 : array
        (N,) patch centres [px], rounded to the nearest pixel.
    radius_px : int
        Patch radius [px].

    Attributes
    ----------
    x, y : array
        (N, M) pixel coordinates [px].
    values : array
        (N, M) image values (0 outside the image).
    weight : array
        (N, M) 1 inside the image, 0 outside.
    flat : array
        (N, M) flat image index of each patch pixel (clamped to the image).
    edge : array
        (N,) patches cut by the image border.
    r2 : array
        (M,) squared distance of each patch pixel from the patch centre [px²].
    pair_a, pair_b : array
        Horizontally adjacent pixel pairs (see :func:`disk_offsets`), for a noise estimate.
    """

    def __init__(self, img: Any, x0: Any, y0: Any, radius_px: int):
        xp = arrays_of(img)
        h, w = img.shape
        ox, oy, pair_a, pair_b = disk_offsets(radius_px)
        # pairs of horizontally adjacent patch pixels, for a noise estimate from the residual
        self.pair_a = xp.index(pair_a)
        self.pair_b = xp.index(pair_b)
        cx, cy = xp.as_int(xp.round(x0)), xp.as_int(xp.round(y0))
        ox_t, oy_t = xp.index(ox), xp.index(oy)
        self.r2 = xp.as_float(ox_t * ox_t + oy_t * oy_t)
        self.x = xp.as_float(cx)[:, None] + xp.as_float(ox_t)[None, :]
        self.y = xp.as_float(cy)[:, None] + xp.as_float(oy_t)[None, :]
        # a disk pokes out of the image exactly when its bounding box does
        self.edge = (cx < radius_px) | (cx > w - 1 - radius_px) | (cy < radius_px) | (cy > h - 1 - radius_px)
        self.flat = (cy * w + cx)[:, None] + (oy_t * w + ox_t)[None, :]
        self.weight = xp.full(tuple(self.x.shape), 1.0)
        if bool(self.edge.any()):
            e = xp.nonzero(self.edge)
            xi, yi = cx[e, None] + ox_t[None, :], cy[e, None] + oy_t[None, :]
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            self.flat[e] = xp.clip(yi, 0, h - 1) * w + xp.clip(xi, 0, w - 1)
            self.weight[e] = xp.as_float(inside)
        self.values = img.reshape(-1)[self.flat] * self.weight
        self.shape = (h, w)
        self.radius = radius_px

    def subset(self, idx, values: Any) -> "Patches":
        """The patches ``idx`` with ``values[idx]`` as their values (weights, offsets kept); enough
        for a start estimate, not for a fit (no coordinates)."""
        sub = object.__new__(Patches)
        sub.weight = self.weight[idx]
        sub.values = values[idx]
        sub.r2 = self.r2
        sub.radius = self.radius
        return sub
