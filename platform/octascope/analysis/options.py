"""Options of the pipeline's own steps (``region``, ``refine``) built from a configuration group."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

from octascope.core.errors import PluginParameterError
from octascope.core.params import Options

O = TypeVar("O", bound=Options)


def options_from_mapping(cls: type[O], params: Mapping[str, Any], group: str) -> O:
    """``cls(**params)``, with unknown keys and bad values as one-line :class:`PluginParameterError`.

    Parameters
    ----------
    cls : type
        The options class (a frozen :class:`~octascope.core.params.Options` dataclass).
    params : Mapping
        The configuration group's keys and values.
    group : str
        The group's name in the run configuration (``region``, ``refine``), for the messages.

    Raises
    ------
    PluginParameterError
        Naming the unknown keys and the valid ones, or the bad value.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise PluginParameterError(f"{group} has no key(s) {unknown}; its keys are {', '.join(names)}")
    try:
        return cls(**params)
    except PluginParameterError as exc:
        raise PluginParameterError(f"{group}.{exc}") from None
