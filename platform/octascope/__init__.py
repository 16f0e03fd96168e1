"""octascope: octahedral-tilt analysis of halide-perovskite nanocrystals from STEM images."""

from .errors import ConfigError, InputError, OctascopeError, PluginError, PluginParameterError
from .hookspecs import hookimpl
from .model import COLUMN_FIELDS, Image, MetricOutput, Octahedra, Result, Truth, make_columns
from .pipeline import analyze, run_pipeline
from .registry import Registry, get_registry

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
