"""Circular pixel patches around columns, stacked for the batched fit (no state between calls)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


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
    img : torch.Tensor
        (H, W) image.
    x0, y0 : torch.Tensor
        (N,) patch centres [px], rounded to the nearest pixel.
    radius_px : int
        Patch radius [px].

    Attributes
    ----------
    x, y : torch.Tensor
        (N, M) pixel coordinates [px].
    values : torch.Tensor
        (N, M) image values (0 outside the image).
    weight : torch.Tensor
        (N, M) 1 inside the image, 0 outside.
    flat : torch.Tensor
        (N, M) flat image index of each patch pixel (clamped to the image).
    edge : torch.Tensor
        (N,) patches cut by the image border.
    r2 : torch.Tensor
        (M,) squared distance of each patch pixel from the patch centre [px²].
    pair_a, pair_b : torch.Tensor
        Horizontally adjacent pixel pairs (see :func:`disk_offsets`), for a noise estimate.
    """

    def __init__(self, img: "torch.Tensor", x0: "torch.Tensor", y0: "torch.Tensor", radius_px: int):
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        h, w = img.shape
        ox, oy, pair_a, pair_b = disk_offsets(radius_px)
        # pairs of horizontally adjacent patch pixels, for a noise estimate from the residual
        self.pair_a = torch.as_tensor(pair_a, device=img.device)
        self.pair_b = torch.as_tensor(pair_b, device=img.device)
        cx, cy = torch.round(x0).long(), torch.round(y0).long()
        ox_t = torch.as_tensor(ox, device=img.device)
        oy_t = torch.as_tensor(oy, device=img.device)
        self.r2 = (ox_t * ox_t + oy_t * oy_t).to(img.dtype)
        self.x = cx.to(img.dtype)[:, None] + ox_t.to(img.dtype)[None, :]
        self.y = cy.to(img.dtype)[:, None] + oy_t.to(img.dtype)[None, :]
        # a disk pokes out of the image exactly when its bounding box does
        self.edge = (cx < radius_px) | (cx > w - 1 - radius_px) | (cy < radius_px) | (cy > h - 1 - radius_px)
        self.flat = (cy * w + cx)[:, None] + (oy_t * w + ox_t)[None, :]
        self.weight = torch.ones(self.x.shape, dtype=img.dtype, device=img.device)
        if bool(self.edge.any()):
            e = self.edge.nonzero().ravel()
            xi, yi = cx[e, None] + ox_t[None, :], cy[e, None] + oy_t[None, :]
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            self.flat[e] = yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)
            self.weight[e] = inside.to(img.dtype)
        self.values = img.reshape(-1)[self.flat] * self.weight
        self.shape = (h, w)
        self.radius = radius_px

    def subset(self, idx, values: "torch.Tensor") -> "Patches":
        """The patches ``idx`` with ``values[idx]`` as their values (weights, offsets kept); enough
        for a start estimate, not for a fit (no coordinates)."""
        sub = object.__new__(Patches)
        sub.weight = self.weight[idx]
        sub.values = values[idx]
        sub.r2 = self.r2
        sub.radius = self.radius
        return sub
