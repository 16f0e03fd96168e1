"""Classifier plugins (columns -> columns with species)."""

from octascope.core.hookspecs import hookimpl

from octascope_plugins.classify.sublattice_classifier import LatticeClassifier
from octascope_plugins.classify.sofs_classifier import SofsClassifier


@hookimpl
def octascope_register_classifiers():
    return [LatticeClassifier, SofsClassifier]
