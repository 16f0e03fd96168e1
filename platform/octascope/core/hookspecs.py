"""Plugin hooks. Each hook returns a list of stage classes; the registry collects them.

A plugin module implements any of these with ``@octascope.hookimpl``; a third-party
package exposes its module through the ``octascope`` entry-point group::

    [project.entry-points.octascope]
    my_plugin = "my_package.octascope_plugin"

The classes follow the stage protocols of :mod:`octascope.core.stages` (their docstrings state each
stage's contract).

A spec has only a docstring: pluggy never calls it, and its return annotation states what an
implementation returns. mypy reads that as a missing return, hence ``# type: ignore[empty-body]``
on each (as in pytest's own hookspecs).
"""

from __future__ import annotations

import pluggy

from octascope.core.stages import Classifier, Denoiser, Locator, Metric, NetworkBuilder

hookspec = pluggy.HookspecMarker("octascope")
hookimpl = pluggy.HookimplMarker("octascope")


@hookspec
def octascope_register_denoisers() -> list[type[Denoiser]]:  # type: ignore[empty-body]
    """Return Denoiser classes (``denoise(image) -> Image``), each with a unique ``name``."""


@hookspec
def octascope_register_locators() -> list[type[Locator]]:  # type: ignore[empty-body]
    """Return Locator classes (``locate(image) -> DataFrame``), each with a unique ``name``."""


@hookspec
def octascope_register_classifiers() -> list[type[Classifier]]:  # type: ignore[empty-body]
    """Return Classifier classes (``classify(image, columns) -> Classification``), each with a unique ``name``."""


@hookspec
def octascope_register_networks() -> list[type[NetworkBuilder]]:  # type: ignore[empty-body]
    """Return NetworkBuilder classes (``build(image, classification) -> Octahedra``), each with a unique ``name``."""


@hookspec
def octascope_register_metrics() -> list[type[Metric]]:  # type: ignore[empty-body]
    """Return Metric classes (``compute(data, truth) -> MetricOutput``, ``requires``, ``after``), each with a unique ``name``."""


#: stage -> hook name
HOOKS: dict[str, str] = {
    "denoiser": "octascope_register_denoisers",
    "locator": "octascope_register_locators",
    "classifier": "octascope_register_classifiers",
    "network": "octascope_register_networks",
    "metric": "octascope_register_metrics",
}
