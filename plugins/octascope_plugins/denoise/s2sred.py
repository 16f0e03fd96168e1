"""S2SRED: Self2Self single-image denoising regularised by BM3D through RED and ADMM."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from octascope.errors import PluginError
from octascope.model import Image

from ._common import bm3d_compat, check_finite, check_training_params, estimate_noise_psd, finish, normalise


def bernoulli_mask(shape, drop_rate: float, generator):
    """Self2Self mask: 1 (visible) with probability ``1 - drop_rate``, 0 (hidden) otherwise.

    Parameters
    ----------
    shape : tuple of int
        Tensor shape.
    drop_rate : float
        Probability of hiding a pixel [0-1].
    generator : torch.Generator
        Random source (its device is used).
    """
    import torch

    return (torch.rand(shape, generator=generator, device=generator.device) >= drop_rate).float()


def masked_loss(out, target, mask):
    """Mean squared error over the hidden pixels (``mask == 0``) only: the blind-spot loss."""
    hidden = 1.0 - mask
    return ((out - target) ** 2 * hidden).sum() / hidden.sum().clamp(min=1.0)


class S2SREDDenoiser:
    """Self2Self with dropout (Quan et al. 2020) + RED with a BM3D prior joined by ADMM (Du et al. 2026).

    The network (:class:`~octascope_plugins.denoise._nets.S2SNet`: partial-convolution encoder
    EB1-EB5 of width ``encoder_width``, dropout decoder DB1-DB4 of width ``decoder_width``) is
    trained on the noisy image alone. Each iteration draws ``batch_size`` Bernoulli masks that
    hide a fraction ``mask_drop_rate`` of the pixels (of the whole image, or of random
    ``patch_px`` crops, each under a random rotation/flip when ``augment``), feeds the masked
    image with its mask to the partial convolutions, and takes the squared error on the
    hidden pixels only.

    With ``red`` on, ADMM alternates (Romano et al. 2017; Mataev et al. 2019, DeepRED):

    1. network steps on the Self2Self loss + ``admm_mu``/2 · mean((f_θ − (x − u))²);
    2. every ``red_every`` iterations, an x step ``x ← (λ·D(x) + μ·(f̄ + u)) / (λ + μ)`` with D
       BM3D (on the image normalised to [0, 1]) at ``red_sigma`` (the paper: 15/255) or, with
       ``red_sigma=None``, at the noise power spectrum ``a/k² + b`` fitted to the image
       (:func:`~octascope_plugins.denoise._common.estimate_noise_psd`: models the integrated
       1/k noise of iDPC), and f̄ the mean of ``red_passes`` stochastic network passes;
    3. the dual update ``u ← u + f̄ − x``.

    x starts as BM3D of the image and u as 0. BM3D (the ``bm3d`` package) runs on the CPU even
    when the network trains on a GPU, so ``red_every`` sets how much of the run it takes.

    Low dose, iDPC: Self2Self's blind-spot training assumes pixel-independent noise and BM3D's
    σ white noise; iDPC noise is integrated (1/k amplitude), so S2SRED removes the high
    spatial frequencies — noise and the columns' flanks — and keeps most of the noise that
    displaces columns. On simulated iDPC images at 300 and 100 e/Å² it raised PSNR by
    1.3 dB and worsened position RMSE and octahedral tilts (θ error 0.86° vs 0.65° raw,
    2.09° vs 1.40°; ABSF first: 0.84°, 1.92°); see
    experiments/benchmarks/results/denoise-lowdose.md before using it ahead of column fitting.

    ``red=False`` gives plain Self2Self (for ablations). At the end ``n_mc_passes``
    stochastic passes (new mask, dropout on) are averaged: their mean is the denoised image
    and their per-pixel variance (in image units²) is returned as ``Image.variance``.

    Parameters
    ----------
    n_iterations : int
        Training iterations (network steps).
    learning_rate : float
        Adam learning rate.
    batch_size : int
        Masked copies per iteration.
    patch_px : int, optional
        Side of the random training crops [px] (a multiple of 16); ``None`` trains on the whole image.
    augment : bool
        Random rotations/flips of the training copies.
    mask_drop_rate : float
        Fraction of pixels hidden by each Bernoulli mask [0-1].
    dropout : float
        Element-wise dropout rate of the decoder, kept at inference [0-1].
    encoder_width : int
        Encoder features F (paper: 64).
    decoder_width : int
        Decoder features (paper: 128).
    upsample : str
        Decoder upsampling, ``nearest`` or ``bilinear``.
    n_mc_passes : int
        Monte Carlo passes averaged at inference (paper: 50-100).
    red : bool
        RED/ADMM on (S2SRED) or off (Self2Self).
    red_sigma : float, optional
        BM3D noise level on the [0, 1]-normalised image (default: the paper's 15/255); ``None``
        uses the noise power spectrum fitted to the image instead. A fixed value is a different
        noise level for every image — the [0, 1] scale is set by the image's extreme pixels,
        which the noise itself moves (range 0.72 at 300 e/Å² vs 0.91 at 100 e/Å² for the same
        simulated particle) — and white where iDPC noise is not; but on simulated iDPC images
        the fitted spectrum (a stronger prior) did not bring positions or tilts closer to the
        truth (experiments/benchmarks/results/denoise-lowdose.md), so the paper's value stays
        the default.
    red_lambda : float
        RED regularisation weight λ (paper: 0.2).
    admm_mu : float
        ADMM penalty μ (paper: 1.0).
    red_every : int
        Network iterations between ADMM x/u updates (each costs one BM3D call).
    red_passes : int
        Stochastic passes averaged into the network estimate f̄ of an ADMM update.
    seed : int
        Seed of masks, crops, dropout and initial weights: same seed, same output on the CPU.
    device : str
        ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; CUDA asked for but absent
        falls back to the CPU with a warning.
    amp : bool
        Mixed precision on CUDA (bfloat16 where supported, else float16); ignored on the CPU.
    cpu_threads : int, optional
        Torch CPU threads during this call; ``None`` keeps torch's setting (on a loaded machine,
        1 avoids thread oversubscription).
    progress : bool
        Show a progress bar with the loss.
    checkpoint_path : str, optional
        File to save the training state to every ``checkpoint_every`` iterations; when it exists
        and was made with the same settings and image, training resumes from it (so a longer
        ``n_iterations`` continues a shorter run).
    checkpoint_every : int
        Checkpoint interval [iterations].
    """

    name: ClassVar[str] = "s2sred"

    def __init__(
        self,
        *,
        n_iterations: int = 300,
        learning_rate: float = 1e-3,
        batch_size: int = 4,
        patch_px: int | None = 64,
        augment: bool = True,
        mask_drop_rate: float = 0.3,
        dropout: float = 0.3,
        encoder_width: int = 32,
        decoder_width: int = 64,
        upsample: str = "nearest",
        n_mc_passes: int = 20,
        red: bool = True,
        red_sigma: float | None = 15 / 255,
        red_lambda: float = 0.2,
        admm_mu: float = 1.0,
        red_every: int = 100,
        red_passes: int = 4,
        seed: int = 0,
        device: str = "auto",
        amp: bool = True,
        cpu_threads: int | None = None,
        progress: bool = True,
        checkpoint_path: str | None = None,
        checkpoint_every: int = 100,
    ):
        check_training_params(self.name, n_iterations=n_iterations, learning_rate=learning_rate, device=device)
        if int(batch_size) < 1 or int(n_mc_passes) < 1 or int(red_every) < 1 or int(red_passes) < 1:
            raise PluginError("s2sred batch_size, n_mc_passes, red_every and red_passes must all be >= 1")
        if patch_px is not None and (int(patch_px) < 16 or int(patch_px) % 16):
            raise PluginError(f"s2sred patch_px must be a multiple of 16 (>= 16) or null for the whole image, got {patch_px}")
        for label, p in (("mask_drop_rate", mask_drop_rate), ("dropout", dropout)):
            if not 0.0 <= p < 1.0:
                raise PluginError(f"s2sred {label} must be in [0, 1), got {p}")
        if mask_drop_rate <= 0:
            raise PluginError("s2sred mask_drop_rate must be > 0: the loss is taken on the hidden pixels")
        if int(encoder_width) < 1 or int(decoder_width) < 4:
            raise PluginError(f"s2sred needs encoder_width >= 1 and decoder_width >= 4, got {encoder_width}, {decoder_width}")
        if upsample not in ("nearest", "bilinear"):
            raise PluginError(f"s2sred upsample '{upsample}' is unknown; use nearest or bilinear")
        if (red_sigma is not None and not red_sigma > 0) or not red_lambda >= 0 or not admm_mu > 0:
            raise PluginError(f"s2sred needs red_sigma > 0, red_lambda >= 0, admm_mu > 0, got {red_sigma}, {red_lambda}, {admm_mu}")
        self.n_iterations = int(n_iterations)
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.patch_px = None if patch_px is None else int(patch_px)
        self.augment = bool(augment)
        self.mask_drop_rate = float(mask_drop_rate)
        self.dropout = float(dropout)
        self.encoder_width = int(encoder_width)
        self.decoder_width = int(decoder_width)
        self.upsample = upsample
        self.n_mc_passes = int(n_mc_passes)
        self.red = bool(red)
        self.red_sigma = None if red_sigma is None else float(red_sigma)
        self.red_lambda = float(red_lambda)
        self.admm_mu = float(admm_mu)
        self.red_every = int(red_every)
        self.red_passes = int(red_passes)
        self.seed = int(seed)
        self.device = str(device)
        self.amp = bool(amp)
        self.cpu_threads = None if cpu_threads is None else int(cpu_threads)
        self.progress = bool(progress)
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = int(checkpoint_every)

    def _training_settings(self) -> dict[str, Any]:
        # everything that shapes the trained state (not n_iterations: a longer run may resume a shorter one)
        skip = {"n_iterations", "n_mc_passes", "progress", "checkpoint_path", "checkpoint_every", "device", "cpu_threads"}
        return {k: v for k, v in vars(self).items() if k not in skip}

    def denoise(self, image: Image) -> Image:
        import torch

        from . import _training as tr
        from ._nets import DOWNSAMPLING, S2SNet

        data = np.asarray(image.data, dtype=np.float64)
        check_finite(data, self.name)
        y01, lo, scale = normalise(data)
        padded, (h, w) = tr.pad_to_multiple(y01, DOWNSAMPLING)
        ph, pw = padded.shape
        patch = self.patch_px
        if patch is not None and patch > min(ph, pw):
            patch = None  # the image is smaller than a crop: train on all of it
        device = tr.select_device(self.device, self.name)
        settings = self._training_settings()
        red_info: dict[str, Any] = {}
        if self.red_sigma is None:
            red_noise, red_info = estimate_noise_psd(padded)
            bm3d_compat()
        else:
            red_noise = self.red_sigma
        t_start = time.perf_counter()
        with tr.deterministic(self.seed, device.type == "cpu"), tr.cpu_threads(self.cpu_threads):
            gen = torch.Generator(device=device).manual_seed(self.seed)
            net = S2SNet(1, 1, encoder_width=self.encoder_width, decoder_width=self.decoder_width,
                         dropout=self.dropout, upsample=self.upsample).to(device)
            net.train()  # dropout stays on, in training and at inference
            opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
            prec = tr.Precision(device, self.amp)
            y = torch.as_tensor(padded, dtype=torch.float32, device=device)[None, None]
            stats = (float(y.mean()), float(y.std().clamp(min=1e-6)))
            x = y.clone()  # ADMM primal (RED) variable
            u = torch.zeros_like(y)  # ADMM scaled dual
            start = 0
            losses: list[float] = []
            ckpt = tr.Checkpointer(self.checkpoint_path, self.checkpoint_every, tr.fingerprint(settings, padded), self.name)
            state = ckpt.load()
            if state is not None:
                net.load_state_dict(state["net"])
                opt.load_state_dict(state["opt"])
                x, u = state["x"].to(device), state["u"].to(device)
                start, losses = int(state["iteration"]), list(state["losses"])
                tr.set_rng_state(state["rng"], gen, device)
            elif self.red:
                x = self._bm3d(y, red_noise)
            t_train = time.perf_counter()
            bar = tr.progress_bar(self.n_iterations, min(start, self.n_iterations), self.progress, self.name)
            for it in range(start + 1, self.n_iterations + 1):
                yb, tb = self._batch(y, x - u, patch, gen)
                mask = bernoulli_mask(yb.shape, self.mask_drop_rate, gen)
                out = self._forward(net, yb, mask, stats, prec)
                loss = masked_loss(out, yb, mask)
                if self.red:
                    loss = loss + 0.5 * self.admm_mu * ((out - tb) ** 2).mean()
                prec.step(loss, opt)
                losses.append(float(loss.detach()))
                if self.red and it % self.red_every == 0:
                    f_bar = self._mc(net, y, gen, self.red_passes, prec, stats)[0]
                    x = (self.red_lambda * self._bm3d(x, red_noise) + self.admm_mu * (f_bar + u)) / (self.red_lambda + self.admm_mu)
                    u = u + f_bar - x
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4g}")
                if ckpt.due(it, self.n_iterations):
                    ckpt.save({"net": net.state_dict(), "opt": opt.state_dict(), "x": x.cpu(), "u": u.cpu(),
                               "iteration": it, "losses": losses, "rng": tr.rng_state(gen, device)})
            bar.close()
            trained = self.n_iterations - start
            t_infer = time.perf_counter()
            mean, var = self._mc(net, y, gen, self.n_mc_passes, prec, stats)
            t_end = time.perf_counter()
        mean_np = mean[0, 0, :h, :w].double().cpu().numpy()
        var_np = var[0, 0, :h, :w].double().cpu().numpy()
        meta = {
            "name": self.name,
            **{k: v for k, v in vars(self).items() if k not in ("progress",)},
            "device_used": str(device),
            "amp_used": prec.enabled,
            "red_sigma_used": (red_info["sigma_total"] if red_info else self.red_sigma) if self.red else None,
            "padded_shape": [ph, pw],
            "iterations_resumed_from": start,
            "final_loss": losses[-1] if losses else None,
            "train_s": t_infer - t_train,
            "s_per_iteration": (t_infer - t_train) / trained if trained > 0 else None,
            "inference_s": t_end - t_infer,
            "total_s": t_end - t_start,
        }
        return finish(image, mean_np * scale + lo, meta, variance=var_np * scale**2)

    @staticmethod
    def _forward(net, y, mask, stats, prec):
        """Network estimate in the [0, 1] image space; the network itself sees the image standardised."""
        centre, spread = stats
        with prec.autocast():
            out = net((y - centre) / spread * mask, mask)
        return out.float() * spread + centre

    def _batch(self, y, target, patch, gen):
        """``batch_size`` (augmented, cropped) copies of the image and of the ADMM target."""
        import torch

        from ._training import dihedral

        ph, pw = y.shape[-2:]
        ys, ts = [], []
        for _ in range(self.batch_size):
            if patch is None:
                yc, tc = y[0], target[0]
            else:
                r = int(torch.randint(0, ph - patch + 1, (1,), generator=gen, device=y.device))
                c = int(torch.randint(0, pw - patch + 1, (1,), generator=gen, device=y.device))
                yc, tc = y[0, :, r:r + patch, c:c + patch], target[0, :, r:r + patch, c:c + patch]
            if self.augment and yc.shape[-1] == yc.shape[-2]:
                k = int(torch.randint(0, 8, (1,), generator=gen, device=y.device))
                yc, tc = dihedral(yc, k), dihedral(tc, k)
            elif self.augment:
                k = 4 * int(torch.randint(0, 2, (1,), generator=gen, device=y.device))  # flips only keep a non-square shape
                yc, tc = dihedral(yc, k), dihedral(tc, k)
            ys.append(yc)
            ts.append(tc)
        return torch.stack(ys), torch.stack(ts)

    def _mc(self, net, y, gen, n_passes, prec, stats):
        """Mean and variance of ``n_passes`` stochastic passes (new Bernoulli mask, dropout on)."""
        import torch

        total = torch.zeros_like(y, dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        done = 0
        with torch.no_grad():
            while done < n_passes:
                b = min(self.batch_size, n_passes - done)
                yb = y.expand(b, -1, -1, -1)
                mask = bernoulli_mask(yb.shape, self.mask_drop_rate, gen)
                out = self._forward(net, yb, mask, stats, prec).double()
                total += out.sum(0, keepdim=True)
                total_sq += (out**2).sum(0, keepdim=True)
                done += b
        mean = total / n_passes
        var = (total_sq / n_passes - mean**2).clamp(min=0.0)
        return mean.float(), var.float()

    @staticmethod
    def _bm3d(x, noise):
        """BM3D of a (1, 1, H, W) tensor at noise ``noise`` (a σ or a PSD; the bm3d package runs on the CPU)."""
        import bm3d
        import torch

        arr = x[0, 0].double().cpu().numpy()
        out = np.asarray(bm3d.bm3d(arr, sigma_psd=noise), dtype=np.float32).reshape(arr.shape)
        return torch.as_tensor(out, device=x.device)[None, None]
