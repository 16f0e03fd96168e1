"""The bundled simulated QD (the default input) analysed against its own truth."""

import pytest

import octascope
from octascope.sources import load_example


@pytest.fixture(scope="module")
def example():
    return load_example()


@pytest.mark.parametrize("classifier, network, min_species_accuracy", [
    ("lattice", "nearest", 0.95),  # measured 0.959: rim Cs relaxed towards Pb read as X
    ("sofs", "sofs", 0.99),        # measured 1.000
])
def test_example_accuracy(example, classifier, network, min_species_accuracy):
    image, truth = example
    assert image.pixel_size_A == pytest.approx(0.2) and image.signal == "idpc"
    r = octascope.analyze(image, truth=truth, classifier=classifier, network=network, progress=None)
    s = r.scalars
    assert s["detection_f1"] >= 0.98          # measured 0.988
    assert s["species_accuracy"] >= min_species_accuracy
    assert s["n_octahedra_matched"] == 36     # all 6 x 6 octahedra
    assert s["theta3_mae_deg"] < 1.0          # measured 0.67°
    assert s["L1_mae_pm"] < 4.0               # measured 1.9 pm
