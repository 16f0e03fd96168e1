"""Chained denoisers: registered denoisers applied one after the other (the paper: ABSF, then S2SRED)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from octascope.core.errors import OctascopeError, PluginError, PluginParameterError
from octascope.core.model import Image
from octascope.core.params import Options, Plugin, param
from octascope.core.registry import get_registry


@dataclass(frozen=True, kw_only=True)
class ChainOptions(Options):
    """Parameters of :class:`ChainDenoiser` (each step's own parameters are checked by that step's options)."""

    steps: Any = param(("absf", "bm3d"), doc="ordered denoisers: names, {name: ..., <parameters>} mappings or (name, params) pairs")


class ChainDenoiser(Plugin):
    """Apply denoisers in order, each on the previous one's output.

    Every step is built through the plugin registry, so only registered denoisers can be
    chained (never an import path). The method paper prefilters with ABSF before S2SRED:
    ``steps=["absf", "s2sred"]`` (``conf/denoiser/absf_s2sred.yaml``).

    Variance map: the chained image carries the per-pixel variance (``Image.variance``) of the
    **last** step only; ``None`` when the last step gives none. An earlier step's variance (e.g.
    S2SRED's Monte Carlo variance followed by a BM3D step) describes an image that a later
    step has since changed, so it is not a variance of the output and is dropped; the chain
    records which step's variance the image carries (``variance_from``) and which steps'
    were dropped (``variance_dropped``) in ``metadata['denoiser']``. A step that leaves the
    image unchanged (``none``) passes the incoming variance through, as it stays valid. The
    last step's variance is conditional on its input: it does not include the randomness of
    earlier steps (ABSF and BM3D are deterministic, so for ``absf → s2sred`` nothing is lost).

    Parameters
    ----------
    steps : sequence
        Ordered steps, at least one. Each is a registered denoiser name (``"absf"``: that
        denoiser's defaults), a mapping ``{"name": "s2sred", **parameters}`` (only the values that
        differ from the step's defaults), a ``(name, parameters)`` pair, or (from Python) a
        denoiser object. A comma-separated string (``"absf,bm3d"``) is read as a list of names.
        Bad steps raise :class:`~octascope.core.errors.PluginParameterError`.

    """

    name: ClassVar[str] = "chain"
    Options = ChainOptions
    options: ChainOptions

    def __init__(self, options: ChainOptions | None = None, /, **params: Any) -> None:
        super().__init__(options, **params)
        self.steps = _build_steps(self.options.steps)
        self.step_specs = [_describe(spec) for spec in _as_list(self.options.steps)]

    def denoise(self, image: Image) -> Image:
        out = image
        records: list[dict[str, Any]] = []
        variance_from: str | None = "input" if image.variance is not None else None
        dropped: list[str] = []
        for k, step in enumerate(self.steps, start=1):
            label = f"{k}:{step.name}"
            t0 = time.perf_counter()
            try:
                new = step.denoise(out)
            except OctascopeError as exc:
                raise type(exc)(f"denoiser chain step {label}: {exc}") from exc
            seconds = time.perf_counter() - t0
            if new.shape != out.shape:
                raise PluginError(f"denoiser chain step {label} changed the image shape {out.shape} -> {new.shape}")
            if new is out:  # the identity: the incoming variance stays valid
                records.append({"name": step.name, "step": k, "seconds": seconds})
                continue
            if new.variance is not None and new.variance is out.variance:
                new = new.replace(variance=None)  # passed on unchanged by a step that changed the data: stale
            if variance_from is not None:
                dropped.append(variance_from)
            variance_from = label if new.variance is not None else None
            records.append({**dict(new.metadata.get("denoiser", {})), "step": k, "seconds": seconds})
            out = new
        settings = {"name": self.name, "steps": records, "variance_from": variance_from, "variance_dropped": dropped}
        return out.replace(metadata={**out.metadata, "denoiser": settings})


def _as_list(steps: Any) -> list[Any]:
    if isinstance(steps, str):
        return [s.strip() for s in steps.split(",") if s.strip()]
    if isinstance(steps, Mapping) or not isinstance(steps, Sequence):
        if getattr(steps, "name", None) and callable(getattr(steps, "denoise", None)):
            return [steps]
        raise PluginParameterError(f"denoiser chain steps must be a list of denoiser names or {{name: ..., ...}} mappings, got {steps!r}")
    return list(steps)


def _build_steps(steps: Any) -> list[Any]:
    specs = _as_list(steps)
    if not specs:
        raise PluginParameterError("denoiser chain needs at least one step, e.g. steps=[absf,s2sred]")
    registry = None
    built = []
    for k, spec in enumerate(specs, start=1):
        if getattr(spec, "name", None) and callable(getattr(spec, "denoise", None)) and not isinstance(spec, (str, Mapping)):
            built.append(spec)
            continue
        if isinstance(spec, str):
            name, params = spec, {}
        elif isinstance(spec, Mapping):
            params = dict(spec)
            name = params.pop("name", None)
        elif isinstance(spec, Sequence) and len(spec) == 2 and isinstance(spec[0], str):
            name, params = spec[0], dict(spec[1] or {})
        else:
            raise PluginParameterError(f"denoiser chain step {k} is {spec!r}; give a registered denoiser name or {{name: ..., ...}}")
        registry = registry or get_registry()
        if not isinstance(name, str) or not name:
            raise PluginParameterError(f"denoiser chain step {k} {spec!r} has no 'name'; known denoisers: {', '.join(registry.names('denoiser'))}")
        try:
            built.append(registry.create("denoiser", name, **params))
        except PluginError as exc:
            raise PluginParameterError(f"denoiser chain step {k}: {exc}") from None
    return built


def _describe(spec: Any) -> Any:
    if isinstance(spec, (str, Mapping)):
        return spec if isinstance(spec, str) else dict(spec)
    if isinstance(spec, Sequence) and len(spec) == 2:
        return {"name": spec[0], **dict(spec[1] or {})}
    return getattr(spec, "name", repr(spec))
