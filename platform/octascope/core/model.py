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
from typing import Any, Callable, Iterator, Mapping, MutableMapping

import numpy as np
import pandas as pd

from octascope.core.errors import InputError

SPECIES = ("Pb", "X", "Cs", "unknown")
#: the octahedral tilt columns of the geometry and octahedra tables
TILT_NAMES = ("theta1_deg", "theta2_deg", "theta3_deg")

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
class Classification:
    """What a classifier returns: the classified column table and the lattice it found.

    Parameters
    ----------
    columns : pandas.DataFrame
        The column table with ``species``, ``species_confidence`` and ``edge`` set; its row labels
        are the input's (rows may be dropped, never relabelled).
    lattice_basis_A : numpy.ndarray, optional
        (2, 2) Pb-Pb lattice vectors ``a1``, ``a2`` [Å] found by the classifier.
    search : object, optional
        The classifier's own search record, for a network builder of the same method to reuse
        instead of searching again (e.g. SOFS); opaque to the pipeline.
    """

    columns: pd.DataFrame
    lattice_basis_A: np.ndarray | None = None
    search: Any = None

    def __post_init__(self) -> None:
        if self.lattice_basis_A is not None:
            basis = np.asarray(self.lattice_basis_A, dtype=float)
            if basis.shape != (2, 2):
                raise InputError(f"a classifier's lattice basis must be (2, 2) [Å], got shape {basis.shape}")
            object.__setattr__(self, "lattice_basis_A", basis)

    @property
    def lattice_constant_A(self) -> float:
        """Mean length of the Pb-Pb lattice vectors [Å] (NaN without a basis)."""
        if self.lattice_basis_A is None:
            return float("nan")
        return float(np.mean(np.linalg.norm(self.lattice_basis_A, axis=1)))

    def with_columns(self, columns: pd.DataFrame) -> "Classification":
        """The same classification over another column table (e.g. after rows were dropped or refined)."""
        return dataclasses.replace(self, columns=columns)


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
class BraggPeaks:
    """Significant peaks of the power spectrum (one of each Friedel pair).

    ``kx_A``, ``ky_A`` [1/Å] in the image frame (x along axis 1, y along axis 0) and ``snr``,
    the peak power over the noise power at that frequency [1].
    """

    kx_A: np.ndarray
    ky_A: np.ndarray
    snr: np.ndarray

    def __len__(self) -> int:
        return len(self.kx_A)

    @property
    def k_A(self) -> np.ndarray:
        """|k| of each peak [1/Å]."""
        return np.hypot(self.kx_A, self.ky_A)


@dataclass(frozen=True)
class CrystalRegion:
    """The crystal mask of an image and what it was made from.

    ``mask`` is True on crystal pixels; ``energy_snr`` the local Bragg-filtered energy over the
    noise's expectation of it [1]; ``threshold`` the ratio used to cut it; ``peaks`` the Bragg peaks
    used; ``source`` says how the mask was made (``auto``, ``file``, ``polygon`` or ``none``).
    """

    mask: np.ndarray
    energy_snr: np.ndarray | None = None
    threshold: float = float("nan")
    peaks: BraggPeaks | None = None
    source: str = "auto"
    info: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Fraction of the image inside the mask [0-1]."""
        return float(np.mean(self.mask))

    def contains(self, x_px: np.ndarray, y_px: np.ndarray) -> np.ndarray:
        """Whether points (pixel coordinates) lie inside the mask; points off the image are outside."""
        x = np.rint(np.asarray(x_px, float)).astype(int)
        y = np.rint(np.asarray(y_px, float)).astype(int)
        h, w = self.mask.shape
        on = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        out = np.zeros(x.shape, dtype=bool)
        out[on] = self.mask[y[on], x[on]]
        return out


@dataclass(frozen=True)
class OctahedralGeometry:
    """The per-octahedron geometry of one network (the pipeline's value after the network builder).

    ``table``: one row per octahedron in the order of ``Octahedra.table`` — ``pb`` (row label of
    the Pb column), ``x_A``, ``y_A``, ``i``, ``j``, ``shell``, ``edge``, ``phi1_deg``..``phi4_deg``,
    ``theta1_deg``..``theta3_deg`` [deg], ``sigma1_A``..``sigma4_A``, ``L1_A``, ``L2_A`` [Å],
    ``n_bonds``, ``complete`` and the 1σ errors ``<name>_err_deg`` / ``<name>_err_A`` (statistical),
    ``<name>_sys_*`` (systematic) and ``<name>_total_err_*`` (both). θ and L (and their errors) are
    NaN for incomplete or edge octahedra.

    ``covariance``: the propagation of the column position covariance to the table's quantities
    (an :class:`octascope.analysis.uncertainty.GeometryCovariance`; rows follow ``table``), for the
    errors of means and differences over octahedra; ``None`` without uncertainties.
    """

    table: pd.DataFrame
    covariance: Any = None

    #: the tilt columns
    TILTS = TILT_NAMES

    def __len__(self) -> int:
        return len(self.table)

    @property
    def usable(self) -> pd.DataFrame:
        """Rows that are not edge octahedra (what statistics and accuracy use)."""
        return self.table[~self.table["edge"].to_numpy(bool)]


#: verdicts of a particle: analysed (its numbers are in the tables), refused (its reason says why)
PARTICLE_VERDICTS = ("analysed", "refused")


@dataclass(frozen=True)
class Particle:
    """One particle of a frame: a connected region of one lattice (orientation and registry).

    The segmentation (:func:`octascope.analysis.particles.segment_particles`) finds it; the
    pipeline then classifies, checks and builds the network of each particle on its own and fills
    in its lattice and verdict.

    Parameters
    ----------
    id : int
        1, 2, … in the frame (the ``particle`` column of columns.csv, octahedra.csv, lattice.csv).
    rows : numpy.ndarray
        Row labels of its columns in the column table.
    centroid_A : tuple of float
        Mean position of its columns (x, y) [Å].
    orientation_deg : float
        Direction of its column lattice's first axis in the image, in (-45, 45] [deg].
    spacing_A : float
        Nearest-neighbour spacing of its column lattice (a/2 of the perovskite) [Å].
    area_A2 : float
        Projected area [Å²].
    size_A : tuple of float
        Extent along the two lattice axes [Å].
    touches_edge : bool
        Its lattice reaches the frame edge: part of it may lie outside the image.
    outline_A : numpy.ndarray
        (M, 2) outline polygon (x, y) [Å], for figures.
    zone_axis : str
        ``[001]`` (columns straight down the beam), ``off-axis`` or ``unknown``.
    zone_axis_score : float
        The measure the zone-axis verdict is taken on (:func:`octascope.analysis.particles.zone_axis_score`) [1].
    lattice_basis_A : numpy.ndarray, optional
        (2, 2) Pb-Pb lattice vectors [Å] from its classification.
    verdict : str
        ``analysed`` or ``refused`` (:data:`PARTICLE_VERDICTS`); empty before the pipeline judged it.
    reasons : tuple of str
        Why it was refused, or flags that make its numbers doubtful (empty when trusted).
    """

    id: int
    rows: np.ndarray
    centroid_A: tuple[float, float]
    orientation_deg: float
    spacing_A: float
    area_A2: float
    size_A: tuple[float, float]
    touches_edge: bool
    outline_A: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    zone_axis: str = "unknown"
    zone_axis_score: float = float("nan")
    lattice_basis_A: np.ndarray | None = None
    verdict: str = ""
    reasons: tuple[str, ...] = ()

    @property
    def analysed(self) -> bool:
        """Whether the particle was analysed (its octahedra and tilts are in the tables)."""
        return self.verdict == "analysed"

    @property
    def trusted(self) -> bool:
        """Analysed with no flag against its numbers."""
        return self.analysed and not self.reasons

    def replace(self, **changes: Any) -> "Particle":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


class LazyFigures(Mapping[str, Any]):
    """Figures by file stem, built by ``build()`` on first use.

    A metric returns its figures this way so that they are built only when they are written: after
    the command has printed its numbers, and not at all with ``figure_formats=[]`` (building a
    run's matplotlib figures, matplotlib's import included, is most of a small image's analysis time).
    """

    def __init__(self, build: Callable[[], Mapping[str, Any]]):
        self._build: Callable[[], Mapping[str, Any]] | None = build
        self._figures: dict[str, Any] = {}

    def _get(self) -> dict[str, Any]:
        if self._build is not None:
            build, self._build = self._build, None
            self._figures = dict(build())
        return self._figures

    def __getitem__(self, name: str) -> Any:
        return self._get()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


class Figures(MutableMapping[str, Any]):
    """A result's figures by file stem; :class:`LazyFigures` added with :meth:`update` stay unbuilt
    until the figures are read."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}
        self._pending: list[LazyFigures] = []

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        if isinstance(other, LazyFigures) and not kwargs:
            self._pending.append(other)
        else:
            self._built.update(other, **kwargs)

    def _get(self) -> dict[str, Any]:
        while self._pending:
            self._built.update(self._pending.pop(0))
        return self._built

    def __getitem__(self, name: str) -> Any:
        return self._get()[name]

    def __setitem__(self, name: str, fig: Any) -> None:
        self._get()[name] = fig

    def __delitem__(self, name: str) -> None:
        del self._get()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def clear(self) -> None:
        self._pending.clear()
        self._built.clear()


@dataclass(frozen=True)
class MetricOutput:
    """What a metric returns.

    ``tables``: named tables (each written as ``<name>.csv``); ``scalars``: flat numbers (logged to
    MLflow, listed under ``scalars`` in summary.json); ``summary``: the metric's own section of
    summary.json (under ``metrics.<metric name>``); ``figures``: matplotlib figures by file stem
    (a :class:`LazyFigures` builds them only when they are written).
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
    geometry: OctahedralGeometry | None
    truth: Truth | None = None
    plugins: Mapping[str, Any] = field(default_factory=dict)
    previous: Mapping[str, MetricOutput] = field(default_factory=dict)
    #: the frame's particles (analysed and refused)
    particles: tuple[Particle, ...] = ()

    @classmethod
    def from_result(cls, result: "Result", previous: Mapping[str, MetricOutput] | None = None) -> "MetricInput":
        """The read-only view of a result (copies of its tables; ``geometry`` as the result has it)."""
        octs = result.octahedra
        if octs is not None:
            octs = dataclasses.replace(octs, table=octs.table.copy(), bonds=np.array(octs.bonds, copy=True))
        geometry = result.geometry
        if geometry is not None:
            geometry = dataclasses.replace(geometry, table=geometry.table.copy())
        return cls(image=result.image, denoised=result.denoised if result.denoised is not None else result.image,
                   columns=None if result.columns is None else result.columns.copy(), octahedra=octs,
                   geometry=geometry, truth=result.truth, plugins=MappingProxyType(dict(result.plugins)),
                   previous=MappingProxyType(dict(previous or {})), particles=tuple(result.particles))


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
    geometry: OctahedralGeometry | None = None
    truth: Truth | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    figures: MutableMapping[str, Any] = field(default_factory=Figures)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    plugins: dict[str, Any] = field(default_factory=dict)
    #: the crystal region (:class:`octascope.analysis.region.CrystalRegion`) columns were kept in
    region: CrystalRegion | None = None
    #: columns the locator found outside the crystal region (dropped before classification)
    n_outside_region: int = 0
    #: columns found on a denoised image that the recorded image does not support (dropped after the locator)
    n_unsupported_by_recorded: int = 0
    #: what the model-based refinement did (:func:`octascope.analysis.refine.refine_columns`), when it ran
    refinement: dict[str, Any] | None = None
    #: reasons not to trust the numbers as they stand (empty when none); see :mod:`octascope.analysis.plausibility`
    flags: list[str] = field(default_factory=list)
    #: the particles of the frame (:class:`Particle`), analysed and refused
    particles: list[Particle] = field(default_factory=list)
    #: columns in the crystal region that belong to no particle (dropped before classification)
    n_outside_particles: int = 0
