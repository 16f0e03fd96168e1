"""Denoiser plugins (Image -> Image)."""

from octascope.hookspecs import hookimpl

from .absf import ABSFDenoiser
from .bm3d import BM3DDenoiser
from .chain import ChainDenoiser
from .dip import DIPDenoiser
from .none import NoDenoiser
from .s2sred import S2SREDDenoiser


@hookimpl
def octascope_register_denoisers():
    return [NoDenoiser, BM3DDenoiser, ABSFDenoiser, S2SREDDenoiser, DIPDenoiser, ChainDenoiser]
