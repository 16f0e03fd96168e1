"""Deep Image Prior (Ulyanov et al. 2018) with a discrepancy-principle early stop."""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np

from octascope.errors import PluginError
from octascope.model import Image

from ._common import check_finite, check_training_params, estimate_noise_psd, estimate_noise_rms, finish, normalise


NOISE_ESTIMATES = ("whitened", "spectrum", "finest_band")


class DIPDenoiser:
    """Deep Image Prior: fit a randomly initialised encoder-decoder from fixed noise to the image.

    The network (the S2SRED encoder-decoder without dropout, with batch normalisation; all
    pixels valid) maps a fixed
    random code ``z`` (``input_channels`` channels, perturbed by ``input_noise_std`` every
    iteration) to the image, minimising the mean squared error to the noisy image. A network
    fits image structure before it fits noise, so the fit must stop in time; the output is the
    exponential moving average (weight ``ema``) of the iterates.

    Early stopping (discrepancy principle, Morozov, for coloured noise): every
    ``check_every`` iterations after ``min_iterations`` the residual r = x̄ − y of the
    averaged output x̄ is whitened by the noise power spectrum P(k) and its mean power
    ``mean_k(|FFT r|² / P(k))`` (k ≠ 0; 1 for pure noise) is compared with ``stop_ratio``;
    the fit stops at the first check where it has fallen below, i.e. as soon as the output
    explains the image up to the noise at every frequency. For white noise of σ this is the
    classic ``mean(r²) ≤ stop_ratio · σ²``. P comes from ``noise_estimate`` (or is white at
    ``noise_sigma`` when given). Without ``early_stop`` (or if the residual never gets
    there) it runs ``n_iterations``.

    Why whitened: iDPC/iCoM noise has a 1/k² power spectrum and DIP fits low frequencies
    first, noise included. With the white-noise σ of the finest band (a third of the iDPC
    noise) the rule never fires: the fit runs to ``n_iterations`` and returns a smoothed copy
    of the noisy image; with the total σ of the spectrum it fires at once, before the weak
    halide columns are fitted. Whitening weighs each frequency by its own noise level.
    Measured on simulated iDPC images (experiments/benchmarks/results/denoise-lowdose.md):
    the whitened rule stops at 330-370 iterations with PSNR +2.7 dB, but column positions
    and octahedral tilts are worse than on the raw image (θ error 1.5° vs 0.65° at
    300 e/Å²): DIP removes the columns' flanks before the low-frequency noise, so do not use
    it ahead of column fitting on iDPC images.

    Parameters
    ----------
    n_iterations : int
        Most iterations.
    learning_rate : float
        Adam learning rate.
    input_channels : int
        Channels of the fixed random code z.
    input_scale : float
        z is uniform on [0, ``input_scale``] (DIP: 0.1).
    input_noise_std : float
        Standard deviation of the perturbation added to z each iteration (DIP: 1/30).
    encoder_width, decoder_width : int
        Network widths.
    upsample : str
        ``nearest`` or ``bilinear``.
    ema : float
        Weight of the exponential moving average of the output [0-1); 0 keeps the last iterate.
    early_stop : bool
        Stop by the discrepancy principle.
    noise_sigma : float, optional
        Noise standard deviation [image units]; ``None`` estimates it from the image.
    noise_estimate : str
        The noise spectrum P of the stopping rule, from the image: ``whitened`` (default) —
        the power spectrum ``a/k² + b`` fitted to the image
        (:func:`~octascope_plugins.denoise._common.estimate_noise_psd`; white for HAADF);
        ``spectrum`` — white at that spectrum's total RMS; ``finest_band`` — white at the RMS
        of the finest diagonal Haar band (the former rule; right for white noise only).
    stop_ratio : float
        Stop when the whitened residual power falls below this [1] (1: the noise level).
    min_iterations : int
        No stop before this many iterations.
    check_every : int
        Iterations between early-stopping checks.
    seed : int
        Seed of z, weights and perturbations: same seed, same output on the CPU.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; CUDA asked for but absent falls back to the CPU with a warning.
    amp : bool
        Mixed precision on CUDA only.
    cpu_threads : int, optional
        Torch CPU threads during this call; ``None`` keeps torch's setting.
    progress : bool
        Show a progress bar with the loss.
    checkpoint_path : str, optional
        File for the training state, saved every ``checkpoint_every`` iterations and resumed
        from when it matches the settings and the image.
    checkpoint_every : int
        Checkpoint interval [iterations].
    """

    name: ClassVar[str] = "dip"

    def __init__(
        self,
        *,
        n_iterations: int = 2000,
        learning_rate: float = 0.01,
        input_channels: int = 32,
        input_scale: float = 0.1,
        input_noise_std: float = 1 / 30,
        encoder_width: int = 32,
        decoder_width: int = 64,
        upsample: str = "bilinear",
        ema: float = 0.99,
        early_stop: bool = True,
        noise_sigma: float | None = None,
        noise_estimate: str = "whitened",
        stop_ratio: float = 1.0,
        min_iterations: int = 50,
        check_every: int = 10,
        seed: int = 0,
        device: str = "auto",
        amp: bool = True,
        cpu_threads: int | None = None,
        progress: bool = True,
        checkpoint_path: str | None = None,
        checkpoint_every: int = 100,
    ):
        check_training_params(self.name, n_iterations=n_iterations, learning_rate=learning_rate, device=device)
        if not 0.0 <= ema < 1.0:
            raise PluginError(f"dip ema must be in [0, 1), got {ema}")
        if noise_sigma is not None and not noise_sigma > 0:
            raise PluginError(f"dip noise_sigma must be > 0 (image units) or null to estimate it, got {noise_sigma}")
        if not stop_ratio > 0 or int(check_every) < 1 or int(min_iterations) < 0 or int(input_channels) < 1:
            raise PluginError("dip needs stop_ratio > 0, check_every >= 1, min_iterations >= 0 and input_channels >= 1")
        if upsample not in ("nearest", "bilinear"):
            raise PluginError(f"dip upsample '{upsample}' is unknown; use nearest or bilinear")
        self.n_iterations = int(n_iterations)
        self.learning_rate = float(learning_rate)
        self.input_channels = int(input_channels)
        self.input_scale = float(input_scale)
        self.input_noise_std = float(input_noise_std)
        self.encoder_width = int(encoder_width)
        self.decoder_width = int(decoder_width)
        self.upsample = upsample
        self.ema = float(ema)
        self.early_stop = bool(early_stop)
        if noise_estimate not in NOISE_ESTIMATES:
            raise PluginError(f"dip noise_estimate '{noise_estimate}' is unknown; use one of {', '.join(NOISE_ESTIMATES)}")
        self.noise_sigma = noise_sigma
        self.noise_estimate = noise_estimate
        self.stop_ratio = float(stop_ratio)
        self.min_iterations = int(min_iterations)
        self.check_every = int(check_every)
        self.seed = int(seed)
        self.device = str(device)
        self.amp = bool(amp)
        self.cpu_threads = None if cpu_threads is None else int(cpu_threads)
        self.progress = bool(progress)
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = int(checkpoint_every)

    def denoise(self, image: Image) -> Image:
        import torch

        from . import _training as tr
        from ._nets import DOWNSAMPLING, S2SNet

        data = np.asarray(image.data, dtype=np.float64)
        check_finite(data, self.name)
        y01, lo, scale = normalise(data)
        h0, w0 = data.shape
        if self.noise_sigma is not None:
            sigma, psd = float(self.noise_sigma), None
        elif self.noise_estimate == "finest_band":
            sigma, psd = estimate_noise_rms(data), None
        else:
            psd, info = estimate_noise_psd(data)
            sigma = info["sigma_total"]
            if self.noise_estimate == "spectrum":
                psd = None
        # noise power per frequency of the [0, 1] image (unnormalised FFT units), k = 0 left out
        psd01 = (np.full((h0, w0), sigma**2 * h0 * w0) if psd is None else psd) / scale**2
        inv_psd = np.where(psd01 > 0, 1.0 / np.maximum(psd01, 1e-300), 0.0)
        inv_psd[0, 0] = 0.0
        padded, (h, w) = tr.pad_to_multiple(y01, DOWNSAMPLING)
        device = tr.select_device(self.device, self.name)
        skip = {"n_iterations", "progress", "checkpoint_path", "checkpoint_every", "device", "cpu_threads",
                "early_stop", "stop_ratio", "min_iterations", "check_every", "noise_sigma", "noise_estimate"}
        settings = {k: v for k, v in vars(self).items() if k not in skip}
        t_start = time.perf_counter()
        with tr.deterministic(self.seed, device.type == "cpu"), tr.cpu_threads(self.cpu_threads):
            gen = torch.Generator(device=device).manual_seed(self.seed)
            net = S2SNet(self.input_channels, 1, encoder_width=self.encoder_width, decoder_width=self.decoder_width,
                         dropout=0.0, upsample=self.upsample, batch_norm=True).to(device)
            opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
            prec = tr.Precision(device, self.amp)
            y = torch.as_tensor(padded, dtype=torch.float32, device=device)[None, None]
            centre, spread = float(y.mean()), float(y.std().clamp(min=1e-6))
            z = self.input_scale * torch.rand((1, self.input_channels, *y.shape[-2:]), generator=gen, device=device)
            avg = torch.zeros_like(y)
            start, losses, stopped_at, reason = 0, [], None, "n_iterations reached"
            ckpt = tr.Checkpointer(self.checkpoint_path, self.checkpoint_every, tr.fingerprint(settings, padded), self.name)
            state = ckpt.load()
            if state is not None:
                net.load_state_dict(state["net"])
                opt.load_state_dict(state["opt"])
                z, avg = state["z"].to(device), state["avg"].to(device)
                start, losses = int(state["iteration"]), list(state["losses"])
                tr.set_rng_state(state["rng"], gen, device)
            target = (y - centre) / spread
            weight = torch.as_tensor(inv_psd, dtype=torch.float64, device=device)
            bar = tr.progress_bar(self.n_iterations, min(start, self.n_iterations), self.progress, self.name)
            t_train = time.perf_counter()
            it = start
            whitened = float("nan")
            for it in range(start + 1, self.n_iterations + 1):
                zin = z + self.input_noise_std * torch.randn(z.shape, generator=gen, device=device)
                with prec.autocast():
                    out = net(zin).float()
                loss = ((out - target) ** 2).mean()
                prec.step(loss, opt)
                losses.append(float(loss.detach()))
                with torch.no_grad():
                    current = out.detach() * spread + centre
                    avg = current if it == 1 else self.ema * avg + (1 - self.ema) * current
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4g}")
                if ckpt.due(it, self.n_iterations):
                    ckpt.save({"net": net.state_dict(), "opt": opt.state_dict(), "z": z.cpu(), "avg": avg.cpu(),
                               "iteration": it, "losses": losses, "rng": tr.rng_state(gen, device)})
                if self.early_stop and it >= self.min_iterations and it % self.check_every == 0:
                    spectrum = torch.fft.fft2((avg - y)[0, 0, :h, :w].double())
                    whitened = float((spectrum.abs() ** 2 * weight).sum() / (h * w - 1))
                    if whitened <= self.stop_ratio:
                        stopped_at, reason = it, "discrepancy principle"
                        break
            bar.close()
            t_end = time.perf_counter()
        trained = it - start
        out_np = avg[0, 0, :h, :w].double().cpu().numpy()
        meta = {
            "name": self.name,
            **{k: v for k, v in vars(self).items() if k != "progress"},
            "noise_sigma_used": float(sigma),
            "whitened_residual_at_stop": whitened if stopped_at is not None else None,
            "iterations_run": it,
            "stopped_at": stopped_at,
            "stop_reason": reason,
            "iterations_resumed_from": start,
            "device_used": str(device),
            "amp_used": prec.enabled,
            "final_loss": losses[-1] if losses else None,
            "s_per_iteration": (t_end - t_train) / trained if trained > 0 else None,
            "total_s": t_end - t_start,
        }
        return finish(image, out_np * scale + lo, meta)
