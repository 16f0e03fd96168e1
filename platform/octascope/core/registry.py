"""Plugin discovery (pluggy) and the name -> class registry.

Built-in plugins are listed in :data:`DEFAULT_PLUGINS` and registered directly; other installed
packages add theirs through the ``octascope`` entry-point group. Set
``OCTASCOPE_DISABLE_PLUGIN_AUTOLOAD=1`` to skip entry points. Only classes registered here can
be instantiated from a configuration.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from typing import Any, Iterable
from importlib.metadata import PackageNotFoundError, version

import pluggy

from octascope.core import hookspecs
from octascope.core.errors import PluginError, PluginParameterError
from octascope.core.params import ParamInfo, describe, parameter_names
from octascope.core.stages import METHODS, PROTOCOLS, STAGES

DEFAULT_PLUGINS: tuple[str, ...] = (
    "octascope_plugins.denoise",
    "octascope_plugins.locate",
    "octascope_plugins.classify",
    "octascope_plugins.network",
    "octascope_plugins.metric",
)


def get_plugin_manager(*, load_entrypoints: bool = True, extra: Iterable[Any] = ()) -> pluggy.PluginManager:
    """Return a fresh plugin manager with the built-ins (and entry-point plugins) registered.

    Parameters
    ----------
    load_entrypoints : bool
        Load plugins of other installed packages (entry-point group ``octascope``).
    extra : iterable
        More plugin objects (modules or instances with hookimpls) to register, e.g. in tests.
    """
    pm = pluggy.PluginManager("octascope")
    pm.add_hookspecs(hookspecs)
    for modname in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(modname), name=modname)
    if load_entrypoints and not os.environ.get("OCTASCOPE_DISABLE_PLUGIN_AUTOLOAD"):
        pm.load_setuptools_entrypoints("octascope")
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


@dataclass(frozen=True)
class PluginInfo:
    """One registered stage implementation."""

    stage: str
    name: str
    cls: type
    plugin: str  # the pluggy plugin (module) name that registered it
    distribution: str
    version: str

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.cls) or ""
        return doc.splitlines()[0] if doc else ""


class Registry:
    """Stage name -> implementation name -> class, built from a plugin manager."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self._plugins: dict[str, dict[str, PluginInfo]] = {stage: {} for stage in STAGES}
        dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
        for stage in STAGES:
            hook = getattr(pm.hook, hookspecs.HOOKS[stage])
            for impl in hook.get_hookimpls():
                classes = impl.function() or []
                dist = dists.get(id(impl.plugin))
                for cls in classes:
                    self._add(stage, cls, impl.plugin_name, dist)

    def _add(self, stage: str, cls: type, plugin_name: str, dist: Any) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"{stage} class {cls.__qualname__} from {plugin_name} has no 'name' attribute; give it a unique name")
        method = METHODS[stage]
        if not callable(getattr(cls, method, None)):
            raise PluginError(f"{stage} '{name}' ({cls.__qualname__}) lacks a {method}() method required by {PROTOCOLS[stage].__name__}")
        if name in self._plugins[stage]:
            other = self._plugins[stage][name]
            raise PluginError(
                f"{stage} name '{name}' is registered twice ({other.plugin} and {plugin_name}); rename one of them"
            )
        project = dist.project_name if dist is not None else "octascope"
        version = dist.version if dist is not None else package_version("octascope")
        self._plugins[stage][name] = PluginInfo(stage, name, cls, plugin_name, project, version)

    def names(self, stage: str) -> list[str]:
        """Registered implementation names of a stage, sorted."""
        self._check_stage(stage)
        return sorted(self._plugins[stage])

    def info(self, stage: str | None = None) -> list[PluginInfo]:
        """Descriptions of the registered implementations (of one stage, or all)."""
        stages = [stage] if stage else list(STAGES)
        return [self._plugins[s][n] for s in stages for n in self.names(s)]

    def get(self, stage: str, name: str) -> type:
        """The class registered under ``name`` for ``stage``.

        Raises
        ------
        PluginError
            If no such plugin is registered (the message lists the known ones).
        """
        self._check_stage(stage)
        try:
            return self._plugins[stage][name].cls
        except KeyError:
            known = ", ".join(self.names(stage)) or "none"
            raise PluginError(f"unknown {stage} '{name}'; known {stage}s: {known}") from None

    def create(self, stage: str, name: str, **params: Any) -> Any:
        """Instantiate a registered plugin with keyword parameters, checking their names and values.

        Raises
        ------
        PluginParameterError
            An unknown parameter name, a wrong type or a value out of range (one line).
        """
        cls = self.get(stage, name)
        names = parameter_names(cls)
        if names is None:  # a plugin without an Options dataclass: its signature is its parameters
            sig = inspect.signature(cls)
            if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
                names = list(sig.parameters)
        if names is not None:
            unknown = sorted(set(params) - set(names))
            if unknown:
                raise PluginParameterError(f"{stage} '{name}' has no parameter(s) {unknown}; its parameters are: "
                                           f"{', '.join(names) or 'none'}")
        try:
            return cls(**params)
        except PluginParameterError as exc:
            raise PluginParameterError(f"{stage} {exc}" if str(exc).startswith(name) else f"{stage} '{name}': {exc}") from None
        except (TypeError, ValueError) as exc:
            raise PluginParameterError(f"{stage} '{name}' rejected its parameters {params}: {exc}") from exc

    def parameters(self, stage: str, name: str) -> list[ParamInfo]:
        """The declared parameters of a plugin (name, type, default, unit, description)."""
        return describe(self.get(stage, name))

    def _check_stage(self, stage: str) -> None:
        if stage not in self._plugins:
            raise PluginError(f"unknown stage '{stage}'; stages are: {', '.join(STAGES)}")


def package_version(distribution: str) -> str:
    """The installed version of a distribution (``unknown`` when it is not installed)."""

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def get_registry(*, load_entrypoints: bool = True, extra: Iterable[Any] = ()) -> Registry:
    """A registry of all built-in and installed plugins (built fresh on every call)."""
    return Registry(get_plugin_manager(load_entrypoints=load_entrypoints, extra=extra))
