"""Metric plugins (read-only view of the analysis -> tables, scalars, summary section, figures)."""

from octascope.hookspecs import hookimpl

from .accuracy import AccuracyMetric
from .denoise_quality import DenoiseQualityMetric
from .lattice import LatticeMetric
from .octahedral import OctahedralMetric


@hookimpl
def octascope_register_metrics():
    return [AccuracyMetric, OctahedralMetric, LatticeMetric, DenoiseQualityMetric]
