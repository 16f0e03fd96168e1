"""The identity denoiser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from octascope.core.model import Image
from octascope.core.params import Options, Plugin


@dataclass(frozen=True, kw_only=True)
class NoneOptions(Options):
    """The identity has no parameters."""


class NoDenoiser(Plugin):
    """Pass the image through unchanged (the baseline of every denoiser comparison).

    Parameters are those of :class:`NoneOptions` (none).
    """

    name: ClassVar[str] = "none"
    Options = NoneOptions
    options: NoneOptions

    def denoise(self, image: Image) -> Image:
        return image
