"""torch device and thread settings shared by every plugin that runs torch.

Imports torch inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import TYPE_CHECKING, Iterator

from octascope.core.errors import PluginError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")


def check_device_name(device: str, who: str) -> str:
    """Validate a ``device`` parameter (``auto``, ``cpu``, ``cuda`` or ``cuda:N``)."""
    if device not in DEVICES and not str(device).startswith("cuda:"):
        raise PluginError(f"{who} device '{device}' is unknown; use auto, cpu, cuda or cuda:N")
    return str(device)


def select_device(device: str, who: str) -> "torch.device":
    """The torch device for ``device``: ``auto`` is CUDA when available, else the CPU; CUDA asked
    for but absent falls back to the CPU with a warning."""
    # lazy: torch (~1.2 s to import), only when a torch step runs
    import torch

    check_device_name(device, who)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(f"{who}: device '{device}' asked for but CUDA is not available; running on the CPU instead",
                      RuntimeWarning, stacklevel=3)
        return torch.device("cpu")
    return torch.device(device)


def free_cpu_threads() -> int:
    """Torch CPU threads a single-image network should use now: the cores nobody else is using.

    ``max(1, round(os.cpu_count() - load))`` with ``load`` the 1-minute load average
    (``os.getloadavg``; 0 where the platform has none), at most ``os.cpu_count()``: torch threads
    that spin-wait on cores other jobs hold slow a network several times over
    (``experiments/benchmarks/results/denoise-cpu-defaults.md``). A plugin's ``cpu_threads``
    parameter overrides it.
    """
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return int(min(cores, max(1, round(cores - load))))


def resolve_cpu_threads(n: int | None) -> int | None:
    """A ``cpu_threads`` parameter resolved: ``None`` → :func:`free_cpu_threads`; ``0`` → ``None``
    (leave torch's own setting, usually all cores); ``n >= 1`` → ``n``."""
    if n is None:
        return free_cpu_threads()
    return max(1, int(n)) if n else None


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch CPU threads inside the block (``None`` or 0: leave the setting alone).

    Batched small-matrix work runs best on one thread on a small, shared machine: threads
    spin-waiting on each other cost more than the parallel work saves.
    """
    if not n:
        yield
        return
    # lazy: torch (~1.2 s to import), only when a torch step runs
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
