"""Results for other tools: the columns as a HyperSpy signal with point markers, as an Atomap
``Atom_Lattice`` file, and the provenance of a run's tables (``provenance.json``).

- :func:`export_hyperspy`: ``columns.hspy``, the analysed image (axes in nm) with one
  :class:`hyperspy.api.plot.markers.Points` set per species stored permanently in its metadata, so
  ``hs.load("columns.hspy").plot()`` shows the columns on the image (HyperSpy ≥ 2.0 keeps markers
  added with ``permanent=True`` in ``metadata.Markers`` and restores them on load).
- :func:`export_atomap`: ``atom_lattice.hdf5`` written by Atomap itself
  (:class:`atomap.atom_lattice.Atom_Lattice` with one :class:`atomap.sublattice.Sublattice` per
  species, positions in pixels); ``atomap.api.load_atom_lattice_from_hdf5`` reads it back.
- :func:`write_provenance`: ``provenance.json`` beside the CSVs: the octascope version, the input's
  checksum and path, the time, and each table's columns, so a table keeps its origin without a
  comment line that naive CSV readers would choke on.

A run writes the exports asked for with ``export=[hyperspy,atomap]`` (default none).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
import contextlib
import json
import logging
import warnings

import numpy as np

from octascope.core.errors import ConfigError
from octascope.input.readers import input_checksum
from octascope.results.tracking import code_version

if TYPE_CHECKING:
    import pandas as pd

    from octascope.core.model import Image

#: the exports a run can write (``export=[...]``)
EXPORT_FORMATS = ("hyperspy", "atomap")
#: marker colour per species (as the figures draw them)
_COLOURS = {"Pb": "#d62728", "X": "#9467bd", "Cs": "#ff7f0e", "unknown": "#7f7f7f"}


def check_export(value: Any) -> tuple[str, ...]:
    """The ``export`` option as a tuple of known names (:data:`EXPORT_FORMATS`); else a one-line ConfigError."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise ConfigError(f"export={value!r} is not a list of names; give export=[{','.join(EXPORT_FORMATS)}] or export=[]")
    bad = sorted(set(items) - set(EXPORT_FORMATS))
    if bad:
        raise ConfigError(f"unknown export(s) {bad}; choose from {', '.join(EXPORT_FORMATS)} (e.g. export=[hyperspy,atomap])")
    return tuple(dict.fromkeys(items))


def _quiet_hyperspy() -> Any:
    """A context in which HyperSpy's and Atomap's deprecation warnings and log lines stay silent."""

    @contextlib.contextmanager
    def quiet() -> Any:
        loggers = [logging.getLogger(n) for n in ("hyperspy", "atomap", "rsciio")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)

    return quiet()


def _species_groups(columns: "pd.DataFrame") -> list[tuple[str, np.ndarray]]:
    """(species, rows) for each species present, in a fixed order (Pb, X, Cs, unknown, others)."""
    present = list(dict.fromkeys(columns["species"].astype(str)))
    order = [s for s in _COLOURS if s in present] + [s for s in present if s not in _COLOURS]
    sp = columns["species"].astype(str).to_numpy()
    return [(s, np.flatnonzero(sp == s)) for s in order]


def export_hyperspy(image: "Image", columns: "pd.DataFrame", path: str | Path) -> Path:
    """Write ``image`` with the columns as per-species point markers to a HyperSpy ``.hspy`` file.

    Parameters
    ----------
    image : Image
        The analysed image (its pixel size [Å] becomes the axes' scale, in nm).
    columns : pandas.DataFrame
        ``x_A``, ``y_A`` [Å] and ``species`` of every column.
    path : str or Path
        The file to write (``.hspy``); replaced if it exists.

    Returns
    -------
    Path
    """
    with _quiet_hyperspy():
        # lazy: HyperSpy (~50 ms to import), only for that file format
        import hyperspy.api as hs

        s = hs.signals.Signal2D(np.asarray(image.data, dtype=np.float32))
        for ax in s.axes_manager.signal_axes:
            ax.scale = image.pixel_size_A / 10.0
            ax.units = "nm"
        s.axes_manager.signal_axes[0].name = "x"
        s.axes_manager.signal_axes[1].name = "y"
        s.metadata.General.title = f"octascope columns: {Path(str(image.source)).name or 'image'}"
        for species, rows in _species_groups(columns):
            xy_nm = columns[["x_A", "y_A"]].to_numpy(float)[rows] / 10.0
            marker = hs.plot.markers.Points(offsets=xy_nm, color=_COLOURS.get(species, "#17becf"), sizes=6,
                                            name=species)
            s.add_marker(marker, permanent=True, plot_marker=False)
        path = Path(path)
        s.save(str(path), overwrite=True)
    return path


def export_atomap(image: "Image", columns: "pd.DataFrame", path: str | Path) -> Path:
    """Write the columns as an Atomap ``Atom_Lattice`` (one sublattice per species) to ``path`` (``.hdf5``).

    Written with Atomap's own :meth:`atomap.atom_lattice.Atom_Lattice.save`; positions in pixels
    (Atomap's convention), the image as the lattice's image (shifted by its minimum when it has
    negative pixels, which Atomap does not accept), the pixel size [Å] stored on each sublattice.
    """
    with _quiet_hyperspy():
        # lazy: Atomap (~1.6 s to import), only for locator=atomap
        import atomap.api as am

        data = np.asarray(image.data, dtype=np.float64)
        data = data - min(0.0, float(data.min()))  # Atomap refuses (prints about) negative pixels: shifted to >= 0
        subs = []
        for species, rows in _species_groups(columns):
            xy_px = columns[["x_A", "y_A"]].to_numpy(float)[rows] / image.pixel_size_A
            sub = am.Sublattice(xy_px, image=data, name=species, color=_COLOURS.get(species, "#17becf"))
            sub.pixel_size = image.pixel_size_A
            subs.append(sub)
        lattice = am.Atom_Lattice(image=data, name="octascope columns", sublattice_list=subs)
        path = Path(path)
        lattice.save(str(path), overwrite=True)
    return path


def export_results(image: "Image", columns: "pd.DataFrame | None", run_dir: str | Path,
                   formats: Any) -> dict[str, Path]:
    """Write the exports named in ``formats`` (:func:`check_export`) into ``run_dir``:
    ``columns.hspy`` (hyperspy), ``atom_lattice.hdf5`` (atomap). Nothing without columns."""
    names = check_export(formats)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if columns is None or not len(columns) or not names:
        return written
    if "hyperspy" in names:
        written["export_hyperspy"] = export_hyperspy(image, columns, run_dir / "columns.hspy")
    if "atomap" in names:
        written["export_atomap"] = export_atomap(image, columns, run_dir / "atom_lattice.hdf5")
    return written


def write_provenance(run_dir: str | Path, *, input_checksum: str | None, input_path: str | None = None,
                     tables: Mapping[str, "pd.DataFrame"] | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``provenance.json`` into ``run_dir``: octascope version (and git commit when run from a
    checkout), input checksum and path, the time (UTC), and the CSV tables the run writes
    (``<name>.csv``: rows and columns, units in the column names)."""

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tables = {f"{name}.csv": {"rows": int(len(df)), "columns": [str(c) for c in df.columns]}
              for name, df in (tables or {}).items() if df is not None}
    version = code_version()
    record = {"octascope_version": version.get("octascope.version", "unknown"),
              **({"octascope_git_commit": version["octascope.git_commit"]} if "octascope.git_commit" in version else {}),
              "input_sha256": input_checksum,
              "input_path": input_path, "written_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "tables": tables, **dict(extra or {})}
    path = run_dir / "provenance.json"
    tmp = path.with_name(".provenance.json.part")
    tmp.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def write_extras(image: "Image", columns: "pd.DataFrame | None", run_dir: str | Path,
                 config: Mapping[str, Any], tables: Mapping[str, "pd.DataFrame"] | None = None) -> dict[str, Path]:
    """What a run writes beside its tables (before them: ``summary.json`` stays the last file): the
    exports of ``config["export"]`` and ``provenance.json`` naming ``tables``."""

    written = export_results(image, columns, run_dir, config.get("export"))
    src = (config.get("source") or {}) if isinstance(config, Mapping) else {}
    path = (image.metadata or {}).get("path") or src.get("path")
    written["provenance"] = write_provenance(run_dir, input_checksum=input_checksum(image),
                                             input_path=str(path) if path else image.source, tables=tables)
    return written
