"""What a configuration may do: closed lists, checked before Hydra acts on a configuration.

A configuration (config files, experiment files, command-line overrides) selects registered
plugins and sets their parameters; it must not make octascope, Hydra or a child program run
code or write files of the configuration's choosing. Hydra's own node (``hydra.*``) can do
both, so what it may hold is a closed list:

* environment variables a job may set (``hydra.job.env_set``, ``hydra.job.env_copy``):
  :data:`ENV_ALLOWED`, each with the form of its value (thread counts are numbers, the
  matplotlib backend is a built-in one);
* logging configurations (``hydra.job_logging``, ``hydra.hydra_logging``): formatters with a
  format string, stream handlers writing to stdout or stderr, levels; nothing that imports
  (``()``, ``class`` outside the two handlers, ``ext://`` other than ``sys.stdout``/``sys.stderr``,
  ``cfg://``) and no file handlers;
* interpolation resolvers: :data:`RESOLVERS_ALLOWED` (``oc.env``, ``oc.create``,
  ``oc.decode`` and the like are refused: they read the environment or build new config nodes);
* config search paths: folders only (``file://``; ``pkg://`` imports a Python module);
* launcher settings that run commands (``setup``, ``srun_args``, ``python`` of the SLURM launcher)
  and a ``pre_dispatch`` that is not a plain number of jobs.

YAML files are parsed under a budget (:func:`check_yaml_text`): at most :data:`YAML_MAX_BYTES`
and :data:`YAML_MAX_NODES` nodes once aliases are expanded, so a "billion laughs" file is refused
in milliseconds instead of filling the memory; interpolations are sized the same way
(:func:`check_interpolations`) before anything resolves them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any, Iterator
from pathlib import Path
import io

from octascope.core.errors import ConfigError

_THREADS = re.compile(r"\d{1,4}")
#: environment variables a job may set, and the form their value must have
ENV_ALLOWED: dict[str, re.Pattern[str]] = {
    **{name: _THREADS for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                                   "NUMEXPR_MAX_THREADS", "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS",
                                   "OCTASCOPE_FIGURE_WORKERS")},
    # matplotlib's built-in non-interactive backends: 'module://x' would import x
    "MPLBACKEND": re.compile(r"(?i)agg|pdf|svg|ps|cairo|pgf|template"),
    "CUDA_VISIBLE_DEVICES": re.compile(r"[A-Za-z0-9,\-]{0,400}"),
    "CUBLAS_WORKSPACE_CONFIG": re.compile(r":\d{1,6}:\d{1,6}"),
}
#: interpolation resolvers a configuration may use: the output folder's time and id, Hydra's own node
RESOLVERS_ALLOWED = ("now", "octascope_run_id", "hydra")
#: logging: the handler classes, streams and keys a logging configuration may use
_LOG_HANDLER_CLASSES = ("logging.StreamHandler", "logging.NullHandler")
_LOG_STREAMS = ("ext://sys.stdout", "ext://sys.stderr")
_LOG_KEYS = {
    "": {"version", "formatters", "handlers", "root", "loggers", "disable_existing_loggers", "incremental", "filters"},
    "formatter": {"format", "datefmt", "style", "validate"},
    "handler": {"class", "formatter", "level", "stream"},
    "logger": {"level", "handlers", "propagate"},
}
_LEVELS = ("CRITICAL", "FATAL", "ERROR", "WARNING", "WARN", "INFO", "DEBUG", "NOTSET")
#: launcher keys that run a command or a program (Hydra's submitit launcher writes them into the job script)
_LAUNCHER_COMMAND_KEYS = ("setup", "srun_args", "python")
_PRE_DISPATCH = re.compile(r"all|\d{1,6}|\d{0,4}(\.\d{1,3})?\s*\*\s*n_jobs")

#: largest config/experiment YAML file read [bytes]
YAML_MAX_BYTES = 1 << 20
#: most YAML nodes a file may expand to (aliases counted as often as they are used)
YAML_MAX_NODES = 200_000
#: longest text an interpolation may expand to [characters]
INTERPOLATION_MAX_CHARS = 1_000_000


def _fix_env() -> str:
    return f"a config may set only {', '.join(ENV_ALLOWED)}"


def check_env_set(env: Any, where: str = "hydra.job.env_set") -> None:
    """Refuse environment variables a job may not set, or values not of their variable's form.

    Parameters
    ----------
    env : mapping
        ``hydra.job.env_set`` (name -> value), resolved.
    where : str
        The config path named in the message.

    Raises
    ------
    ConfigError
        A name outside :data:`ENV_ALLOWED` (``GIT_CONFIG_*``, ``LD_PRELOAD``, ``PATH`` ... make child
        programs or Python run code), or a value of the wrong form (``MPLBACKEND=module://x``).
    """
    if env is None:
        return
    if not isinstance(env, Mapping):
        raise ConfigError(f"{where} must be a mapping of variable names to values, got {env!r}; remove it")
    bad = sorted(str(k) for k in env if str(k) not in ENV_ALLOWED)
    if bad:
        raise ConfigError(f"{where} sets {bad}, which a config may not set (variables like these make child programs "
                          f"or Python run code); remove them ({_fix_env()}; set others in your shell)")
    for name, value in env.items():
        text = "" if value is None else str(value)
        if isinstance(value, (Mapping, list, tuple)) or not ENV_ALLOWED[str(name)].fullmatch(text):
            raise ConfigError(f"{where}.{name}={text!r} is not a valid value for {name}; give "
                              f"{_ENV_FORM.get(str(name), 'a number')}")


_ENV_FORM = {"MPLBACKEND": "one of agg, pdf, svg, ps, cairo, pgf", "CUDA_VISIBLE_DEVICES": "device numbers or GPU ids, "
             "comma-separated", "CUBLAS_WORKSPACE_CONFIG": ":SIZE:COUNT (e.g. :4096:8)"}


def check_env_copy(names: Any, where: str = "hydra.job.env_copy") -> None:
    """Refuse ``hydra.job.env_copy`` entries outside :data:`ENV_ALLOWED` (a remote job would get them)."""
    if not names:
        return
    names = [names] if isinstance(names, str) else list(names)
    bad = sorted(str(n) for n in names if str(n) not in ENV_ALLOWED)
    if bad:
        raise ConfigError(f"{where} copies {bad} into the jobs; remove them ({_fix_env()})")


def check_logging_config(node: Any, where: str) -> None:
    """Refuse a logging configuration that is more than formatters, stream handlers and levels.

    Python's ``logging.config.dictConfig`` imports and calls whatever a configuration names
    (``()``, ``class``, ``ext://``) and a ``FileHandler`` writes (or empties, ``mode: w``) any file;
    octascope's own configuration (``hydra/job_logging=stdout``) and Hydra's ``none`` and
    ``disabled`` use none of that.

    Raises
    ------
    ConfigError
        Naming the first key or value outside the closed list, with the fix.
    """
    if node is None:
        return
    fix = "use hydra/job_logging=stdout (octascope's default), none or disabled, or only formatters, " \
          "StreamHandler/NullHandler on ext://sys.stdout or ext://sys.stderr and levels"
    if not isinstance(node, Mapping):
        raise ConfigError(f"{where} must be a logging configuration (a mapping), got {node!r}; {fix}")
    _only_keys(node, _LOG_KEYS[""], where, fix)
    for path, key, value in _walk(node, where):
        if key == "()":
            raise ConfigError(f"'{path}' would import and call '{value}'; logging configs may not name factories: "
                              "remove it")
        if isinstance(value, str) and value.startswith(("ext://", "cfg://")) and not (
                key == "stream" and value in _LOG_STREAMS):
            raise ConfigError(f"'{path}: {value}' would import or look up a Python object; {fix}")
    if node.get("filters"):
        raise ConfigError(f"{where}.filters would import filter objects; remove them ({fix})")
    for name, fmt in _items(node.get("formatters"), f"{where}.formatters", fix):
        _only_keys(fmt, _LOG_KEYS["formatter"], f"{where}.formatters.{name}", fix)
    for name, handler in _items(node.get("handlers"), f"{where}.handlers", fix):
        here = f"{where}.handlers.{name}"
        cls = str(handler.get("class", ""))
        if cls not in _LOG_HANDLER_CLASSES:
            what = "would write (or empty) a file" if "File" in cls else "would import and call it"
            raise ConfigError(f"'{here}.class: {cls}' {what}; logging configs may use {', '.join(_LOG_HANDLER_CLASSES)} "
                              f"only: {fix}")
        _only_keys(handler, _LOG_KEYS["handler"], here, fix)
    loggers = [("root", node.get("root"))] + list(_items(node.get("loggers"), f"{where}.loggers", fix))
    for name, logger in loggers:
        if logger is None:
            continue
        here = f"{where}.{name}" if name == "root" else f"{where}.loggers.{name}"
        if not isinstance(logger, Mapping):
            raise ConfigError(f"{here} must be a mapping, got {logger!r}; {fix}")
        _only_keys(logger, _LOG_KEYS["logger"], here, fix)
        level = logger.get("level")
        if level is not None and not (isinstance(level, int) or str(level).upper() in _LEVELS):
            raise ConfigError(f"{here}.level={level!r} is not a logging level; use one of {', '.join(_LEVELS[2:])}")


def _items(node: Any, where: str, fix: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if node is None:
        return
    if not isinstance(node, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {node!r}; {fix}")
    for name, value in node.items():
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}.{name} must be a mapping, got {value!r}; {fix}")
        yield str(name), value


def _only_keys(node: Mapping[str, Any], allowed: set[str], where: str, fix: str) -> None:
    bad = sorted(str(k) for k in node if str(k) not in allowed)
    if bad:
        raise ConfigError(f"{where} has key(s) {bad}, which octascope's logging configs do not use; {fix}")


def _walk(node: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield f"{path}.{k}", str(k), v
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield f"{path}[{i}]", str(i), v
            yield from _walk(v, f"{path}[{i}]")


def check_search_path(entries: Any) -> None:
    """Refuse config search paths other than folders (``pkg://name`` imports the module ``name``)."""
    for entry in entries or []:
        text = str(entry)
        if "://" in text and not text.startswith("file://"):
            raise ConfigError(f"hydra.searchpath entry '{text}' would import a Python package to find configs; "
                              "give config folders only (file:///path, or --config-dir PATH)")


def check_launcher(node: Any) -> None:
    """Refuse launcher settings that run commands or evaluate expressions."""
    if not isinstance(node, Mapping):
        return
    for key in _LAUNCHER_COMMAND_KEYS:
        if node.get(key):
            raise ConfigError(f"hydra.launcher.{key} would run commands in every job; octascope's launchers run none: "
                              "remove it (prepare the environment before running octascope)")
    extra = node.get("additional_parameters") or {}
    for key, value in (extra.items() if isinstance(extra, Mapping) else []):
        if any(w in str(key).lower() for w in ("prolog", "epilog", "wrap", "export", "chdir")) or "\n" in str(value):
            raise ConfigError(f"hydra.launcher.additional_parameters.{key} would change what a job runs; remove it")
    pre = node.get("pre_dispatch")
    if pre is not None and not _PRE_DISPATCH.fullmatch(str(pre).strip()):
        raise ConfigError(f"hydra.launcher.pre_dispatch={pre!r} is not a number of jobs; give all, N or K*n_jobs")


#: the samplers Hydra's Optuna sweeper may build (``hydra.sweeper.sampler._target_``): the classes its
#: config groups ``hydra/sweeper/sampler=<name>`` name, nothing else
SWEEPER_SAMPLERS = frozenset(f"optuna.samplers.{name}" for name in (
    "TPESampler", "RandomSampler", "CmaEsSampler", "NSGAIISampler", "MOTPESampler", "GridSampler"))
#: sweeper keys that import a dotted path or write where the value says (Optuna: a search-space function,
#: a study database URL); refused unless empty
_SWEEPER_CODE_KEYS = ("custom_search_space", "storage")


def hydra_target_allowed(path: str, target: Any, plugins: set[str]) -> bool:
    """Whether a ``_target_`` in the ``hydra`` node may stand: an installed launcher or sweeper
    (``plugins``: their class paths) as ``hydra.launcher``/``hydra.sweeper``, or one of the Optuna
    sweeper's own samplers (:data:`SWEEPER_SAMPLERS`) as its ``sampler``."""
    if path in ("hydra.launcher._target_", "hydra.sweeper._target_"):
        return target in plugins
    if path == "hydra.sweeper.sampler._target_":
        return target in SWEEPER_SAMPLERS
    return False


def check_sweeper(node: Any) -> None:
    """Refuse sweeper settings that import code or write files of the configuration's choosing
    (the Optuna sweeper's ``custom_search_space``, a dotted path it imports and calls, and
    ``storage``, a database URL it writes to)."""
    if not isinstance(node, Mapping):
        return
    for key in _SWEEPER_CODE_KEYS:
        if node.get(key):
            raise ConfigError(f"hydra.sweeper.{key}={node.get(key)!r} would make the sweeper import code or write a "
                              "file of the configuration's choosing; remove it (the search space is hydra.sweeper.params)")


def check_output_subdir(value: Any) -> None:
    """Refuse ``hydra.output_subdir``: Hydra would write its own config copies (anywhere the value points)
    into an output folder octascope has not claimed yet."""
    if value is not None:
        raise ConfigError(f"hydra.output_subdir={value!r} would make Hydra write config copies outside octascope's "
                          "output files; remove it (each run writes its resolved config.yaml)")


# ------------------------------------------------------------------------------------------------
# interpolations: resolvers and sizes
# ------------------------------------------------------------------------------------------------

_INTERP = re.compile(r"(?<!\\)\$\{")


def resolver_names(text: str) -> list[str]:
    """The names of the resolvers an OmegaConf string calls (``${oc.env:X}`` -> ``['oc.env']``), nested
    calls included; ``[]`` for plain text and node interpolations (``${a.b}``)."""
    if not _INTERP.search(text):
        return []
    # lazy: OmegaConf (~30 ms to import), only for a run, not for --help or plugins
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser
    from omegaconf.grammar_parser import parse

    try:
        tree = parse(text, parser_rule="singleElement", lexer_mode="VALUE_MODE")
    except Exception:  # not valid interpolation syntax: OmegaConf refuses it when resolving, calling nothing
        return []
    names: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            names.append(node.resolverName().getText())
        stack.extend(node.getChildren() if hasattr(node, "getChildren") else [])
    return names


def check_interpolations(raw: Mapping[str, Any], *, limit: int = INTERPOLATION_MAX_CHARS) -> None:
    """Refuse resolvers outside :data:`RESOLVERS_ALLOWED` and interpolations that expand past ``limit``
    characters (``${a}${a}...`` nested a few times), before anything resolves them.

    Parameters
    ----------
    raw : mapping
        The composed configuration, unresolved (``OmegaConf.to_container(cfg, resolve=False)``),
        with its ``hydra`` node.
    limit : int
        Longest expansion of one value [characters].
    """
    leaves = dict(_leaves(raw, ""))
    for path, value in leaves.items():
        if isinstance(value, str):
            bad = [n for n in resolver_names(value) if n not in RESOLVERS_ALLOWED]
            if bad:
                raise ConfigError(f"'{path}' calls the resolver '{bad[0]}' (in {value[:80]!r}), which octascope does not "
                                  f"allow (only {', '.join(RESOLVERS_ALLOWED)}); write the value itself")
    sizes: dict[str, int] = {}
    for path, value in leaves.items():
        if isinstance(value, str) and _INTERP.search(value):
            size = _expanded(path, leaves, sizes, set(), limit)
            if size > limit:
                raise ConfigError(f"'{path}' expands to more than {limit} characters through nested interpolations; "
                                  "write the value without repeating interpolations")


def _leaves(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        yield path, node
        for k, v in node.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, (list, tuple)):
        yield path, node
        for i, v in enumerate(node):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, node


_REF = re.compile(r"(?<!\\)\$\{([^${}]*)\}")


def _expanded(path: str, leaves: Mapping[str, Any], sizes: dict[str, int], active: set[str], limit: int) -> int:
    """Characters the value at ``path`` expands to (containers: the sum of their values), memoised."""
    if path in sizes:
        return sizes[path]
    if path in active:  # a cycle: OmegaConf refuses it when resolving
        return 0
    value = leaves.get(path)
    active.add(path)
    if isinstance(value, Mapping):
        keys = [f"{path}.{k}" if path else str(k) for k in value]
    elif isinstance(value, (list, tuple)):
        keys = [f"{path}[{i}]" for i in range(len(value))]
    else:
        keys = []
    if keys:
        size = 2
        for k in keys:
            size += _expanded(k, leaves, sizes, active, limit)
            if size > limit:
                break
    elif isinstance(value, str):
        size = len(_REF.sub("", value))
        for ref in _REF.findall(value):
            target = _target_path(ref.strip(), path)
            size += _expanded(target, leaves, sizes, active, limit) if target in leaves else len(ref) + 3
            if size > limit:
                break
    else:
        size = len(str(value))
    active.discard(path)
    sizes[path] = size
    return size


def _target_path(ref: str, here: str) -> str:
    """The absolute path of a node interpolation ``ref`` written in the value at ``here``."""
    if ":" in ref:
        name, _, arg = ref.partition(":")
        return f"hydra.{arg.strip()}" if name.strip() == "hydra" else ""
    if not ref.startswith("."):
        return ref
    dots = len(ref) - len(ref.lstrip("."))
    parent = here
    for _ in range(dots):
        parent = re.sub(r"(\.[^.\[\]]*|\[\d+\])$", "", parent) if ("." in parent or "[" in parent) else ""
    rest = ref[dots:]
    return f"{parent}.{rest}" if parent and rest else (rest or parent)


# ------------------------------------------------------------------------------------------------
# YAML files: size and alias expansion
# ------------------------------------------------------------------------------------------------


def check_yaml_text(text: str, name: str, *, max_bytes: int = YAML_MAX_BYTES, max_nodes: int = YAML_MAX_NODES) -> None:
    """Refuse a YAML text that is too large or that expands (through ``&anchor``/``*alias``) to too many nodes.

    The text is composed into YAML's node graph, where an alias is the same node object as its
    anchor (memory linear in the text), and the nodes are counted as often as they are used,
    memoised by node: a "billion laughs" file costs milliseconds.

    Raises
    ------
    ConfigError
        Too large, too many nodes once expanded, a recursive alias, nesting too deep, or not YAML.
    """
    # lazy: PyYAML (~10 ms to import), not loaded at start-up
    import yaml

    if len(text.encode("utf-8", "replace")) > max_bytes:
        raise ConfigError(f"config file {name} is larger than {max_bytes // 1024} kB; octascope configs are small: "
                          "check the file (split it, or remove generated data from it)")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise ConfigError(f"config file {name} is nested too deeply to read; check the file") from None
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())[:200]
        raise ConfigError(f"config file {name} is not valid YAML ({first}); fix the file") from None
    if root is None:
        return
    counts: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:  # iterative post-order count, memoised by node identity
        node, done = stack.pop()
        children = _yaml_children(node)
        if done:
            active.discard(id(node))
            counts[id(node)] = min(max_nodes + 1, 1 + sum(counts[id(c)] for c in children))
            continue
        if id(node) in counts:
            continue
        if id(node) in active:
            raise ConfigError(f"config file {name} holds a recursive alias (an anchor used inside itself); fix the file")
        active.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in active:
                raise ConfigError(f"config file {name} holds a recursive alias (an anchor used inside itself); fix the file")
            if id(child) not in counts:
                stack.append((child, False))
    if counts[id(root)] > max_nodes:
        raise ConfigError(f"config file {name} expands to more than {max_nodes} values through YAML aliases "
                          "(&anchor/*alias); write the values out or use fewer aliases")


def _yaml_children(node: Any) -> list[Any]:
    # lazy: PyYAML (~10 ms to import), not loaded at start-up
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


@contextlib.contextmanager
def guarded_yaml_loading() -> Iterator[None]:
    """Within this context, every YAML file OmegaConf (and so Hydra) loads is read at most
    :data:`YAML_MAX_BYTES` + 1 bytes and checked by :func:`check_yaml_text` before it is parsed."""

    # lazy: OmegaConf (~30 ms to import), only for a run, not for --help or plugins
    from omegaconf import OmegaConf

    saved = OmegaConf.__dict__["load"]
    original = OmegaConf.load

    def load(file_: Any) -> Any:
        if isinstance(file_, (str, Path)):
            name = str(file_)
            with open(file_, encoding="utf-8") as fh:
                text = fh.read(YAML_MAX_BYTES + 1)
        else:
            name = str(getattr(file_, "name", "<stream>"))
            text = file_.read(YAML_MAX_BYTES + 1)
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        check_yaml_text(text, name)
        return original(io.StringIO(text))

    OmegaConf.load = staticmethod(load)  # type: ignore[method-assign]
    try:
        yield
    finally:
        OmegaConf.load = saved  # type: ignore[method-assign]
