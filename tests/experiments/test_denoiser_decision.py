"""The default-denoiser rule (experiments/benchmarks/denoiser_decision.py, docs/denoisers.md) on
small hand-made tables with a known outcome."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.experiment_scripts import load_script

decision = load_script("experiments/benchmarks/denoiser_decision.py", "denoiser_decision")


def _runs(tmp_path, better: str):
    """Two candidates on two single-particle rows (3 seeds) and the field; ``better`` wins every
    measure by far more than the seed spread, both keep field precision >= 0.99."""
    rows = []
    for image, dose in (("cspbi3", "300"), ("carbon", "100")):
        for cfg, cand in (("default", "none"), ("best", "absf")):
            good = cand == better
            for seed in range(3):
                rows.append({"image": image, "dose": dose, "config": cfg, "seed": seed, "ok": True,
                             "detection_f1": (0.95 if good else 0.85) + 0.001 * seed,
                             "detection_precision": 0.97, "octahedra_true": 36,
                             "octahedra_matched": 34 if good else 20, "theta12_error_deg": 1.2 if good else 1.9})
    for cfg in ("default", "best"):
        rows.append({"image": "field", "dose": "300", "config": cfg, "seed": 0, "ok": True, "detection_f1": 0.99,
                     "detection_precision": 0.995, "octahedra_true": 400, "octahedra_matched": 390,
                     "theta12_error_deg": 0.2})
    path = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def _calibration(tmp_path, name: str, sd_z: float, cover: float):
    path = tmp_path / f"cal-{name}.csv"
    pd.DataFrame([{"image": "static", "dose": 300.0, "quantity": q, "stat_sd_z": sd_z, "stat_cov1": cover}
                  for q in ("position", "θ1/θ2", "θ3", "mean θ3 core")]).to_csv(path, index=False)
    return str(path)


def _decide(argv, capsys):
    assert decision.main(argv) == 0
    return capsys.readouterr().out


def test_the_more_accurate_candidate_wins(tmp_path, capsys):
    out = _decide([_runs(tmp_path, better="absf")], capsys)
    assert "**Decision: `absf`.**" in out
    assert "- none: " in out and "guard violation" in out


def test_a_candidate_whose_error_bars_do_not_hold_is_not_the_default(tmp_path, capsys):
    runs = _runs(tmp_path, better="absf")
    out = _decide([runs, "--calibration", f"none={_calibration(tmp_path, 'none', 1.02, 0.68)}",
                   "--calibration", f"absf={_calibration(tmp_path, 'absf', 1.25, 0.60)}"], capsys)
    assert "**Decision: `none`.**" in out
    assert "absf, error bars: 3 calibration miss(es)" in out  # positions, θ1/θ2, θ3; the mean is not a guard
    out = _decide([runs, "--calibration", f"none={_calibration(tmp_path, 'none', 1.02, 0.68)}",
                   "--calibration", f"absf={_calibration(tmp_path, 'absf', 1.10, 0.66)}"], capsys)
    assert "**Decision: `absf`.**" in out


def test_a_calibration_table_without_the_static_case_is_refused(tmp_path):
    path = tmp_path / "cal.csv"
    pd.DataFrame([{"image": "md", "dose": 300.0, "quantity": "position", "stat_sd_z": 1.0, "stat_cov1": 0.68}]).to_csv(path)
    with pytest.raises(SystemExit, match="no static-case rows"):
        decision.calibration_misses(str(path))
