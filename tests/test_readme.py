"""The README's example output is what ``octascope`` prints on the bundled example.

The test runs the README's command (tracking off, no figures, in a temporary folder) and compares
every line of the README's example block with the printed line. Three parts differ from run to
run and are compared up to the variable part: the time in the first line ("in 5.4 s"), the output
folder ("outputs: ...") and the MLflow run (not printed with tracking off; its line must keep the
command's form).

``python tests/test_readme.py`` runs the real default command (tracking and figures on) in a
temporary folder and rewrites the block with its output.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = "<!-- example output:"

TIME = re.compile(r" in \d+(\.\d+)? s$")
OUTPUTS = re.compile(r"^  outputs: \S+$")
MLFLOW = re.compile(r"^  MLflow run [0-9a-f]+: open with  mlflow ui --backend-store-uri \S+  then  "
                    r"http://127\.0\.0\.1:5000/#/experiments/\d+\?workflowType=machine_learning$")


def readme_block(text: str) -> tuple[int, int]:
    """Line numbers (start, end) of the example block's content: the fenced block after the marker."""
    lines = text.splitlines()
    at = next(k for k, line in enumerate(lines) if line.startswith(MARKER))
    start = next(k for k in range(at + 1, len(lines)) if lines[k].startswith("```")) + 1
    end = next(k for k in range(start, len(lines)) if lines[k].startswith("```"))
    return start, end


def example_lines(text: str) -> list[str]:
    start, end = readme_block(text)
    return text.splitlines()[start:end]


def comparable(line: str) -> str:
    """The line with its run-dependent part replaced."""
    if OUTPUTS.match(line):
        return "  outputs: <folder>"
    return TIME.sub(" in <t> s", line)


def test_readme_example_output_is_what_the_command_prints(in_tmp, capsys):
    from cli_run import run_cli

    shown = example_lines(README.read_text(encoding="utf-8"))
    assert shown, "README has no example output block"
    mlflow_lines = [line for line in shown if line.startswith("  MLflow run")]
    assert len(mlflow_lines) == 1 and MLFLOW.match(mlflow_lines[0]), f"README's MLflow line: {mlflow_lines}"
    assert shown[-1] == mlflow_lines[0], "the MLflow line is the last line the command prints"
    assert TIME.search(shown[0]) and any(OUTPUTS.match(line) for line in shown)

    code, out, err = run_cli(["tracking.enabled=false", "progress=false", "figure_formats=[]"], capsys)
    assert code == 0, err
    printed = out.rstrip("\n").splitlines()
    assert (in_tmp / "outputs").is_dir()

    expected = [comparable(line) for line in shown if line not in mlflow_lines]
    got = [comparable(line) for line in printed]
    assert got == expected, (
        "README.md's example output is stale; run `python tests/test_readme.py` to regenerate it. Printed now:\n"
        + out)


def rewrite_readme() -> None:
    """Run the default command (tracking and figures on) in a temporary folder and put its summary
    into the README's example block."""
    with tempfile.TemporaryDirectory(prefix="octascope-example-") as tmp:
        proc = subprocess.run([sys.executable, "-m", "octascope"], cwd=tmp, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"octascope failed (exit {proc.returncode}):\n{proc.stderr}")
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    start, end = readme_block(text)
    lines[start:end] = proc.stdout.rstrip("\n").splitlines()
    README.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(proc.stdout, end="")


if __name__ == "__main__":
    rewrite_readme()
