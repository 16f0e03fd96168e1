"""denoise-quality metric: PSNR/SSIM with known answers, MC-variance coverage, downstream figures."""

import numpy as np
import pytest

import octascope
from octascope.core.errors import InputError
from octascope.core.model import MetricInput, MetricOutput, Result, Truth
from octascope.input.synthetic import make_synthetic


@pytest.fixture(scope="module")
def pair():
    return make_synthetic(n_cells=(3, 3), pixel_size_A=0.3, margin_A=4.0, dose_e_per_A2=300.0, seed=3)


def metric(**params):
    return octascope.get_registry().create("metric", "denoise-quality", **params)


def test_psnr_ssim_known_answers(pair):
    image, truth = pair
    clean = truth.clean
    rng = float(clean.max() - clean.min())
    denoised = image.replace(data=clean + 0.01)  # MSE = 1e-4 exactly
    result = Result(image=image, denoised=denoised, truth=truth, plugins={"denoiser": "test"})
    s = metric().compute(result, truth).scalars
    assert s["denoise_data_range"] == pytest.approx(rng)
    assert s["denoise_psnr_db"] == pytest.approx(10 * np.log10(rng**2 / 1e-4), abs=1e-3)
    assert s["denoise_rmse"] == pytest.approx(0.01, rel=1e-4)
    assert s["denoise_ssim"] > 0.99  # a constant offset barely changes the structure
    raw_mse = float(np.mean((image.data.astype(float) - clean) ** 2))
    assert s["raw_psnr_db"] == pytest.approx(10 * np.log10(rng**2 / raw_mse), abs=1e-3)
    assert s["raw_ssim"] < 0.9 * s["denoise_ssim"]
    assert s["denoise_psnr_gain_db"] == pytest.approx(s["denoise_psnr_db"] - s["raw_psnr_db"])
    # a fixed data range changes PSNR by 20 log10(R'/R)
    s2 = metric(data_range=2 * rng).compute(result, truth).scalars
    assert s2["denoise_psnr_db"] - s["denoise_psnr_db"] == pytest.approx(20 * np.log10(2), abs=1e-3)


def test_variance_coverage_and_downstream_copy(pair):
    image, truth = pair
    err = np.where(np.arange(image.data.size).reshape(image.shape) % 4 == 0, 0.5, 0.01)  # 25 % of pixels far off
    denoised = image.replace(data=truth.clean + err, variance=np.full(image.shape, 0.1**2))
    result = Result(image=image, denoised=denoised, truth=truth)
    # the accuracy metric's output, as the pipeline hands it on (denoise-quality runs after accuracy)
    view = MetricInput.from_result(result, previous={"accuracy": MetricOutput(scalars={"rmse_pm_all": 3.5, "theta3_mae_deg": 0.7})})
    s = metric().compute(view, truth).scalars
    assert s["denoise_coverage_2sigma"] == pytest.approx(0.75, abs=0.01)
    assert s["denoise_mc_std_mean"] == pytest.approx(0.1)
    assert s["denoise_rmse_pm_all"] == 3.5 and s["denoise_theta3_mae_deg"] == 0.7


def test_without_clean_image_the_output_is_empty(pair):
    image, truth = pair
    result = Result(image=image, denoised=image)
    assert dict(metric().compute(result, None).scalars) == {}
    no_clean = Truth(columns=truth.columns)
    assert dict(metric().compute(result, no_clean).scalars) == {}
    with pytest.raises(InputError, match="shape"):
        metric().compute(result, Truth(columns=truth.columns, clean=truth.clean[:-1]))


def test_in_the_pipeline_after_accuracy(pair):
    image, truth = pair
    result = octascope.analyze(image, denoiser="bm3d", metrics=["octahedral", "accuracy", "denoise-quality"],
                               truth=truth, progress=None)
    s = result.scalars
    assert s["denoise_psnr_db"] > s["raw_psnr_db"] + 3  # bm3d gains at least 3 dB here
    assert s["denoise_rmse_pm_all"] == s["rmse_pm_all"]
    assert "denoise_quality" in result.tables
