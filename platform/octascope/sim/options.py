"""Base of the simulation steps' parameters: one frozen Options dataclass per step, declared once.

Each step (structure, md, imaging, support, noise) declares its parameters as a subclass of
:class:`StepOptions` next to its function, with :func:`octascope.core.params.param` fields (default,
unit, description) and range checks in ``check()``. The same class serves the step function
(``build_nanocube(n_cells=3)`` builds ``StructureOptions(n_cells=3)``), the config check of the
simulated source (:func:`octascope.sim.simulation.check_source_params`), the YAML test
(``conf/source/simulated.yaml`` lists every field with its default) and the cache keys
(:meth:`StepOptions.key_params`).

A bad value raises :class:`SimulationParameterError` with a one-line message that starts with the
config key (``structure.mixing must be one of [...]``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Mapping, TypeVar

from octascope.core.errors import ConfigError, InputError, PluginParameterError
from octascope.core.params import Options

__all__ = ["SimulationParameterError", "StepOptions", "resolve_options", "finite", "LAMMPS_MAX_SEED"]

#: largest seed a LAMMPS random-number generator accepts (a positive 32-bit int)
LAMMPS_MAX_SEED = 2**31 - 1

_O = TypeVar("_O", bound="StepOptions")


class SimulationParameterError(ConfigError, InputError):
    """A simulation parameter has an unknown name, a wrong type or a value out of range.

    It is a :class:`ConfigError` (a bad configuration value) and an :class:`InputError` (a bad
    input of the step function), so that code catching either keeps working.
    """


def finite(value: float | None) -> bool:
    """True for a finite number (``None`` is not one)."""
    return value is not None and math.isfinite(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepOptions(Options):
    """Parameters of one simulation step.

    Class attributes
    ----------------
    group : str
        The step's config group (``structure``, ``md``, ...): the prefix of error messages.
    not_keyed : frozenset of str
        Fields that change nothing physical (threads, devices, log folders): left out of the
        step's cache key.
    keyed_unless : dict
        Fields left out of the cache key while they hold this value (parameters added after cache
        entries had been made without them, which those entries keep matching).
    """

    group: ClassVar[str] = ""
    not_keyed: ClassVar[frozenset[str]] = frozenset()
    keyed_unless: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except PluginParameterError as exc:
            raise SimulationParameterError(f"{self.group}.{exc}") from None

    @classmethod
    def from_config(cls: type[_O], given: Mapping[str, Any] | StepOptions | None) -> _O:
        """The options of a config mapping (``None``: the defaults); unknown keys are refused.

        Raises
        ------
        SimulationParameterError
            A key that is no field (message lists the allowed ones), a wrong type or a value out
            of range.
        """
        if isinstance(given, cls):
            return given
        if isinstance(given, StepOptions):
            raise SimulationParameterError(f"{cls.group} options must be {cls.__name__}, got {type(given).__name__}")
        values = dict(given or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise SimulationParameterError(f"unknown {cls.group} parameter(s) {unknown}; allowed: {sorted(names)}")
        return cls(**values)

    def key_params(self, given: Mapping[str, Any] | StepOptions | None = None) -> dict[str, Any]:
        """The parameters that enter the step's cache key.

        Every keyed field, with the value as it was spelled in ``given`` (the config) where it is
        there and the default otherwise, so an integer ``17`` stays ``17`` and a key computed from a
        config before stays the same; tuples become lists as in JSON.

        Parameters
        ----------
        given : Mapping or StepOptions, optional
            The config mapping these options were built from (``None`` or the options themselves:
            their own values).
        """
        spelled = {} if given is None or isinstance(given, StepOptions) else dict(given)
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in self.not_keyed:
                continue
            value = spelled[f.name] if f.name in spelled else getattr(self, f.name)
            value = list(value) if isinstance(value, tuple) else value
            if f.name in self.keyed_unless and value == self.keyed_unless[f.name]:
                continue
            out[f.name] = value
        return out


def resolve_options(cls: type[_O], options: _O | None, params: Mapping[str, Any]) -> _O:
    """A step function's options: ``options`` or ``cls(**params)``, not both.

    Raises
    ------
    SimulationParameterError
        Both given, options of another class, or bad keyword parameters.
    """
    if options is not None and params:
        raise SimulationParameterError(f"{cls.group}: give an options object or keyword parameters, not both")
    return cls.from_config(options if options is not None else params)
