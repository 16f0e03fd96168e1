"""experiments/benchmarks/gpu.py runs on a machine without CUDA: ``auto`` falls back to the CPU and
the table names every stage asked for, with a CPU figure and no GPU one."""

from __future__ import annotations

import pytest

from experiment_scripts import load_script


def _load():
    return load_script("experiments/benchmarks/gpu.py", "gpu_benchmark")


@pytest.mark.slow
def test_gpu_benchmark_quick_on_cpu(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.md"
    assert _load().main(["--quick", "--stages", "locator", "dip", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Command: `python experiments/benchmarks/gpu.py --quick --stages locator dip" in text
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
    for stage in ("locator", "dip"):
        cells = rows[stage]
        assert float(cells[3]) > 0  # CPU figure measured
        assert cells[4] == "—"  # no GPU column without CUDA
    assert "RMSE" in rows["locator"][6]
    rmse_pm = float(rows["locator"][6].split()[1])
    assert rmse_pm < 12.0  # 300 e/Å² at 0.168 Å/px: ~8 pm (docs/benchmarks.md); a broken fit is far off
