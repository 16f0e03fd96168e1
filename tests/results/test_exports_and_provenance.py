"""Results for other tools: HyperSpy markers, Atomap Atom_Lattice, provenance.json,
the export option; and the inverted-contrast option."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from octascope.core.errors import ConfigError
from octascope.input.synthetic import SyntheticSpec, make_synthetic
from octascope.results.export import check_export, export_atomap, export_hyperspy, write_provenance


@pytest.fixture(scope="module")
def particle():
    return make_synthetic(SyntheticSpec(n_cells=(3, 3), rotation_deg=8.0, seed=2))


@pytest.mark.slow  # HyperSpy's import alone takes seconds
def test_hyperspy_file_shows_the_columns_per_species(particle, tmp_path):
    hs = pytest.importorskip("hyperspy.api")
    image, truth = particle
    path = export_hyperspy(image, truth.columns, tmp_path / "columns.hspy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = hs.load(path)
        markers = {name: m for name, m in s.metadata.Markers}
        counts = truth.columns["species"].value_counts().to_dict()
        assert {k: len(m.kwargs["offsets"]) for k, m in markers.items()} == counts
        pb = truth.columns[truth.columns.species == "Pb"][["x_A", "y_A"]].to_numpy() / 10.0
        np.testing.assert_allclose(markers["Pb"].kwargs["offsets"], pb)  # offsets in the axes' unit (nm)
        assert s.axes_manager[0].units == "nm" and s.axes_manager[0].scale == pytest.approx(image.pixel_size_A / 10)
        np.testing.assert_array_equal(s.data, image.data)
        s.plot()  # the markers are drawn with the image (Agg backend)
        assert len(s._plot.signal_plot.ax_markers) == len(counts)


@pytest.mark.slow  # Atomap's import alone takes seconds
def test_atomap_file_has_one_sublattice_per_species(particle, tmp_path):
    am = pytest.importorskip("atomap.api")
    image, truth = particle
    path = export_atomap(image, truth.columns, tmp_path / "atom_lattice.hdf5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lattice = am.load_atom_lattice_from_hdf5(str(path), construct_zone_axes=False)
    subs = {s.name: s for s in lattice.sublattice_list}
    counts = truth.columns["species"].value_counts().to_dict()
    assert {k: len(s.atom_list) for k, s in subs.items()} == counts
    cs = truth.columns[truth.columns.species == "Cs"][["x_A", "y_A"]].to_numpy() / image.pixel_size_A
    np.testing.assert_allclose(np.sort(subs["Cs"].atom_positions, axis=0), np.sort(cs, axis=0), atol=1e-9)


def test_export_option_is_checked():
    assert check_export(None) == () and check_export([]) == ()
    assert check_export(["atomap", "hyperspy", "atomap"]) == ("atomap", "hyperspy")
    with pytest.raises(ConfigError, match="unknown export"):
        check_export(["hyperspy", "csv"])
    with pytest.raises(ConfigError, match="not a list of names"):
        check_export([1])


def test_provenance_names_version_input_and_tables(particle, tmp_path):
    _, truth = particle
    path = write_provenance(tmp_path, input_checksum="sha256:abc", input_path="/data/x.emd",
                            tables={"columns": truth.columns})
    rec = json.loads(path.read_text())
    assert rec["input_sha256"] == "sha256:abc" and rec["octascope_version"]
    assert rec["tables"]["columns.csv"]["rows"] == len(truth.columns)
    assert "x_A" in rec["tables"]["columns.csv"]["columns"]


@pytest.mark.slow  # two analyses of the bundled example
def test_inverted_contrast_is_read_and_then_analysed(tmp_path):
    """An image with dark columns is refused naming source.invert; read with invert=True it is analysed."""
    import octascope
    from octascope.core.errors import InputError
    from octascope.input.readers import read_image
    from octascope.input.sources import load_example

    image, _ = load_example()
    np.save(tmp_path / "dark.npy", -image.data)
    dark = read_image(tmp_path / "dark.npy", pixel_size_A=image.pixel_size_A)
    with pytest.raises(InputError, match="source.invert=true"):
        octascope.analyze(dark, progress=None, metrics=[])
    bright = read_image(tmp_path / "dark.npy", pixel_size_A=image.pixel_size_A, invert=True)
    assert bright.metadata["inverted"]
    np.testing.assert_allclose(bright.data - image.data, float(bright.data[0, 0] - image.data[0, 0]), atol=1e-4)
    res = octascope.analyze(bright, progress=None, metrics=[])
    assert any(p.analysed for p in res.particles)


def test_invert_option_maps_the_range_onto_itself(tmp_path):
    from octascope.core.errors import InputError
    from octascope.input.readers import read_image

    data = np.arange(160, dtype=np.float32).reshape(10, 16) + 5.0
    np.save(tmp_path / "a.npy", data)
    img = read_image(tmp_path / "a.npy", pixel_size_A=0.2, invert=True)
    np.testing.assert_array_equal(img.data, 169.0 - data)
    with pytest.raises(InputError, match="source.invert=true or source.invert=false"):
        read_image(tmp_path / "a.npy", pixel_size_A=0.2, invert="yes")
