"""Classifier plugins (columns -> columns with species)."""

from octascope.hookspecs import hookimpl

from .lattice import LatticeClassifier
from .sofs import SofsClassifier


@hookimpl
def octascope_register_classifiers():
    return [LatticeClassifier, SofsClassifier]
