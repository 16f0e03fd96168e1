"""Network-builder plugins (classified columns -> octahedral network)."""

from octascope.core.hookspecs import hookimpl

from octascope_plugins.network.nearest import NearestNetwork
from octascope_plugins.network.sofs_network import SofsNetwork


@hookimpl
def octascope_register_networks():
    return [NearestNetwork, SofsNetwork]
