"""The five stage interfaces.

A stage implementation is a plain class with a unique ``name`` class attribute, keyword-only
constructor parameters (its configuration, with units in their names) and one method. Stages
keep no state between calls and never modify their inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

    from .model import Image, MetricOutput, Octahedra, Result, Truth

STAGES: tuple[str, ...] = ("denoiser", "locator", "classifier", "network", "metric")


@runtime_checkable
class Denoiser(Protocol):
    """Image -> Image (same shape and pixel size)."""

    name: ClassVar[str]

    def denoise(self, image: "Image") -> "Image": ...


@runtime_checkable
class Locator(Protocol):
    """Image -> column table (positions, amplitudes, widths, uncertainties)."""

    name: ClassVar[str]

    def locate(self, image: "Image") -> "pd.DataFrame": ...


@runtime_checkable
class Classifier(Protocol):
    """Image, columns -> columns with ``species`` (and ``species_confidence``, ``edge``) set."""

    name: ClassVar[str]

    def classify(self, image: "Image", columns: "pd.DataFrame") -> "pd.DataFrame": ...


@runtime_checkable
class NetworkBuilder(Protocol):
    """Image, classified columns -> octahedral network."""

    name: ClassVar[str]

    def build(self, image: "Image", columns: "pd.DataFrame") -> "Octahedra": ...


@runtime_checkable
class Metric(Protocol):
    """Result so far (+ optional truth) -> tables, scalars and figures."""

    name: ClassVar[str]

    def compute(self, result: "Result", truth: "Truth | None") -> "MetricOutput": ...


#: stage -> the one method its implementations provide
METHODS = {"denoiser": "denoise", "locator": "locate", "classifier": "classify", "network": "build", "metric": "compute"}

PROTOCOLS = {
    "denoiser": Denoiser,
    "locator": Locator,
    "classifier": Classifier,
    "network": NetworkBuilder,
    "metric": Metric,
}
