"""experiments/tools/function_imports.py: every import inside a function in platform/ and plugins/
that pulls in octascope or octascope_plugins carries a reason comment (internal imports belong at
module level; docs/ARCHITECTURE.md, "The import layers")."""

from __future__ import annotations

from experiment_scripts import load_script


def _load():
    return load_script("experiments/tools/function_imports.py", "function_imports")


def test_scanner_tells_internal_from_third_party_and_finds_reasons(tmp_path):
    fi = _load()
    src = tmp_path / "platform" / "pkg.py"
    src.parent.mkdir()
    src.write_text(
        "import os\n\n"
        "def f():\n"
        "    from octascope.core.errors import InputError\n"
        "    import json  # noqa: F401\n"
        "    # lazy: torch is heavy\n"
        "    import torch\n"
        "    from octascope_plugins.denoise import _training\n\n"
        "    return InputError, json, torch, _training\n\n"
        "class C:\n"
        "    def m(self):\n"
        "        if True:\n"
        "            from octascope.sim import imaging  # lazy: abTEM\n"
        "        return imaging\n"
    )
    found = fi.scan_file(src, tmp_path)
    got = [(f.function, f.module, f.internal, f.reason) for f in found]
    assert got == [
        ("f", "octascope.core.errors", True, None),
        ("f", "json", False, None),  # a noqa is no reason
        ("f", "torch", False, "lazy: torch is heavy"),
        ("f", "octascope_plugins.denoise", True, "lazy: torch is heavy"),  # one comment covers the group
        ("C.m", "octascope.sim", True, "lazy: abTEM"),
    ]
    assert fi.counts(found) == {"internal_with_reason": 2, "internal_without_reason": 1,
                                "third_party_with_reason": 1, "third_party_without_reason": 1}


def test_internal_imports_inside_functions_say_why():
    fi = _load()
    bare = [str(f) for f in fi.scan() if f.internal and f.reason is None]
    assert not bare, "move these to module level, or say why they must stay lazy:\n" + "\n".join(bare)
