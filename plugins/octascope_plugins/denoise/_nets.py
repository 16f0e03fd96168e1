"""Networks of the single-image denoisers: partial convolution and the S2SRED encoder-decoder.

Only imported from inside ``denoise`` methods (it imports torch at module level).
"""

from __future__ import annotations

import typing

import torch
from torch import nn
from torch.nn import functional as F

#: Poolings of the encoder (EB1-EB4): the padded image side must be a multiple of this.
DOWNSAMPLING = 16


class PartialConv2d(nn.Conv2d):
    """3x3 partial convolution (Liu et al. 2018): convolve only valid pixels, renormalised.

    ``forward(x, mask)`` with ``mask`` of shape (B, 1, H, W), 1 = valid pixel, computes
    ``W·(x⊙m) · (k²/Σm) + b`` where the window holds at least one valid pixel and 0 elsewhere,
    and returns the updated mask (1 where the window held any valid pixel). Zero padding is a
    hole too, so image borders are renormalised the same way.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__(in_channels, out_channels, kernel_size, stride=1, padding=kernel_size // 2, bias=True)
        self.register_buffer("ones", torch.ones(1, 1, kernel_size, kernel_size), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        ones = typing.cast(torch.Tensor, self.ones)  # a registered buffer
        padding = typing.cast(tuple[int, int], self.padding)  # set from kernel_size in __init__
        with torch.no_grad():
            count = F.conv2d(mask.to(ones.dtype), ones, padding=padding)
            new_mask = (count > 0).to(x.dtype)
            ratio = (ones.numel() / count.clamp(min=1.0)).to(x.dtype) * new_mask
        raw = F.conv2d(x * mask.to(x.dtype), self.weight, None, self.stride, padding)
        assert self.bias is not None  # built with bias=True
        out = (raw * ratio + self.bias.view(1, -1, 1, 1)) * new_mask
        return out, new_mask


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class S2SNet(nn.Module):
    """The S2SRED encoder-decoder (Du et al. 2026, Figure 1a; after Quan et al. 2020).

    Encoder EB1-EB5: partial conv 3x3 + LeakyReLU(0.1), then 2x2 max-pool (not after EB5),
    constant width ``encoder_width``. Decoder DB1-DB3: x2 upsampling, concatenation with the
    same-scale encoder output, two Dropout-Conv-LeakyReLU layers at ``decoder_width``; DB4 the
    same with a taper ``decoder_width/2`` -> ``decoder_width/4`` -> ``out_channels``, linear
    (a sigmoid, as in Self2Self, saturates on sparse atomic-column images whose mean lies near 0;
    the caller standardises the image instead). Dropout is element-wise with rate ``dropout``
    and stays on at inference for Monte Carlo averaging (the caller keeps the module in train mode).

    Parameters
    ----------
    in_channels, out_channels : int
        Image channels in and out.
    encoder_width : int
        Encoder features F (the paper: 64).
    decoder_width : int
        Decoder features (the paper: 128).
    dropout : float
        Dropout rate of every decoder convolution (the paper: ~0.3).
    upsample : str
        ``nearest`` or ``bilinear``.
    batch_norm : bool
        Batch normalisation after every convolution but the last (off in S2SRED as in the
        paper; on for Deep Image Prior, whose fit from a noise code is unstable without it).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        encoder_width: int = 64,
        decoder_width: int = 128,
        dropout: float = 0.3,
        upsample: str = "nearest",
        batch_norm: bool = False,
    ):
        super().__init__()
        fe, fd = encoder_width, decoder_width
        self.upsample = upsample
        self.enc = nn.ModuleList([PartialConv2d(in_channels if k == 0 else fe, fe) for k in range(5)])
        self.drop = nn.Dropout(dropout)
        self.dec = nn.ModuleList()
        for k in range(3):  # DB1-DB3
            cin = fe + (fe if k == 0 else fd)
            self.dec.append(nn.ModuleList([_conv(cin, fd), _conv(fd, fd)]))
        self.dec4 = nn.ModuleList([_conv(fd + fe, fd // 2), _conv(fd // 2, fd // 4), _conv(fd // 4, out_channels)])
        widths = [fe] * 5 + [fd] * 6 + [fd // 2, fd // 4]
        self.norms = nn.ModuleList([nn.BatchNorm2d(c) if batch_norm else nn.Identity() for c in widths])

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample == "bilinear":
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones_like(x[:, :1])
        skips = []
        h, m = x, mask
        norms = iter(self.norms)
        for k, pconv in enumerate(self.enc):
            h, m = pconv(h, m)
            h = F.leaky_relu(next(norms)(h), 0.1)
            if k < 4:
                skips.append(h)
                h, m = F.max_pool2d(h, 2), F.max_pool2d(m, 2)
        for k, pair in enumerate(self.dec):
            c1, c2 = typing.cast(nn.ModuleList, pair)
            h = torch.cat([self._up(h), skips[3 - k]], dim=1)
            h = F.leaky_relu(next(norms)(c1(self.drop(h))), 0.1)
            h = F.leaky_relu(next(norms)(c2(self.drop(h))), 0.1)
        h = torch.cat([self._up(h), skips[0]], dim=1)
        c1, c2, c3 = self.dec4
        h = F.leaky_relu(next(norms)(c1(self.drop(h))), 0.1)
        h = F.leaky_relu(next(norms)(c2(self.drop(h))), 0.1)
        return c3(self.drop(h))
