"""Plugin parameters, declared once.

A plugin's parameters are one frozen, keyword-only dataclass (its *options*). Each field is
declared with :func:`param`, which carries the default, the unit and a one-line description; the
plugin class names it in ``Options`` and takes it whole::

    @dataclass(frozen=True, kw_only=True)
    class ABSFOptions(Options):
        step_px: int = param(5, unit="Fourier px", doc="averaging window of the background estimate")

        def check(self) -> None:
            require(self.step_px >= 2, f"step_px must be >= 2, got {self.step_px}")

    class ABSFDenoiser(Plugin):
        name = "absf"
        Options = ABSFOptions

        def denoise(self, image):
            ...self.options.step_px...

``ABSFDenoiser(step_px=7)`` and ``ABSFDenoiser(ABSFOptions(step_px=7))`` are the same. Values are
coerced to the declared type (YAML gives ``1`` for ``1.0`` and lists for tuples); anything wrong
raises :class:`octascope.core.errors.PluginParameterError`, the one error type of a bad plugin
parameter. The registry, ``octascope plugins STAGE`` and the config test read the same fields.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, ClassVar

from octascope.core.errors import PluginParameterError

__all__ = ["Options", "Plugin", "param", "require", "ParamInfo", "describe"]


def param(default: Any = MISSING, *, unit: str = "", doc: str = "", factory: Any = MISSING) -> Any:
    """A plugin parameter: default, unit (``""`` for dimensionless or non-numeric) and description."""
    meta = {"unit": unit, "doc": doc}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def require(condition: bool, message: str) -> None:
    """Raise :class:`PluginParameterError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise PluginParameterError(message)


@dataclass(frozen=True, kw_only=True)
class Options:
    """Base of every plugin's options: type coercion, then the plugin's own :meth:`check`."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            coerced = _coerce(value, hints.get(f.name, Any), f.name)
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
        self.check()

    def check(self) -> None:
        """Validate the values together; raise :class:`PluginParameterError` (via :func:`require`)."""

    def to_dict(self) -> dict[str, Any]:
        """The values as plain Python (lists for tuples), e.g. for a run's settings record."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


#: the :class:`Options` base class, for annotations inside :class:`Plugin`, whose ``Options`` class
#: attribute (the plugin's own options class) shadows the name there
_OptionsBase = Options


class Plugin:
    """Base of plugins with options: ``Plugin(options)`` or ``Plugin(**params)``."""

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: _OptionsBase | None = None, /, **params: Any) -> None:
        if options is not None and params:
            raise PluginParameterError(f"{self.name}: give an options object or keyword parameters, not both")
        if options is None:
            options = build_options(type(self), params)
        elif not isinstance(options, self.Options):
            raise PluginParameterError(f"{self.name}: options must be {self.Options.__name__}, got {type(options).__name__}")
        self.options = options

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"


def build_options(cls: type[Plugin], params: dict[str, Any]) -> Options:
    """``cls.Options(**params)``, with unknown names and wrong types as :class:`PluginParameterError`."""
    opts_cls = cls.Options
    names = [f.name for f in dataclasses.fields(opts_cls)]
    unknown = sorted(set(params) - set(names))
    label = getattr(cls, "name", cls.__name__)
    if unknown:
        raise PluginParameterError(f"{label} has no parameter(s) {unknown}; its parameters are: {', '.join(names) or 'none'}")
    try:
        return opts_cls(**params)
    except PluginParameterError as exc:
        msg = str(exc)
        raise PluginParameterError(msg if msg.startswith(f"{label}") else f"{label}: {msg}") from None
    except (TypeError, ValueError) as exc:
        raise PluginParameterError(f"{label}: {exc}") from None


_O = typing.TypeVar("_O", bound=Options)


def options_from(options_cls: type[_O], params: typing.Mapping[str, Any], group: str) -> _O:
    """``options_cls(**params)`` for a group of parameters (a configuration section such as
    ``region``, ``refine``, ``particles``): unknown keys and bad values as one
    :class:`PluginParameterError` line naming the group, the key and the valid keys."""
    names = [f.name for f in dataclasses.fields(options_cls)]
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise PluginParameterError(f"{group} has no key(s) {unknown}; its keys are {', '.join(names)}")
    try:
        return options_cls(**params)
    except PluginParameterError as exc:
        raise PluginParameterError(f"{group}.{exc}") from None
    except (TypeError, ValueError) as exc:
        raise PluginParameterError(f"{group}: {exc}") from None


@dataclass(frozen=True)
class ParamInfo:
    """One parameter as ``octascope plugins STAGE`` prints it."""

    name: str
    type: str
    default: Any
    unit: str
    doc: str


def describe(cls: type) -> list[ParamInfo]:
    """The parameters of a plugin class (empty if it has none)."""
    opts_cls = getattr(cls, "Options", None)
    if opts_cls is None or not dataclasses.is_dataclass(opts_cls):
        return []
    out = []
    for f in dataclasses.fields(opts_cls):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        tname = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append(ParamInfo(f.name, tname, _plain(default) if default is not MISSING else "(required)",
                             f.metadata.get("unit", ""), f.metadata.get("doc", "")))
    return out


def parameter_names(cls: type) -> list[str] | None:
    """Names a plugin class accepts, or ``None`` if it declares no options (accepts none)."""
    opts_cls = getattr(cls, "Options", None)
    if opts_cls is None or not dataclasses.is_dataclass(opts_cls):
        return None
    return [f.name for f in dataclasses.fields(opts_cls)]


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Coerce a config value to a field's declared type, or raise a one-line error."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or isinstance(hint, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except PluginParameterError as exc:
                errors.append(str(exc))
        raise PluginParameterError(errors[0] if errors else f"{name} cannot be {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise PluginParameterError(f"{name} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise PluginParameterError(f"{name} must be a sequence, got {value!r}")
        items = list(value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise PluginParameterError(f"{name} must have {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, name) for v, a in zip(items, args))
        inner = args[0] if args else Any
        seq = [_coerce(v, inner, name) for v in items]
        return tuple(seq) if origin is tuple else seq
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PluginParameterError(f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
            raise PluginParameterError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise PluginParameterError(f"{name} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise PluginParameterError(f"{name} must be a string, got {value!r}")
        return value
    return value
