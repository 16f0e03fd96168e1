"""The identity denoiser."""

from __future__ import annotations

from typing import ClassVar

from octascope.model import Image


class NoDenoiser:
    """Pass the image through unchanged (the baseline of every denoiser comparison)."""

    name: ClassVar[str] = "none"

    def denoise(self, image: Image) -> Image:
        return image
