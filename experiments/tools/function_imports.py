"""List the import statements inside function bodies in platform/ and plugins/.

Each import is internal (``octascope``, ``octascope_plugins``) or third-party (anything else;
the standard library counts as third-party here), and carries a reason or not: a comment on the
import line, or a comment line directly above the run of consecutive import statements it belongs
to (one comment may cover a group). ``# noqa`` and ``# type: ignore`` alone are not reasons.

Usage::

    python experiments/tools/function_imports.py            # counts
    python experiments/tools/function_imports.py --list     # every import, one line each
    python experiments/tools/function_imports.py --list --internal --no-reason
    python experiments/tools/function_imports.py --check    # exit 1 if an internal import
                                                            # without a reason is found

The rule (docs/ARCHITECTURE.md, "The import layers"): internal imports at module level; an import
inside a function only for a heavy optional library, with a comment saying why.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("platform", "plugins")
INTERNAL = ("octascope", "octascope_plugins")
_NOT_A_REASON = re.compile(r"^\s*(noqa\b.*|type:\s*ignore\b.*|pragma\b.*)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class FunctionImport:
    path: str  # relative to the repository root
    line: int
    function: str
    module: str
    internal: bool
    reason: str | None

    def __str__(self) -> str:
        kind = "internal" if self.internal else "third-party"
        why = f"  # {self.reason}" if self.reason else "  (no reason)"
        return f"{self.path}:{self.line}: {self.function}: {self.module} [{kind}]{why}"


def _comment(text: str) -> str | None:
    """The comment of one source line when it is a reason, else None."""
    if "#" not in text:
        return None
    # the first '#' outside a string literal; import lines have no strings, so a plain split works
    body = text.split("#", 1)[1].strip()
    # drop a trailing noqa/type: ignore from a real comment
    body = re.split(r"\s*#\s*", body)[0].strip()
    return None if _NOT_A_REASON.match(body) else body


def _modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative import: always internal here
        return ["." * node.level + (node.module or "")]
    return [node.module or ""]


def _is_internal(module: str) -> bool:
    return module.startswith(".") or module.split(".")[0] in INTERNAL


def scan_file(path: Path, root: Path = ROOT) -> list[FunctionImport]:
    """Every import statement inside a function body of one file."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source, filename=str(path))
    found: list[FunctionImport] = []

    def visit_body(body: list[ast.stmt], function: str) -> None:
        # statements of one block in order, so runs of consecutive imports can share one comment
        previous_import_end: int | None = None
        group_reason: str | None = None
        for stmt in body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                start, end = stmt.lineno, stmt.end_lineno or stmt.lineno
                own = next((c for c in (_comment(t) for t in lines[start - 1:end]) if c), None)
                above = _comment(lines[start - 2]) if start >= 2 and lines[start - 2].strip().startswith("#") else None
                if previous_import_end is not None and start == previous_import_end + 1 and not above:
                    inherited = group_reason
                else:
                    inherited = None
                    group_reason = above
                reason = own or above or inherited
                if above:
                    group_reason = above
                for module in _modules(stmt):
                    found.append(FunctionImport(str(path.relative_to(root)), start, function, module,
                                                _is_internal(module), reason))
                previous_import_end = end
            else:
                previous_import_end = None
                group_reason = None
            visit(stmt, function)

    def visit(node: ast.stmt, function: str | None, prefix: str = "") -> None:
        """``function``: the enclosing function's name (None outside functions); ``prefix``: the
        enclosing classes' names for a method's name."""
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            visit_body(node.body, prefix + node.name if function is None else f"{function}.{prefix}{node.name}")
            return
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                visit(stmt, function, f"{prefix}{node.name}.")
            return
        blocks = [getattr(node, name, None) for name in ("body", "orelse", "finalbody")]
        blocks += [h.body for h in getattr(node, "handlers", None) or []]
        blocks += [c.body for c in getattr(node, "cases", None) or []]
        for block in blocks:
            if not (isinstance(block, list) and block and isinstance(block[0], ast.stmt)):
                continue
            if function is None:  # module or class level: only the functions inside count
                for stmt in block:
                    visit(stmt, None, prefix)
            else:
                visit_body(block, function)

    for stmt in tree.body:
        visit(stmt, None)
    return found


def scan(root: Path = ROOT) -> list[FunctionImport]:
    """Every import inside a function in the source roots, sorted by file and line."""
    out: list[FunctionImport] = []
    for source_root in SOURCE_ROOTS:
        for path in sorted((root / source_root).rglob("*.py")):
            out.extend(scan_file(path, root))
    return out


def counts(found: list[FunctionImport]) -> dict[str, int]:
    return {
        "internal_with_reason": sum(f.internal and f.reason is not None for f in found),
        "internal_without_reason": sum(f.internal and f.reason is None for f in found),
        "third_party_with_reason": sum(not f.internal and f.reason is not None for f in found),
        "third_party_without_reason": sum(not f.internal and f.reason is None for f in found),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print every import inside a function")
    parser.add_argument("--internal", action="store_true", help="only internal imports")
    parser.add_argument("--third-party", action="store_true", help="only third-party imports")
    parser.add_argument("--no-reason", action="store_true", help="only imports without a reason")
    parser.add_argument("--by-file", action="store_true", help="counts per file")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when an internal import inside a function has no reason")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    found = scan(args.root)
    shown = [f for f in found
             if (not args.internal or f.internal) and (not args.third_party or not f.internal)
             and (not args.no_reason or f.reason is None)]
    if args.list:
        for f in shown:
            print(f)
    if args.by_file:
        per: dict[str, int] = {}
        for f in shown:
            per[f.path] = per.get(f.path, 0) + 1
        for path, n in sorted(per.items(), key=lambda kv: -kv[1]):
            print(f"{n:4d}  {path}")
    for key, value in counts(found).items():
        print(f"{key}: {value}")
    if args.check:
        bad = [f for f in found if f.internal and f.reason is None]
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
