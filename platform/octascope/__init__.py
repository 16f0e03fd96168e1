"""octascope: octahedral-tilt analysis of halide-perovskite nanocrystals from STEM images."""

from octascope.core.errors import ConfigError, InputError, OctascopeError, PluginError, PluginParameterError
from octascope.core.hookspecs import hookimpl
from octascope.core.model import COLUMN_FIELDS, Image, MetricOutput, Octahedra, Result, Truth, make_columns
from octascope.analysis.pipeline import analyze, run_pipeline
from octascope.core.registry import Registry, get_registry

__all__ = [
    "COLUMN_FIELDS",
    "ConfigError",
    "Image",
    "InputError",
    "MetricOutput",
    "Octahedra",
    "OctascopeError",
    "PluginError",
    "PluginParameterError",
    "Registry",
    "Result",
    "Truth",
    "analyze",
    "get_registry",
    "hookimpl",
    "make_columns",
    "run_pipeline",
]
