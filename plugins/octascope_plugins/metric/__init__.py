"""Metric plugins (read-only view of the analysis -> tables, scalars, summary section, figures)."""

from octascope.core.hookspecs import hookimpl

from octascope_plugins.metric.accuracy import AccuracyMetric
from octascope_plugins.metric.denoise_quality import DenoiseQualityMetric
from octascope_plugins.metric.lattice import LatticeMetric
from octascope_plugins.metric.octahedral import OctahedralMetric


@hookimpl
def octascope_register_metrics():
    return [AccuracyMetric, OctahedralMetric, LatticeMetric, DenoiseQualityMetric]
