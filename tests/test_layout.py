"""The source-root layout must never shadow the standard-library module ``platform``."""

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
