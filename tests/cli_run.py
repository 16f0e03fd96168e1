"""Run the ``octascope`` command in-process for the CLI tests."""

from __future__ import annotations

from typing import Any, Iterable

from octascope.app.cli import main


def run_cli(args: Iterable[str], capsys: Any) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``octascope ARGS``."""
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err
