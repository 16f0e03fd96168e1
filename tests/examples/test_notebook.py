"""examples/analyse_a_frame.ipynb runs top to bottom on the bundled example (so it cannot rot)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "analyse_a_frame.ipynb"


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat not installed (pip install -e '.[test]')")
    nbclient = pytest.importorskip("nbclient", reason="nbclient not installed (pip install -e '.[test]')")
    pytest.importorskip("ipykernel", reason="ipykernel not installed (pip install -e '.[test]')")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError with the cell and its traceback when a cell fails
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(str(o.get("text", "")) + str((o.get("data") or {}).get("text/plain", "")) for o in outputs)
    # it read the example, analysed it, wrote the report and compared the two settings
    assert "bundled example cspbi3_qd" in text and "report.html" in text
    assert "shell 1 cell" in text and "shell 3 cells (default)" in text
    images = [o for o in outputs if "image/png" in (o.get("data") or {})]
    assert len(images) >= 3  # the network overlay, the θ maps, the histograms
