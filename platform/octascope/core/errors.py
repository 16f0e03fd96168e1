"""User-facing errors.

Every error a user can cause (bad file, bad config, an image with no lattice) is an
:class:`OctascopeError`. The CLI prints its one-line message and exits non-zero without a
traceback; set ``OCTASCOPE_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import signal


class OctascopeError(Exception):
    """Base class of errors whose message tells the user the problem and the fix."""


class InputError(OctascopeError, ValueError):
    """The input (image, columns, truth) cannot be analysed as given."""


class PluginError(OctascopeError, LookupError):
    """A plugin name or plugin parameter is unknown or invalid."""


class PluginParameterError(PluginError, ValueError):
    """A plugin parameter has an unknown name, a wrong type or a value out of range."""


class ConfigError(OctascopeError, ValueError):
    """A configuration value is missing or inconsistent."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) received: raised in the main thread so the run unwinds like an exception
    (MLflow run marked FAILED, temporary files removed)."""

    def __init__(self, signum: int):
        self.signum = signum
        self.signame = signal.Signals(signum).name
        super().__init__(self.signame)
