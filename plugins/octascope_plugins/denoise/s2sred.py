"""S2SRED: Self2Self single-image denoising regularised by BM3D through RED and ADMM."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from octascope.core.model import Image
from octascope.core.params import Plugin, param, require

from octascope_plugins.denoise._common import (TrainingOptions, bm3d_compat, check_finite, estimate_noise_psd, estimate_noise_rms, finish,
                      normalise)
from octascope_plugins.denoise.bm3d import bm3d_profile

if TYPE_CHECKING:
    import torch


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
    # lazy: torch (~1.2 s to import), only when a torch step runs
    import torch

    return (torch.rand(shape, generator=generator, device=generator.device) >= drop_rate).float()


def masked_loss(out, target, mask):
    """Mean squared error over the hidden pixels (``mask == 0``) only: the blind-spot loss."""
    hidden = 1.0 - mask
    return ((out - target) ** 2 * hidden).sum() / hidden.sum().clamp(min=1.0)


@dataclass(frozen=True, kw_only=True)
class S2SREDOptions(TrainingOptions):
    """Parameters of :class:`S2SREDDenoiser` (plus those of every network denoiser, :class:`TrainingOptions`)."""

    n_iterations: int = param(300, doc="most training iterations (network steps)")
    learning_rate: float = param(1e-3, doc="Adam learning rate")
    cpu_work_budget: float | None = param(
        5.0, unit="Mpx·iterations",
        doc="on the CPU, at most budget / (batch_size x training pixels) iterations; binds for whole-image "
            "training (the 64-px crops: 305, above n_iterations); null = no cap")
    batch_size: int = param(4, doc="masked copies per iteration")
    patch_px: int | None = param(64, unit="px", doc="side of the random training crops (multiple of 16); null = whole image")
    augment: bool = param(True, doc="random rotations/flips of the training copies")
    mask_drop_rate: float = param(0.3, doc="fraction of pixels hidden by each Bernoulli mask [0-1)")
    dropout: float = param(0.3, doc="element-wise decoder dropout, kept on at inference [0-1)")
    encoder_width: int = param(32, doc="encoder features F (paper: 64)")
    decoder_width: int = param(64, doc="decoder features (paper: 128)")
    upsample: Literal["nearest", "bilinear"] = param("nearest", doc="decoder upsampling")
    n_mc_passes: int = param(8, doc="Monte Carlo passes averaged at inference (paper: 50-100)")
    red: bool = param(True, doc="RED/ADMM with BM3D on (S2SRED) or off (plain Self2Self)")
    red_sigma: float | None = param(
        15 / 255, doc="BM3D noise level on the [0, 1]-normalised image (paper: 15/255); null = the noise "
                      "spectrum a/k² + b fitted to the image (see the class docstring)")
    red_lambda: float = param(0.2, doc="RED regularisation weight λ (paper: 0.2)")
    admm_mu: float = param(1.0, doc="ADMM penalty μ (paper: 1.0)")
    red_every: int = param(100, doc="network iterations between ADMM x/u updates (each one BM3D call)")
    red_passes: int = param(4, doc="stochastic passes averaged into the network estimate f̄ (ADMM update, early stop)")
    early_stop: bool = param(True, doc="stop when f̄ changes by no more than its MC scatter + stop_tolerance x noise")
    stop_tolerance: float = param(0.3, doc="allowed RMS change of f̄ between checks, as a fraction of the RMS noise [1]")
    min_iterations: int = param(100, doc="no early stop before this many iterations")
    check_every: int = param(50, doc="iterations between early-stop checks")

    def check(self) -> None:
        super().check()
        require(self.batch_size >= 1 and self.n_mc_passes >= 1 and self.red_every >= 1 and self.red_passes >= 1,
                "batch_size, n_mc_passes, red_every and red_passes must all be >= 1")
        require(self.patch_px is None or (self.patch_px >= 16 and self.patch_px % 16 == 0),
                f"patch_px must be a multiple of 16 (>= 16) or null for the whole image, got {self.patch_px}")
        require(0.0 < self.mask_drop_rate < 1.0,
                f"mask_drop_rate must be in (0, 1) (the loss is taken on the hidden pixels), got {self.mask_drop_rate}")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        require(self.encoder_width >= 1 and self.decoder_width >= 4,
                f"needs encoder_width >= 1 and decoder_width >= 4, got {self.encoder_width}, {self.decoder_width}")
        require((self.red_sigma is None or self.red_sigma > 0) and self.red_lambda >= 0 and self.admm_mu > 0,
                f"needs red_sigma > 0, red_lambda >= 0, admm_mu > 0, got {self.red_sigma}, {self.red_lambda}, {self.admm_mu}")
        require(self.stop_tolerance >= 0 and self.min_iterations >= 0 and self.check_every >= 1,
                "needs stop_tolerance >= 0, min_iterations >= 0 and check_every >= 1")


@dataclass
class _Plan:
    """What an image and the options make of one run (the [0, 1] image padded to the network's
    multiple; ``h``, ``w`` its unpadded shape [px])."""

    padded: np.ndarray
    h: int
    w: int
    patch: int | None  # side of the training crops [px]; None: the whole image
    device: "torch.device"
    on_cpu: bool
    n_iterations: int
    threads: int | None
    noise_rms01: float  # RMS noise of the [0, 1] image (finest Haar band)
    red_noise: float | np.ndarray  # BM3D's noise: a σ or a power spectrum
    red_info: dict[str, Any]  # the fitted spectrum's parameters (empty for a fixed σ)


@dataclass
class _Training:
    """The training state (what a checkpoint holds, with the network and the optimiser)."""

    net: Any
    opt: Any
    prec: Any
    gen: "torch.Generator"
    y: "torch.Tensor"  # (1, 1, H, W) padded [0, 1] image
    stats: tuple[float, float]  # its mean and standard deviation
    x: "torch.Tensor"  # ADMM primal (RED) variable
    u: "torch.Tensor"  # ADMM scaled dual
    start: int  # iterations done before this run (resumed from a checkpoint)
    losses: list[float]
    ckpt: Any


@dataclass
class _Outcome:
    """How training ended: the last iteration, when and why it stopped, the early-stop record."""

    iteration: int
    reason: str
    stopped_at: int | None = None
    changes: list[float] = field(default_factory=list)  # (RMS change - MC scatter) / noise RMS at each check


class S2SREDDenoiser(Plugin):
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

    Why the fixed ``red_sigma`` (15/255) stays the default: a fixed value is a different noise
    level for every image — the [0, 1] scale is set by the image's extreme pixels, which the
    noise itself moves (range 0.72 at 300 e/Å² vs 0.91 at 100 e/Å² for the same simulated
    particle) — and white where iDPC noise is not; but on simulated iDPC images the fitted
    spectrum (``red_sigma: null``, a stronger prior) did not bring positions or tilts closer to
    the truth (experiments/benchmarks/results/denoise-lowdose.md).

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

    Early stop (CPU defaults): every ``check_every`` iterations from ``min_iterations`` on,
    the network estimate f̄ (mean of ``red_passes`` stochastic passes; the ADMM update's own
    when one falls there) is compared with the previous check's. Training stops when the mean
    squared change is no larger than what the Monte Carlo scatter of two such means explains
    (2 · mean variance / ``red_passes``) plus ``(stop_tolerance · σ̂)²``, with σ̂ the RMS noise of
    the [0, 1] image (finest Haar band): the estimate no longer moves by more than a fraction
    of the noise it is removing. With Adam at a constant learning rate the estimate never
    settles completely: the excess change per check fell from 0.5σ̂ to a floor of 0.25-0.3σ̂ on
    the simulated 256² and the tests' 63² images, hence ``stop_tolerance`` 0.3 (at the
    defaults the 256² image stopped at 150 of 300 iterations). ``early_stop: false`` runs
    ``n_iterations``.

    CPU defaults (``conf/denoiser/s2sred.yaml``): 32/64 features, 64-px crops x 4, at most 300
    iterations (and at most ``cpu_work_budget`` megapixel-iterations of training pixels; it
    binds for whole-image training), the early stop above, 8 Monte Carlo passes, one torch
    thread unless more cores are free. The paper's settings (GPU): ``s2sred_paper.yaml``.
    Quality cost: experiments/benchmarks/results/denoise-cpu-defaults.md.

    Parameters are those of :class:`S2SREDOptions`.
    """

    name: ClassVar[str] = "s2sred"
    Options = S2SREDOptions
    options: S2SREDOptions

    def _training_settings(self) -> dict[str, Any]:
        # everything that shapes the trained state (not n_iterations: a longer run may resume a shorter one)
        skip = {"n_iterations", "cpu_work_budget", "n_mc_passes", "progress", "checkpoint_path", "checkpoint_every",
                "device", "cpu_threads", "early_stop", "stop_tolerance", "min_iterations", "check_every"}
        return {k: v for k, v in self.options.to_dict().items() if k not in skip}

    def denoise(self, image: Image) -> Image:
        """Train the network on ``image`` alone, then average ``n_mc_passes`` stochastic passes.

        Returns
        -------
        Image
            The mean of the passes [image units], their per-pixel variance as ``variance``
            [image units²] and the run's settings and outcome as metadata.
        """
        # lazy: _training and _nets import torch (~1.2 s); only when this network denoiser runs
        from octascope_plugins.denoise import _training as tr

        o = self.options
        data = np.asarray(image.data, dtype=np.float64)
        check_finite(data, self.name)
        y01, lo, scale = normalise(data)
        plan = self._plan(y01)
        t_start = time.perf_counter()
        with tr.deterministic(o.seed, plan.on_cpu), tr.cpu_threads(plan.threads):
            state = self._start(plan)
            t_train = time.perf_counter()
            outcome = self._train(state, plan)
            t_infer = time.perf_counter()
            mean, var = self._mc(state.net, state.y, state.gen, o.n_mc_passes, state.prec, state.stats)
            t_end = time.perf_counter()
        mean_np = mean[0, 0, :plan.h, :plan.w].double().cpu().numpy()
        var_np = var[0, 0, :plan.h, :plan.w].double().cpu().numpy()
        trained = outcome.iteration - state.start
        meta = {
            "name": self.name,
            **{k: v for k, v in o.to_dict().items() if k not in ("progress",)},
            "iterations_planned": plan.n_iterations,
            "iterations_run": outcome.iteration,
            "stopped_at": outcome.stopped_at,
            "stop_reason": outcome.reason,
            "change_over_noise": outcome.changes,
            "noise_rms01": plan.noise_rms01,
            "cpu_threads_used": plan.threads,
            "device_used": str(plan.device),
            "amp_used": state.prec.enabled,
            "red_sigma_used": (plan.red_info["sigma_total"] if plan.red_info else o.red_sigma) if o.red else None,
            "padded_shape": list(plan.padded.shape),
            "iterations_resumed_from": state.start,
            "final_loss": state.losses[-1] if state.losses else None,
            "train_s": t_infer - t_train,
            "s_per_iteration": (t_infer - t_train) / trained if trained > 0 else None,
            "inference_s": t_end - t_infer,
            "total_s": t_end - t_start,
        }
        return finish(image, mean_np * scale + lo, meta, variance=var_np * scale**2)

    def _plan(self, y01: np.ndarray) -> "_Plan":
        """What this image and the options make of the run: padding, crops, device, iterations,
        threads, the early-stop noise scale and the BM3D noise (a σ, or the fitted spectrum)."""
        # lazy: _training and _nets import torch (~1.2 s); only when this network denoiser runs
        from octascope_plugins.denoise import _training as tr
        from octascope_plugins.denoise._nets import DOWNSAMPLING

        o = self.options
        padded, (h, w) = tr.pad_to_multiple(y01, DOWNSAMPLING)
        ph, pw = padded.shape
        patch = o.patch_px
        if patch is not None and patch > min(ph, pw):
            patch = None  # the image is smaller than a crop: train on all of it
        device = tr.select_device(o.device, self.name)
        on_cpu = device.type == "cpu"
        n_iterations = o.iterations_for(o.batch_size * (ph * pw if patch is None else patch * patch), on_cpu)
        threads = tr.resolve_cpu_threads(o.cpu_threads) if on_cpu else None
        noise_rms01 = estimate_noise_rms(y01)  # early-stop tolerance scale [0, 1 units]
        red_info: dict[str, Any] = {}
        red_noise: float | np.ndarray  # a σ, or a noise power spectrum (bm3d's sigma_psd takes either)
        if o.red_sigma is None:
            red_noise, red_info = estimate_noise_psd(padded)
            bm3d_compat()
        else:
            red_noise = o.red_sigma
        return _Plan(padded=padded, h=h, w=w, patch=patch, device=device, on_cpu=on_cpu, n_iterations=n_iterations,
                     threads=threads, noise_rms01=noise_rms01, red_noise=red_noise, red_info=red_info)

    def _start(self, plan: "_Plan") -> "_Training":
        """A fresh network and optimiser, the ADMM variables (x as BM3D of the image with RED on,
        u = 0), or the state of a matching checkpoint."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        # lazy: _training and _nets import torch (~1.2 s); only when this network denoiser runs
        from octascope_plugins.denoise import _training as tr
        from octascope_plugins.denoise._nets import S2SNet

        o = self.options
        device = plan.device
        gen = torch.Generator(device=device).manual_seed(o.seed)
        net = S2SNet(1, 1, encoder_width=o.encoder_width, decoder_width=o.decoder_width,
                     dropout=o.dropout, upsample=o.upsample).to(device)
        net.train()  # dropout stays on, in training and at inference
        opt = torch.optim.Adam(net.parameters(), lr=o.learning_rate)
        prec = tr.Precision(device, o.amp)
        y = torch.as_tensor(plan.padded, dtype=torch.float32, device=device)[None, None]
        stats = (float(y.mean()), float(y.std().clamp(min=1e-6)))
        ckpt = tr.Checkpointer(o.checkpoint_path, o.checkpoint_every,
                               tr.fingerprint(self._training_settings(), plan.padded), self.name)
        st = _Training(net=net, opt=opt, prec=prec, gen=gen, y=y, stats=stats, x=y.clone(), u=torch.zeros_like(y),
                       start=0, losses=[], ckpt=ckpt)
        saved = ckpt.load()
        if saved is not None:
            tr.resume(st, saved, device)
            st.x, st.u = saved["x"].to(device), saved["u"].to(device)
        elif o.red:
            st.x = self._bm3d(y, plan.red_noise)
        return st

    def _train(self, st: "_Training", plan: "_Plan") -> "_Outcome":
        """Network iterations from ``st.start`` to ``n_iterations`` (checkpointed), stopping early
        when the network estimate has converged (class docstring)."""
        # lazy: _training and _nets import torch (~1.2 s); only when this network denoiser runs
        from octascope_plugins.denoise import _training as tr

        o = self.options
        outcome = _Outcome(iteration=st.start, reason="n_iterations reached" if plan.n_iterations == o.n_iterations
                           else "cpu_work_budget reached")
        previous = None  # f̄ at the last early-stop check
        bar = tr.progress_bar(plan.n_iterations, min(st.start, plan.n_iterations), o.progress, self.name)
        for it in range(st.start + 1, plan.n_iterations + 1):
            outcome.iteration = it
            f_bar, f_var, check_due = self._step(st, plan, it)
            bar.update(1)
            bar.set_postfix(loss=f"{st.losses[-1]:.4g}")
            if st.ckpt.due(it, plan.n_iterations):
                st.ckpt.save(tr.checkpoint_state(st, it, plan.device, x=st.x, u=st.u))
            if check_due:
                assert f_bar is not None and f_var is not None
                if previous is not None and it >= o.min_iterations:
                    excess = self._excess_change(f_bar, previous, f_var, plan)
                    outcome.changes.append(excess)
                    if excess <= o.stop_tolerance:
                        outcome.stopped_at, outcome.reason = it, "estimate converged"
                        break
                previous = f_bar
        bar.close()
        return outcome

    def _step(self, st: "_Training", plan: "_Plan", it: int) -> tuple[Any, Any, bool]:
        """Iteration ``it``: one network step on the masked Self2Self loss (plus the ADMM term),
        then, when due, the ADMM x and u updates.

        Returns
        -------
        f_bar, f_var : torch.Tensor or None
            Mean and variance of ``red_passes`` stochastic passes, when an ADMM update or an
            early-stop check is due at this iteration.
        check_due : bool
            Whether an early-stop check is due.
        """
        o = self.options
        yb, tb = self._batch(st.y, st.x - st.u, plan.patch, st.gen)
        mask = bernoulli_mask(yb.shape, o.mask_drop_rate, st.gen)
        out = self._forward(st.net, yb, mask, st.stats, st.prec)
        loss = masked_loss(out, yb, mask)
        if o.red:
            loss = loss + 0.5 * o.admm_mu * ((out - tb) ** 2).mean()
        st.prec.step(loss, st.opt)
        st.losses.append(float(loss.detach()))
        red_due = o.red and it % o.red_every == 0
        check_due = o.early_stop and it % o.check_every == 0 and it >= o.min_iterations - o.check_every
        f_bar = f_var = None
        if red_due or check_due:
            f_bar, f_var = self._mc(st.net, st.y, st.gen, o.red_passes, st.prec, st.stats)
        if red_due:
            assert f_bar is not None
            st.x = (o.red_lambda * self._bm3d(st.x, plan.red_noise) + o.admm_mu * (f_bar + st.u)) / (o.red_lambda + o.admm_mu)
            st.u = st.u + f_bar - st.x
        return f_bar, f_var, bool(check_due)

    def _excess_change(self, f_bar: Any, previous: Any, f_var: Any, plan: "_Plan") -> float:
        """RMS change of the network estimate since the last check beyond what the Monte Carlo
        scatter of two means explains, in units of the image's RMS noise [1]."""
        sl = (0, 0, slice(0, plan.h), slice(0, plan.w))
        change_sq = float(((f_bar - previous)[sl].double() ** 2).mean())
        scatter_sq = 2.0 * float(f_var[sl].double().mean()) / self.options.red_passes
        return max(change_sq - scatter_sq, 0.0) ** 0.5 / max(plan.noise_rms01, 1e-12)

    @staticmethod
    def _forward(net, y, mask, stats, prec):
        """Network estimate in the [0, 1] image space; the network itself sees the image standardised."""
        centre, spread = stats
        with prec.autocast():
            out = net((y - centre) / spread * mask, mask)
        return out.float() * spread + centre

    def _batch(self, y, target, patch, gen):
        """``batch_size`` (augmented, cropped) copies of the image and of the ADMM target."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        # lazy: _training and _nets import torch (~1.2 s); only when this network denoiser runs
        from octascope_plugins.denoise._training import dihedral

        ph, pw = y.shape[-2:]
        ys, ts = [], []
        o = self.options
        for _ in range(o.batch_size):
            if patch is None:
                yc, tc = y[0], target[0]
            else:
                r = int(torch.randint(0, ph - patch + 1, (1,), generator=gen, device=y.device))
                c = int(torch.randint(0, pw - patch + 1, (1,), generator=gen, device=y.device))
                yc, tc = y[0, :, r:r + patch, c:c + patch], target[0, :, r:r + patch, c:c + patch]
            if o.augment and yc.shape[-1] == yc.shape[-2]:
                k = int(torch.randint(0, 8, (1,), generator=gen, device=y.device))
                yc, tc = dihedral(yc, k), dihedral(tc, k)
            elif o.augment:
                k = 4 * int(torch.randint(0, 2, (1,), generator=gen, device=y.device))  # flips only keep a non-square shape
                yc, tc = dihedral(yc, k), dihedral(tc, k)
            ys.append(yc)
            ts.append(tc)
        return torch.stack(ys), torch.stack(ts)

    def _mc(self, net, y, gen, n_passes, prec, stats):
        """Mean and variance of ``n_passes`` stochastic passes (new Bernoulli mask, dropout on)."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        total = torch.zeros_like(y, dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        done = 0
        with torch.no_grad():
            while done < n_passes:
                b = min(self.options.batch_size, n_passes - done)
                yb = y.expand(b, -1, -1, -1)
                mask = bernoulli_mask(yb.shape, self.options.mask_drop_rate, gen)
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
        # lazy: bm3d (~0.3 s to import), only for denoiser=bm3d
        import bm3d
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        arr = x[0, 0].double().cpu().numpy()
        # one thread: with all cores the package's aggregation order varies and the same image gives
        # different pixels (as the bm3d denoiser's default, threads: 1)
        out = np.asarray(bm3d.bm3d(arr, sigma_psd=noise, profile=bm3d_profile("np", 1)),
                         dtype=np.float32).reshape(arr.shape)
        return torch.as_tensor(out, device=x.device)[None, None]
