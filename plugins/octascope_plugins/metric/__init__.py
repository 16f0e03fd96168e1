"""Metrics plugins."""

from octascope.hookspecs import hookimpl

from .accuracy import AccuracyMetric


@hookimpl
def octascope_register_metrics():
    return [AccuracyMetric]
