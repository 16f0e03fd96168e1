"""The analysis pipeline: source image -> denoiser -> locator -> classifier -> network -> metrics.

Usable without Hydra::

    import octascope
    result = octascope.analyze(image, denoiser="bm3d", locator="gaussian", truth=truth)

A stage may be given as a registered name, as ``(name, params)``, as a mapping with a
``name`` key and parameters, or as an already-built stage object; a denoiser also as a list of
those, applied in order (the ``chain`` denoiser).
"""

from __future__ import annotations

import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence, TypedDict, TypeVar, Union, overload

import numpy as np

from octascope.core.errors import InputError, PluginError
from octascope.core.model import Image, MetricInput, MetricOutput, Octahedra, Result, Truth, validate_columns
from octascope.analysis.options import options_from_mapping
from octascope.analysis.plausibility import check_lattice, classification_flags
from octascope.analysis.refine import RefineOptions, refine_columns
from octascope.analysis.region import RegionOptions, find_region
from octascope.core.registry import Registry, get_registry
from octascope.core.stages import METHODS, Classifier, Denoiser, Locator, Metric, NetworkBuilder

if TYPE_CHECKING:
    import pandas as pd

    from octascope.core.model import OctahedralGeometry

#: a built stage object
StageObject = Union[Denoiser, Locator, Classifier, NetworkBuilder, Metric]

#: a stage given by name, (name, params), a mapping with ``name`` and parameters, or a built object
StageSpec = Union[str, tuple[str, Mapping[str, Any]], Mapping[str, Any], Denoiser, Locator, Classifier, NetworkBuilder,
                  Metric, list]
S = TypeVar("S")


class BuiltStages(TypedDict):
    """The built stage objects, by their keyword in :func:`run_pipeline` (``run_pipeline(image, **stages)``)."""

    denoiser: Denoiser
    locator: Locator
    classifier: Classifier
    network: NetworkBuilder
    metrics: list[Metric]


#: the metrics :func:`analyze` computes when none are named (their order is :func:`order_metrics`'s)
DEFAULT_METRICS: tuple[str, ...] = ("octahedral", "lattice", "accuracy")

#: Fewest located columns that can hold one perovskite unit cell with its neighbours.
MIN_COLUMNS = 9


@overload
def resolve_stage(registry: Registry, stage: Literal["denoiser"], spec: StageSpec) -> Denoiser: ...
@overload
def resolve_stage(registry: Registry, stage: Literal["locator"], spec: StageSpec) -> Locator: ...
@overload
def resolve_stage(registry: Registry, stage: Literal["classifier"], spec: StageSpec) -> Classifier: ...
@overload
def resolve_stage(registry: Registry, stage: Literal["network"], spec: StageSpec) -> NetworkBuilder: ...
@overload
def resolve_stage(registry: Registry, stage: Literal["metric"], spec: StageSpec) -> Metric: ...
@overload
def resolve_stage(registry: Registry, stage: str, spec: StageSpec) -> StageObject: ...


def resolve_stage(registry: Registry, stage: str, spec: StageSpec) -> StageObject:
    """Turn a stage specification into a stage object (see module docstring)."""
    if isinstance(spec, str):
        return registry.create(stage, spec)
    if stage == "denoiser" and isinstance(spec, list):  # a chain, as the method paper's ABSF -> S2SRED
        return registry.create(stage, "chain", steps=spec)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        return registry.create(stage, spec[0], **dict(spec[1] or {}))
    if isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        if not name:
            raise PluginError(f"{stage} configuration {spec} has no 'name'; choose one of: {', '.join(registry.names(stage))}")
        return registry.create(stage, name, **params)
    if not isinstance(spec, list) and getattr(spec, "name", None) and callable(getattr(spec, METHODS[stage], None)):
        return spec
    raise PluginError(f"cannot use {spec!r} as a {stage}; give a registered name, (name, params) or a {stage} object")


def _default_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def order_metrics(metrics: Sequence[Metric]) -> list[Metric]:
    """The order metrics run in — the one place it is decided.

    A metric runs after the metrics named in its ``after`` attribute when they are among
    ``metrics`` (e.g. ``denoise-quality`` after ``accuracy``, whose errors it repeats); otherwise
    the given order is kept (a stable topological sort).

    Raises
    ------
    PluginError
        If the ``after`` declarations form a cycle.
    """
    pending = list(metrics)
    names = {m.name for m in pending}
    done: list[Metric] = []
    placed: set[str] = set()
    while pending:
        for k, m in enumerate(pending):
            waits = [n for n in getattr(m, "after", ()) if n in names and n not in placed and n != m.name]
            if not waits:
                done.append(pending.pop(k))
                placed.add(m.name)
                break
        else:
            raise PluginError("metrics wait on each other (after): " + ", ".join(f"{m.name} after {list(m.after)}" for m in pending)
                              + "; remove one of them from the metric list")
    return done


def _check_needs(metric: Metric, result: Result) -> None:
    """Refuse a metric whose ``requires`` the analysis cannot give (one line: what is missing and why)."""
    have = {"columns": result.columns is not None, "octahedra": result.octahedra is not None,
            "geometry": result.geometry is not None, "truth": result.truth is not None}
    missing = [n for n in getattr(metric, "requires", ()) if not have.get(n, False)]
    if missing:
        raise InputError(f"metric '{metric.name}' needs {', '.join(missing)}, which this analysis did not produce; "
                         "run the stages that give them (a network builder for octahedra and geometry, a source with truth)")


def run_pipeline(
    image: Image,
    *,
    denoiser: Denoiser,
    locator: Locator,
    classifier: Classifier,
    network: NetworkBuilder,
    metrics: Sequence[Metric] = (),
    truth: Truth | None = None,
    region: RegionOptions | Mapping[str, Any] | None = None,
    refine: RefineOptions | Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = _default_progress,
) -> Result:
    """Run built stage objects on one image and return the :class:`~octascope.core.model.Result`.

    Between the locator and the classifier the crystal region is found
    (:func:`octascope.analysis.region.find_region`): columns outside it (vacuum, amorphous support) are
    dropped and counted, and the image is checked against what the analysis assumes
    (:mod:`octascope.analysis.plausibility`): bright columns, a square perovskite lattice of plausible
    spacing. What cannot be analysed raises :class:`~octascope.core.errors.InputError`; what is doubtful
    is listed in ``Result.flags``. An exception raised after the locator carries the result so far
    as its ``partial_result`` attribute (columns, region), so a caller can still show them.

    After the network builder the octahedral geometry (θ, φ, σ, L per octahedron) is computed
    once (:func:`octascope.analysis.octahedral_geometry.compute_geometry`) and put on ``Result.geometry``.
    Metrics run in the order of :func:`order_metrics`; each gets a read-only
    :class:`~octascope.core.model.MetricInput` and returns its own tables, scalars, summary section and
    figures, which the pipeline collects on the result.

    Parameters
    ----------
    image : Image
        Calibrated input image.
    denoiser, locator, classifier, network : stage objects
        One object per stage (see :mod:`octascope.core.stages`).
    metrics : sequence of Metric
        Metrics to compute (ordered by :func:`order_metrics`); each sees the outputs of the
        metrics it names in ``after``.
    truth : Truth, optional
        Ground truth for accuracy metrics.
    region : RegionOptions or Mapping, optional
        How the crystal region is found (:class:`octascope.analysis.region.RegionOptions`, or a
        mapping of its fields; default: automatic mask).
    refine : RefineOptions or Mapping, optional
        Model-based refinement of the classified columns (:func:`octascope.analysis.refine.refine_columns`)
        before the network is built: :class:`octascope.analysis.refine.RefineOptions`, or a mapping
        of its fields in which ``enabled`` defaults to True when the mapping is not empty;
        ``None`` or ``enabled: false`` keeps the locator's positions.
    progress : callable, optional
        Called with one line per stage start and end; ``None`` for silence.

    Raises
    ------
    PluginParameterError
        Before any stage runs, for a ``region`` or ``refine`` key or value that is not valid.
    """
    say = progress or (lambda _msg: None)
    region_options = as_region_options(region)
    refine_options = as_refine_options(refine)
    metrics = order_metrics(metrics)
    result = Result(image=image, truth=truth)
    stages: list[tuple[str, StageObject]] = [("denoiser", denoiser), ("locator", locator), ("classifier", classifier),
                                             ("network", network)]
    n_steps = len(stages) + len(metrics)
    result.plugins = {stage: obj.name for stage, obj in stages}
    result.plugins["metrics"] = [m.name for m in metrics]

    def timed(step: int, label: str, fn: Callable[[], S]) -> S:
        say(f"[{step}/{n_steps}] {label} ...")
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        result.timings_s[label] = dt
        say(f"[{step}/{n_steps}] {label} done in {dt:.2f} s")
        return out

    denoised = result.denoised = timed(1, f"denoiser:{denoiser.name}", lambda: denoiser.denoise(image))
    if denoised.shape != image.shape:
        raise PluginError(f"denoiser '{denoiser.name}' changed the image shape {image.shape} -> {denoised.shape}")
    columns = timed(2, f"locator:{locator.name}", lambda: locator.locate(denoised))
    validate_columns(columns)
    try:
        say("[region] crystal region ...")
        columns = _restrict_to_crystal(result, denoised, columns, region_options)
        say(f"[region] crystal region done in {result.timings_s['region']:.2f} s")
        result.columns = columns
        if len(columns) < MIN_COLUMNS:
            raise InputError(
                f"found {len(columns)} atomic columns in the crystal region, too few for a lattice (need >= {MIN_COLUMNS}); "
                "check the pixel size or denoise the image"
            )
        classified = timed(3, f"classifier:{classifier.name}", lambda: classifier.classify(denoised, columns))
        result.columns = _drop_unconfirmed_site_candidates(classified.columns)
        if classified.lattice_basis_A is not None:
            check_lattice(classified.lattice_basis_A, pixel_size_A=image.pixel_size_A)
        result.flags.extend(classification_flags(result.columns["species"].to_numpy(),
                                                 result.columns["amplitude"].to_numpy(float)))
        if refine_options.enabled:
            result.columns, result.refinement = timed(3, "refine", lambda: refine_columns(denoised, result.columns,
                                                                                          refine_options))
        classification = classified.with_columns(result.columns)
        octahedra = result.octahedra = timed(4, f"network:{network.name}", lambda: network.build(denoised, classification))
        result.geometry = _geometry(result, octahedra, denoised)
        assert result.region is not None  # set by _restrict_to_crystal
        result.scalars.update(n_columns_outside_region=float(result.n_outside_region),
                              crystal_fraction=float(result.region.fraction), n_flags=float(len(result.flags)))
    except Exception as exc:
        exc.partial_result = result  # type: ignore[attr-defined]
        raise
    outputs: dict[str, MetricOutput] = {}
    for k, metric in enumerate(metrics, start=5):
        _check_needs(metric, result)
        previous = {n: outputs[n] for n in getattr(metric, "after", ()) if n in outputs}
        view = MetricInput.from_result(result, previous)
        out = timed(k, f"metric:{metric.name}", partial(metric.compute, view, truth))
        outputs[metric.name] = out
        result.tables.update(out.tables)
        result.scalars.update(out.scalars)
        result.figures.update(out.figures)
        result.summaries[metric.name] = dict(out.summary)
    result.timings_s["total"] = sum(v for k, v in result.timings_s.items() if k != "total")
    return result


def _geometry(result: Result, octahedra: Octahedra, denoised: Image) -> "OctahedralGeometry":
    """The octahedral geometry of the network (timed as ``geometry``)."""
    from octascope.analysis.octahedral_geometry import compute_geometry

    t0 = time.perf_counter()
    geometry = compute_geometry(result.columns, octahedra, denoised)
    result.timings_s["geometry"] = time.perf_counter() - t0
    return geometry


def as_refine_options(refine: RefineOptions | Mapping[str, Any] | None) -> RefineOptions:
    """The refinement's options from :func:`run_pipeline`'s ``refine``: ``None`` is off, and in a
    mapping ``enabled`` defaults to True unless the mapping is empty."""
    if isinstance(refine, RefineOptions):
        return refine
    params = dict(refine or {})
    params.setdefault("enabled", bool(params))
    return options_from_mapping(RefineOptions, params, "refine")


def as_region_options(region: RegionOptions | Mapping[str, Any] | None) -> RegionOptions:
    """The crystal region's options from :func:`run_pipeline`'s ``region`` (``None``: automatic)."""
    if isinstance(region, RegionOptions):
        return region
    return options_from_mapping(RegionOptions, dict(region or {}), "region")


def _restrict_to_crystal(result: Result, img: Image, columns: "pd.DataFrame", region: RegionOptions) -> "pd.DataFrame":
    """Find the crystal region of the denoised image ``img``, check its contrast, drop columns outside."""
    from octascope.analysis.noise_spectrum import band_pass, estimate_noise_spectrum
    from octascope.analysis.plausibility import check_contrast

    t0 = time.perf_counter()
    noise = estimate_noise_spectrum(img.data, img.pixel_size_A)
    reg = find_region(img.data, img.pixel_size_A, region, noise=noise)
    result.region = reg
    if region.mode == "auto" and not reg.mask.any():
        raise InputError(
            "no crystal lattice in the image (no Bragg peaks above the noise): nothing to analyse; check that the image "
            "shows a crystal at atomic resolution and its pixel size, or draw the region (region.mode=polygon)"
        )
    bp, _ = band_pass(img.data, img.pixel_size_A, inner_sigma_A=0.25, outer_sigma_A=0.8)
    check_contrast(bp, reg.mask)
    inside = reg.contains(columns["x_px"].to_numpy(float), columns["y_px"].to_numpy(float))
    result.n_outside_region = int((~inside).sum())
    result.timings_s["region"] = time.perf_counter() - t0
    return columns[inside].reset_index(drop=True)


def _drop_unconfirmed_site_candidates(columns: "pd.DataFrame") -> "pd.DataFrame":
    """Site candidates (weak maxima the locator marked ``significant=False``) that the classifier
    did not place on a lattice site are no columns: drop them (a significant peak off the lattice
    stays, as ``unknown``)."""
    if "significant" not in columns or "species" not in columns:
        return columns
    weak = ~columns["significant"].fillna(True).to_numpy(bool)
    drop = weak & (columns["species"].astype(str).to_numpy() == "unknown")
    return columns[~drop]


def analyze(
    image: Image,
    *,
    denoiser: StageSpec = "none",
    locator: StageSpec = "gaussian",
    classifier: StageSpec = "lattice",
    network: StageSpec = "nearest",
    metrics: Sequence[StageSpec] | None = None,
    truth: Truth | None = None,
    region: RegionOptions | Mapping[str, Any] | None = None,
    refine: RefineOptions | Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    progress: Callable[[str], None] | None = _default_progress,
) -> Result:
    """Analyse one image with plugins chosen by name (no Hydra involved).

    Parameters
    ----------
    image : Image
        Calibrated input image.
    denoiser, locator, classifier, network : str, (str, dict), dict or stage object
        The implementation of each stage; names are those of the plugin registry.
    metrics : sequence, optional
        Metrics to compute (in the order of :func:`order_metrics`); by default
        :data:`DEFAULT_METRICS` (``accuracy`` only when truth is given).
    truth : Truth, optional
        Ground truth for the ``accuracy`` metric.
    region : RegionOptions or Mapping, optional
        How the crystal region is found (:class:`octascope.analysis.region.RegionOptions`: ``mode``
        auto, file, polygon or none, and its parameters); automatic by default.
    refine : RefineOptions or Mapping, optional
        Model-based refinement after classification (see :func:`run_pipeline`); ``None``: off.
    registry : Registry, optional
        Plugin registry; by default all built-in and installed plugins.

    Returns
    -------
    Result
        Columns, octahedra, metric tables and scalars, stage timings [s].
    """
    registry = registry or get_registry()
    if metrics is None:
        metrics = [m for m in DEFAULT_METRICS if m != "accuracy" or truth is not None]
    built = BuiltStages(
        denoiser=resolve_stage(registry, "denoiser", denoiser),
        locator=resolve_stage(registry, "locator", locator),
        classifier=resolve_stage(registry, "classifier", classifier),
        network=resolve_stage(registry, "network", network),
        metrics=[resolve_stage(registry, "metric", m) for m in metrics],
    )
    return run_pipeline(image, truth=truth, region=region, refine=refine, progress=progress, **built)
