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
from scipy import ndimage

from octascope.analysis.frame import MIN_COLUMNS, analyse_frame
from octascope.analysis.particle_table import frame_statistics, particle_table
from octascope.analysis.particles import ParticleOptions, Segmentation, segment_particles, unresolved_particles
from octascope.core import interrupts
from octascope.core.errors import InputError, PluginError
from octascope.analysis.refine import RefineOptions, refine_columns
from octascope.analysis.noise_spectrum import PEAK_ROUGHNESS_ATTR, band_pass, band_pass_transfer, significance_at
from octascope.analysis.region import RegionOptions, find_region, frame_noise_spectrum
from octascope.analysis.uncertainty import PositionCovariance, pop_position_covariance
from octascope.core.model import CrystalRegion, Image, MetricInput, MetricOutput, Result, Truth, validate_columns
from octascope.core.params import options_from
from octascope.core.registry import Registry, get_registry
from octascope.core.stages import METHODS, Classifier, Denoiser, Locator, Metric, NetworkBuilder

if TYPE_CHECKING:
    import pandas as pd

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
    particles: ParticleOptions | Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = _default_progress,
) -> Result:
    """Run built stage objects on one image and return the :class:`~octascope.core.model.Result`.

    Between the locator and the classifier the crystal region is found
    (:func:`octascope.analysis.region.find_region`): columns outside it (vacuum, amorphous support)
    are dropped and counted. The columns inside are split into particles
    (:func:`octascope.analysis.particles.segment_particles`) and each particle is classified,
    checked against what the analysis assumes (:mod:`octascope.analysis.plausibility`: [001] zone
    axis, bright columns, a square perovskite lattice of plausible spacing, a Pb sublattice) and
    given its octahedral network and geometry on its own (:func:`octascope.analysis.frame.analyse_frame`).
    A particle that cannot be analysed is reported with its reason (``Result.particles``,
    ``Result.flags``) while the others are analysed; :class:`~octascope.core.errors.InputError` is
    raised only when no particle can be. An exception raised after the locator carries the result
    so far as its ``partial_result`` attribute (columns, region), so a caller can still show them.

    Metrics run in the order of :func:`order_metrics`; each gets a read-only
    :class:`~octascope.core.model.MetricInput` and returns its own tables, scalars, summary section
    and figures, which the pipeline collects on the result.

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
        before the networks are built: :class:`octascope.analysis.refine.RefineOptions`, or a
        mapping of its fields in which ``enabled`` defaults to True when the mapping is not empty;
        ``None`` or ``enabled: false`` keeps the locator's positions.
    particles : ParticleOptions or Mapping, optional
        How the frame is split into particles (:class:`~octascope.analysis.particles.ParticleOptions`).
    progress : callable, optional
        Called with one line per stage start and end; ``None`` for silence.

    Raises
    ------
    PluginParameterError
        Before any stage runs, for a ``region``, ``refine`` or ``particles`` key or value that is not valid.
    """
    say = progress or (lambda _msg: None)
    region_options, refine_options = as_region_options(region), as_refine_options(refine)
    particle_opts = particle_options(particles)
    metrics = order_metrics(metrics)
    result = Result(image=image, truth=truth)
    result.plugins = {"denoiser": denoiser.name, "locator": locator.name, "classifier": classifier.name,
                      "network": network.name, "metrics": [m.name for m in metrics]}
    clock = _StageClock(result, say, n_steps=4 + len(metrics))
    denoised = result.denoised = clock.step(1, f"denoiser:{denoiser.name}", lambda: denoiser.denoise(image))
    if denoised.shape != image.shape:
        raise PluginError(f"denoiser '{denoiser.name}' changed the image shape {image.shape} -> {denoised.shape}")
    try:
        columns = clock.step(2, f"locator:{locator.name}", lambda: locator.locate(denoised))
    except InputError as exc:
        noted = with_pixel_size(exc, image)
        if noted is exc:
            raise
        raise noted from None
    validate_columns(columns)
    pairs = pop_position_covariance(columns)
    columns = _supported_by_recorded(result, image, denoised, columns, locator)
    try:
        _analyse_particles(result, denoised, columns, classifier, network, region_options, refine_options, particle_opts,
                           clock, pairs)
    except InputError as exc:
        noted = with_pixel_size(exc, image)
        noted.partial_result = result  # type: ignore[attr-defined]
        if noted is exc:
            raise
        raise noted from None
    except Exception as exc:
        exc.partial_result = result  # type: ignore[attr-defined]
        raise
    _run_metrics(result, metrics, truth, clock)
    _join_particle_table(result)
    result.timings_s["total"] = sum(v for k, v in result.timings_s.items() if k != "total")
    return result


def with_pixel_size(exc: InputError, image: Image) -> InputError:
    """An InputError whose message depends on the pixel size (it asks to check it, or states a length
    in Å measured on the image), with the pixel size used and where it came from added (``image.metadata["pixel_size_from"]``: the file's calibration or the override);
    ``exc`` itself when the message does not depend on the pixel size or already names its source."""
    text = str(exc)
    if not any(k in text for k in ("pixel size", "spacing", "|a1|")) or "pixel size used" in text:
        return exc
    source = {"file": "the file's calibration", "override": "source.pixel_size_A"}.get(
        str((image.metadata or {}).get("pixel_size_from")), "the image given")
    return InputError(f"{text} (pixel size used: {image.pixel_size_A:g} Å/px, from {source})")


def particle_options(particles: ParticleOptions | Mapping[str, Any] | None) -> ParticleOptions:
    """The segmentation options from :func:`run_pipeline`'s ``particles`` (``None``: the defaults)."""
    if isinstance(particles, ParticleOptions):
        return particles
    return options_from(ParticleOptions, dict(particles or {}), "particles")


def as_refine_options(refine: RefineOptions | Mapping[str, Any] | None) -> RefineOptions:
    """The refinement's options from :func:`run_pipeline`'s ``refine``: ``None`` is off, and in a
    mapping ``enabled`` defaults to True unless the mapping is empty."""
    if isinstance(refine, RefineOptions):
        return refine
    params = dict(refine or {})
    params.setdefault("enabled", bool(params))
    return options_from(RefineOptions, params, "refine")


def as_region_options(region: RegionOptions | Mapping[str, Any] | None) -> RegionOptions:
    """The crystal region's options from :func:`run_pipeline`'s ``region`` (``None``: automatic)."""
    if isinstance(region, RegionOptions):
        return region
    return options_from(RegionOptions, dict(region or {}), "region")


class _StageClock:
    """Times the stages of one run into ``result.timings_s`` and says when each starts and ends."""

    def __init__(self, result: Result, say: Callable[[str], None], n_steps: int) -> None:
        self.result, self.say, self.n_steps = result, say, n_steps

    def step(self, k: int, label: str, fn: Callable[[], S]) -> S:
        interrupts.raise_if_stopped()
        self.say(f"[{k}/{self.n_steps}] {label} ...")
        t0 = time.perf_counter()
        out = fn()
        self.record(k, label, time.perf_counter() - t0)
        return out

    def record(self, k: int | str, label: str, seconds: float) -> None:
        interrupts.raise_if_stopped()
        self.result.timings_s[label] = seconds
        self.say(f"[{k}/{self.n_steps}] {label} done in {seconds:.2f} s" if isinstance(k, int) else
                 f"[{k}] {label} done in {seconds:.2f} s")


def _analyse_particles(result: Result, denoised: Image, columns: "pd.DataFrame", classifier: Classifier,
                       network: NetworkBuilder, region: RegionOptions, refine: RefineOptions,
                       options: ParticleOptions, clock: _StageClock, pairs: PositionCovariance | None = None) -> None:
    """Crystal region, particles, and every particle's classification, network and geometry
    (``pairs``: the locator's covariances between neighbouring columns)."""
    clock.say("[region] crystal region ...")
    columns, in_region, band_passed = _restrict_to_crystal(result, denoised, columns, region, options.rim_band_A)
    if not in_region.all() and "significant" in columns:
        # a rim-band column counts as a site candidate: kept only where a particle's lattice puts a column
        columns = columns.assign(significant=columns["significant"].fillna(True).to_numpy(bool) & in_region)
    clock.record("region", "region", result.timings_s["region"])
    result.columns = columns
    if in_region.sum() < MIN_COLUMNS:
        raise InputError(
            f"found {int(in_region.sum())} atomic columns in the crystal region, too few for a lattice (need >= {MIN_COLUMNS}); "
            "check the pixel size or denoise the image"
        )
    t0 = time.perf_counter()
    segmentation = find_particles(denoised, columns, in_region, result.region, options)
    result.particles = list(segmentation.particles)
    unjoined = segmentation.labels == 0
    result.n_outside_region += int((unjoined & ~in_region).sum())  # rim-band columns no particle took
    result.n_outside_particles = int((unjoined & in_region).sum())
    clock.record("particles", "particles", time.perf_counter() - t0)
    if not segmentation.particles:
        raise InputError(f"the {len(columns)} columns in the crystal region form no square lattice; check the pixel "
                         f"size ({denoised.pixel_size_A:g} Å/px), the zone axis ([001]) and the denoising")
    clock.say(f"[3/{clock.n_steps}] classifier:{classifier.name}, network:{network.name} on "
              f"{len(segmentation.particles)} particle(s) ...")
    frame = analyse_frame(denoised, columns, segmentation, classifier=classifier, network=network,
                          band_passed=band_passed, refine=refine_function(refine, denoised), options=options, pairs=pairs)
    result.columns, result.particles, result.refinement = frame.columns, frame.particles, frame.refinement
    result.octahedra, result.geometry = frame.octahedra, frame.geometry
    result.flags.extend(frame.flags)
    for k, (label, seconds) in enumerate(frame.timings_s.items()):
        clock.record(3 if label.startswith("classifier") else (4 if label.startswith("network") else label), label, seconds)
    assert result.region is not None
    analysed = [p for p in result.particles if p.analysed]
    result.scalars.update(n_columns_outside_region=float(result.n_outside_region),
                          n_unsupported_by_recorded=float(result.n_unsupported_by_recorded),
                          n_columns_outside_particles=float(result.n_outside_particles),
                          crystal_fraction=float(result.region.fraction), n_flags=float(len(result.flags)),
                          n_particles=float(len(result.particles)), n_particles_analysed=float(len(analysed)),
                          n_particles_refused=float(len(result.particles) - len(analysed)))


def find_particles(image: Image, columns: "pd.DataFrame", in_region: np.ndarray, region: CrystalRegion | None,
                   options: ParticleOptions) -> Segmentation:
    """The particles of a frame: lattice particles from the columns in the crystal region (those
    ``in_region``; the others, in the rim band, may only join one), plus the crystal regions no
    lattice particle covers (reported as refused, e.g. off the zone axis)."""
    sig = columns["significant"].fillna(True).to_numpy(bool) if "significant" in columns else None
    seg = segment_particles(columns[["x_A", "y_A"]].to_numpy(float), columns["amplitude"].to_numpy(float), sig,
                            row_labels=columns.index.to_numpy(), shape_px=image.shape, pixel_size_A=image.pixel_size_A,
                            options=options, linkable=in_region)
    if region is None or region.source != "auto" or not np.isfinite(seg.spacing_A):
        return seg
    extra, labels = unresolved_particles(region.mask, seg.particles, columns[["x_A", "y_A"]].to_numpy(float), seg.labels,
                                         columns.index.to_numpy(), spacing_A=seg.spacing_A,
                                         pixel_size_A=image.pixel_size_A)
    if not extra:
        return seg
    return Segmentation(labels, [*seg.particles, *extra], seg.spacing_A, seg.n_domains_split)


def refine_function(refine: RefineOptions, image: Image) -> Callable[["pd.DataFrame"], tuple["pd.DataFrame", dict[str, Any]]] | None:
    """The refinement of classified columns on ``image`` the options ask for (``None``: off)."""
    if not refine.enabled:
        return None
    return lambda columns: refine_columns(image, columns, refine)


def _run_metrics(result: Result, metrics: Sequence[Metric], truth: Truth | None, clock: _StageClock) -> None:
    """Each metric on its read-only view, in order; their outputs collected on the result."""
    outputs: dict[str, MetricOutput] = {}
    for k, metric in enumerate(metrics, start=5):
        _check_needs(metric, result)
        previous = {n: outputs[n] for n in getattr(metric, "after", ()) if n in outputs}
        view = MetricInput.from_result(result, previous)
        out = clock.step(k, f"metric:{metric.name}", partial(metric.compute, view, truth))
        outputs[metric.name] = out
        result.tables.update(out.tables)
        result.scalars.update(out.scalars)
        result.figures.update(out.figures)
        result.summaries[metric.name] = dict(out.summary)


def _join_particle_table(result: Result) -> None:
    """``particles`` table: each particle's description joined with the tilt statistics a metric
    gave per particle (the ``octahedral`` metric's ``particles`` table), and frame scalars over them."""
    table = particle_table(result)
    per_metric = result.tables.get("particles")
    if per_metric is not None and len(table) and "particle" in per_metric:
        table = table.merge(per_metric, on="particle", how="left")
    result.tables["particles"] = table
    result.scalars.update(frame_statistics(table))


def _supported_by_recorded(result: Result, image: Image, denoised: Image, columns: "pd.DataFrame",
                           locator: Locator) -> "pd.DataFrame":
    """Drop the columns found on a denoised image that the recorded image does not support.

    A denoiser's output carries its prior as well as the data. ABSF's (keep the cores of the
    lattice's Bragg peaks, subtract the rest, including the tails that say where a lattice ends)
    continues each particle's lattice about one step past its edge: on the 2048² carbon field at
    300 e/Å² the noise-free image has a median band-passed significance of 0.2 at those places
    before ABSF and 2.0 after, so noise lifts them over the site floor (2.5) next to real columns,
    and at 1,000 e/Å² over the threshold itself; they were taken for columns (72 of ABSF's 88 false
    columns at 300 e/Å²; docs/denoisers.md). No noise model of the filtered image can reject them:
    they are signal the filter made. Every column found on a denoised image is therefore also
    judged on the recorded image, whose noise the noise spectrum describes, with the locator's own
    band-pass, at the locator's ``recorded_significance`` (2.0 by default: the recorded image is
    noise on a mean of 0.2 at the ghost places, while ABSF's real gain at 100 e/Å² — weak columns
    it lifts over 2.5 that the recorded image shows at 2-2.5 — stays). Undenoised images are left
    as they are. The count dropped is ``result.n_unsupported_by_recorded``.

    Where the recorded image's noise was measured on the frame's empty area (a wide field: the
    significances are on the noise's true scale), the columns kept also carry the recorded
    image's evidence: their ``significance`` is the recorded one and ``significant`` says whether it
    reaches the recorded image's own threshold, so a column the recorded image shows only weakly is
    a site candidate, which the classifier keeps inside a lattice and judges by the site test at a
    particle's rim (:class:`octascope_plugins.sites.site_registry.SiteTest`). On the benchmark field
    (seeds 0-2) ABSF's precision with the site test was 0.958 / 0.982 / 0.985 / 0.994 at 1,000 / 300 /
    220 / 100 e/Å², with this as well 0.978 / 0.994 / 0.994 / 0.993. Where the noise is the whole
    image's estimate (a particle filling the image), the denoised image's flags stay.
    """
    o: Any = getattr(locator, "options", None)  # a locator without the candidate search's options is not checked
    floor = getattr(o, "recorded_significance", None)
    if (floor is None or not len(columns) or denoised.data is image.data
            or not all(hasattr(o, k) for k in ("detection_sigma_A", "background_sigma_A", "com_radius_A", "threshold",
                                                "roughness"))
            or np.array_equal(np.asarray(denoised.data), np.asarray(image.data))):
        return columns
    noise = frame_noise_spectrum(image)
    z = significance_at(image.data, image.pixel_size_A, columns["x_px"].to_numpy(float),
                        columns["y_px"].to_numpy(float), inner_sigma_A=o.detection_sigma_A,
                        outer_sigma_A=o.background_sigma_A, radius_A=o.com_radius_A, noise=noise)
    drop = z < floor
    result.n_unsupported_by_recorded = int(drop.sum())
    kept = columns[~drop].reset_index(drop=True) if drop.any() else columns
    if noise.measured_on != "empty area" or "significance" not in kept:
        return kept
    # the noise is on its true scale: each column's evidence is the recorded image's, so one the
    # recorded image shows only weakly is a site candidate, and at a particle's rim the classifier's
    # site test judges it (a filter's lattice continuation past the edge is no evidence)
    threshold = o.threshold(noise, band_pass_transfer(image.shape, image.pixel_size_A, inner_sigma_A=o.detection_sigma_A,
                                                      outer_sigma_A=o.background_sigma_A))
    recorded = z[~drop]
    out = kept.assign(significance=recorded, significant=recorded >= threshold)
    out.attrs.update(kept.attrs)
    out.attrs["significance_threshold"] = threshold
    out.attrs[PEAK_ROUGHNESS_ATTR] = o.roughness(image.data, image.pixel_size_A, noise)
    return out


def _restrict_to_crystal(result: Result, img: Image, columns: "pd.DataFrame", region: RegionOptions,
                         rim_band_A: float) -> tuple["pd.DataFrame", np.ndarray, np.ndarray]:
    """Find the crystal region of the denoised image ``img`` and drop the columns outside it, but
    for those within ``rim_band_A`` of an automatic region (they may join a particle); return the
    kept columns, which of them lie in the region, and the band-passed image (contrast checks)."""
    t0 = time.perf_counter()
    noise = frame_noise_spectrum(img)
    reg = find_region(img.data, img.pixel_size_A, region, noise=noise)
    result.region = reg
    if region.mode == "auto" and not reg.mask.any():
        raise InputError(
            "no crystal lattice in the image (no Bragg peaks above the noise): nothing to analyse; check that the image "
            "shows a crystal at atomic resolution and its pixel size, or draw the region (region.mode=polygon)"
        )
    bp, _ = band_pass(img.data, img.pixel_size_A, inner_sigma_A=0.25, outer_sigma_A=0.8)
    x_px, y_px = columns["x_px"].to_numpy(float), columns["y_px"].to_numpy(float)
    inside = reg.contains(x_px, y_px)
    keep = inside | (_near_region(reg, x_px, y_px, rim_band_A / img.pixel_size_A) if reg.source == "auto" else False)
    result.n_outside_region = int((~keep).sum())
    result.timings_s["region"] = time.perf_counter() - t0
    return columns[keep].reset_index(drop=True), inside[keep], bp


def _near_region(region: CrystalRegion, x_px: np.ndarray, y_px: np.ndarray, band_px: float) -> np.ndarray:
    """Whether points (pixel coordinates) lie within ``band_px`` of the region's mask (on a grid
    of ~band/4, enough for a band of a few Å)."""
    if band_px <= 0 or not region.mask.any():
        return np.zeros(np.shape(x_px), bool)
    step = max(1, int(band_px // 4))
    coarse = region.mask[::step, ::step]
    dist = ndimage.distance_transform_edt(~coarse) * step
    h, w = coarse.shape
    cx = np.clip(np.rint(np.asarray(x_px) / step).astype(int), 0, w - 1)
    cy = np.clip(np.rint(np.asarray(y_px) / step).astype(int), 0, h - 1)
    on = (x_px >= 0) & (y_px >= 0) & (x_px < region.mask.shape[1]) & (y_px < region.mask.shape[0])
    return on & (dist[cy, cx] <= band_px)


def analyze(
    image: Image,
    *,
    denoiser: StageSpec = "none",
    locator: StageSpec = "gaussian",
    classifier: StageSpec = "lattice",
    network: StageSpec = "nearest",
    metrics: Sequence[StageSpec] | None = None,
    truth: Truth | None = None,
    region: Mapping[str, Any] | None = None,
    refine: Mapping[str, Any] | None = None,
    particles: ParticleOptions | Mapping[str, Any] | None = None,
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
    region : Mapping, optional
        How the crystal region is found (:func:`octascope.analysis.region.find_region`: ``mode`` auto,
        file, polygon or none, and its parameters); automatic by default.
    refine : Mapping, optional
        Model-based refinement after classification (see :func:`run_pipeline`); ``None``: off.
    particles : ParticleOptions or Mapping, optional
        How the frame is split into particles (defaults of
        :class:`~octascope.analysis.particles.ParticleOptions`).
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
    return run_pipeline(image, truth=truth, region=region, refine=refine, particles=particles, progress=progress, **built)
