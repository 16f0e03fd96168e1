"""Real microscope files shipped in PyPI packages: each is analysed or refused
with a message that names the value found and the fix.

Atomap (a dependency) ships its test images in the installed package. TEMUL's example files
(``temul-toolkit`` 0.1.9, GPL-3.0, 13 MB) are not a dependency and are not vendored: they are used
from an installed ``temul`` package or from ``$OCTASCOPE_CACHE/test-data/temul-toolkit-0.1.9/``
(``pip download temul-toolkit==0.1.9 --no-deps`` and unzip ``temul/example_data/*/*`` there), and
skipped otherwise.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest

from octascope.core.errors import InputError
from octascope.input.readers import read_image


def _atomap(rel: str) -> Path | None:
    try:
        import atomap
    except ImportError:  # pragma: no cover - atomap is a dependency
        return None
    p = Path(atomap.__file__).parent / rel
    return p if p.exists() else None


def _temul(name: str) -> Path | None:
    try:
        import temul  # type: ignore[import-not-found]

        for p in (Path(temul.__file__).parent / "example_data").glob(f"*/{name}"):
            return p
    except ImportError:
        pass
    root = Path(os.environ.get("OCTASCOPE_CACHE") or Path.home() / ".cache" / "octascope")
    p = root / "test-data" / "temul-toolkit-0.1.9" / name
    return p if p.exists() else None


#: file, where to find it, and what reading it must give: ("read", pixel size [Å]) or the refusal's
#: pieces (the value found, the fix)
READ_CASES = [
    ("atomap/tests/datasets/test_ADF_cropped.hdf5", _atomap, ("refused", ["scale of 0.009326 with no unit",
                                                                          "source.pixel_size_A=0.09326"])),
    ("atomap/tests/datasets/test_ABF_cropped.hdf5", _atomap, ("refused", ["scale of 0.009326 with no unit",
                                                                          "source.pixel_size_A=0.09326"])),
    ("atomap/tests/datasets/test_atom_lattice.hdf5", _atomap, ("refused", ["Atomap Atom_Lattice file",
                                                                           "load_atom_lattice_from_hdf5"])),
    ("atomap/example_data/example_detector_image.hspy", _atomap, ("refused", ["gives 310.4 Å per pixel",
                                                                              "source.pixel_size_A="])),
    ("atomap/example_data/simulated_nanoparticle.hspy", _atomap, ("refused", ["scale 1 and no unit",
                                                                              "source.pixel_size_A="])),
    ("temul/example_Se_implanted_MoS2.dm3", _temul, ("read", 0.126953125)),
    ("temul/example_Au_nanoparticle.emd", _temul, ("read", 0.07498401)),
    ("temul/example_Cu_nanoparticle_sim.hspy", _temul, ("refused", ["gives 10 Å per pixel", "source.pixel_size_A="])),
    ("temul/calibrated_data_probeStep0.01_interpolationFactor4_crop0.5.hspy", _temul,
     ("refused", ["gives 10 Å per pixel", "source.pixel_size_A="])),
]


def _find(rel: str, finder) -> Path:
    path = finder(rel.split("/", 1)[1] if finder is _atomap else rel.split("/", 1)[1])
    if path is None:
        pytest.skip(f"{rel} not available (see the module docstring)")
    return path


@pytest.mark.parametrize("rel, finder, expected", READ_CASES, ids=[c[0].rsplit("/", 1)[1] for c in READ_CASES])
def test_real_file_is_read_or_refused_with_the_value_and_the_fix(rel, finder, expected):
    path = _find(rel, finder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may leak from the readers
        if expected[0] == "read":
            img = read_image(path)
            assert img.pixel_size_A == pytest.approx(expected[1], rel=1e-6)
            assert img.metadata["pixel_size_from"] == "file"
            return
        with pytest.raises(InputError) as info:
            read_image(path)
    msg = str(info.value)
    assert "\n" not in msg and not re.search(r"\bnan\b", msg, re.I)
    for piece in expected[1]:
        assert piece in msg


def test_hdf5_is_read_as_hyperspy_with_the_override():
    path = _find("atomap/tests/datasets/test_ADF_cropped.hdf5", _atomap)
    img = read_image(path, pixel_size_A=0.09326)
    assert img.metadata["format"] == "hspy" and img.metadata["pixel_size_from"] == "override"


def _analyse(path: Path, **read) -> str:
    """The one-line refusal (or 'analysed') of the default analysis, with warnings as errors."""
    import octascope

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        img = read_image(path, **read)
        try:
            octascope.analyze(img, progress=None)
        except InputError as exc:
            return str(exc)
    return "analysed"


@pytest.mark.slow
def test_atomap_adf_refusal_has_no_nan_and_names_the_pixel_size():
    """This image gave "|a2| 0.00 Å, angle nan°" and two RuntimeWarnings."""
    msg = _analyse(_find("atomap/tests/datasets/test_ADF_cropped.hdf5", _atomap), pixel_size_A=0.09326)
    assert not re.search(r"\bnan\b", msg, re.I) and "0.00 Å" not in msg
    assert "no two-dimensional lattice" in msg and "pixel size used: 0.09326 Å/px, from source.pixel_size_A" in msg


@pytest.mark.slow
def test_atomap_abf_dark_columns_name_the_invert_option():
    path = _find("atomap/tests/datasets/test_ABF_cropped.hdf5", _atomap)
    msg = _analyse(path, pixel_size_A=0.09326)
    assert "columns look dark" in msg and "source.invert=true" in msg
    inverted = _analyse(path, pixel_size_A=0.09326, invert=True)
    assert "columns look dark" not in inverted  # inverted, the columns are bright; it is no perovskite, so refused
    assert "pixel size used: 0.09326 Å/px" in inverted
