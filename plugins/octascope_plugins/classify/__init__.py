"""Classifier plugins (columns -> columns with species)."""

from octascope.hookspecs import hookimpl

from .sublattice_classifier import LatticeClassifier
from .sofs import SofsClassifier


@hookimpl
def octascope_register_classifiers():
    return [LatticeClassifier, SofsClassifier]
