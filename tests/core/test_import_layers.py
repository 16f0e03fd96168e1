"""The source-root layout must never shadow the standard-library module ``platform``."""

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stdlib_platform_not_shadowed_from_repo_root():
    out = subprocess.run(
        [sys.executable, "-c", "import platform, octascope; print(platform.__file__); print(platform.python_version())"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(out[0]).resolve().parent == stdlib
    assert out[1] == ".".join(map(str, sys.version_info[:3]))


def test_no_init_in_source_roots():
    assert (ROOT / "platform" / "octascope" / "__init__.py").exists()
    assert not (ROOT / "platform" / "__init__.py").exists()
    assert not (ROOT / "plugins" / "__init__.py").exists()


def test_imports_point_down_the_layers_and_never_in_a_circle():
    """The import-linter contracts of pyproject.toml ([tool.importlinter]): the layers
    app > plugins > results > analysis | input > sim > core, and no cycle among the modules of any
    package. An upward import or a cycle fails here with import-linter's report of the chain."""
    lint = Path(sys.executable).with_name("lint-imports")  # import-linter's command (the test extra)
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and "2 kept" in proc.stdout
