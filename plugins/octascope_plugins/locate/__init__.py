"""Locator plugins (Image -> column table)."""

from octascope.core.hookspecs import hookimpl

from octascope_plugins.locate.atomap_locator import AtomapLocator
from octascope_plugins.locate.gaussian import GaussianLocator


@hookimpl
def octascope_register_locators():
    return [GaussianLocator, AtomapLocator]
