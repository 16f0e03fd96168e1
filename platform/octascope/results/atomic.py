"""Atomic file writes: a temporary ``.<name>.<pid>.<random>.part`` file in the same folder, moved into
place with :func:`os.replace`, so a crash never leaves a half-written file (the leftovers of a killed
writer are removed by :func:`octascope.results.outputs.clean_stale_parts`). Used by every writer of
a run folder (:mod:`octascope.results.outputs`, :mod:`octascope.results.report`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

PART_SUFFIX = ".part"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` (its return value is ignored) and move the finished file to ``path``
    (mode ``0666 & ~umask``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=PART_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 whatever the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
