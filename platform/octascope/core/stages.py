"""The five stage interfaces.

A stage implementation is a plain class with a unique ``name`` class attribute, keyword-only
constructor parameters (its configuration, with units in their names; see
:mod:`octascope.core.params`) and one method. Stages keep no state between calls and never modify
their inputs: each returns a new value, which the next stage takes.

Positions are in Å in the image frame (origin at the centre of pixel [0, 0], x along array axis
1, y along axis 0), alongside pixel coordinates; angles in degrees (see :mod:`octascope.core.model`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

    from octascope.core.model import Classification, Image, MetricInput, MetricOutput, Octahedra, Truth

STAGES: tuple[str, ...] = ("denoiser", "locator", "classifier", "network", "metric")

#: what a metric may list in ``Metric.requires``: values the pipeline provides
METRIC_NEEDS: tuple[str, ...] = ("columns", "octahedra", "geometry", "truth")


@runtime_checkable
class Denoiser(Protocol):
    """Image -> Image.

    Input: the calibrated :class:`~octascope.core.model.Image` (float32 ``data``, ``pixel_size_A``).
    Output: a new ``Image`` of the same shape, pixel size and signal (``image.replace(data=...)``),
    optionally with a per-pixel ``variance`` [image units²] (e.g. Monte Carlo). The input image
    and its array must not be modified.
    """

    name: ClassVar[str]

    def denoise(self, image: "Image") -> "Image": ...


@runtime_checkable
class Locator(Protocol):
    """Image -> column table.

    Input: the (denoised) ``Image``, not modified. Output: a new :class:`pandas.DataFrame` with the
    fields of :data:`octascope.core.model.COLUMN_FIELDS` (build it with
    :func:`~octascope.core.model.make_columns`): ``x_A``, ``y_A`` [Å] and ``x_px``, ``y_px`` [px] in the
    image frame, ``amplitude`` [image units], widths ``sigma_major_A``/``sigma_minor_A`` [Å],
    ``rotation_deg`` [deg], fit uncertainties ``x_err_A``/``y_err_A`` [Å], ``significance`` and
    ``significant`` (weak site candidates are ``False``). ``species`` is left ``unknown``.
    """

    name: ClassVar[str]

    def locate(self, image: "Image") -> "pd.DataFrame": ...


@runtime_checkable
class Classifier(Protocol):
    """Image, columns -> :class:`~octascope.core.model.Classification`.

    Inputs: the (denoised) ``Image`` and the locator's column table (one particle's columns when
    the frame holds several), neither modified. Output: a ``Classification`` whose ``columns`` is
    a new table with ``species`` (Pb, X, Cs or unknown), ``species_confidence`` [0-1] and ``edge``
    set (optionally lattice indices ``i``, ``j``), with ``lattice_basis_A`` ((2, 2) Pb-Pb vectors
    [Å]) and, optionally, a ``search`` record for a network builder of the same method. The table
    must keep the row index: the row labels are what :class:`~octascope.core.model.Octahedra`
    points into (``pb``, ``x_right`` ...); rows may be dropped, never relabelled. A classifier that
    finds no perovskite lattice raises :class:`~octascope.core.errors.InputError` with the reason.
    """

    name: ClassVar[str]

    def classify(self, image: "Image", columns: "pd.DataFrame") -> "Classification": ...


@runtime_checkable
class NetworkBuilder(Protocol):
    """Image, classification -> octahedral network.

    Inputs: the (denoised) ``Image`` and the :class:`~octascope.core.model.Classification` (its
    column table, lattice basis and search record), neither modified. Output: an
    :class:`~octascope.core.model.Octahedra` whose ``table`` has one row per Pb column: ``pb`` and the
    four X neighbours ``x_right``, ``x_left``, ``x_up``, ``x_down`` as *row labels of the column
    table* (-1 where missing), ``x_A``, ``y_A`` [Å], lattice indices ``i``, ``j``, ``shell`` (unit
    cells from the particle edge, 0 = outermost), local Pb-Pb vectors ``a1_x_A`` ... ``a2_y_A``
    [Å] and ``edge``; ``bonds`` ((M, 2) row labels) and ``lattice_vectors_A`` ((2, 2) [Å]). The
    pipeline then computes the octahedral geometry (θ, φ, σ, L) from it
    (:mod:`octascope.analysis.octahedral_geometry`).
    """

    name: ClassVar[str]

    def build(self, image: "Image", classification: "Classification") -> "Octahedra": ...


@runtime_checkable
class Metric(Protocol):
    """Read-only view of the analysis (+ optional truth) -> tables, scalars, summary section, figures.

    Input: a :class:`~octascope.core.model.MetricInput` — image, denoised image, columns, octahedra,
    the octahedral geometry, truth, and the outputs of the metrics named in ``after`` that ran
    (``previous``); the metric's own copies, so nothing it does reaches the result. Output: a new
    :class:`~octascope.core.model.MetricOutput`: ``tables`` (``<name>.csv``), ``scalars`` (flat numbers
    for MLflow; units in the names: ``_deg``, ``_A``, ``_pm``), ``summary`` (its section
    ``metrics.<name>`` of summary.json) and ``figures``.

    ``requires``: the values it cannot run without (of :data:`METRIC_NEEDS`); the pipeline
    refuses to run it without them. ``after``: names of metrics whose output it reads when they
    run in the same analysis; the pipeline orders metrics by it (:func:`octascope.analysis.pipeline.order_metrics`).
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]
    after: ClassVar[tuple[str, ...]]

    def compute(self, data: "MetricInput", truth: "Truth | None") -> "MetricOutput": ...


#: stage -> the one method its implementations provide
METHODS = {"denoiser": "denoise", "locator": "locate", "classifier": "classify", "network": "build", "metric": "compute"}

PROTOCOLS: dict[str, type] = {
    "denoiser": Denoiser,
    "locator": Locator,
    "classifier": Classifier,
    "network": NetworkBuilder,
    "metric": Metric,
}
