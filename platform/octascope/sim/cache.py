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
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
    try:
        compute(tmp)
        (tmp / "params.json").write_text(json.dumps({"step": step, "params": params, "inputs": list(inputs)},
                                                    indent=1, default=str))
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same step first
            if not (folder / "params.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return key, folder, False
