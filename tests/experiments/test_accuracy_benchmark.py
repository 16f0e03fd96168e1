"""experiments/benchmarks/accuracy.py: the scores it adds to the accuracy metric, and its table."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from experiment_scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("experiments/benchmarks/accuracy.py", "accuracy_benchmark")


def _truth_octahedra():
    # 2 Br-rich (br 1.0, 0.5), 2 I-only, 1 mixed below the threshold (0.25): θ3 known
    return pd.DataFrame({"x_A": [0.0, 6.0, 12.0, 18.0, 24.0], "y_A": 0.0,
                         "theta1_deg": [4.0, 5.0, 8.0, 10.0, 7.0], "theta2_deg": [6.0, 5.0, 10.0, 10.0, 7.0],
                         "theta3_deg": [5.0, 5.0, 9.0, 10.0, 7.0], "br_fraction": [1.0, 0.5, 0.0, 0.0, 0.25]})


def test_octahedra_scores_known_answer(bench):
    to = _truth_octahedra()
    found = to.copy()
    found["x_A"] += 0.1  # within the 0.6 Å matching tolerance
    found["theta1_deg"] += [1.0, -1.0, 0.5, 0.0, 0.0]
    found["theta2_deg"] += [0.0, 1.0, -0.5, 2.0, 0.0]
    found["theta3_deg"] = (found["theta1_deg"] + found["theta2_deg"]) / 2
    found["edge"] = [False, False, False, False, True]  # the edge octahedron is not counted
    found = pd.concat([found, pd.DataFrame({"x_A": [40.0], "y_A": [0.0], "theta1_deg": [np.nan], "theta2_deg": [np.nan],
                                            "theta3_deg": [np.nan], "edge": [False]})], ignore_index=True)
    res = SimpleNamespace(truth=SimpleNamespace(octahedra=to), tables={"octahedra": found})
    s = bench.octahedra_scores(res, 0.6)
    assert s["octahedra_true"] == 5 and s["octahedra_found"] == 4 and s["octahedra_matched"] == 4
    # mean(|Δθ1|, |Δθ2|) over the 4 matched: (1 + 1 + .5 + 0 + 0 + 1 + .5 + 2) / 8
    assert s["theta12_error_deg"] == pytest.approx(6.0 / 8)
    # truth: Br-rich θ3 mean 5.0, I-only 9.5 -> -4.5; found: (5.5, 5.0) vs (9.0, 11.0) -> 5.25 - 10.0
    assert s["br_minus_i_theta3_true_deg"] == pytest.approx(-4.5)
    assert s["br_minus_i_theta3_found_deg"] == pytest.approx(5.25 - 10.0)
    assert s["br_rich_n"] == 2


def test_no_br_split_without_br_and_no_found_octahedra(bench):
    to = _truth_octahedra().assign(br_fraction=0.0)
    res = SimpleNamespace(truth=SimpleNamespace(octahedra=to), tables={})
    assert bench.octahedra_scores(res, 0.6) == {"octahedra_true": 5.0, "octahedra_found": 0.0}


def test_table_counts_failures_and_reports_mean_sd(bench):
    rows = pd.DataFrame([
        {"image": "cspbi3", "dose": "300", "config": "default", "seed": 0, "ok": True, "error": "", "detection_f1": 0.9, "time_s": 1.0},
        {"image": "cspbi3", "dose": "300", "config": "default", "seed": 1, "ok": True, "error": "", "detection_f1": 0.7, "time_s": 1.0},
        {"image": "cspbi3", "dose": "300", "config": "default", "seed": 2, "ok": False, "error": "InputError: too | few", "time_s": 1.0},
    ])
    line = [ln for ln in bench.markdown_table(rows).splitlines() if ln.startswith("| cspbi3")][0]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == "2/3"
    assert "0.800 ± 0.141" in cells  # sample sd of 0.9, 0.7
    assert cells[-1] == "1×: InputError: too / few"
