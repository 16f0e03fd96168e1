"""Rendering of the neighbours' models on each column's patch (iterative neighbour subtraction)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from octascope_plugins.locate.lm_solver import _A, _B, _X, _Y, model
from octascope_plugins.locate.patches import Patches, disk_offsets

if TYPE_CHECKING:
    import torch


def others_on_patches(p: "torch.Tensor", ok: "torch.Tensor", patches: Patches, img: "torch.Tensor",
                      render_radius_px: int) -> "torch.Tensor":
    """Model of all *other* columns on each column's patch (N, M), background excluded.

    Every column is rendered on a disk of ``render_radius_px`` (by default twice the patch
    radius), so the tail of a neighbour whose centre lies outside a patch is still subtracted
    from it. Failed fits render nothing.

    Parameters
    ----------
    p : torch.Tensor
        (N, 7) current parameters (see :mod:`.lm_solver`) [px].
    ok : torch.Tensor
        (N,) bool, usable fits.
    patches : Patches
        The patches of the columns.
    img : torch.Tensor
        (H, W) image (gives shape, dtype and device).
    render_radius_px : int
        Radius each column's model is rendered out to [px].

    Returns
    -------
    torch.Tensor
        (N, M) summed model of the other columns on every patch pixel.
    """
    h, w = patches.shape
    q = p.clone()
    q[:, _B] = 0
    q[~ok, _A] = 0
    own, _ = model(q, patches.x, patches.y, jacobian=False)
    total = render_columns(p, ok, (h, w), img, render_radius_px).reshape(-1)
    return total[patches.flat] - own


def render_columns(p: "torch.Tensor", ok: "torch.Tensor", shape: tuple[int, int], img: "torch.Tensor",
                   render_radius_px: int) -> "torch.Tensor":
    """The summed model of all usable columns (background excluded) on the image grid (H, W).

    Parameters
    ----------
    p : torch.Tensor
        (N, 7) parameters (see :mod:`.lm_solver`) [px].
    ok : torch.Tensor
        (N,) bool, usable fits (the others render nothing).
    shape : tuple of int
        (H, W) of the image.
    img : torch.Tensor
        Gives dtype and device.
    render_radius_px : int
        Radius each column's model is rendered out to [px].
    """
    # lazy: torch (~1.2 s to import), only when a torch step runs
    import torch

    h, w = shape
    q = p.clone()
    q[:, _B] = 0
    q[~ok, _A] = 0
    total = torch.zeros((h, w), dtype=img.dtype, device=img.device)
    good = (ok & torch.isfinite(q).all(1)).nonzero().ravel()
    if good.numel():
        # render into an image padded by the disk radius, so no pixel needs clipping
        radius = int(render_radius_px)
        ox_px, oy_px, _, _ = disk_offsets(radius)
        ox = torch.as_tensor(ox_px, device=img.device)
        oy = torch.as_tensor(oy_px, device=img.device)
        qg = q[good]
        cx = torch.round(qg[:, _X]).clamp(-radius, w - 1 + radius)
        cy = torch.round(qg[:, _Y]).clamp(-radius, h - 1 + radius)
        pad, wp = 2 * radius, w + 4 * radius
        flat = ((cy.long() + pad) * wp + cx.long() + pad)[:, None] + (oy * wp + ox)[None, :]
        # model on (cx + ox, cy + oy): the offsets from the centre are ox - (x0 - cx)
        qg[:, _X] -= cx
        qg[:, _Y] -= cy
        ox, oy = ox.to(img.dtype)[None, :], oy.to(img.dtype)[None, :]
        padded = torch.zeros((h + 2 * pad) * wp, dtype=img.dtype, device=img.device)
        chunk = 256  # columns per pass: keeps the temporaries small and in cache
        for k in range(0, qg.shape[0], chunk):
            rendered, _ = model(qg[k:k + chunk], ox, oy, jacobian=False)
            padded.index_add_(0, flat[k:k + chunk].ravel(), rendered.ravel())
        total = padded.view(h + 2 * pad, wp)[pad:pad + h, pad:pad + w]
    return total
