"""Writing the output files of one analysis (docs/outputs.md), atomically.

Every file is written to a temporary name in the same directory and moved into place with
:func:`os.replace`, so a crash never leaves a half-written table behind. The temporary name
(``.<name>.<pid>.<random>.part``) carries the writer's process id, so :func:`clean_stale_parts`
can remove the leftovers of a killed process without touching a live writer's. Files get the
mode the umask gives (0644 under the usual 022), like any file a program creates.

An output folder is complete when it holds ``summary.json``: it is written last, after every
other file of the run.
"""

from __future__ import annotations

import json
import math
import os
import re
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping
import shutil
import signal
import socket
import sys
import time

import numpy as np
import pandas as pd

from octascope.core.errors import ConfigError
from octascope.analysis.particle_table import PARTICLES_CSV_FIRST
from octascope.core.model import Result
from octascope.results.atomic import PART_SUFFIX, atomic_write, current_umask  # noqa: F401 (public here too)
from octascope.results.processes import pid_alive
from octascope.results.summary import summarize
from octascope.results.figures import network_overlay, region_overlay
from octascope.results.report import write_run_report
from octascope.results.style import figure_style

#: public column order of columns.csv (more columns may follow)
COLUMNS_CSV_FIRST = ["x_A", "y_A", "x_px", "y_px", "species", "amplitude", "sigma_major_A", "sigma_minor_A", "ellipticity"]
OCTAHEDRA_CSV_FIRST = ["x_A", "y_A", "theta1_deg", "theta2_deg", "theta3_deg", "L1_A", "L2_A", "shell"]


_PART_RE = re.compile(r"^\..+\.(\d+)\.[^.]+\.part$")


def write_table(df: pd.DataFrame, path: Path, first: list[str] | None = None) -> Path:
    """Write a CSV atomically, with the public columns first."""
    if first:
        order = [c for c in first if c in df] + [c for c in df if c not in first]
        df = df[order]
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


def write_json(obj: Mapping[str, Any], path: Path) -> Path:
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def _same_image(a: Any, b: Any) -> bool:
    """True when the denoised image is the input itself (``denoiser=none``): nothing new to write."""
    if a is b:
        return True
    da, db = np.asarray(a.data), np.asarray(b.data)
    return da.shape == db.shape and (np.shares_memory(da, db) or bool(np.array_equal(da, db)))


#: formats every matplotlib writes (its own Agg, SVG, PDF and PostScript backends; JPEG and TIFF through
#: Pillow, which matplotlib requires); others are checked against the installed matplotlib
ALWAYS_WRITABLE = frozenset({"png", "svg", "svgz", "pdf", "eps", "ps", "jpg", "jpeg", "tif", "tiff"})


def check_figure_formats(formats: Any) -> tuple[str, ...]:
    """The figure formats as a tuple, or a :class:`ConfigError` naming the ones matplotlib cannot write."""
    if formats is None:
        return ()
    if isinstance(formats, str):
        formats = [formats]
    formats = tuple(str(f).lower().lstrip(".") for f in formats)
    if set(formats) <= ALWAYS_WRITABLE:  # no matplotlib import before the analysis for these
        return formats
    # lazy: matplotlib (0.1-0.25 s to import), only for a format outside ALWAYS_WRITABLE
    from matplotlib.backend_bases import FigureCanvasBase

    supported = FigureCanvasBase.get_supported_filetypes()
    bad = [f for f in formats if f not in supported]
    if bad:
        raise ConfigError(f"unknown figure format(s) {bad}; use some of {', '.join(sorted(supported))}, "
                          "e.g. figure_formats=[png,svg] (or [] for none)")
    return formats


def clean_stale_parts(root: str | Path, *, legacy_age_s: float = 3600.0) -> list[Path]:
    """Remove ``*.part`` files under ``root`` left by writers that no longer run.

    A part file names its writer's pid; it is removed when that process is gone (on this host).
    Part files without a pid (older versions) are removed when older than ``legacy_age_s``.
    """

    removed: list[Path] = []
    root = Path(root)
    if not root.exists():
        return removed
    for part in root.rglob(f"*{PART_SUFFIX}"):
        m = _PART_RE.match(part.name)
        if m:
            stale = not pid_alive(int(m.group(1)))
        else:
            try:
                stale = time.time() - part.stat().st_mtime > legacy_age_s
            except OSError:
                continue
        if stale:
            part.unlink(missing_ok=True)
            removed.append(part)
    return removed


def save_figure(fig: Any, run_dir: Path, name: str, formats: tuple[str, ...], *, dpi: int) -> dict[str, Path]:
    """Write ``fig`` as ``<name>.<fmt>`` for each format; the layout is solved once.

    No ``bbox_inches="tight"``: constrained layout already fits the figure, and a tight box costs
    one more full draw per file (measured: a third of the figure time). The figures use constrained
    layout, which matplotlib solves again at every draw — a third
    or more of the time of a save. After the first format the solved positions are kept (layout
    engine set to none), so the other formats are the same figure drawn once more, not laid out
    again.
    """

    written: dict[str, Path] = {}
    with figure_style():  # what matplotlib reads at draw time (ticks, SVG text) in the figures' style
        for k, fmt in enumerate(formats):
            written[f"{name}.{fmt}"] = atomic_write(
                run_dir / f"{name}.{fmt}", partial(fig.savefig, format=fmt, dpi=dpi))
            if k == 0 and len(formats) > 1 and fig.get_layout_engine() is not None:
                fig.set_layout_engine("none")
    return written


def figure_workers() -> int:
    """Processes that draw a run's figures: ``$OCTASCOPE_FIGURE_WORKERS``, else the idle CPUs this
    process may use (at most 4; at least 1). On a busy machine one process draws them all: a
    second one would only compete with the first (and with everyone else) for the same cores."""
    env = os.environ.get("OCTASCOPE_FIGURE_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ConfigError(f"OCTASCOPE_FIGURE_WORKERS is {env!r}; give a number of processes >= 1") from None
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        idle = n - os.getloadavg()[0] + 1.0  # the load includes this process
    except (AttributeError, OSError):
        idle = float(n)
    return max(1, min(n, 4, int(idle + 0.5)))


def save_figures(figures: Mapping[str, tuple[Any, int]], run_dir: Path, formats: tuple[str, ...],
                 *, workers: int | None = None) -> dict[str, Path]:
    """Write every figure (name -> (figure, dpi)) in every format; drawing is shared among processes.

    Drawing the figures is most of the time of writing a run's outputs, and each figure is drawn
    independently, so with ``workers`` > 1 (default :func:`figure_workers`) forked processes draw
    a share each (the figures are already built: a fork shares them) while this process draws
    its own share. Every file is still written atomically; a worker that fails makes this call
    raise, like a failed save in this process. Without ``os.fork`` (Windows) the figures are
    drawn here, one after the other.
    """
    names = list(figures)
    if not names or not formats:
        return {}
    workers = min(figure_workers() if workers is None else max(1, workers), len(names))
    written = {f"{name}.{fmt}": run_dir / f"{name}.{fmt}" for name in names for fmt in formats}
    if workers <= 1 or not hasattr(os, "fork"):
        for name in names:
            fig, dpi = figures[name]
            save_figure(fig, run_dir, name, formats, dpi=dpi)
        return written
    shares = [names[k::workers] for k in range(workers)]
    children: list[tuple[int, int]] = []
    try:
        for share in shares[1:]:
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker: draw its share, report, leave without running the parent's exit handlers
                code = 0
                try:
                    os.close(read_fd)

                    for sig in (signal.SIGTERM, signal.SIGINT):
                        signal.signal(sig, signal.SIG_DFL)
                    for name in share:
                        fig, dpi = figures[name]
                        save_figure(fig, run_dir, name, formats, dpi=dpi)
                except BaseException as exc:  # noqa: BLE001 - reported to the parent
                    code = 1
                    try:
                        os.write(write_fd, f"{type(exc).__name__}: {exc}".encode()[:2000])
                    except OSError:
                        pass
                finally:
                    os._exit(code)
            os.close(write_fd)
            children.append((pid, read_fd))
        for name in shares[0]:
            fig, dpi = figures[name]
            save_figure(fig, run_dir, name, formats, dpi=dpi)
    finally:
        errors = []
        for pid, read_fd in children:
            with os.fdopen(read_fd, "rb") as fh:
                message = fh.read().decode(errors="replace")
            _, status = os.waitpid(pid, 0)
            if status != 0:
                errors.append(message or f"figure process {pid} ended with status {status}")
    if errors:
        raise RuntimeError(f"drawing figures failed: {errors[0]}")
    return written


def write_outputs(result: Result, run_dir: str | Path, *, config: Mapping[str, Any] | None = None,
                  figure_formats: tuple[str, ...] = ("png", "svg"),
                  before_summary: Callable[[], None] | None = None) -> dict[str, Path]:
    """Write columns.csv, octahedra.csv, lattice.csv, other metric tables, summary.json,
    figures (PNG and SVG), the resolved config and ``report.html`` (the page to read the run,
    :func:`octascope.results.report.write_run_report`) into ``run_dir``; ``summary.json`` last, so
its presence marks a complete folder. ``denoised.npy`` is written only when the denoiser changed
the image (not for ``denoiser=none``). ``before_summary`` is called just before ``summary.json``
is written (a run opens its MLflow run there: a store that fails leaves an incomplete folder,
which the failed run removes).

    Returns
    -------
    dict
        Name -> path of every file written.
    """
    figure_formats = check_figure_formats(figure_formats)  # before anything is written
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if result.columns is not None:
        written["columns"] = write_table(result.columns, run_dir / "columns.csv", COLUMNS_CSV_FIRST)
    for name, table in result.tables.items():
        first = {"octahedra": OCTAHEDRA_CSV_FIRST, "particles": PARTICLES_CSV_FIRST}.get(name)
        written[name] = write_table(table, run_dir / f"{name}.csv", first)
    denoised = result.denoised
    if denoised is not None and not _same_image(denoised, result.image):
        written["denoised"] = atomic_write(run_dir / "denoised.npy", lambda tmp: np.save(tmp.open("wb"), denoised.data))
    # the figures are pyplot-free Figure objects (nothing to close), built here (a metric's are built
    # on first use, core.model.LazyFigures) and drawn in parallel (save_figures)
    figures = {name: (fig, 150) for name, fig in result.figures.items()} if figure_formats else {}
    if result.region is not None:
        written.update(write_outputs_region(result, run_dir, ()))  # the mask; its figure joins the others
        if figure_formats:
            figures["crystal_region"] = (region_overlay(result.denoised or result.image, result.region), 120)
    written.update(save_figures(figures, run_dir, figure_formats))
    if config is not None:
        # lazy: PyYAML (~10 ms to import), not loaded at start-up
        import yaml

        written["config"] = atomic_write(run_dir / "config.yaml",
                                         lambda tmp: tmp.write_text(yaml.safe_dump(_jsonable(dict(config)), sort_keys=False)))
    summary = _jsonable(summarize(result))
    report = _write_report(run_dir, summary=summary, config=None if config is None else _jsonable(dict(config)))
    if report is not None:
        written["report"] = report
    if before_summary is not None:
        before_summary()
    written["summary"] = write_json(summary, run_dir / "summary.json")
    return written


def _write_report(run_dir: Path, **kwargs: Any) -> Path | None:
    """``report.html`` (:func:`octascope.results.report.write_run_report`); a failure to write the
    page is one warning line, not a failed run (the numbers are all in the other files)."""

    try:
        return write_run_report(run_dir, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the page is a view of the outputs, not one of them
        if os.environ.get("OCTASCOPE_DEBUG"):
            raise
        print(f"octascope: warning: report.html not written ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None


#: hidden file naming the run that owns an output folder (and the folders that run created)
OWNER_FILE = ".octascope-run"
#: the file Hydra writes into a sweep's folder
SWEEP_FILE = "multirun.yaml"


def _missing_chain(path: Path) -> tuple[list[Path], Path]:
    """The folders of ``path`` that do not exist, outermost first, and the deepest one that does."""
    missing: list[Path] = []
    here = Path(os.path.abspath(path))
    while not os.path.lexists(here) and here.parent != here:
        missing.append(here)
        here = here.parent
    return missing[::-1], here


def check_output_location(path: str | Path, key: str = "hydra.run.dir") -> None:
    """Refuse an output folder that cannot be created, without creating anything.

    Raises
    ------
    ConfigError
        ``path`` is a file (or another non-folder), lies under a file, or its deepest existing
        folder is not writable (the message names ``key``, the setting to change).
    """
    path = Path(path)
    missing, existing = _missing_chain(path)
    if not missing and not existing.is_dir():
        raise ConfigError(f"{key}={path} is a file, not a folder; give a new folder for the outputs")
    if not existing.is_dir():
        raise ConfigError(f"{key}={path} cannot be created: {existing} is a file; give a folder path that is not under a file")
    if missing and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path} cannot be created: {existing} is not writable; give a folder you can write to")
    if not missing and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path} is not writable; give a folder you can write to")


def make_output_dir(path: str | Path, key: str = "hydra.run.dir") -> list[Path]:
    """Create an output folder and its missing parents; return the folders created, outermost first.

    The list is what a failed run may remove again (:func:`release_failed_output_dir`,
    :func:`remove_created_dirs`): folders that existed before are never removed.

    Raises
    ------
    ConfigError
        The folder cannot be created (a file in the way, no permission, a read-only file system).
    """
    check_output_location(path, key)
    missing, _ = _missing_chain(Path(path))
    created: list[Path] = []
    try:
        for folder in missing:
            try:
                folder.mkdir()
            except FileExistsError:  # another process made it meanwhile: not ours
                if not folder.is_dir():
                    raise
                continue
            created.append(folder)
    except OSError as exc:
        remove_created_dirs(created)
        raise ConfigError(f"{key}={path} cannot be created ({exc.strerror or exc.__class__.__name__}: "
                          f"{exc.filename or folder}); give a folder you can write to") from None
    return created


def remove_created_dirs(created: Any) -> None:
    """Remove the folders of ``created`` that are empty, innermost first; stop at the first that is not."""
    for folder in sorted((Path(f) for f in created), key=lambda f: len(f.parts), reverse=True):
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            break


def claim_output_dir(path: str | Path, owner: Mapping[str, Any] | None = None, *, created: Any = ()) -> Path:
    """Take ownership of an output folder for one run, or refuse with a :class:`ConfigError`.

    The folder is created if needed; it must not belong to another run (an ``.octascope-run``
    file, created exclusively, names the owner) and must be empty, so two runs never write into
    the same folder even when they are given the same ``hydra.run.dir``. The owner file also
    lists the folders this run created — ``created`` (made for it before, e.g. by the command
    line) and those made here — so a failed run removes those and nothing else.
    """

    path = Path(path)
    try:
        made = make_output_dir(path)
    except ConfigError:
        raise
    mine = [str(Path(os.path.abspath(f))) for f in [*created, *made]]
    marker = path / OWNER_FILE
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **dict(owner or {}), "created": sorted(set(mine))}
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        try:
            other = json.loads(marker.read_text())
            who = f"pid {other.get('pid')} on {other.get('host')}, started {other.get('started')}"
        except (OSError, ValueError):
            who = "another run"
        remove_created_dirs(made)
        raise ConfigError(f"output folder {path} belongs to another run ({who}); give a new hydra.run.dir "
                          "(the default is unique per run)") from None
    except OSError as exc:
        remove_created_dirs(made)
        raise ConfigError(f"cannot write into the output folder {path} ({exc.strerror}); give a folder you can "
                          "write to with hydra.run.dir") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(info) + "\n")
    others = [p.name for p in path.iterdir() if p.name != OWNER_FILE]
    if others:
        marker.unlink(missing_ok=True)
        remove_created_dirs(made)
        raise ConfigError(f"output folder {path} is not empty ({', '.join(sorted(others)[:3])}...); "
                          "give a new or empty hydra.run.dir")
    return path


def is_complete(path: str | Path) -> bool:
    """An output folder is complete when its ``summary.json`` exists (written last)."""
    return (Path(path) / "summary.json").is_file()


def _owner(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((path / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def release_failed_output_dir(path: str | Path) -> bool:
    """After a failed run: remove what it put in its incomplete output folder (the folder was empty
    when claimed, so all in it is this run's) and the folders the run created (listed in its owner
    file), innermost first, while they are empty. A complete folder is kept, and so is every
    folder that existed before the run.

    Returns True when the folder's contents were removed.
    """

    path = Path(path)
    if not path.is_dir() or is_complete(path):
        return False
    info = _owner(path)
    if info is None:
        if any(path.iterdir()):
            return False
        created: list[str] = []
    elif info.get("pid") != os.getpid():
        return False
    else:
        created = [str(c) for c in info.get("created") or []]
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    remove_created_dirs(created)
    return True


def release_sweep_dir(sweep_dir: str | Path, created: Any, *, since: float) -> bool:
    """After a sweep that left no job folder (every job failed, or it was stopped): remove the
    ``multirun.yaml`` Hydra wrote for it (if written at or after ``since``, a time stamp) and the
    folders the command created. Returns True when the sweep folder is gone or left as found."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        remove_created_dirs(created)
        return True
    others = [p for p in sweep_dir.iterdir() if p.name != SWEEP_FILE]
    if others:
        return False
    sweep_file = sweep_dir / SWEEP_FILE
    try:
        if sweep_file.is_file() and sweep_file.stat().st_mtime >= since - 1:
            sweep_file.unlink()
    except OSError:
        return False
    remove_created_dirs(created)
    return True


def clean_orphan_dirs(root: str | Path) -> list[Path]:
    """Remove output folders under ``root`` left by runs killed before they wrote anything: the folder
    holds only its owner file (and ``.part`` files), and the owner process is gone from this host."""

    removed: list[Path] = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for marker in sorted(root.rglob(OWNER_FILE)):  # listed first: the loop removes folders
        folder = marker.parent
        info = _owner(folder) or {}
        pid = info.get("pid")
        if info.get("host") != socket.gethostname() or not isinstance(pid, int) or pid_alive(pid):
            continue
        if any(p.name != OWNER_FILE and not p.name.endswith(PART_SUFFIX) for p in folder.iterdir()):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
        parent = folder.parent
        while parent != root and root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
    return removed


def write_partial_outputs(result: Result, run_dir: str | Path, reason: str) -> dict[str, Path]:
    """After a late stage failed: keep what the early stages found so the user can see why —
    ``columns.csv``, the crystal mask and region figure, the columns drawn on the image
    (``network_overlay.png``), ``error.txt`` with the reason and ``report.html``, the page that says
    why (:func:`octascope.results.report.write_run_report`). No ``summary.json`` is written, so the
    folder stays incomplete (see :func:`is_complete`)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if result.columns is not None:
        written["columns"] = write_table(result.columns, run_dir / "columns.csv", COLUMNS_CSV_FIRST)

        fig = network_overlay(result.denoised or result.image, result.columns, result.octahedra, result.particles)
        written.update(save_figure(fig, run_dir, "network_overlay", ("png",), dpi=120))
    if result.region is not None:
        written.update({k: v for k, v in write_outputs_region(result, run_dir, ("png",)).items()})
    written["error"] = atomic_write(run_dir / "error.txt", lambda tmp: tmp.write_text(reason + "\n"))
    report = _write_report(run_dir, summary=_partial_summary(result), error=reason)
    if report is not None:
        written["report"] = report
    return written


def _partial_summary(result: Result) -> dict[str, Any] | None:
    """What a refused frame's report can say: the image, the plugins, the columns per species, the
    crystal region and each particle's verdict and reasons (no numbers to trust)."""
    try:
        summary = _jsonable(summarize(result))
    except Exception:  # noqa: BLE001 - a partial result may lack what summarize reads
        return None
    if not summary.get("particles"):
        summary["particles"] = [{"particle": p.id, "verdict": p.verdict or "not judged", "reasons": "; ".join(p.reasons),
                                 "touches_edge": bool(p.touches_edge), "size_a1_nm": p.size_A[0] / 10,
                                 "size_a2_nm": p.size_A[1] / 10} for p in result.particles]
    summary["tilt"] = {}
    for key in ("timings_s", "accuracy", "n_octahedra", "scalars", "core_shell_test", "metrics"):
        summary.pop(key, None)  # a refused frame's numbers are not results
    return summary


def write_outputs_region(result: Result, run_dir: Path, figure_formats: tuple[str, ...]) -> dict[str, Path]:
    """``crystal_mask.png`` (255 = crystal) and the ``crystal_region`` figure."""
    region = result.region
    if region is None:
        raise ValueError("write_outputs_region: the result has no crystal region")
    written: dict[str, Path] = {}
    mask8 = (np.asarray(region.mask, bool) * 255).astype(np.uint8)

    def _png(tmp: Path) -> None:
        # lazy: imageio (~7 ms to import), only for a PNG file
        import imageio.v3 as iio

        iio.imwrite(tmp, mask8, extension=".png")

    written["crystal_mask"] = atomic_write(run_dir / "crystal_mask.png", _png)
    if figure_formats:
        fig = region_overlay(result.denoised or result.image, region)
        written.update(save_figure(fig, run_dir, "crystal_region", figure_formats, dpi=120))
    return written
