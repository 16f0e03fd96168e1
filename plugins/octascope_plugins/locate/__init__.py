"""Locator plugins (Image -> column table)."""

from octascope.hookspecs import hookimpl

from .atomap_locator import AtomapLocator
from .gaussian import GaussianLocator


@hookimpl
def octascope_register_locators():
    return [GaussianLocator, AtomapLocator]
