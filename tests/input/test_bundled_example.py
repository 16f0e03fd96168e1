"""The bundled simulated QD (the default input) analysed against its own truth."""

import pytest

import octascope
from octascope.input.sources import load_example


@pytest.fixture(scope="module")
def example():
    return load_example()


# Bounds from what the method must reach on an easy image (targets at 1,000 e/Å²: F1 and
# species accuracy ≥ 0.99; this example is 5,000 e/Å²), not from what was last measured.
@pytest.mark.parametrize("classifier, network", [("lattice", "nearest"), ("sofs", "sofs")])
def test_example_accuracy(example, classifier, network):
    image, truth = example
    assert image.pixel_size_A == pytest.approx(0.2) and image.signal == "idpc"
    r = octascope.analyze(image, truth=truth, classifier=classifier, network=network, progress=None)
    s = r.scalars
    assert s["detection_f1"] >= 0.99
    assert s["species_accuracy"] >= 0.99
    assert r.flags == []
    assert s["n_octahedra_matched"] == 36     # all 6 x 6 octahedra
    assert s["theta3_mae_deg"] < 1.0          # measured 0.67°
    assert s["L1_mae_pm"] < 4.0               # measured 1.9 pm
