"""Classifiers plugins."""

from octascope.hookspecs import hookimpl


@hookimpl
def octascope_register_classifiers():
    return []
