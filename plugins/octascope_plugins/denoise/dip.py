"""Deep Image Prior (Ulyanov et al. 2018) with a discrepancy-principle early stop."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from octascope.core.model import Image
from octascope.core.params import Plugin, param, require

from octascope_plugins.denoise._common import TrainingOptions, check_finite, estimate_noise_psd, estimate_noise_rms, finish, normalise

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True)
class DIPOptions(TrainingOptions):
    """Parameters of :class:`DIPDenoiser` (plus those of every network denoiser, :class:`TrainingOptions`)."""

    n_iterations: int = param(2000, doc="most iterations (the whitened stop usually ends the fit sooner)")
    learning_rate: float = param(0.01, doc="Adam learning rate")
    cpu_work_budget: float | None = param(
        32.0, unit="Mpx·iterations",
        doc="on the CPU, at most budget / pixels iterations (32: 488 on a 256² image); null = no cap")
    input_channels: int = param(32, doc="channels of the fixed random code z")
    input_scale: float = param(0.1, doc="z is uniform on [0, input_scale] (DIP: 0.1)")
    input_noise_std: float = param(1 / 30, doc="standard deviation of the perturbation added to z every iteration (DIP: 1/30)")
    encoder_width: int = param(16, doc="encoder features (dip_paper: 32)")
    decoder_width: int = param(32, doc="decoder features (dip_paper: 64)")
    upsample: Literal["nearest", "bilinear"] = param("bilinear", doc="decoder upsampling")
    ema: float = param(0.99, doc="weight of the exponential moving average of the output [0-1); 0 keeps the last iterate")
    early_stop: bool = param(True, doc="stop by the discrepancy principle (whitened residual)")
    noise_sigma: float | None = param(None, unit="image units", doc="noise standard deviation; null = estimate (noise_estimate)")
    noise_estimate: Literal["whitened", "spectrum", "finest_band"] = param(
        "whitened", doc="noise spectrum of the stop: whitened (fitted a/k² + b), spectrum (white at its total σ), "
                        "finest_band (white, finest Haar band)")
    stop_ratio: float = param(1.0, doc="stop when the whitened residual power falls below this (1: the noise level)")
    min_iterations: int = param(50, doc="no stop before this many iterations")
    check_every: int = param(10, doc="iterations between early-stopping checks")

    def check(self) -> None:
        super().check()
        require(0.0 <= self.ema < 1.0, f"ema must be in [0, 1), got {self.ema}")
        require(self.noise_sigma is None or self.noise_sigma > 0,
                f"noise_sigma must be > 0 (image units) or null to estimate it, got {self.noise_sigma}")
        require(self.stop_ratio > 0 and self.check_every >= 1 and self.min_iterations >= 0 and self.input_channels >= 1,
                "needs stop_ratio > 0, check_every >= 1, min_iterations >= 0 and input_channels >= 1")
        require(self.encoder_width >= 1 and self.decoder_width >= 4,
                f"needs encoder_width >= 1 and decoder_width >= 4, got {self.encoder_width}, {self.decoder_width}")


class DIPDenoiser(Plugin):
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

    CPU defaults (``conf/denoiser/dip.yaml``): a half-width network (16/32 features) on the
    free CPU threads, at most ``cpu_work_budget`` = 32 megapixel-iterations (488 iterations on a
    256² image, 122 on 512²), which bounds the work per image on a CPU; the whitened stop usually
    ends the fit before the cap (``stopped_at`` vs ``iterations_planned`` in the settings
    record). The full-width settings for a GPU (32/64 features, 2000 iterations, no cap):
    ``conf/denoiser/dip_paper.yaml``. Quality cost: experiments/benchmarks/results/denoise-cpu-defaults.md.

    Parameters are those of :class:`DIPOptions`.
    """

    name: ClassVar[str] = "dip"
    Options = DIPOptions
    options: DIPOptions

    def denoise(self, image: Image) -> Image:
        """Fit the network to ``image`` until the discrepancy principle stops it (class docstring).

        Returns
        -------
        Image
            The exponential moving average of the network's outputs [image units], with the run's
            settings and outcome as metadata.
        """
        # lazy: _training and _nets import torch (~1.2 s); only when this network denoiser runs
        from octascope_plugins.denoise import _training as tr
        from octascope_plugins.denoise._nets import DOWNSAMPLING

        o = self.options
        data = np.asarray(image.data, dtype=np.float64)
        check_finite(data, self.name)
        y01, lo, scale = normalise(data)
        sigma, inv_psd = self._noise_weights(data, scale)
        padded, (h, w) = tr.pad_to_multiple(y01, DOWNSAMPLING)
        device = tr.select_device(o.device, self.name)
        on_cpu = device.type == "cpu"
        n_iterations = o.iterations_for(padded.size, on_cpu)
        threads = tr.resolve_cpu_threads(o.cpu_threads) if on_cpu else None
        t_start = time.perf_counter()
        with tr.deterministic(o.seed, on_cpu), tr.cpu_threads(threads):
            st = self._start(padded, device)
            t_train = time.perf_counter()
            outcome = self._train(st, inv_psd, (h, w), n_iterations)
            t_end = time.perf_counter()
        trained = outcome.iteration - st.start
        meta = {
            "name": self.name,
            **{k: v for k, v in o.to_dict().items() if k != "progress"},
            "iterations_planned": n_iterations,
            "cpu_threads_used": threads,
            "noise_sigma_used": float(sigma),
            "whitened_residual_at_stop": outcome.whitened if outcome.stopped_at is not None else None,
            "whitened_residual_last": outcome.whitened,
            "iterations_run": outcome.iteration,
            "stopped_at": outcome.stopped_at,
            "stop_reason": outcome.reason,
            "iterations_resumed_from": st.start,
            "device_used": str(device),
            "amp_used": st.prec.enabled,
            "final_loss": st.losses[-1] if st.losses else None,
            "s_per_iteration": (t_end - t_train) / trained if trained > 0 else None,
            "total_s": t_end - t_start,
        }
        return finish(image, st.avg[0, 0, :h, :w].double().cpu().numpy() * scale + lo, meta)

    def _noise_weights(self, data: np.ndarray, scale: float) -> tuple[float, np.ndarray]:
        """The noise σ [image units] (``noise_sigma``, or estimated by ``noise_estimate``) and the
        inverse noise power per frequency of the [0, 1] image (unnormalised FFT units; 0 at k = 0),
        the weights of the whitened residual."""
        o = self.options
        h0, w0 = data.shape
        if o.noise_sigma is not None:
            sigma, psd = float(o.noise_sigma), None
        elif o.noise_estimate == "finest_band":
            sigma, psd = estimate_noise_rms(data), None
        else:
            psd, info = estimate_noise_psd(data)
            sigma = info["sigma_total"]
            if o.noise_estimate == "spectrum":
                psd = None
        psd01 = (np.full((h0, w0), sigma**2 * h0 * w0) if psd is None else psd) / scale**2
        inv_psd = np.where(psd01 > 0, 1.0 / np.maximum(psd01, 1e-300), 0.0)
        inv_psd[0, 0] = 0.0
        return sigma, inv_psd

    def _start(self, padded: np.ndarray, device: "torch.device") -> "_DIPTraining":
        """A fresh network, optimiser and random code ``z`` (EMA at 0), or the state of a matching
        checkpoint."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        # lazy: _training and _nets import torch (~1.2 s); only when this network denoiser runs
        from octascope_plugins.denoise import _training as tr
        from octascope_plugins.denoise._nets import S2SNet

        o = self.options
        skip = {"n_iterations", "cpu_work_budget", "progress", "checkpoint_path", "checkpoint_every", "device", "cpu_threads",
                "early_stop", "stop_ratio", "min_iterations", "check_every", "noise_sigma", "noise_estimate"}
        settings = {k: v for k, v in o.to_dict().items() if k not in skip}
        gen = torch.Generator(device=device).manual_seed(o.seed)
        net = S2SNet(o.input_channels, 1, encoder_width=o.encoder_width, decoder_width=o.decoder_width,
                     dropout=0.0, upsample=o.upsample, batch_norm=True).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=o.learning_rate)
        prec = tr.Precision(device, o.amp)
        y = torch.as_tensor(padded, dtype=torch.float32, device=device)[None, None]
        centre, spread = float(y.mean()), float(y.std().clamp(min=1e-6))
        z = o.input_scale * torch.rand((1, o.input_channels, *y.shape[-2:]), generator=gen, device=device)
        ckpt = tr.Checkpointer(o.checkpoint_path, o.checkpoint_every, tr.fingerprint(settings, padded), self.name)
        st = _DIPTraining(net=net, opt=opt, prec=prec, gen=gen, y=y, centre=centre, spread=spread, z=z,
                          avg=torch.zeros_like(y), start=0, losses=[], ckpt=ckpt)
        saved = ckpt.load()
        if saved is not None:
            tr.resume(st, saved, device)
            st.z, st.avg = saved["z"].to(device), saved["avg"].to(device)
        return st

    def _train(self, st: "_DIPTraining", inv_psd: np.ndarray, shape: tuple[int, int], n_iterations: int) -> "_DIPOutcome":
        """Iterations from ``st.start`` to ``n_iterations`` (checkpointed): fit the perturbed code's
        output to the image, average the outputs, stop by the discrepancy principle (class docstring).

        ``inv_psd`` is the inverse noise power per frequency, ``shape`` the unpadded image's [px].
        """
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        # lazy: _training and _nets import torch (~1.2 s); only when this network denoiser runs
        from octascope_plugins.denoise import _training as tr

        o = self.options
        device = st.y.device
        weight = torch.as_tensor(inv_psd, dtype=torch.float64, device=device)
        target = (st.y - st.centre) / st.spread
        bar = tr.progress_bar(n_iterations, min(st.start, n_iterations), o.progress, self.name)
        outcome = _DIPOutcome(iteration=st.start, reason="n_iterations reached" if n_iterations == o.n_iterations
                              else "cpu_work_budget reached")
        for it in range(st.start + 1, n_iterations + 1):
            outcome.iteration = it
            zin = st.z + o.input_noise_std * torch.randn(st.z.shape, generator=st.gen, device=device)
            with st.prec.autocast():
                out = st.net(zin).float()
            loss = ((out - target) ** 2).mean()
            st.prec.step(loss, st.opt)
            st.losses.append(float(loss.detach()))
            with torch.no_grad():
                current = out.detach() * st.spread + st.centre
                st.avg = current if it == 1 else o.ema * st.avg + (1 - o.ema) * current
            bar.update(1)
            bar.set_postfix(loss=f"{st.losses[-1]:.4g}")
            if st.ckpt.due(it, n_iterations):
                st.ckpt.save(tr.checkpoint_state(st, it, device, z=st.z, avg=st.avg))
            if o.early_stop and it >= o.min_iterations and it % o.check_every == 0:
                outcome.whitened = _whitened_residual(st.avg - st.y, weight, shape)
                if outcome.whitened <= o.stop_ratio:
                    outcome.stopped_at, outcome.reason = it, "discrepancy principle"
                    break
        bar.close()
        return outcome


def _whitened_residual(residual: "torch.Tensor", weight: "torch.Tensor", shape: tuple[int, int]) -> float:
    """Mean power of the residual (1, 1, H, W) on the unpadded ``shape`` [px], each frequency divided
    by its noise power (``weight``, 0 at k = 0): 1 for pure noise."""
    # lazy: torch (~1.2 s to import), only when a torch step runs
    import torch

    h, w = shape
    spectrum = torch.fft.fft2(residual[0, 0, :h, :w].double())
    return float((spectrum.abs() ** 2 * weight).sum() / (h * w - 1))


@dataclass
class _DIPTraining:
    """The training state (what a checkpoint holds, with the network and the optimiser)."""

    net: Any
    opt: Any
    prec: Any
    gen: "torch.Generator"
    y: "torch.Tensor"  # (1, 1, H, W) padded [0, 1] image
    centre: float  # its mean
    spread: float  # its standard deviation
    z: "torch.Tensor"  # the fixed random code
    avg: "torch.Tensor"  # exponential moving average of the outputs
    start: int  # iterations done before this run (resumed from a checkpoint)
    losses: list[float]
    ckpt: Any


@dataclass
class _DIPOutcome:
    """How the fit ended: the last iteration, when and why it stopped, the last whitened residual."""

    iteration: int
    reason: str
    stopped_at: int | None = None
    whitened: float = float("nan")
