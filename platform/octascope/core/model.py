"""The values passed between stages: Image, Columns, Octahedra, Truth, Result.

Coordinates
-----------
Every position is given in Å in the *image frame*: the origin is the centre of pixel
``[0, 0]``, x runs along array axis 1 (columns) and y along axis 0 (rows), so
``x_A = x_px * pixel_size_A`` and ``y_A = y_px * pixel_size_A``. Pixel coordinates are kept
alongside for drawing.

Columns
-------
Atomic columns are a :class:`pandas.DataFrame`, one row per column, with the fields of
:data:`COLUMN_FIELDS` (use :func:`make_columns` to build one with defaults filled in).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from octascope.core.errors import InputError

if TYPE_CHECKING:
    from octascope.analysis.region import CrystalRegion
    from octascope.analysis.octahedral_geometry import OctahedralGeometry

SPECIES = ("Pb", "X", "Cs", "unknown")

#: Column table schema: name -> (dtype, default, description [unit]).
COLUMN_FIELDS: dict[str, tuple[str, Any, str]] = {
    "x_A": ("float64", np.nan, "x position in the image frame [Å]"),
    "y_A": ("float64", np.nan, "y position in the image frame [Å]"),
    "x_px": ("float64", np.nan, "x position [px]"),
    "y_px": ("float64", np.nan, "y position [px]"),
    "species": ("object", "unknown", "Pb, X, Cs or unknown"),
    "species_confidence": ("float64", np.nan, "confidence of the species label [0-1]"),
    "amplitude": ("float64", np.nan, "fitted peak height above background [image units]"),
    "background": ("float64", np.nan, "local background [image units]"),
    "sigma_major_A": ("float64", np.nan, "Gaussian width along the major axis [Å]"),
    "sigma_minor_A": ("float64", np.nan, "Gaussian width along the minor axis [Å]"),
    "rotation_deg": ("float64", np.nan, "major-axis angle from +x, counter-clockwise in the array frame [deg]"),
    "ellipticity": ("float64", np.nan, "sigma_major_A / sigma_minor_A [1]"),
    "residual": ("float64", np.nan, "RMS fit residual relative to the peak height [1]"),
    "x_err_A": ("float64", np.nan, "1-sigma uncertainty of x_A from the fit [Å]"),
    "y_err_A": ("float64", np.nan, "1-sigma uncertainty of y_A from the fit [Å]"),
    "edge": ("bool", False, "column at the particle rim or image border (unreliable)"),
    "significance": ("float64", np.nan, "detection significance: band-passed height over its noise std [1]"),
}


def make_columns(x_px: np.ndarray, y_px: np.ndarray, pixel_size_A: float, **fields: Any) -> pd.DataFrame:
    """Build a column table with the documented schema.

    Parameters
    ----------
    x_px, y_px : array_like
        Column positions [px].
    pixel_size_A : float
        Pixel size [Å].
    **fields
        Any other field of :data:`COLUMN_FIELDS` (or extra fields), one value per column.

    Returns
    -------
    pandas.DataFrame
        One row per column; missing schema fields take their defaults.
    """
    x_px = np.asarray(x_px, dtype=float).ravel()
    y_px = np.asarray(y_px, dtype=float).ravel()
    n = x_px.size
    data: dict[str, Any] = {}
    for name, (dtype, default, _) in COLUMN_FIELDS.items():
        if name in fields:
            value = np.asarray(fields.pop(name))
            data[name] = np.broadcast_to(value, (n,)).astype(dtype) if value.ndim == 0 else value.astype(dtype)
        else:
            data[name] = np.full(n, default, dtype=dtype if dtype != "object" else object)
    data["x_px"], data["y_px"] = x_px, y_px
    data["x_A"], data["y_A"] = x_px * pixel_size_A, y_px * pixel_size_A
    for name, value in fields.items():
        data[name] = np.asarray(value)
    return pd.DataFrame(data)


def validate_columns(columns: pd.DataFrame) -> pd.DataFrame:
    """Check that a column table has the positional fields and known species.

    Raises
    ------
    InputError
        If ``x_A``/``y_A`` are missing or a species label is not one of :data:`SPECIES`.
    """
    missing = [c for c in ("x_A", "y_A") if c not in columns]
    if missing:
        raise InputError(f"column table lacks {missing}; give positions in Å as x_A, y_A")
    if "species" in columns:
        bad = sorted(set(columns["species"].astype(str)) - set(SPECIES))
        if bad:
            raise InputError(f"unknown species {bad} in column table; use one of {list(SPECIES)}")
    return columns


@dataclass(frozen=True)
class Image:
    """A calibrated 2-D image.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image (stored as float32).
    pixel_size_A : float
        Pixel size [Å]; must be > 0.
    signal : str
        Kind of signal: ``idpc``, ``icom``, ``haadf``, ``abf`` or ``unknown``.
    dose_e_per_A2 : float, optional
        Electron dose [e/Å²] when known.
    source : str
        Where the image came from (a path or a generator description).
    variance : numpy.ndarray, optional
        Per-pixel variance of ``data`` [image units²], e.g. a denoiser's Monte Carlo variance.
    metadata : Mapping
        Anything else worth keeping (original metadata, denoiser settings, ...).
    """

    data: np.ndarray
    pixel_size_A: float
    signal: str = "unknown"
    dose_e_per_A2: float | None = None
    source: str = ""
    variance: np.ndarray | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim != 2:
            raise InputError(
                f"image has {data.ndim} dimensions (shape {data.shape}) but a 2-D image is needed; "
                "pick one frame (source.frame=N) or sum the stack first"
            )
        if min(data.shape) < 8:
            raise InputError(f"image of shape {data.shape} is too small to hold a lattice; give at least 8x8 pixels")
        if not np.issubdtype(data.dtype, np.number):
            raise InputError(f"image has non-numeric dtype {data.dtype}; give a real-valued image")
        if np.iscomplexobj(data):
            raise InputError("image is complex-valued; pass its real part, phase or modulus")
        data = data.astype(np.float32, copy=False)
        if not np.all(np.isfinite(data)):
            n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
            raise InputError(
                f"image has {n_bad} NaN/Inf pixels; replace them (e.g. numpy.nan_to_num or inpainting) before analysis"
            )
        ps = self.pixel_size_A
        if ps is None or not np.isfinite(ps) or ps <= 0:
            raise InputError(
                f"pixel size is {ps!r}; give the calibration in Å per pixel (source.pixel_size_A=0.168)"
            )
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "pixel_size_A", float(ps))
        if self.variance is not None:
            var = np.asarray(self.variance, dtype=np.float32)
            if var.shape != data.shape:
                raise InputError(f"variance map shape {var.shape} differs from image shape {data.shape}")
            object.__setattr__(self, "variance", var)

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape (rows, columns) [px]."""
        return self.data.shape

    @property
    def extent_A(self) -> tuple[float, float]:
        """Field of view (width along x, height along y) [Å]."""
        return self.shape[1] * self.pixel_size_A, self.shape[0] * self.pixel_size_A

    def replace(self, **changes: Any) -> "Image":
        """Return a copy with some fields changed (e.g. ``data`` after denoising)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Octahedra:
    """The octahedral network: one row per Pb column.

    ``table`` columns: ``pb`` (row label of the Pb column in the column table), ``x_A``, ``y_A``
    (the Pb column), ``x_right``, ``x_left``, ``x_up``, ``x_down`` (row labels of the four X
    neighbours along +a1, -a1, +a2, -a2; -1 where missing), ``i``, ``j`` (lattice indices),
    ``shell`` (unit cells from the particle edge, 0 = outermost), ``a1_x_A``, ``a1_y_A``,
    ``a2_x_A``, ``a2_y_A`` (local Pb-Pb lattice vectors [Å]), ``edge`` (rim octahedron,
    unreliable, left out of maps and statistics).

    ``bonds`` is an (M, 2) integer array of column row labels to draw as Pb-X bonds.
    """

    table: pd.DataFrame
    bonds: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=int))
    lattice_vectors_A: np.ndarray = field(default_factory=lambda: np.full((2, 2), np.nan))

    NEIGHBOURS = ("x_right", "x_left", "x_up", "x_down")

    def __len__(self) -> int:
        return len(self.table)


@dataclass(frozen=True)
class Truth:
    """Ground truth for an image (synthetic or simulated).

    Parameters
    ----------
    columns : pandas.DataFrame
        True projected columns: ``x_A``, ``y_A`` [Å, image frame], ``species`` (Pb/X/Cs) and
        optional extras (``shell``, ``n_atoms``, halide composition).
    octahedra : pandas.DataFrame, optional
        True per-octahedron geometry: ``x_A``, ``y_A`` of the Pb column and any of
        ``theta1_deg``, ``theta2_deg``, ``theta3_deg``, ``L1_A``, ``L2_A``, ``shell``.
    clean : numpy.ndarray, optional
        The noise-free image on the same pixel grid, for denoiser quality metrics.
    """

    columns: pd.DataFrame
    octahedra: pd.DataFrame | None = None
    clean: np.ndarray | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_columns(self.columns)
        if "species" not in self.columns:
            raise InputError("truth columns lack 'species'; give x_A, y_A, species (Pb/X/Cs)")


@dataclass(frozen=True)
class MetricOutput:
    """What a metric returns.

    ``tables``: named tables (each written as ``<name>.csv``); ``scalars``: flat numbers (logged to
    MLflow, listed under ``scalars`` in summary.json); ``summary``: the metric's own section of
    summary.json (under ``metrics.<metric name>``); ``figures``: matplotlib figures by file stem.
    """

    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    scalars: Mapping[str, float] = field(default_factory=dict)
    figures: Mapping[str, Any] = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricInput:
    """The read-only view a metric computes on: the stage outputs, the octahedral geometry and
    the outputs of the metrics it declared it reads (``Metric.after``).

    Tables are the metric's own copies; ``previous`` cannot be changed. Nothing a metric does to
    this view reaches the :class:`Result`.
    """

    image: Image
    denoised: Image
    columns: pd.DataFrame | None
    octahedra: Octahedra | None
    geometry: "OctahedralGeometry | None"
    truth: Truth | None = None
    plugins: Mapping[str, Any] = field(default_factory=dict)
    previous: Mapping[str, MetricOutput] = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: "Result", previous: Mapping[str, MetricOutput] | None = None) -> "MetricInput":
        """The view of a (possibly hand-built) result; the geometry is computed if the result lacks it."""
        geometry = result.geometry
        if geometry is None and result.columns is not None and result.octahedra is not None:
            from octascope.analysis.octahedral_geometry import compute_geometry

            geometry = compute_geometry(result.columns, result.octahedra, result.denoised)
        octs = result.octahedra
        if octs is not None:
            octs = dataclasses.replace(octs, table=octs.table.copy(), bonds=np.array(octs.bonds, copy=True))
        if geometry is not None:
            geometry = dataclasses.replace(geometry, table=geometry.table.copy())
        return cls(image=result.image, denoised=result.denoised if result.denoised is not None else result.image,
                   columns=None if result.columns is None else result.columns.copy(), octahedra=octs,
                   geometry=geometry, truth=result.truth, plugins=MappingProxyType(dict(result.plugins)),
                   previous=MappingProxyType(dict(previous or {})))


def metric_input(data: "MetricInput | Result", truth: Truth | None = None) -> MetricInput:
    """A metric's argument as a :class:`MetricInput` (a :class:`Result` is viewed read-only)."""
    if isinstance(data, MetricInput):
        return data
    view = MetricInput.from_result(data)
    if truth is not None and truth is not view.truth:
        view = dataclasses.replace(view, truth=truth)
    return view


@dataclass
class Result:
    """Everything one analysis produced.

    Stage outputs are filled in as the pipeline runs (``geometry`` right after the network
    builder); ``tables``, ``scalars`` and ``figures`` collect the metric outputs, ``summaries``
    each metric's own summary section by metric name; ``timings_s`` the wall time of every stage [s].
    """

    image: Image
    denoised: Image | None = None
    columns: pd.DataFrame | None = None
    octahedra: Octahedra | None = None
    #: per-octahedron θ, φ, σ, L (:func:`octascope.analysis.octahedral_geometry.compute_geometry`)
    geometry: "OctahedralGeometry | None" = None
    truth: Truth | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    plugins: dict[str, Any] = field(default_factory=dict)
    #: the crystal region (:class:`octascope.analysis.region.CrystalRegion`) columns were kept in
    region: "CrystalRegion | None" = None
    #: columns the locator found outside the crystal region (dropped before classification)
    n_outside_region: int = 0
    #: reasons not to trust the numbers as they stand (empty when none); see :mod:`octascope.analysis.plausibility`
    flags: list[str] = field(default_factory=list)
