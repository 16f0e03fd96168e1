"""Rendering of the neighbours' models on each column's patch (iterative neighbour subtraction)."""

from __future__ import annotations

from typing import Any

from octascope_plugins.locate.arrays import arrays_of
from octascope_plugins.locate.lm_solver import _A, _B, _X, _Y, model
from octascope_plugins.locate.patches import Patches, disk_offsets


def others_on_patches(p: Any, ok: Any, patches: Patches, img: Any, render_radius_px: int) -> Any:
    """Model of all *other* columns on each column's patch (N, M), background excluded.

    Every column is rendered on a disk of ``render_radius_px`` (by default twice the patch
    radius), so the tail of a neighbour whose centre lies outside a patch is still subtracted
    from it. Failed fits render nothing.

    Parameters
    ----------
    p : array
        (N, 7) current parameters (see :mod:`.lm_solver`) [px].
    ok : array
        (N,) bool, usable fits.
    patches : Patches
        The patches of the columns.
    img : array
        (H, W) image (gives shape, dtype and device).
    render_radius_px : int
        Radius each column's model is rendered out to [px].

    Returns
    -------
    array
        (N, M) summed model of the other columns on every patch pixel.
    """
    h, w = patches.shape
    q = arrays_of(p).copy(p)
    q[:, _B] = 0
    q[~ok, _A] = 0
    own, _ = model(q, patches.x, patches.y, jacobian=False)
    total = render_columns(p, ok, (h, w), img, render_radius_px).reshape(-1)
    return total[patches.flat] - own


def render_columns(p: Any, ok: Any, shape: tuple[int, int], img: Any, render_radius_px: int) -> Any:
    """The summed model of all usable columns (background excluded) on the image grid (H, W).

    Parameters
    ----------
    p : array
        (N, 7) parameters (see :mod:`.lm_solver`) [px].
    ok : array
        (N,) bool, usable fits (the others render nothing).
    shape : tuple of int
        (H, W) of the image.
    img : array
        Gives dtype and device.
    render_radius_px : int
        Radius each column's model is rendered out to [px].
    """
    xp = arrays_of(p)
    h, w = shape
    q = xp.copy(p)
    q[:, _B] = 0
    q[~ok, _A] = 0
    total = xp.zeros((h, w))
    good = xp.nonzero(ok & xp.isfinite(q).all(1))
    if good.shape[0]:
        # render into an image padded by the disk radius, so no pixel needs clipping
        radius = int(render_radius_px)
        ox_px, oy_px, _, _ = disk_offsets(radius)
        ox, oy = xp.index(ox_px), xp.index(oy_px)
        qg = q[good]
        cx = xp.clip(xp.round(qg[:, _X]), -radius, w - 1 + radius)
        cy = xp.clip(xp.round(qg[:, _Y]), -radius, h - 1 + radius)
        pad, wp = 2 * radius, w + 4 * radius
        flat = ((xp.as_int(cy) + pad) * wp + xp.as_int(cx) + pad)[:, None] + (oy * wp + ox)[None, :]
        # model on (cx + ox, cy + oy): the offsets from the centre are ox - (x0 - cx)
        qg[:, _X] -= cx
        qg[:, _Y] -= cy
        oxf, oyf = xp.as_float(ox)[None, :], xp.as_float(oy)[None, :]
        padded = xp.zeros((h + 2 * pad) * wp)
        chunk = 256  # columns per pass: keeps the temporaries small and in cache
        for k in range(0, qg.shape[0], chunk):
            rendered, _ = model(qg[k:k + chunk], oxf, oyf, jacobian=False)
            xp.index_add(padded, flat[k:k + chunk].ravel(), rendered.ravel())
        total = padded.reshape(h + 2 * pad, wp)[pad:pad + h, pad:pad + w]
    return total
