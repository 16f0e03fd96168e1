"""Calibration of the reported uncertainties against the truth (the targets below).

Targets: on particles without model error, over noise draws, the z-scores (error / reported 1σ) of
positions and θ have an sd within 0.85–1.15, 68 ± 6 % of them are within 1σ and ≥ 93 % within 2σ;
on the thermally disordered MD particle the total (statistical + systematic) uncertainty covers
≥ 60 % of the errors at 1σ. The fast test uses exact Gaussian columns under iDPC-like integrated
noise through the default pipeline; its bounds are the targets widened by twice the sampling error
of its few hundred z-scores. The slow test runs the calibration benchmark
(``experiments/benchmarks/calibration.py``: the simulated static cube at 100, 300 and 1,000 e/Å²,
20 seeds each, and the MD cube, 10 seeds each) and holds it to the targets widened the same way
(its rows have 700-6,800 z-scores: the 2σ coverage bound becomes 91.4-92.5 % instead of 93 %).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiment_scripts import load_script


SD_Z = (0.85, 1.15)
COVER_1 = (0.62, 0.74)
COVER_2 = 0.93
COVER_1_TOTAL_MD = 0.60


@pytest.fixture(scope="module")
def calibration():
    return load_script("experiments/benchmarks/calibration.py", "calibration_benchmark")


def _widened(n: int) -> tuple[tuple[float, float], tuple[float, float], float]:
    """The targets widened by twice the sampling error of n z-scores (sd: 1/√(2n); coverage: binomial)."""
    s_sd = 1 / math.sqrt(2 * n)
    s_1 = math.sqrt(0.68 * 0.32 / n)
    s_2 = math.sqrt(0.95 * 0.05 / n)
    return ((SD_Z[0] - 2 * s_sd, SD_Z[1] + 2 * s_sd), (COVER_1[0] - 2 * s_1, COVER_1[1] + 2 * s_1), COVER_2 - 2 * s_2)


def _noisy_synthetic(seed: int):
    """A 6 × 6 cell particle of exact Gaussian columns (9° rotation) with white CoM noise integrated
    into the image (iDPC's 1/k² noise), and its exact truth."""
    from octascope.input.synthetic import SyntheticSpec, make_synthetic
    from octascope.sim.imaging import integrate_gradient

    image, truth = make_synthetic(SyntheticSpec(n_cells=(6, 6), rotation_deg=9.0, dose_e_per_A2=None, pixel_size_A=0.2))
    rng = np.random.default_rng(seed)
    shape = image.data.shape
    noise = integrate_gradient(rng.normal(0, 0.5, shape), rng.normal(0, 0.5, shape), 0.2)
    return image.replace(data=(image.data + noise).astype(np.float32), signal="idpc"), truth


def test_statistical_uncertainty_is_calibrated_on_exact_columns(calibration):
    """Positions and θ1/θ2 over 4 noise draws: sd(z), 1σ and 2σ coverage within the widened targets."""
    z: dict[str, list[np.ndarray]] = {"position": [], "θ1/θ2": []}
    for seed in range(4):
        image, truth = _noisy_synthetic(seed)
        res = calibration.run_analysis(image, truth)
        octs = truth.octahedra[np.isfinite(truth.octahedra["theta3_deg"].to_numpy(float))]
        rows = calibration.z_rows(res, truth.columns, octs, None)
        for q in z:
            z[q].append(rows[q]["err"] / rows[q]["stat"])
    for q, parts in z.items():
        v = np.concatenate(parts)
        v = v[np.isfinite(v)]
        sd_bounds, c1_bounds, c2_min = _widened(len(v))
        assert len(v) >= 100, (q, len(v))
        assert sd_bounds[0] < np.std(v, ddof=1) < sd_bounds[1], (q, np.std(v, ddof=1), len(v))
        assert c1_bounds[0] < np.mean(np.abs(v) < 1) < c1_bounds[1], (q, np.mean(np.abs(v) < 1))
        assert np.mean(np.abs(v) < 2) > c2_min, (q, np.mean(np.abs(v) < 2))


@pytest.mark.slow
def test_calibration_benchmark_meets_the_targets(calibration):
    """The benchmark's table: static cube (statistical 1σ) within the targets at every dose for
    positions, θ1/θ2 and θ3; MD cube with the total 1σ: ≥ 60 % within 1σ."""
    df = calibration.run(["static", "md"], [100.0, 300.0, 1000.0], list(range(20)), list(range(10)))
    static = df[(df["image"] == "static") & df["quantity"].isin(["position", "θ1/θ2", "θ3"])]
    assert len(static) == 9
    for r in static.to_dict("records"):
        # the targets, widened by twice the sampling error of the row's z-scores (≥ 700 of them)
        sd_bounds, c1_bounds, c2_min = _widened(int(r["stat_n"]))
        assert sd_bounds[0] <= r["stat_sd_z"] <= sd_bounds[1], r
        assert c1_bounds[0] <= r["stat_cov1"] <= c1_bounds[1], r
        assert r["stat_cov2"] >= c2_min, r
    md = df[(df["image"] == "md") & df["quantity"].isin(["position", "θ1/θ2", "θ3"])]
    assert len(md) == 9
    assert (md["total_cov1"] >= COVER_1_TOTAL_MD).all(), md[["dose", "quantity", "total_cov1"]]
