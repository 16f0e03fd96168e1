"""Locators plugins."""

from octascope.hookspecs import hookimpl


@hookimpl
def octascope_register_locators():
    return []
