"""A stop request (SIGTERM, SIGINT) that every layer can see.

The command's signal handler raises :class:`~octascope.core.errors.Interrupted` in the main thread. If
the signal lands while Python runs a finalizer or a weak-reference callback (a garbage collection in
the middle of a library call), Python prints "Exception ignored" and the run would go on as if nothing
had happened. So the handler also records the request here, and the pipeline asks at every stage
boundary (:func:`raise_if_stopped`): a swallowed stop is delivered at the next stage.
"""

from __future__ import annotations

from octascope.core.errors import Interrupted

_pending: int | None = None


def request_stop(signum: int) -> None:
    """Record that the process was asked to stop by signal ``signum``."""
    global _pending
    _pending = signum


def clear() -> None:
    """Forget a recorded request (at the start and end of a command)."""
    global _pending
    _pending = None


def raise_if_stopped() -> None:
    """Raise :class:`~octascope.core.errors.Interrupted` when a stop was requested."""
    if _pending is not None:
        raise Interrupted(_pending)
