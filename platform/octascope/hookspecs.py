"""Plugin hooks. Each hook returns a list of stage classes; the registry collects them.

A plugin module implements any of these with ``@octascope.hookimpl``; a third-party
package exposes its module through the ``octascope`` entry-point group::

    [project.entry-points.octascope]
    my_plugin = "my_package.octascope_plugin"
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("octascope")
hookimpl = pluggy.HookimplMarker("octascope")


@hookspec
def octascope_register_denoisers() -> list[type]:
    """Return Denoiser classes (``denoise(image) -> Image``), each with a unique ``name``."""


@hookspec
def octascope_register_locators() -> list[type]:
    """Return Locator classes (``locate(image) -> DataFrame``), each with a unique ``name``."""


@hookspec
def octascope_register_classifiers() -> list[type]:
    """Return Classifier classes (``classify(image, columns) -> DataFrame``), each with a unique ``name``."""


@hookspec
def octascope_register_networks() -> list[type]:
    """Return NetworkBuilder classes (``build(image, columns) -> Octahedra``), each with a unique ``name``."""


@hookspec
def octascope_register_metrics() -> list[type]:
    """Return Metric classes (``compute(result, truth) -> MetricOutput``), each with a unique ``name``."""


#: stage -> hook name
HOOKS = {
    "denoiser": "octascope_register_denoisers",
    "locator": "octascope_register_locators",
    "classifier": "octascope_register_classifiers",
    "network": "octascope_register_networks",
    "metric": "octascope_register_metrics",
}
