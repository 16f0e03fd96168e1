"""The ``octascope`` command: Hydra-composed analysis runs, sweeps, and plugin listing.

    octascope                                   # analyse the default input
    octascope source.path=particle.emd          # analyse your file
    octascope --multirun denoiser=none,bm3d     # a sweep, one MLflow run per job
    octascope plugins [STAGE]                   # list registered plugins
    octascope runs [--fix-stale]                # list tracked runs; mark those of dead processes KILLED

Hydra lives only here: the configuration is turned into plain values and handed to the library.
Before Hydra runs anything the command line is checked (:func:`check_command_line`): every
mistake is one line ``octascope: error: <problem>; <fix>``, exit code 2, nothing written.
SIGTERM and SIGINT unwind a run like an exception (MLflow run FAILED, temporary files and the
incomplete folder removed, one line, exit 128 + signal). A sweep runs every job and exits 1
with the count of failed jobs.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
import argparse
import datetime as _dt
import json
import logging
import multiprocessing
import re
import secrets
import shutil
import signal
import tempfile
import threading
import warnings

from octascope.core import interrupts
from octascope.core.errors import OctascopeError, ConfigError, Interrupted

if TYPE_CHECKING:
    from octascope.core.registry import Registry

# the library side of a run: building the stages and running them (run.py), the printed summary (summary.py)
from octascope.app.run import build_stages, run_from_config, PHASES  # noqa: E402
from octascope.results.summary import format_locations, format_result  # noqa: E402
from octascope.app.help import HELP, PLUGINS_HELP, version_text
from octascope.core.registry import get_registry


_REGISTRY: "Registry | None" = None


def _registry() -> "Registry":
    """The plugin registry of this command, built once (discovering entry points is not free)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = get_registry()
    return _REGISTRY


def conf_dir() -> Path:
    """The Hydra config directory: ``$OCTASCOPE_CONF``, the packaged copy, or the repository's ``conf/``."""
    env = os.environ.get("OCTASCOPE_CONF")
    if env:
        return Path(env).resolve()
    packaged = Path(__file__).resolve().parents[1] / "conf"
    if (packaged / "config.yaml").exists():
        return packaged
    return (Path(__file__).resolve().parents[3] / "conf").resolve()


#: environment variables a command shares with its jobs (set by main, restored after)
_RUN_ID_ENV = "OCTASCOPE_RUN_ID"
_STATUS_ENV = "OCTASCOPE_JOB_STATUS_DIR"
_CREATED_ENV = "OCTASCOPE_CREATED_DIRS"


def _run_id() -> str:
    """The short id of this command: the suffix of its output folders (``outputs/<date>/<time>-<id>``)."""
    rid = os.environ.get(_RUN_ID_ENV)
    if not rid:
        rid = os.environ[_RUN_ID_ENV] = secrets.token_hex(3)
    return rid


def _register_resolvers() -> None:
    # lazy: OmegaConf (~30 ms to import), only for a run, not for --help or plugins
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("octascope_run_id"):
        OmegaConf.register_new_resolver("octascope_run_id", _run_id)


def _to_dict(cfg: Any, *, resolve: bool) -> dict[str, Any]:
    """A composed configuration (an OmegaConf ``DictConfig``) as a plain dict."""
    # lazy: OmegaConf (~30 ms to import), only for a run, not for --help or plugins
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=resolve)
    if not isinstance(container, dict):
        raise TypeError(f"a configuration must be a mapping, got {type(container).__name__}")
    return cast("dict[str, Any]", container)  # to_container types keys as any DictKeyType; Hydra's are str


def _say_error(message: str) -> None:
    print(f"octascope: error: {message}", file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or exc.__class__.__name__


def _record_job(num: str, failed: str | None) -> None:
    folder = os.environ.get(_STATUS_ENV)
    if folder and Path(folder).is_dir():
        name = f"{num}.{'failed' if failed else 'ok'}"
        (Path(folder) / name).write_text(failed or "")


def _created_for(output_dir: Path, multirun: bool) -> list[Path]:
    """The folders of ``output_dir``'s path that this command created (before Hydra ran: see :func:`main`);
    in a sweep the job's own folder too (Hydra makes it for the job, inside the sweep's folder)."""

    try:
        made = [Path(p) for p in json.loads(os.environ.get(_CREATED_ENV) or "[]")]
    except ValueError:
        made = []
    here = Path(os.path.abspath(output_dir))
    mine = [p for p in made if p == here or p in here.parents]
    return mine + ([here] if multirun else [])


def _hydra_task(cfg: Any) -> None:
    # lazy: Hydra (~0.1 s to import), only for a run, not for --help or plugins
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if "hydra_start" in _PHASES:  # Hydra's own start (composing, logging) before the job
        _PHASES["hydra"] = time.perf_counter() - _PHASES.pop("hydra_start")
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    _run_job(cfg, Path(hc.runtime.output_dir), multirun=multirun, job_num=str(hc.job.num) if multirun else None,
             label=f"job {hc.job.num} ({hc.job.override_dirname or 'defaults'})" if multirun else None)


def _run_direct(checked: "_Checked") -> bool:
    """Run a single (non-sweep) job from the configuration the check composed, without composing it
    again through ``hydra.main``: Hydra composes once. Applies what Hydra's run would
    (``hydra.job.env_set``, the job's logging config; both checked by the policy). Returns False
    (nothing done) where Hydra must run the job itself: a sweep, an output folder not known
    before, ``hydra.job.chdir``."""
    if checked.multirun or checked.output_dir is None or _LAST_COMPOSED is None or not _pin_output_dir(checked):
        return False
    job_cfg, hydra_node = _LAST_COMPOSED
    job = hydra_node.get("job") or {}
    if job.get("chdir") or "${" in json_text(hydra_node.get("job_logging")):
        return False
    for name, value in (job.get("env_set") or {}).items():
        os.environ[str(name)] = "" if value is None else str(value)
    logging_cfg = hydra_node.get("job_logging")
    if isinstance(logging_cfg, dict) and logging_cfg:
        # lazy: logging.config, only for a run
        import logging.config

        logging.config.dictConfig(logging_cfg)
    _run_job(job_cfg, Path(checked.output_dir), multirun=False, job_num=None, label=None)
    return True


def json_text(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def _run_job(cfg: Any, output_dir: Path, *, multirun: bool, job_num: str | None, label: str | None) -> None:
    """One job (Hydra's task, or :func:`_run_direct`): claim the folder, run, print the summary; a
    failure is one line (a sweep records it and goes on)."""
    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.results.outputs import claim_output_dir, release_failed_output_dir, write_partial_outputs

    job_tag = job_num
    claimed = False
    t_job = time.perf_counter()
    try:
        container = cfg if isinstance(cfg, dict) else _to_dict(cfg, resolve=True)
        claim_output_dir(output_dir, {"run_id": os.environ.get(_RUN_ID_ENV), "job": job_tag},
                         created=_created_for(output_dir, multirun))
        claimed = True
        # lazy: not loaded by `octascope --help` / `import octascope` (start-up); source.frames: a time series
        from octascope.app.series import run_series_from_config
        result: Any
        if (container.get("source") or {}).get("frames") is not None:
            result, files = run_series_from_config(container, output_dir, job_tag=job_tag, registry=_registry())
        else:  # the numbers print as soon as the analysis ends; where they are written, once they are
            result, files = run_from_config(container, output_dir, job_tag=job_tag, registry=_registry(),
                                            on_result=lambda r: print(format_result(r), flush=True))
    except KeyboardInterrupt:  # SIGINT, or SIGTERM turned into Interrupted: stops a sweep too
        if claimed:
            release_failed_output_dir(output_dir)
        raise
    except Exception as exc:
        msg = _one_line(exc) if isinstance(exc, OctascopeError) else (
            f"{exc.__class__.__name__}: {_one_line(exc)} (OCTASCOPE_DEBUG=1 shows the traceback)")
        partial = getattr(exc, "partial_result", None)
        if claimed and isinstance(exc, OctascopeError) and partial is not None and partial.columns is not None:
            # a late stage failed: keep the columns and the overlay so the user can see why
            write_partial_outputs(partial, output_dir, msg)
            msg += f" (what was found before is in {output_dir}: columns.csv, network_overlay.png)"
        elif claimed:
            release_failed_output_dir(output_dir)
        if os.environ.get("OCTASCOPE_DEBUG"):
            raise
        if not isinstance(exc, OctascopeError) and not multirun:
            raise  # a bug, not a user error: Hydra prints the traceback
        if multirun:  # a sweep runs every job: record the failure and go on
            _say_error(f"{label} failed: {msg}")
            _record_job(str(job_num), msg)
            return
        _say_error(msg)
        raise SystemExit(2) from None
    if multirun:
        _record_job(str(job_num), None)
    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.app.series import SeriesResult, format_series_summary
    from octascope.results.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri((container.get("tracking") or {}).get("tracking_uri"))
    if isinstance(result, SeriesResult):
        print(format_series_summary(result, files, output_dir, uri), flush=True)
        return
    print(format_locations(files, output_dir, uri), flush=True)

    PHASES["job"] = time.perf_counter() - t_job


def list_plugins(stage: str | None = None) -> str:
    """A table of registered plugins: stage, name, distribution, version, summary.

    With a stage, each plugin's parameters follow its line: name, type, default, unit and
    description (:meth:`octascope.core.registry.Registry.parameters`; plugins not yet on the options
    pattern show none).
    """

    registry = get_registry()
    infos = registry.info(stage)
    rows = [(p.stage, p.name, f"{p.distribution} {p.version}", p.summary) for p in infos]
    widths = [max(len(r[i]) for r in rows + [("stage", "name", "from", "")]) for i in range(3)]
    out = [f"{'stage':<{widths[0]}}  {'name':<{widths[1]}}  {'from':<{widths[2]}}  summary"]
    for p, r in zip(infos, rows):
        out.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
        if stage is None:
            continue
        params = registry.parameters(p.stage, p.name)
        if not params:
            out.append("    (parameters not declared)")
            continue
        w = max(len(q.name) for q in params)
        for q in params:
            unit = f" [{q.unit}]" if q.unit else ""
            out.append(f"    {q.name:<{w}}  {q.type} = {q.default!r}{unit}" + (f"  — {q.doc}" if q.doc else ""))
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------
# the command line: checks before Hydra runs anything, signals, sweeps, `octascope runs`
# ------------------------------------------------------------------------------------------------

#: Hydra flags that take a value
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun", "--shell-completion", "-sc"}
#: Hydra flags after which no job runs (help, printing the config): overrides are only screened
_NO_JOB_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"}
#: override keys whose values are free text (paths, names): quoted for Hydra when its grammar refuses them
_TEXT_KEYS = ("path", "dir", "uri", "name", "title", "signal", "experiment")


def _split_argv(argv: list[str]) -> tuple[list[str], list[str], set[str]]:
    flags, overrides, names = [], [], set()
    it = iter(argv)
    for tok in it:
        if tok.startswith("-"):  # overrides never start with '-' (deletions start with '~')
            name = tok.split("=", 1)[0]
            names.add(name)
            flags.append(tok)
            if name in _FLAGS_WITH_VALUE and "=" not in tok:
                nxt = next(it, None)
                if nxt is not None:
                    flags.append(nxt)
        else:
            overrides.append(tok)
    return flags, overrides, names


def _quote(value: str) -> str | None:
    if "'" not in value:
        return "'" + value.replace("\\", "\\\\") + "'" if value.endswith("\\") else f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _parse_overrides(overrides: list[str]) -> tuple[list[str], list[Any]]:
    """Parse every override; quote free-text values Hydra's grammar refuses (non-ASCII paths)."""
    # lazy: Hydra (~0.1 s to import), only for a run, not for --help or plugins
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out, parsed = [], []
    for tok in overrides:
        try:
            parsed.append(parser.parse_override(tok))
            out.append(tok)
            continue
        except Exception as exc:  # Hydra's OverrideParseException
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        key, eq, value = tok.partition("=")
        leaf = key.lstrip("+~").split("@")[0].rsplit(".", 1)[-1].lower()
        quoted = _quote(value) if eq and value and any(t in leaf for t in _TEXT_KEYS) else None
        if quoted is not None:
            try:
                parsed.append(parser.parse_override(f"{key}={quoted}"))
                out.append(f"{key}={quoted}")
                continue
            except Exception:
                pass
        if not eq:
            hint = "write key=value (e.g. denoiser=bm3d)"
        elif any(t in leaf for t in _TEXT_KEYS) or any(ord(c) > 127 for c in value):
            hint = f"quote the value: \"{key}='{value}'\" (the shell's quotes around Hydra's)"
        else:
            hint = "check the brackets, commas and quotes (lists: key=[a,b]; text with symbols: key='a b')"
        raise ConfigError(f"malformed override '{tok}' ({first}); {hint}")
    return out, parsed


def _hydra_error(exc: BaseException) -> Exception:
    """A one-line ConfigError from Hydra's multi-line composition errors."""

    # lazy: Hydra (~0.1 s to import), only for a run, not for --help or plugins
    from hydra.errors import MissingConfigException

    text = str(exc)
    if isinstance(exc, MissingConfigException) and exc.options:
        group = (exc.missing_cfg_file or "").rsplit("/", 1)
        what = f"{group[0]} option '{group[1]}'" if len(group) == 2 else f"option '{exc.missing_cfg_file}'"
        return ConfigError(f"unknown {what}; choose one of {', '.join(exc.options)}")
    m = re.search(r"Could not (?:override|append to) '([^']+)'", text)
    if m:
        return ConfigError(f"unknown configuration key '{m.group(1)}'; check the spelling "
                           "(`octascope --cfg job` prints the configuration)")
    m = re.search(r"Could not find '([^']+)'", text)
    if m:
        return ConfigError(f"no configuration '{m.group(1)}'; check the group and option names (see conf/)")
    cause: BaseException | None = exc
    while cause is not None and not str(cause).strip():  # Hydra wraps OmegaConf's message in an empty exception
        cause = cause.__cause__ or cause.__context__
    first = " ".join(str(cause or exc).split())[:300] or exc.__class__.__name__
    return ConfigError(f"invalid configuration: {first}; check the overrides (OCTASCOPE_DEBUG=1 shows Hydra's message)")


def _check_hydra_node(hydra_cfg: Any) -> None:
    """Refuse what would make Hydra (or a job's child programs) import and run code, or write files,
    beyond octascope's own settings: the closed lists of :mod:`octascope.app.policy`.

    ``hydra_cfg`` is the ``hydra`` node with its interpolations resolved (where they can be before
    a job runs), so a value built by an interpolation is checked as what it becomes.
    """
    # lazy: Hydra (~0.1 s to import), only for a run, not for --help or plugins
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    from hydra.plugins.sweeper import Sweeper

    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.app import policy
    from octascope.app.config import find_targets

    allowed = {f"{c.__module__}.{c.__qualname__}" for kind in (Launcher, Sweeper) for c in Plugins.instance().discover(kind)}
    if hydra_cfg.get("callbacks"):
        raise ConfigError(f"hydra.callbacks ({', '.join(map(str, hydra_cfg['callbacks']))}) would import and call Python "
                          "objects; octascope runs no Hydra callbacks: remove them")
    for path in find_targets(hydra_cfg, "hydra"):
        node = hydra_cfg
        for part in path.split(".")[1:-1]:
            node = node[part] if isinstance(node, dict) else None
        target = node.get("_target_") if isinstance(node, dict) else None
        if not policy.hydra_target_allowed(path, target, allowed):
            raise ConfigError(f"'{path}' would import and call a Python object; only installed Hydra launchers and "
                              "sweepers are allowed (hydra/launcher=<name>): remove it")
    for name in ("job_logging", "hydra_logging"):
        policy.check_logging_config(hydra_cfg.get(name), f"hydra.{name}")
    job = hydra_cfg.get("job") or {}
    policy.check_env_set(job.get("env_set"))
    policy.check_env_copy(job.get("env_copy"))
    policy.check_search_path(hydra_cfg.get("searchpath"))
    policy.check_launcher(hydra_cfg.get("launcher"))
    policy.check_sweeper(hydra_cfg.get("sweeper"))
    policy.check_output_subdir(hydra_cfg.get("output_subdir"))


def _resolved(node: Any) -> Any:
    """A plain copy of an OmegaConf node with every interpolation resolved that can be before a job
    runs; values that cannot (``${hydra.job.num}`` outside a sweep) are kept as written."""
    # lazy: OmegaConf (~30 ms to import), only for a run, not for --help or plugins
    from omegaconf import DictConfig, ListConfig, OmegaConf

    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception:
        pass
    if isinstance(node, DictConfig):
        out = {}
        for key in node.keys():
            child = node._get_node(key)
            out[str(key)] = _resolved(child) if isinstance(child, (DictConfig, ListConfig)) else _resolved_value(node, key)
        return out
    if isinstance(node, ListConfig):
        return [_resolved(node._get_node(i)) if isinstance(node._get_node(i), (DictConfig, ListConfig))
                else _resolved_value(node, i) for i in range(len(node))]
    return node


def _resolved_value(parent: Any, key: Any) -> Any:
    # lazy: OmegaConf (~30 ms to import), only for a run, not for --help or plugins
    from omegaconf import DictConfig, ListConfig, OmegaConf

    try:
        value = parent[key]
    except Exception:
        return parent._get_node(key)._value()
    if isinstance(value, (DictConfig, ListConfig)):
        return _resolved(value)
    return OmegaConf.to_object(value) if OmegaConf.is_config(value) else value


def _compose_and_check(config_dir: str, config_name: str, overrides: list[str], *, job: bool = True) -> dict[str, Any]:
    """Compose and check one job's configuration; return its ``hydra`` node, resolved where it can be.

    Before anything resolves an interpolation, the resolvers used and the sizes of the
    expansions are checked (:func:`octascope.app.policy.check_interpolations`); the ``hydra`` node
    is then resolved and checked (:func:`_check_hydra_node`), then (with ``job``) the job's own
    configuration: keys, source, plugins.
    """
    # lazy: Hydra (~0.1 s to import), only for a run, not for --help or plugins
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    # lazy: OmegaConf (~30 ms to import), only for a run, not for --help or plugins
    from omegaconf import OmegaConf

    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.app.config import validate_config
    from octascope.app.policy import check_interpolations
    from octascope.input.sources import check_source_config

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3", job_name="octascope"):
            try:
                cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
            except OctascopeError:
                raise
            except Exception as exc:
                if not job:  # --help, --cfg: Hydra reports its own composition errors
                    return {}
                raise _hydra_error(exc) from exc
    finally:
        GlobalHydra.instance().clear()
    check_interpolations(_to_dict(cfg, resolve=False))
    hydra_node = _resolved(cfg.hydra) or {}
    _check_hydra_node(hydra_node)
    if not job:
        return hydra_node
    try:
        job_cfg = _to_dict(OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"]), resolve=True)
    except Exception as exc:
        raise ConfigError(f"cannot resolve the configuration: {_one_line(exc)}; check the ${{...}} interpolations") from exc
    validate_config(job_cfg)
    check_source_config(dict(job_cfg.get("source") or {}))
    build_stages(job_cfg, _registry())
    global _LAST_COMPOSED
    _LAST_COMPOSED = (job_cfg, hydra_node)
    return hydra_node


#: the job configuration and hydra node composed last by :func:`_compose_and_check` (a session
#: runs from it: Hydra is not composed again)
_LAST_COMPOSED: tuple[dict[str, Any], dict[str, Any]] | None = None


class _Checked:
    """A checked command line: the arguments for Hydra, whether it sweeps, and its output folder
    (``hydra.run.dir``, or ``hydra.sweep.dir`` in a sweep; None where it cannot be known before
    the jobs run)."""

    def __init__(self, argv: list[str], multirun: bool = False, output_dir: str | None = None):
        self.argv, self.multirun, self.output_dir = argv, multirun, output_dir


def _is_multirun(names: set[str], hydra_node: dict[str, Any]) -> bool:
    return bool(names & {"--multirun", "-m"}) or "MULTIRUN" in str(hydra_node.get("mode") or "")


def _output_dir(hydra_node: dict[str, Any], multirun: bool) -> str | None:
    """The run's (or sweep's) output folder as Hydra will make it, when it is already fully resolved."""
    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.results.outputs import check_output_location

    key = "sweep" if multirun else "run"
    value = (hydra_node.get(key) or {}).get("dir")
    if not isinstance(value, str) or "${" in value or not value.strip():
        return None
    check_output_location(value, f"hydra.{key}.dir")
    return value


def _check(argv: list[str]) -> _Checked:
    """:func:`check_command_line`, also saying whether the command sweeps and where its outputs go."""

    with warnings.catch_warnings():  # Hydra's and the libraries' warnings while composing: the checks say what matters
        warnings.simplefilter("ignore")
        return _check_quietly(argv)


def _check_quietly(argv: list[str]) -> _Checked:
    flags, overrides, names = _split_argv(argv)
    if names & {"--experimental-rerun"}:
        raise ConfigError("--experimental-rerun would load a pickled file and run it; octascope does not rerun "
                          "pickles: give the command's overrides again (its config.yaml lists them)")
    overrides, parsed = _parse_overrides(overrides)
    for ov in parsed:
        key = ov.key_or_group
        if "_target_" in key or key.startswith("hydra.callbacks") or "()" in key:
            raise ConfigError(f"override '{ov.input_line}' would make Hydra import and call a Python object; "
                              "octascope configs select registered plugins by name only: remove it")
    config_dir, config_name, extra_search = _config_location(flags)
    _check_search_paths(parsed, Path(config_dir) / f"{config_name}.yaml")
    base = [o for o, p in zip(overrides, parsed) if not p.is_sweep_override()]
    if extra_search:
        base.append(f"hydra.searchpath=[{','.join(extra_search)}]")
    if names & _NO_JOB_FLAGS:
        if not names & {"--shell-completion", "-sc"}:  # help and --cfg still configure Hydra's logging
            _compose_and_check(config_dir, config_name, base, job=False)
        return _Checked([*flags, *overrides])
    sweeps = [(o, p) for o, p in zip(overrides, parsed) if p.is_sweep_override()]
    firsts, variants = [], []

    def add_sweep(p: Any) -> None:
        try:
            values = list(p.sweep_string_iterator())
        except Exception:  # glob() and the like: Hydra expands them when the sweep starts
            return
        quoted = [v if not any(ord(c) > 127 or c in " ,[]{}()" for c in v) else (_quote(v) or v) for v in values]
        items = [f"{p.get_key_element()}={v}" for v in quoted]
        firsts.append(items[0])
        variants.append(items[1:])

    for _tok, p in sweeps:
        add_sweep(p)
    hydra_node = _compose_and_check(config_dir, config_name, [*base, *firsts])
    multirun = _is_multirun(names, hydra_node)
    if sweeps and not multirun:
        tok, p = sweeps[0]
        key, _, value = tok.partition("=")
        leaf = key.lstrip("+~").split("@")[0].rsplit(".", 1)[-1].lower()
        if any(t in leaf for t in _TEXT_KEYS):
            raise ConfigError(f"'{tok}': Hydra reads the comma as a sweep over several values; for one value "
                              f"(a file name with a comma) quote it: \"{key}='{value}'\" (the shell's quotes around "
                              "Hydra's), or add --multirun to sweep")
        raise ConfigError(f"'{tok}' lists several values, which is a sweep; add --multirun to run one job per value, "
                          f"or write a list as {key}=[{value}]")
    # sweeps set in a config file (hydra.sweeper.params, e.g. conf/experiment/): each value too,
    # unless the command line sweeps that key itself
    params = {str(k): str(v) for k, v in ((hydra_node.get("sweeper") or {}).get("params") or {}).items()}
    swept = {p.key_or_group for _tok, p in sweeps}
    _p, extra = _parse_overrides([f"{k}={v}" for k, v in params.items() if k not in swept])
    for p in extra:
        if p.is_sweep_override():
            add_sweep(p)
    if extra:
        _compose_and_check(config_dir, config_name, [*base, *firsts])
    for i, rest in enumerate(variants):
        for item in rest:
            _compose_and_check(config_dir, config_name, [*base, *firsts[:i], item, *firsts[i + 1:]])
    return _Checked([*flags, *overrides], multirun, _output_dir(hydra_node, multirun))


def _config_location(flags: list[str]) -> tuple[str, str, list[str]]:
    """The primary config folder and name and the extra search folders the flags give (folders only)."""

    config_dir, config_name = str(conf_dir()), "config"
    extra_search = []
    it = iter(flags)
    for tok in it:
        name, _, val = tok.partition("=")
        if name in _FLAGS_WITH_VALUE and not val:
            val = next(it, "")
        if name in ("--config-path", "-cp", "--config-dir", "-cd") and "://" in val:
            raise ConfigError(f"{name} {val}: give a folder (a pkg:// or other URL would import a Python package); "
                              "use a path to a config folder")
        if name in ("--config-path", "-cp"):
            config_dir = str(Path(val).resolve())
        elif name in ("--config-name", "-cn"):
            config_name = val
        elif name in ("--config-dir", "-cd"):
            extra_search.append(f"file://{Path(val).resolve()}")
    return config_dir, config_name, extra_search


def _check_search_paths(parsed: list[Any], primary: Path) -> None:
    """Refuse config search paths that are not folders before Hydra composes anything: Hydra imports
    a ``pkg://`` search path's package while it looks for configs. Hydra reads ``hydra.searchpath``
    from the overrides and from the primary config file only."""
    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.app.policy import check_search_path

    for ov in parsed:
        if ov.key_or_group.lstrip("+~") == "hydra.searchpath":
            value = ov.value()
            check_search_path(value if isinstance(value, list) else [value])
    if primary.is_file():
        # lazy: PyYAML (~10 ms to import), not loaded at start-up
        import yaml

        # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
        from octascope.app.policy import YAML_MAX_BYTES, check_yaml_text

        try:
            text = primary.open(encoding="utf-8").read(YAML_MAX_BYTES + 1)
            check_yaml_text(text, str(primary))
            raw = yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return  # Hydra reports an unreadable primary config itself
        hydra_node = raw.get("hydra") if isinstance(raw, dict) else None
        if isinstance(hydra_node, dict):
            entries = hydra_node.get("searchpath")
            check_search_path(entries if isinstance(entries, list) else [entries] if entries else [])


def check_command_line(argv: list[str]) -> list[str]:
    """Check a command line before Hydra runs anything; return it with free-text values quoted.

    Malformed overrides, unknown groups, options and keys, keys that nothing reads (``+foo=1``),
    ``_target_`` keys, Hydra callbacks, anything outside the closed lists of
    :mod:`octascope.app.policy` (environment variables, logging configs, resolvers, search paths,
    launcher commands), ``--experimental-rerun``, an output folder that cannot be created,
    unknown plugins or plugin parameters, bad figure formats, bad tracking URIs and bad pixel
    sizes all raise :class:`ConfigError`/:class:`InputError` here, before any output folder
    exists. In a sweep every value of every swept key is checked.
    """
    return _check(argv).argv


def _pin_output_dir(checked: _Checked) -> list[str]:
    """The override that fixes the output folder to the one checked (its time stamp resolved once),
    or none when the folder cannot be written as a Hydra value exactly."""
    # lazy: Hydra (~0.1 s to import), only for a run, not for --help or plugins
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if checked.output_dir is None:
        return []
    key = "hydra.sweep.dir" if checked.multirun else "hydra.run.dir"
    quoted = _quote(checked.output_dir)
    if quoted is None or "${" in checked.output_dir:
        return []
    try:
        if OverridesParser.create().parse_override(f"{key}={quoted}").value() != checked.output_dir:
            return []
    except Exception:
        return []
    return [f"{key}={quoted}"]


class _Signals:
    """Turn SIGTERM (and SIGINT) into :class:`~octascope.core.errors.Interrupted` in the main thread."""

    def __enter__(self) -> "_Signals":
        self.saved: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.saved[sig] = signal.getsignal(sig)
            signal.signal(sig, self._raise)
        self.fired = False
        interrupts.clear()
        # a stop raised inside a finalizer is "unraisable": say nothing (it is delivered at the next stage)
        self.saved_hook = sys.unraisablehook
        previous = sys.unraisablehook

        def hook(info: Any) -> None:
            if not isinstance(info.exc_value, KeyboardInterrupt):
                previous(info)

        sys.unraisablehook = hook
        return self

    def _raise(self, signum: int, _frame: Any) -> None:
        if self.fired:  # the run is already unwinding: let it finish marking itself FAILED
            return
        self.fired = True
        for sig in self.saved:
            signal.signal(sig, signal.SIG_IGN)
        interrupts.request_stop(signum)  # delivered at the next stage if this raise lands in a finalizer
        raise Interrupted(signum)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        if self.saved:
            sys.unraisablehook = self.saved_hook
        interrupts.clear()


def runs_command(argv: list[str]) -> int:
    """``octascope runs [--fix-stale] [--tracking-uri URI] [--outputs DIR ...]``: list the runs of the
    store; with ``--fix-stale`` mark runs whose process died KILLED and remove stale ``.part`` files."""

    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.results.outputs import clean_orphan_dirs, clean_stale_parts, is_complete
    from octascope.results.tracking import DIR_TAG, fix_stale_runs, list_runs, resolve_tracking_uri

    ap = argparse.ArgumentParser(prog="octascope runs", description=runs_command.__doc__)
    ap.add_argument("--fix-stale", action="store_true",
                    help="mark RUNNING runs whose process is gone as KILLED; remove stale .part files")
    ap.add_argument("--tracking-uri", default=None, help="store (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns.db)")
    ap.add_argument("--outputs", nargs="*", default=["outputs", "multirun"], help="output roots to clean of .part files")
    ap.add_argument("--dry-run", action="store_true", help="say what --fix-stale would do, change nothing")
    ap.add_argument("--untagged-older-than", type=float, default=None, metavar="HOURS",
                    help="with --fix-stale: also mark KILLED RUNNING runs without a process tag (older octascope "
                         "versions) that started more than HOURS ago")
    args = ap.parse_args(argv)
    uri = resolve_tracking_uri(args.tracking_uri)
    if args.fix_stale:
        killed, unknown = fix_stale_runs(uri, dry_run=args.dry_run, untagged_older_than_h=args.untagged_older_than)
        parts = [] if args.dry_run else [p for root in args.outputs for p in clean_stale_parts(root)]
        orphans = [] if args.dry_run else [p for root in args.outputs for p in clean_orphan_dirs(root)]
        verb = "would mark" if args.dry_run else "marked"
        print(f"octascope: {verb} {len(killed)} run(s) KILLED (their process is gone)"
              + (": " + ", ".join(r.info.run_id[:12] for r in killed) if killed else "")
              + f"; removed {len(parts)} stale .part file(s)"
              + (f" and {len(orphans)} empty folder(s) of killed runs" if orphans else "")
              + (f"; {len(unknown)} RUNNING run(s) from another host or an older version not checked" if unknown else ""))
        return 0
    print(runs_table(list_runs(uri), is_complete))
    return 0


def headline_tilt(metrics: dict[str, float]) -> str:
    """θ3 core/shell of a run's metrics, as ``θ3 core 8.9 ± 0.2° / shell 6.5 ± 0.7°`` (or '')."""
    parts = []
    for region in ("core", "shell"):
        mean = metrics.get(f"theta3_deg_mean_{region}")
        err = metrics.get(f"theta3_deg_mean_{region}_err")
        if mean is not None:
            parts.append(f"{region} {mean:.1f}" + (f" ± {err:.1f}°" if err is not None else "°"))
    return ("θ3 " + " / ".join(parts)) if parts else ""


def runs_table(runs: list[Any], is_complete: Any) -> str:
    """The lines of ``octascope runs``: name, input, status, start, headline tilt, output folder."""

    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.results.tracking import DIR_TAG

    rows = [("run", "name", "input", "status", "started (UTC)", "tilt", "output folder")]
    for r in runs:
        started = _dt.datetime.fromtimestamp((r.info.start_time or 0) / 1000, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        folder = r.data.tags.get(DIR_TAG, "")
        state = "" if not folder else ("" if is_complete(folder) or r.data.tags.get("octascope.kind") == "session"
                                       else " (incomplete)" if Path(folder).is_dir() else " (removed)")
        source = r.data.tags.get("octascope.source", "")
        name = r.info.run_name or ""
        if r.data.tags.get("mlflow.parentRunId"):
            name = "  " + name
        rows.append((r.info.run_id[:8], name[:32], Path(source).name[:28] if source else "", r.info.status, started,
                     headline_tilt(dict(r.data.metrics)), folder + state))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:6], widths)) + "  " + row[6] for row in rows)


def _subcommand(argv: list[str]) -> bool:
    """Answer ``--help``, ``--version``, ``plugins``, ``compare`` and ``runs``: True where one was
    answered (``compare`` and ``runs`` exit with their own code), False for a run."""
    if argv and argv[0] not in ("plugins", "runs", "compare") and {"--help", "-h"} & set(argv):
        if set(argv) - {"--help", "-h"}:  # overrides beside --help are still checked (and refused) first
            # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
            from octascope.app.policy import guarded_yaml_loading

            try:
                with guarded_yaml_loading():
                    _register_resolvers()
                    _check(argv)
            except OctascopeError as exc:
                _say_error(str(exc))
                raise SystemExit(2) from None
        print(HELP)
        return True
    if argv and argv[0] == "--version":
        print(version_text())
        return True
    if argv and argv[0] == "plugins":
        if {"--help", "-h"} & set(argv[1:]):
            print(PLUGINS_HELP)
            return True
        rest = [a for a in argv[1:] if a != "list"]
        try:
            print(list_plugins(rest[0] if rest else None))
        except OctascopeError as exc:
            _say_error(str(exc))
            raise SystemExit(2) from None
        return True
    if argv and argv[0] == "compare":
        # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
        from octascope.results.compare import main as compare_main

        try:
            raise SystemExit(compare_main(argv[1:]))
        except OctascopeError as exc:
            _say_error(str(exc))
            raise SystemExit(2) from None
    if argv and argv[0] == "runs":
        try:
            raise SystemExit(runs_command(argv[1:]))
        except OctascopeError as exc:
            _say_error(str(exc))
            raise SystemExit(2) from None
    return False


def _job_outcomes(status_dir: str) -> tuple[list[Path], int]:
    """The jobs that failed (their status files, in job order) and the number of jobs that ended,
    read from the status folder, which is then removed."""
    failed = sorted(Path(status_dir).glob("*.failed"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
    n_jobs = len(failed) + len(list(Path(status_dir).glob("*.ok")))
    shutil.rmtree(status_dir, ignore_errors=True)
    return failed, n_jobs


def _restore_environ(saved: dict[str, str | None]) -> None:
    """Put the environment variables a run set back as they were before it (unset where unset)."""
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``octascope`` console command (``argv``: the arguments, default the
    process's).

    Called as the process's command (no ``argv``), the process ends right after the command's last
    line, without tearing the interpreter down: unloading torch, MLflow and SQLAlchemy takes
    1-2 s that nobody waits for usefully (:func:`_exit_now`). Called with ``argv`` (tests, other
    Python code), it returns or raises ``SystemExit`` like any function.
    """
    if argv is not None:
        _main(argv)
        return
    try:
        _main(None)
    except SystemExit as exc:
        _exit_now(exc.code)
    _exit_now(0)


def _exit_now(code: "int | str | None") -> None:
    """End the process with ``code`` at once (``os._exit``) when nothing is left to finish: every
    file is written and closed, the MLflow run ended, no other non-daemon thread and no child
    process alive; otherwise the normal ``SystemExit`` (atexit handlers, thread joins)."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    busy = any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread())
    if busy or multiprocessing.active_children():
        raise SystemExit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code or 0)


def _main(argv: list[str] | None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _subcommand(argv):
        return

    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.app.policy import guarded_yaml_loading

    os.environ.setdefault("MPLBACKEND", "Agg")
    saved = {k: os.environ.get(k) for k in (_RUN_ID_ENV, _STATUS_ENV, _CREATED_ENV)}
    os.environ.pop(_RUN_ID_ENV, None)
    status_dir = tempfile.mkdtemp(prefix="octascope-jobs-")
    os.environ[_STATUS_ENV] = status_dir
    t0 = time.perf_counter()
    started = time.time()
    code = 0
    checked: _Checked | None = None
    created: list[Path] = []
    session: "_SessionRequest | None" = None
    try:
        with _Signals(), guarded_yaml_loading():
            try:
                _register_resolvers()
                session = _session_request(argv)
                if session is None:  # a session's frames import MLflow in their workers (or skip it all)
                    _prewarm_tracking(argv)
                t_check = time.perf_counter()
                checked = _check(session.check_argv if session else argv)
                _PHASES["check"] = time.perf_counter() - t_check
                created = _prepare_output_dir(checked)
                if session is not None:
                    code = _run_session_command(session, checked, created, status_dir)
            except OctascopeError as exc:
                if os.environ.get("OCTASCOPE_DEBUG"):
                    raise
                _say_error(str(exc))
                raise SystemExit(2) from None
            if session is not None:
                raise _SessionDone()
            _run_id()
            if not (_split_argv(argv)[2] & _NO_JOB_FLAGS) and _run_direct(checked):
                raise _SessionDone()  # the job ran; Hydra was composed once (by the check)
            # lazy: Hydra (~0.1 s to import), only for a run, not for --help or plugins
            import hydra

            _run_id()
            sys.argv = [sys.argv[0], *checked.argv, *_pin_output_dir(checked)]
            _PHASES["hydra_start"] = time.perf_counter()
            hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(_hydra_task)()
    except _SessionDone:
        pass
    except KeyboardInterrupt as exc:
        signame = exc.signame if isinstance(exc, Interrupted) else "SIGINT"
        signum = exc.signum if isinstance(exc, Interrupted) else 2
        if os.environ.get("OCTASCOPE_DEBUG"):
            raise
        _say_error(f"stopped by {signame}; the run is marked FAILED and its incomplete outputs removed; run it again")
        code = 128 + signum
    finally:
        failed, n_jobs = _job_outcomes(status_dir)
        if checked is not None and checked.output_dir is not None:
            _release_output_dir(checked, created, started)
        _restore_environ(saved)
    if os.environ.get("OCTASCOPE_TIMING"):
        _print_timing(t0)
    if code:
        raise SystemExit(code)
    if failed:
        _say_error(f"{len(failed)} of {n_jobs} jobs failed (jobs {', '.join(p.stem for p in failed)}; see the lines above); "
                   "fix them and run those jobs again")
        raise SystemExit(1)


def _prewarm_tracking(argv: list[str]) -> None:
    """Import MLflow and its SQL store in a background thread while the configuration is checked and
    the image analysed (≈ 2-3 s of imports off the critical path); the run then finds them imported.
    Not for ``tracking.enabled=false`` or commands that run no job."""

    flags, overrides, names = _split_argv(argv)
    if names & _NO_JOB_FLAGS or any(o.replace(" ", "").lower() == "tracking.enabled=false" for o in overrides):
        return
    if os.environ.get("OCTASCOPE_PREWARM", "1") == "0":  # experiments/benchmarks/startup.py: with and without
        return

    def work() -> None:
        try:
            # lazy: MLflow (~0.6 s to import), only when a run is tracked
            import mlflow  # noqa: F401
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        except Exception:  # the run reports a broken MLflow itself, in one line
            pass

    threading.Thread(target=work, name="octascope-import-mlflow", daemon=True).start()


class _SessionDone(Exception):
    """A session (or a job run without ``hydra.main``) finished: skip Hydra's run."""


class _SessionRequest:
    """A command line whose ``source.path`` is a glob or a folder: the frames, and the command line
    checked with the first frame in its place."""

    def __init__(self, argv: list[str], pattern: str, frames: list[Path], check_argv: list[str]):
        self.argv, self.pattern, self.frames, self.check_argv = argv, pattern, frames, check_argv


def _session_request(argv: list[str]) -> _SessionRequest | None:
    """A session when ``source.path`` is a glob or a folder (:mod:`octascope.app.batch`), else None."""
    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.app.batch import expand_frames, is_batch_path

    flags, overrides, names = _split_argv(argv)
    if names & {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"}:
        return None
    quoted, parsed = _parse_overrides(overrides)
    for tok, p in zip(quoted, parsed):
        if p.key_or_group != "source.path" or p.is_sweep_override():
            continue
        value = p.value()
        if not is_batch_path(value):
            return None
        if names & {"--multirun", "-m"}:
            raise ConfigError(f"source.path={value} is a session (a glob or a folder) and cannot be swept with --multirun; "
                              "run one session per setting")
        frames = expand_frames(str(value))
        first = _quote(str(frames[0])) or str(frames[0])
        check = [a for a in argv if a != overrides[quoted.index(tok)]] + [f"source.path={first}"]
        return _SessionRequest(argv, str(value), frames, check)
    return None


_BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def _run_session_command(session: _SessionRequest, checked: _Checked, created: list[Path], status_dir: str) -> int:
    """Run a session: in this machine's process pool, or as a Hydra sweep through the configured
    launcher (SLURM). Returns the exit code (1 when a frame failed)."""
    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.app import batch
    from octascope.results.outputs import claim_output_dir

    if _LAST_COMPOSED is None or checked.output_dir is None:
        raise ConfigError("a session needs an output folder known before it starts; give hydra.run.dir without "
                          "${hydra.job...} interpolations")
    cfg, hydra_node = _LAST_COMPOSED
    cfg = dict(cfg, source=dict(cfg.get("source") or {}, path=session.pattern))
    options = batch.batch_options(cfg)
    session_dir = Path(checked.output_dir)
    launcher = str((hydra_node.get("launcher") or {}).get("_target_") or _BASIC_LAUNCHER)
    frames = session.frames
    if options.dry_run:
        plan = batch.plan_session(frames, cfg, session_dir, options)
        for i, (f, d) in enumerate(zip(plan.frames, plan.done)):
            print(f"[{i + 1}/{len(frames)}] {f}" + (f"  (done before: {d['output_dir']})" if d else ""))
        todo = [f for f, d in zip(plan.frames, plan.done) if d is None]
        if launcher != _BASIC_LAUNCHER:
            params = {k: v for k, v in (hydra_node.get("launcher") or {}).items() if k != "_target_" and v is not None}
            print(f"octascope: would submit {len(todo)} job(s) through {launcher.rsplit('.', 1)[-1]} "
                  f"({', '.join(f'{k}={v}' for k, v in params.items())})")
            print("  jobs: octascope --multirun " + " ".join(batch.sweep_overrides(todo, session_dir)) if todo else "  jobs: none")
            preview = batch.sbatch_preview(hydra_node.get("launcher") or {}, len(todo), session_dir / "frames" / ".submitit")\
                if "slurm" in launcher.lower() and todo else None
            if preview:
                print("  the job array's sbatch header (submitit):\n" + "\n".join("    " + line for line in preview.splitlines()))
        else:
            print(f"octascope: would analyse {len(todo)} frame(s) into {session_dir} "
                  f"({len(frames) - len(todo)} done before)")
        # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
        from octascope.results.outputs import remove_created_dirs

        remove_created_dirs(created)
        return 0
    claim_output_dir(session_dir, {"run_id": os.environ.get(_RUN_ID_ENV), "session": session.pattern}, created=created)
    if launcher != _BASIC_LAUNCHER:
        return _run_session_sweep(session, cfg, session_dir, options, status_dir)
    record = batch.run_session(cfg, frames, session_dir)
    print(_session_summary(record, session_dir), flush=True)
    if record["failed"]:
        _say_error(f"{record['failed']} of {record['frames']} frames failed (see the lines above); the others are in "
                   f"{session_dir / batch.SESSION_CSV}; fix them and run the same command again (done frames are skipped)")
        return 1
    return 0


def _session_summary(record: dict[str, Any], session_dir: Path) -> str:
    lines = [f"octascope: session of {record['frames']} frame(s) in {record['wall_s']:.1f} s: {record['ok']} analysed"
             f" ({record['frames_per_min']:.1f} frames/min, {record.get('workers', 1)} worker(s)), "
             f"{record['skipped']} done before, {record['failed']} failed",
             f"  table: {session_dir / 'session.csv'}"]
    if (session_dir / "session.html").is_file():
        lines.append(f"  report: {session_dir / 'session.html'}")
    if record.get("mlflow_parent_run_id"):
        lines.append(f"  MLflow: parent run {record['mlflow_parent_run_id']} (one child run per frame)")
    return "\n".join(lines)


def _run_session_sweep(session: _SessionRequest, cfg: dict[str, Any], session_dir: Path, options: Any,
                       status_dir: str) -> int:
    """A session as a Hydra sweep through the configured launcher: one job per frame not done before,
    the jobs' folders ``<session>/frames/<n>``, then the session table."""
    # lazy: Hydra (~0.1 s to import), only for a run, not for --help or plugins
    import hydra

    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.app import batch

    t0 = time.perf_counter()
    plan = batch.plan_session(session.frames, cfg, session_dir, options)
    todo = [f for f, d in zip(plan.frames, plan.done) if d is None]
    track = dict(cfg.get("tracking") or {})
    parent = batch._start_parent(track, session_dir, len(todo)) if track.get("enabled", True) and todo else None
    if todo:
        flags, overrides, _names = _split_argv(session.argv)
        rest = [o for o in overrides if not o.startswith("source.path=")]
        extra = [f"tracking.parent_run_id={parent}"] if parent else []
        sys.argv = [sys.argv[0], *flags, "--multirun", *rest, *batch.sweep_overrides(todo, session_dir), *extra]
        try:
            hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(_hydra_task)()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
    failed = {int(p.stem): p.read_text() for p in Path(status_dir).glob("*.failed") if p.stem.isdigit()}
    record = batch.collect_sweep(plan, session_dir, cfg, failed, time.perf_counter() - t0)
    if parent:
        batch._end_parent(track, parent, dict(record, frames_per_min=0.0), session_dir, failed=False)
    print(f"octascope: session of {len(session.frames)} frame(s) through the launcher: {record['ok']} analysed, "
          f"{len(session.frames) - len(todo)} done before, {record['failed']} failed; table: {session_dir / 'session.csv'}"
          + (f"; report: {session_dir / 'session.html'}" if (session_dir / "session.html").is_file() else ""))
    return 1 if record["failed"] else 0


#: wall time of the command's phases [s] (with :data:`octascope.app.run.PHASES`: ``OCTASCOPE_TIMING=1``)
_PHASES: dict[str, float] = {}


def _print_timing(t0: float) -> None:
    """One stderr line: the command's wall time and its phases (start-up = interpreter and imports
    before :func:`main`)."""

    phases = dict(_PHASES)
    try:
        # lazy: psutil (~5 ms to import), not loaded at start-up
        import psutil

        phases["startup"] = time.time() - psutil.Process().create_time() - (time.perf_counter() - t0)
    except Exception:
        pass
    phases.update(PHASES)
    phases["wall"] = time.perf_counter() - t0 + phases.get("startup", 0.0)
    print(f"octascope: wall time {time.perf_counter() - t0:.1f} s; phases " + json.dumps({k: round(v, 3) for k, v in phases.items()}),
          file=sys.stderr)


def _prepare_output_dir(checked: _Checked) -> list[Path]:
    """Create the command's output folder (run or sweep) before Hydra does, so that a folder that
    cannot be created is one line, and record the folders created for the jobs (:data:`_CREATED_ENV`)."""

    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.results.outputs import make_output_dir

    if checked.output_dir is None or not _pin_output_dir(checked):
        return []
    key = "hydra.sweep.dir" if checked.multirun else "hydra.run.dir"
    created = make_output_dir(checked.output_dir, key)
    os.environ[_CREATED_ENV] = json.dumps([str(p) for p in created])
    return created


def _release_output_dir(checked: _Checked, created: list[Path], started: float) -> None:
    """After the command: remove the folders it created and left empty (a run stopped before its job
    claimed the folder; a sweep whose every job failed or was stopped keeps no ``multirun.yaml``)."""
    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.results.outputs import release_sweep_dir, remove_created_dirs

    if checked.output_dir is None:
        return
    if checked.multirun:
        release_sweep_dir(checked.output_dir, created, since=started)
    else:
        remove_created_dirs(created)


if __name__ == "__main__":
    main()
