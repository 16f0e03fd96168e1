"""On-disk cache of simulation steps, keyed by a hash of each step's parameters and its inputs' keys.

Layout: ``<cache dir>/<step>/<key>/`` holding the step's files and ``params.json`` (what made it).
The cache directory is the ``cache_dir`` argument, else ``$OCTASCOPE_CACHE``, else
``~/.cache/octascope``. A step is written to a temporary folder and renamed into place, so an
interrupted run never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

#: Bump when a step's output format or physics changes, so old entries are not reused.
CACHE_VERSION = 1


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory in use."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("OCTASCOPE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "octascope"


def step_key(step: str, params: Mapping[str, Any], inputs: Sequence[str] = ()) -> str:
    """Hex key (16 chars) of a step from its parameters and the keys of its inputs."""
    blob = json.dumps({"step": step, "v": CACHE_VERSION, "params": params, "inputs": list(inputs)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached(step: str, params: Mapping[str, Any], inputs: Sequence[str], compute: Callable[[Path], None], *,
           cache_dir: str | os.PathLike | None = None) -> tuple[str, Path, bool]:
    """Return ``(key, folder, hit)``; on a miss, ``compute(tmp_folder)`` writes the step's files first.

    Parameters
    ----------
    step : str
        Step name (``md``, ``image``, ...).
    params : Mapping
        JSON-serialisable parameters of the step.
    inputs : sequence of str
        Keys of the steps this one consumes.
    compute : callable
        Writes the step's files into the folder it is given.
    cache_dir : path, optional
        Cache directory (see :func:`cache_root`).
    """
    key = step_key(step, params, inputs)
    folder = cache_root(cache_dir) / step / key
    if (folder / "params.json").exists():
        return key, folder, True

    def write(tmp: Path) -> None:
        compute(tmp)
        (tmp / "params.json").write_text(json.dumps({"step": step, "params": params, "inputs": list(inputs)},
                                                    indent=1, default=str))

    write_folder(folder, write, "params.json")
    return key, folder, False


def write_folder(folder: Path, write: Callable[[Path], None], marker: str) -> None:
    """Write a folder whole or not at all: ``write(tmp)`` fills a temporary folder beside ``folder``,
    ``marker`` (a file it writes last) included, which is then renamed into place.

    Where another process wrote the same folder first (its ``marker`` is there), that one is kept;
    the temporary folder is removed whatever happens. Used by the simulation cache and by the
    time series' frame cache (:mod:`octascope.analysis.series`).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process wrote the same folder first
            if not (folder / marker).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
