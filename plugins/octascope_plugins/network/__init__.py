"""Network-builder plugins (classified columns -> octahedral network)."""

from octascope.hookspecs import hookimpl

from .nearest import NearestNetwork
from .sofs import SofsNetwork


@hookimpl
def octascope_register_networks():
    return [NearestNetwork, SofsNetwork]
