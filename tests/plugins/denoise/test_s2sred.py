"""S2SRED: partial convolution, Bernoulli masking, blind-spot loss, denoising, determinism, checkpoints."""

import warnings

import numpy as np
import pytest
import torch

import octascope
from octascope.core.errors import ConfigError, InputError
from octascope.input.synthetic import make_synthetic
from octascope_plugins.denoise._nets import PartialConv2d, S2SNet
from octascope_plugins.denoise.s2sred import bernoulli_mask, masked_loss

# a tiny, fast configuration: ~0.05 s per iteration on one CPU thread
TINY = dict(n_iterations=40, batch_size=2, patch_px=32, encoder_width=8, decoder_width=16, n_mc_passes=4,
            red_every=20, red_passes=2, learning_rate=3e-3, progress=False, cpu_threads=1, device="cpu")


@pytest.fixture(scope="module")
def noisy():
    # 2x2 cells at 0.3 Å/px: 63x63 px, Poisson noise at 300 e/Å²
    return make_synthetic(n_cells=(2, 2), pixel_size_A=0.3, margin_A=3.0, dose_e_per_A2=300.0, seed=2)


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


def s2sred(**params):
    return octascope.get_registry().create("denoiser", "s2sred", **{**TINY, **params})


# --- partial convolution -------------------------------------------------------------------------

def test_partial_conv_ignores_hidden_pixels_and_renormalises():
    torch.manual_seed(0)
    pconv = PartialConv2d(1, 3)
    x = torch.rand(1, 1, 12, 12)
    mask = (torch.rand(1, 1, 12, 12) > 0.4).float()
    out, new_mask = pconv(x, mask)
    # values under the mask do not matter
    x2 = torch.where(mask > 0, x, torch.full_like(x, 100.0))
    out2, _ = pconv(x2, mask)
    torch.testing.assert_close(out, out2)
    # renormalisation: with a uniform kernel, a constant image gives the full-window response
    # wherever a window holds a valid pixel, however many of its pixels are hidden
    with torch.no_grad():
        pconv.weight.fill_(0.1)
    c = torch.full_like(x, 0.7)
    outc, _ = pconv(c, mask)
    expected = 0.7 * 0.1 * 9 + pconv.bias
    interior = new_mask[0, 0, 1:-1, 1:-1] > 0
    for ch in range(3):
        torch.testing.assert_close(outc[0, ch, 1:-1, 1:-1][interior], expected[ch].expand(int(interior.sum())))


def test_partial_conv_mask_update_and_empty_windows():
    pconv = PartialConv2d(1, 2)
    mask = torch.zeros(1, 1, 9, 9)
    mask[0, 0, 4, 4] = 1.0
    out, new_mask = pconv(torch.rand(1, 1, 9, 9), mask)
    assert new_mask.sum() == 9  # the 3x3 neighbourhood of the single valid pixel
    assert new_mask[0, 0, 3:6, 3:6].min() == 1
    assert torch.all(out[:, :, new_mask[0, 0] == 0] == 0)


def test_network_shape_and_dropout_at_inference():
    torch.manual_seed(0)
    net = S2SNet(1, 1, encoder_width=8, decoder_width=16, dropout=0.3)
    net.train()
    x = torch.rand(2, 1, 32, 48)
    a, b = net(x), net(x)
    assert a.shape == x.shape
    assert not torch.allclose(a, b)  # dropout is on: two passes differ (Monte Carlo)
    net.eval()
    torch.testing.assert_close(net(x), net(x))


# --- masking and loss ----------------------------------------------------------------------------

def test_bernoulli_mask_rate_and_blind_spot_loss():
    gen = torch.Generator().manual_seed(0)
    mask = bernoulli_mask((4, 1, 64, 64), 0.3, gen)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert float(1 - mask.mean()) == pytest.approx(0.3, abs=0.01)
    target = torch.rand(mask.shape, generator=gen)
    out = torch.rand(mask.shape, generator=gen)
    loss = masked_loss(out, target, mask)
    # changing the prediction on visible pixels leaves the loss unchanged; on hidden ones it does not
    assert masked_loss(torch.where(mask > 0, out + 5.0, out), target, mask) == pytest.approx(float(loss))
    assert masked_loss(torch.where(mask == 0, out + 5.0, out), target, mask) > loss + 1.0
    hidden = mask == 0
    assert float(loss) == pytest.approx(float(((out - target)[hidden] ** 2).mean()), rel=1e-5)


# --- the denoiser --------------------------------------------------------------------------------

@pytest.mark.parametrize("red", [False, True])
def test_s2sred_lowers_error_and_returns_mc_variance(noisy, red):
    image, truth = noisy
    out = s2sred(red=red).denoise(image)
    assert out.shape == image.shape and out.pixel_size_A == image.pixel_size_A
    before, after = rmse(image.data, truth.clean), rmse(out.data, truth.clean)
    assert after < 0.7 * before, (before, after)
    assert out.variance is not None and out.variance.shape == image.shape
    assert np.all(out.variance >= 0) and out.variance.mean() > 0
    meta = out.metadata["denoiser"]
    assert meta["red"] is red and meta["device_used"] == "cpu" and meta["s_per_iteration"] > 0


def test_same_seed_same_output_and_scale_equivariance(noisy):
    image, _ = noisy
    a = s2sred(n_iterations=5, red=False).denoise(image)
    b = s2sred(n_iterations=5, red=False).denoise(image)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.variance, b.variance)
    c = s2sred(n_iterations=5, red=False, seed=1).denoise(image)
    assert not np.allclose(a.data, c.data)
    # output and variance are mapped back to the input's scale
    scaled = s2sred(n_iterations=5, red=False).denoise(image.replace(data=image.data * 10 + 3))
    np.testing.assert_allclose(scaled.data, a.data * 10 + 3, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(scaled.variance, a.variance * 100, rtol=1e-3, atol=1e-6)


def test_checkpoint_resume_matches_an_uninterrupted_run(noisy, tmp_path):
    image, _ = noisy
    path = str(tmp_path / "s2s.pt")
    straight = s2sred(n_iterations=8, red_every=3).denoise(image)
    first = s2sred(n_iterations=4, red_every=3, checkpoint_path=path, checkpoint_every=2).denoise(image)
    assert first.metadata["denoiser"]["iterations_resumed_from"] == 0
    resumed = s2sred(n_iterations=8, red_every=3, checkpoint_path=path, checkpoint_every=2).denoise(image)
    assert resumed.metadata["denoiser"]["iterations_resumed_from"] == 4
    np.testing.assert_allclose(resumed.data, straight.data, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="checkpoint"):
        s2sred(n_iterations=8, red_every=3, checkpoint_path=path, dropout=0.1).denoise(image)


def test_small_image_is_padded_and_bad_inputs(noisy):
    image, _ = noisy
    small = image.replace(data=image.data[:10, :13])
    out = s2sred(n_iterations=2, red=False).denoise(small)
    assert out.shape == (10, 13)
    assert out.metadata["denoiser"]["padded_shape"] == [16, 16]
    bad = image.replace()
    object.__setattr__(bad, "data", np.where(np.arange(image.data.size).reshape(image.shape) == 5, np.nan, image.data))
    with pytest.raises(InputError, match="NaN"):
        s2sred(n_iterations=1).denoise(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_cuda_asked_for_but_absent_falls_back_with_a_warning(noisy):
    image, _ = noisy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = s2sred(n_iterations=1, red=False, device="cuda").denoise(image)
    assert any("CUDA is not available" in str(w.message) for w in caught)
    assert out.metadata["denoiser"]["device_used"] == "cpu"
