"""Denoiser plugins (Image -> Image)."""

from octascope.core.hookspecs import hookimpl

from octascope_plugins.denoise.absf import ABSFDenoiser
from octascope_plugins.denoise.bm3d import BM3DDenoiser
from octascope_plugins.denoise.chain import ChainDenoiser
from octascope_plugins.denoise.dip import DIPDenoiser
from octascope_plugins.denoise.none import NoDenoiser
from octascope_plugins.denoise.s2sred import S2SREDDenoiser


@hookimpl
def octascope_register_denoisers():
    return [NoDenoiser, BM3DDenoiser, ABSFDenoiser, S2SREDDenoiser, DIPDenoiser, ChainDenoiser]
