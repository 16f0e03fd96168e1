"""Input sources of a run (`source=file|example|synthetic|simulated`): where the image comes from.

Every source takes the same file keys; a non-null ``path`` means "read this file", whatever
the kind, so ``source.path=particle.emd`` is the one override needed to analyse a user's file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
import json

import numpy as np

from octascope.core.errors import ConfigError, InputError
from octascope.input.readers import (
    read_image, read_truth, sidecar, check_flag, check_index, check_pixel_size, resolve_path,
)
from octascope.core.model import Image, Truth
from octascope.input.fourd import is_fourd_file, read_fourd_image
from octascope.input.synthetic import make_synthetic, SyntheticSpec
from octascope.sim.field import check_field_params, FIELD_SOURCE_KEYS, simulated_field_source
from octascope.sim.simulation import check_source_params, simulated_source, SOURCE_KEYS

FILE_KEYS = ("path", "pixel_size_A", "frame", "signal_index", "signal", "signal_type", "truth_path", "truth_octahedra_path",
             "invert", "frames", "frame_time_s", "dose_per_frame_e_per_A2")
#: the file keys of a time series (``source.frames``): read by :mod:`octascope.app.series`, not by :func:`load_file`
SERIES_KEYS = ("frames", "frame_time_s", "dose_per_frame_e_per_A2")
KINDS = ("file", "example", "synthetic", "simulated", "field")
EXAMPLES_DIR = "octascope://data/examples"


def load_example(name: str = "cspbi3_qd") -> tuple[Image, Truth]:
    """A bundled example: ``data/examples/<name>/`` with ``image.npy``, ``meta.json`` (pixel
    size, signal, dose, the command that regenerates it), ``truth_columns.csv`` and
    ``truth_octahedra.csv``."""

    folder = resolve_path(f"{EXAMPLES_DIR}/{name}")
    if not (folder / "meta.json").exists():
        available = sorted(p.name for p in resolve_path(EXAMPLES_DIR).glob("*") if (p / "meta.json").exists())
        raise ConfigError(f"no bundled example '{name}'; available: {', '.join(available) or 'none'}")
    meta = json.loads((folder / "meta.json").read_text())
    image = Image(
        data=np.load(folder / "image.npy"), pixel_size_A=meta["pixel_size_A"], signal=meta.get("signal", "unknown"),
        dose_e_per_A2=meta.get("dose_e_per_A2"), source=f"bundled example {name} ({meta.get('composition', '')})",
        metadata={"example": name, "regenerate": meta.get("regenerate")},
    )
    truth = read_truth(folder / "truth_columns.csv", folder / "truth_octahedra.csv")
    return image, truth


def load_file(
    path: str,
    *,
    pixel_size_A: float | None = None,
    frame: int | None = None,
    signal_index: int | None = None,
    signal: str | None = None,
    signal_type: str = "unknown",
    invert: bool = False,
    truth_path: str | Path | None = "auto",
    truth_octahedra_path: str | Path | None = "auto",
) -> tuple[Image, Truth | None]:
    """Read an image file and, if available, its ground truth.

    A 4D-STEM file (:func:`octascope.input.fourd.is_fourd_file`) gives its iCoM image
    (:func:`octascope.input.fourd.read_fourd_image`); ``pixel_size_A`` is then the scan step.

    ``truth_path="auto"`` looks for ``<image stem>.truth_columns.csv`` beside the image (and
    ``<stem>.truth_octahedra.csv``); ``None`` reads no truth.
    """

    if is_fourd_file(path):  # 4D-STEM: the iCoM image of the patterns (octascope.input.fourd)
        if invert is True:
            raise InputError(f"source.invert=true given for the 4D-STEM scan {Path(str(path)).name}: its iCoM shows the "
                             "columns bright by construction; drop source.invert")
        image = read_fourd_image(path, pixel_size_A=pixel_size_A, frame=frame)
    else:
        image = read_image(path, pixel_size_A=pixel_size_A, frame=frame, signal_index=signal_index,
                           signal=signal, signal_type=signal_type, invert=invert)
    if truth_path == "auto":
        truth_path = sidecar(path, ".truth_columns.csv")
    if truth_octahedra_path == "auto":
        truth_octahedra_path = sidecar(path, ".truth_octahedra.csv") if truth_path else None
    truth = read_truth(truth_path, truth_octahedra_path) if truth_path else None
    return image, truth


#: keys each source kind reads besides the file keys
_KIND_KEYS = {"file": set(), "example": {"name"}, "synthetic": {"spec"}}
#: file keys that have a meaning only when a file is read (truth_* default to "auto", signal_type to "unknown")
_FILE_ONLY_DEFAULTS = {"pixel_size_A": None, "frame": None, "signal_index": None, "signal": None,
                       "signal_type": "unknown", "truth_path": "auto", "truth_octahedra_path": "auto",
                       "invert": False, "frames": None, "frame_time_s": None, "dose_per_frame_e_per_A2": None}
_CALIBRATION_HINT = {
    "example": "the bundled example carries its own calibration",
    "synthetic": "the synthetic particle is drawn at source.spec.pixel_size_A",
    "simulated": "the simulated image is drawn at source.imaging.pixel_size_A",
    "field": "the simulated field is drawn at source.imaging.pixel_size_A",
}


def _check_keys(kind: str, reads_file: bool, params: dict[str, Any]) -> None:
    """Refuse source keys that nothing would read (a typo, or a file key without a file), and for
    the simulated source any simulation parameter with an unknown name or a bad value."""
    if kind not in KINDS:
        raise ConfigError(f"unknown source kind '{kind}'; use one of {', '.join(KINDS)}")
    if kind == "simulated":
        own = set(SOURCE_KEYS)
    elif kind == "field":
        own = set(FIELD_SOURCE_KEYS)
    else:
        own = _KIND_KEYS[kind]
    allowed = set(FILE_KEYS) | own if reads_file or kind == "file" else set(_FILE_ONLY_DEFAULTS) | own
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"source '{kind}' has no key(s) {unknown}; its keys are {', '.join(sorted(allowed | {'path'}))}")
    if reads_file or kind == "file":
        return
    if kind == "simulated":  # every step's keys and values, before anything is simulated
        check_source_params({k: v for k, v in params.items() if k in own})
    if kind == "field":
        check_field_params({k: v for k, v in params.items() if k in own})
    ignored = sorted(k for k, default in _FILE_ONLY_DEFAULTS.items() if k in params and params[k] != default)
    if ignored:
        hint = _CALIBRATION_HINT[kind] + "; " if "pixel_size_A" in ignored else ""
        raise ConfigError(
            f"source.{', source.'.join(ignored)} given for the {kind} source, which reads no file and would ignore it; "
            f"{hint}drop it, or give source.path=<image file> to analyse a file"
        )


def load_source(kind: str = "file", **params: Any) -> tuple[Image, Truth | None]:
    """Produce the image (and truth, when known) of a run.

    Parameters
    ----------
    kind : str
        ``file``, ``example`` (a bundled simulated image, :func:`load_example`), ``synthetic`` (:func:`octascope.input.synthetic.make_synthetic`) or ``simulated``
        (:func:`octascope.sim.simulation.simulated_source`).
    **params
        The source's parameters; a non-null ``path`` reads that file whatever the kind.
    """
    path = params.pop("path", None)
    _check_keys(kind, bool(path), params)
    if path or kind == "file":
        if not path:
            raise ConfigError("source kind 'file' needs a path; give source.path=<image file>")
        series = sorted(k for k in SERIES_KEYS if params.get(k) is not None)
        if series:
            raise ConfigError(f"source.{series[0]} is read by a time-series run; give source.frames=all (or a range) "
                              "to analyse the frames of a stack")
        file_params = {k: params[k] for k in FILE_KEYS
                       if k in params and k not in SERIES_KEYS and (params[k] is not None or k.startswith("truth"))}
        return load_file(path, **file_params)
    params = {k: v for k, v in params.items() if k not in FILE_KEYS[2:]}
    if kind == "example":
        return load_example(params.get("name", "cspbi3_qd"))
    if kind == "synthetic":
        spec = dict(params.pop("spec", None) or {})
        if "n_cells" in spec:
            spec["n_cells"] = tuple(spec["n_cells"])
        unknown = sorted(set(spec) - set(SyntheticSpec.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"synthetic source has no parameter(s) {unknown}; see conf/source/synthetic.yaml")
        return make_synthetic(SyntheticSpec(**spec))
    if kind == "simulated":
        return simulated_source(**params)
    if kind == "field":
        return simulated_field_source(**params)
    raise ConfigError(f"unknown source kind '{kind}'; use one of {', '.join(KINDS)}")


def check_source_config(source: dict[str, Any]) -> None:
    """The cheap checks of a source configuration, without reading or simulating anything:
    keys that nothing reads, file keys for a source that reads no file, a non-numeric or absurd
    pixel size, a frame or signal index that is not a whole number, a path that is not text
    (:class:`ConfigError`/:class:`InputError`, one line with the fix)."""

    params = dict(source)
    kind = params.pop("kind", "file")
    path = params.pop("path", None)
    _check_keys(kind, bool(path), params)
    if not path:
        return
    if params.get("pixel_size_A") is not None:
        check_pixel_size(params["pixel_size_A"])
    for key in ("frame", "signal_index"):
        check_index(params.get(key), f"source.{key}")

    check_flag(params.get("invert"), "source.invert")
    if params.get("frames") is not None and params.get("frame") is not None:
        raise ConfigError(f"source.frame={params['frame']} and source.frames={params['frames']} both given; "
                          "source.frame analyses one frame, source.frames a time series: give one")
    for key in ("frame_time_s", "dose_per_frame_e_per_A2"):
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise ConfigError(f"source.{key}={value!r} must be a positive number")
    for key in ("path", "signal", "signal_type", "truth_path", "truth_octahedra_path"):
        value = path if key == "path" else params.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"source.{key}={value!r} must be text; quote it: \"source.{key}='...'\"")
