"""Denoiser plugins (Image -> Image)."""

from octascope.hookspecs import hookimpl

from .none import NoDenoiser


@hookimpl
def octascope_register_denoisers():
    return [NoDenoiser]
