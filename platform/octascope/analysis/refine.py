"""Model-based refinement of classified columns (the StatSTEM idea, done with a learned profile).

After classification every column belongs to a species. The image is then modelled as a whole::

    m(p) = b(p) + sum_i A_i * P_{s(i)}(|p - r_i|)

- ``P_s`` is one radially symmetric profile per species, shared by all its columns and learned from
  the image itself: a linear combination of Gaussians of fixed widths (``basis_sigmas_A``) with free
  coefficients of either sign, so the negative side-lobes of an iDPC column (its transfer has them)
  are representable, which a single 2-D Gaussian is not; normalised to ``P_s(0) = 1`` so ``A_i`` is
  the column's peak height.
- ``b`` is a smooth background: Gaussian bumps of width ``background_spacing_A`` on a grid of that
  spacing (the particle's low-frequency iDPC hump, support film, slow noise).
- Each column has only its position ``r_i`` and amplitude ``A_i`` free; neighbours are part of the
  same model, so their tails cannot pull a centre.

The fit alternates (i) a linear least-squares solve of all profile coefficients and background
weights over the whole image (separable normal equations, no full design matrix) and (ii) a
Gauss-Newton step of every column's (x, y, A) against the residual of the full model (3 x 3
normal equations per column, solved batched with torch; GPU when present). The cost is checked
after every step and the step halved if it rose.

Per-column uncertainty (``noise_model``): the fit of a column's (x, y, A) against the residual is
linear in the noise, ``δp = (JᵀJ)⁻¹Jᵀε`` on its patch, so its covariance — and that of two
neighbouring columns — is ``(JᵀJ)⁻¹Jᵀ C J (JᵀJ)⁻¹`` with ``C`` the noise covariance of the fitted
observables, taken from the noise power spectrum of the image minus the fitted columns
(``spectrum``: :mod:`octascope.analysis.noise_covariance`; for the gradient domain the cross-spectra
of the two derivative channels). ``white`` keeps ``σ² (JᵀJ)⁻¹`` with σ² the residual variance on the
column's patch (the Cramér-Rao bound when the noise is white in the fitted domain: heteroscedastic
HAADF pixels); ``auto`` takes ``spectrum`` when the image's noise power falls faster than 1/k. The
neighbours and the background are treated as known (they are nearly orthogonal to a centre).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from octascope.core.devices import check_device_name, select_device
from octascope.core.devices import cpu_threads as _cpu_threads
from octascope.core.errors import InputError, PluginError, PluginParameterError
from octascope.core.params import Options, options_from, param, require
from octascope.analysis.uncertainty import PAIRS_ATTR, PositionCovariance
from octascope.analysis.noise_spectrum import estimate_noise_spectrum

if TYPE_CHECKING:
    import torch

#: feature-image elements held at once in the linear solve (float64: 128 MiB)
_MAX_FEATURE_ELEMENTS = 2**24


@dataclass(frozen=True, kw_only=True)
class RefineOptions(Options):
    """Parameters of the model-based refinement: the ``refine`` group of the run configuration.

    :func:`refine_columns` and :func:`refine_positions` read them; the configuration check builds
    them before the image is read, and ``conf/config.yaml`` lists every one with its default.
    """

    enabled: bool = param(False, doc="refine the classified columns before the network is built")
    domain: Literal["image", "gradient", "auto"] = param(
        "image", doc="what is fitted: image (the pixels; the ML fit for white noise, HAADF), gradient (the image's "
                     "Fourier gradient; the ML fit for iDPC/iCoM noise, biased on thermally smeared columns), "
                     "auto (gradient for iDPC/iCoM, image otherwise)")
    basis_sigmas_A: tuple[float, ...] = param((0.2, 0.3, 0.45, 0.65, 0.9), unit="Å",
                                              doc="widths of the Gaussians whose combination is a species profile")
    radius_A: float = param(2.0, unit="Å", doc="a column's profile is rendered out to this radius (covers the side-lobes)")
    background_spacing_A: float = param(4.0, unit="Å", doc="spacing and width of the smooth background's Gaussian bumps")
    max_rounds: int = param(30, doc="alternations (profile + background solve, one Gauss-Newton step of all columns) "
                                    "at most")
    tolerance_px: float = param(1e-3, unit="px", doc="stop when the RMS move of the columns in a round is below this")
    max_step_px: float = param(1.0, unit="px", doc="largest position step of one round (a longer one is clipped)")
    linear_every: int = param(4, doc="after the first three rounds, re-solve profiles and background every this many "
                                     "rounds (they change little once the positions settle; the solve is the costly part)")
    device: str = param("auto", doc="'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:i]'")
    cpu_threads: int = param(1, doc="torch threads of a CPU fit (0 keeps torch's setting)")
    skip_species: tuple[str, ...] = param((), doc="species modelled with the others but keeping the locator's positions")
    noise_model: Literal["auto", "spectrum", "white"] = param(
        "auto", doc="noise the position covariances assume: spectrum (the noise power spectrum of the image minus the "
                    "fitted columns; correlated), white (each column's residual variance), auto (spectrum when the noise "
                    "power falls faster than 1/k)")
    covariance_radius_A: float = param(4.5, unit="Å", doc="columns closer than this get the covariance of their position "
                                                         "errors; 0: none")

    def check(self) -> None:
        require(len(self.basis_sigmas_A) > 0 and min(self.basis_sigmas_A) > 0,
                f"basis_sigmas_A must be one or more widths > 0 [Å], got {list(self.basis_sigmas_A)}")
        for key in ("radius_A", "background_spacing_A", "max_step_px"):
            require(getattr(self, key) > 0, f"{key} must be > 0, got {getattr(self, key)}")
        for key in ("max_rounds", "tolerance_px", "cpu_threads", "covariance_radius_A"):
            require(getattr(self, key) >= 0, f"{key} must be >= 0, got {getattr(self, key)}")
        require(self.linear_every >= 1, f"linear_every must be >= 1, got {self.linear_every}")
        try:
            check_device_name(self.device, "refine")
        except PluginError as exc:
            require(False, f"device: {exc}")


def refine_options(options: RefineOptions | None = None, params: Mapping[str, Any] | None = None) -> RefineOptions:
    """``options``, or :class:`RefineOptions` built from the keyword form ``params`` (not both)."""
    if options is not None and params:
        raise PluginParameterError("refine: give a RefineOptions or keyword parameters, not both")
    return options if options is not None else options_from(RefineOptions, params or {}, "refine")


@dataclass
class RefineResult:
    """Output of :func:`refine_positions` (pixel units unless stated).

    ``profiles`` maps each species to its coefficients on ``basis_sigmas_A``; ``x_err``/``y_err``
    are per-column 1-σ uncertainties from the fit [px] and ``xy_cov`` the covariance of the two
    [px²] (module docstring); ``pairs`` (P, 2) index neighbouring columns and ``pair_cov``
    (P, 2, 2) their covariances [px²]; ``noise_model`` the noise assumed;
    ``cost_history`` the RMS residual after each round.
    """

    x: np.ndarray
    y: np.ndarray
    amplitude: np.ndarray
    x_err: np.ndarray
    y_err: np.ndarray
    profiles: dict[str, np.ndarray]
    basis_sigmas_A: tuple[float, ...]
    model: np.ndarray
    background: np.ndarray
    rounds: int
    cost_history: list = field(default_factory=list)
    xy_cov: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    pair_cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 2)))
    noise_model: str = "white"


def profile_values(coeffs: np.ndarray, sigmas_px: np.ndarray, r_px: np.ndarray) -> np.ndarray:
    """``P(r) = Σ_k c_k exp(-r²/(2σ_k²))`` at radii ``r_px`` [px]."""
    r2 = np.asarray(r_px, float)[..., None] ** 2
    return (np.exp(-0.5 * r2 / sigmas_px**2) * coeffs).sum(-1)


def _bump_basis(n: int, spacing_px: float) -> tuple[np.ndarray, np.ndarray]:
    """(n, m) Gaussian bumps of width ``spacing_px`` centred every ``spacing_px`` over [−s, n−1+s],
    and their derivatives along the axis."""
    m = int(np.ceil((n - 1) / spacing_px)) + 3
    centres = -spacing_px + np.arange(m) * spacing_px
    u = (np.arange(n, dtype=float)[:, None] - centres[None, :]) / spacing_px
    g = np.exp(-0.5 * u**2)
    return g, -u / spacing_px * g


def _observables(img: "torch.Tensor", gradient: bool) -> "torch.Tensor":
    """What is fitted, (n_ch, h, w): the image itself, or its Fourier gradient (x, y).

    The gradient is taken of the image's mirror extension, so a field of view that is not
    periodic (a crop) has no edge jump; for iDPC/iCoM it is the CoM field, whose noise is white.
    """
    # lazy: torch (~1.2 s to import), only when a torch step runs
    import torch

    if not gradient:
        return img[None]
    h, w = img.shape
    ext = torch.cat([torch.cat([img, img.flip(1)], 1), torch.cat([img.flip(0), img.flip(0).flip(1)], 1)], 0)
    f = torch.fft.fft2(ext)
    kx = torch.fft.fftfreq(2 * w, device=img.device, dtype=img.dtype)[None, :]
    ky = torch.fft.fftfreq(2 * h, device=img.device, dtype=img.dtype)[:, None]
    return torch.stack([torch.fft.ifft2(2j * np.pi * kx * f).real[:h, :w],
                        torch.fft.ifft2(2j * np.pi * ky * f).real[:h, :w]])


@dataclass
class _JointModel:
    """The whole-image model of :func:`refine_positions` on fixed pixel sets: what is fitted, every
    column's patch, the species profile basis and the background basis (torch tensors).

    Patches are the pixels within the render radius of each column's start position (columns move
    far less than a pixel); ``inside`` masks those off the image, ``flat`` are their flat indices.
    """

    img: "torch.Tensor"  # (h, w)
    obs: "torch.Tensor"  # (n_ch, h, w) observables: the image or its gradient
    gradient: bool
    sig: "torch.Tensor"  # (k,) basis widths [px]
    group: "torch.Tensor"  # (n,) species index of every column
    n_species: int
    pxf: "torch.Tensor"  # (n, m) patch pixel x [px]
    pyf: "torch.Tensor"  # (n, m) patch pixel y [px]
    inside: "torch.Tensor"  # (n, m) 1 on the image, 0 off it
    flat: "torch.Tensor"  # (n, m) flat pixel index (clamped onto the image)
    gy: "torch.Tensor"  # (h, by) background bumps along y
    gx: "torch.Tensor"  # (w, bx) background bumps along x
    bg_pairs: list[tuple["torch.Tensor", "torch.Tensor"]]  # (row basis, column basis) per channel
    bb: "torch.Tensor"  # background Gram matrix
    rhs_bg: "torch.Tensor"  # background right-hand side

    @classmethod
    def build(cls, img_np: np.ndarray, x0: np.ndarray, y0: np.ndarray, group: np.ndarray, n_species: int, *,
              pixel_size_A: float, options: RefineOptions, gradient: bool, device: "torch.device") -> "_JointModel":
        """The model of image ``img_np`` around start positions ``x0``, ``y0`` [px]."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        dt = torch.float64
        h, w = img_np.shape
        img = torch.as_tensor(img_np, dtype=dt, device=device)
        obs = _observables(img, gradient)
        rad = max(2, int(np.ceil(options.radius_A / pixel_size_A)))
        off = np.arange(-rad, rad + 1)
        oy, ox = np.meshgrid(off, off, indexing="ij")
        disk = (ox**2 + oy**2) <= rad**2
        ox_t = torch.as_tensor(ox[disk], dtype=torch.long, device=device)
        oy_t = torch.as_tensor(oy[disk], dtype=torch.long, device=device)
        cx = torch.round(torch.as_tensor(x0, dtype=dt, device=device)).long()
        cy = torch.round(torch.as_tensor(y0, dtype=dt, device=device)).long()
        px, py = cx[:, None] + ox_t[None, :], cy[:, None] + oy_t[None, :]
        inside = ((px >= 0) & (px < w) & (py >= 0) & (py < h)).to(dt)
        flat = py.clamp(0, h - 1) * w + px.clamp(0, w - 1)
        gy, gx, bg_pairs = _background_basis(h, w, options.background_spacing_A / pixel_size_A, gradient, device)
        bb = torch.stack([torch.kron(a.T @ a, b.T @ b) for a, b in bg_pairs]).sum(0)
        rhs_bg = torch.stack([(a.T @ obs[c] @ b).reshape(-1) for c, (a, b) in enumerate(bg_pairs)]).sum(0)
        sig = torch.as_tensor(np.asarray(options.basis_sigmas_A, float) / pixel_size_A, dtype=dt, device=device)
        return cls(img=img, obs=obs, gradient=gradient, sig=sig, group=torch.as_tensor(group, dtype=torch.long, device=device),
                   n_species=n_species, pxf=px.to(dt), pyf=py.to(dt), inside=inside, flat=flat, gy=gy, gx=gx,
                   bg_pairs=bg_pairs, bb=bb, rhs_bg=rhs_bg)

    def tensor(self, values: np.ndarray) -> "torch.Tensor":
        """``values`` as a float64 tensor on the model's device."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        return torch.as_tensor(values, dtype=self.img.dtype, device=self.img.device)

    def start_amplitudes(self, x: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        """Image value at each rounded position above the image mean (kept off zero)."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        h, w = self.img.shape
        amp0 = self.img.reshape(-1)[torch.round(y).long().clamp(0, h - 1) * w + torch.round(x).long().clamp(0, w - 1)] \
            - self.img.mean()
        return torch.where(amp0.abs() > 1e-12, amp0, torch.full_like(amp0, 1e-12))

    def channels(self, x: "torch.Tensor", y: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """Per column, pixel and basis function: the observable channels of a unit-coefficient Gaussian
        (n_ch, n, m, k), and their derivatives with respect to the column's x and y."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        dx, dy = self.pxf - x[:, None], self.pyf - y[:, None]
        dx, dy = dx[..., None], dy[..., None]
        s2 = self.sig**2
        g = torch.exp(-0.5 * (dx**2 + dy**2) / s2)
        if not self.gradient:
            return g[None], (g * dx / s2)[None], (g * dy / s2)[None]
        gxp, gyp = -dx / s2 * g, -dy / s2 * g  # ∂g/∂px, ∂g/∂py
        dxx = -(dx**2 / s2**2 - 1 / s2) * g  # ∂(∂g/∂px)/∂x_i = -∂²g/∂px²
        dxy = -(dx * dy / s2**2) * g
        dyy = -(dy**2 / s2**2 - 1 / s2) * g
        return torch.stack([gxp, gyp]), torch.stack([dxx, dxy]), torch.stack([dxy, dyy])

    def render(self, x: "torch.Tensor", y: "torch.Tensor", amp: "torch.Tensor", coeffs: "torch.Tensor",
               bg_w: "torch.Tensor") -> "torch.Tensor":
        """The model's observables (n_ch, h, w): every column's profile plus the background."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        n_ch, h, w = self.obs.shape
        g = self.channels(x, y)[0]
        prof = (g * coeffs[self.group][None, :, None, :]).sum(-1)  # (n_ch, n, m)
        cols = torch.zeros((n_ch, h * w), dtype=self.img.dtype, device=self.img.device)
        cols.index_add_(1, self.flat.reshape(-1), (amp[None, :, None] * prof * self.inside).reshape(n_ch, -1))
        return cols.reshape(n_ch, h, w) + torch.stack([a @ bg_w @ b.T for a, b in self.bg_pairs])

    def cost(self, model: "torch.Tensor") -> float:
        """Mean squared residual of ``model``."""
        return float(((self.obs - model) ** 2).mean())

    def normalise(self, coeffs: "torch.Tensor", amp: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """Profiles scaled to ``P_s(0) = 1`` and the amplitudes scaled back, so ``amp`` is the peak height."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        peak = coeffs.sum(1)  # P_s(0)
        peak = torch.where(peak.abs() > 1e-30, peak, torch.ones_like(peak))
        return coeffs / peak[:, None], amp * peak[self.group]

    def solve_linear(self, x: "torch.Tensor", y: "torch.Tensor", amp: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """Profile coefficients (n_species, k) and background weights by linear least squares.

        The normal equations are assembled from feature images (one per species and basis width),
        a bounded number at a time, without the full design matrix.
        """
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        dt, dev = self.img.dtype, self.img.device
        h, w = self.img.shape
        k_b, n_g = self.sig.shape[0], self.n_species
        n_f, n_bg = n_g * k_b, self.gy.shape[1] * self.gx.shape[1]
        g = self.channels(x, y)[0]
        rows = self.group[:, None, None] * k_b + torch.arange(k_b, device=dev)[None, None, :]
        idx = rows * (h * w) + self.flat[..., None]  # (n, m, k): feature row and pixel, flattened
        ff = torch.zeros((n_f, n_f), dtype=dt, device=dev)
        fb = torch.zeros((n_f, n_bg), dtype=dt, device=dev)
        rf = torch.zeros(n_f, dtype=dt, device=dev)
        chunk = max(1, int(_MAX_FEATURE_ELEMENTS // (h * w)))  # feature images held at once (memory bound)
        obs_flat = self.obs.reshape(self.obs.shape[0], -1)
        for c, (a, b) in enumerate(self.bg_pairs):
            vals = amp[:, None, None] * g[c] * self.inside[..., None]  # (n, m, k)
            for f0 in range(0, n_f, chunk):
                f1 = min(n_f, f0 + chunk)
                feats = torch.zeros(((f1 - f0), h * w), dtype=dt, device=dev)
                mine = ((rows >= f0) & (rows < f1)).expand_as(vals)
                feats.view(-1).index_add_(0, idx[mine] - f0 * h * w, vals[mine])
                # rows f0:f1 of the Gram matrix: each feature image gathered on every column's patch
                t = torch.einsum("bnm,nmk->bnk", feats[:, self.flat], vals)
                ff[f0:f1] += torch.zeros((f1 - f0, n_g, k_b), dtype=dt, device=dev).index_add_(1, self.group, t).reshape(f1 - f0, n_f)
                fb[f0:f1] += torch.einsum("ya,fyx,xb->fab", a, feats.reshape(-1, h, w), b).reshape(f1 - f0, n_bg)
                rf[f0:f1] += feats @ obs_flat[c]
        a_mat = torch.cat([torch.cat([ff, fb], 1), torch.cat([fb.T, self.bb], 1)], 0)
        rhs = torch.cat([rf, self.rhs_bg])
        d = torch.diagonal(a_mat).abs()
        sol = torch.linalg.solve(a_mat + torch.diag(1e-9 * d + 1e-12 * d.max()), rhs)
        return sol[:n_f].reshape(n_g, k_b), sol[n_f:].reshape(self.gy.shape[1], self.gx.shape[1])

    def patch_residuals(self, model: "torch.Tensor") -> "torch.Tensor":
        """The residual of ``model`` on every column's patch (n_ch, n, m), 0 off the image."""
        return (self.obs - model).reshape(self.obs.shape[0], -1)[:, self.flat] * self.inside

    def jacobian(self, x: "torch.Tensor", y: "torch.Tensor", amp: "torch.Tensor", coeffs: "torch.Tensor") -> "torch.Tensor":
        """Derivatives of every column's patch observables by its (x, y, A): (n, n_ch·m, 3)."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        g, gdx, gdy = self.channels(x, y)
        c = coeffs[self.group][None, :, None, :]
        jx = amp[None, :, None] * (gdx * c).sum(-1) * self.inside
        jy = amp[None, :, None] * (gdy * c).sum(-1) * self.inside
        ja = (g * c).sum(-1) * self.inside
        return torch.stack([jx, jy, ja], -1).permute(1, 0, 2, 3).reshape(x.shape[0], -1, 3)

    def gauss_newton_step(self, x: "torch.Tensor", y: "torch.Tensor", amp: "torch.Tensor", coeffs: "torch.Tensor",
                          model: "torch.Tensor", max_step_px: float) -> tuple["torch.Tensor", "torch.Tensor"]:
        """Every column's (x, y, A) step against the residual of the full ``model`` (3 × 3 normal
        equations per column), clipped to ``max_step_px`` [px]; and the unclipped position move [px]."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        res = self.patch_residuals(model)
        jac = self.jacobian(x, y, amp, coeffs)
        n = x.shape[0]
        hess = jac.transpose(1, 2) @ jac
        gvec = (jac * res.permute(1, 0, 2).reshape(n, -1)[..., None]).sum(1)
        eye = torch.eye(3, dtype=self.img.dtype, device=self.img.device)
        hess = hess + 1e-9 * torch.diag_embed(torch.diagonal(hess, dim1=1, dim2=2)) + 1e-30 * eye
        step = torch.linalg.solve(hess, gvec[..., None])[..., 0]
        move = torch.sqrt(step[:, 0] ** 2 + step[:, 1] ** 2)
        return step * torch.clamp(max_step_px / torch.clamp(move, min=1e-30), max=1.0)[:, None], move

    def position_errors(self, x: "torch.Tensor", y: "torch.Tensor", amp: "torch.Tensor", coeffs: "torch.Tensor",
                        model: "torch.Tensor") -> tuple[np.ndarray, np.ndarray]:
        """1-σ uncertainties of every column's x and y [px] for white noise in the fitted domain:
        ``σ² (JᵀJ)⁻¹`` with σ² the residual variance on its patch (pixels for HAADF; the
        gradient/CoM field for iDPC and iCoM)."""
        cov = self.white_covariance(x, y, amp, coeffs, model)
        return np.sqrt(np.clip(cov[:, 0, 0], 0, None)), np.sqrt(np.clip(cov[:, 1, 1], 0, None))

    def white_covariance(self, x: "torch.Tensor", y: "torch.Tensor", amp: "torch.Tensor", coeffs: "torch.Tensor",
                         model: "torch.Tensor") -> np.ndarray:
        """(n, 2, 2) covariance of (x, y) for white noise in the fitted domain [px²] (:meth:`position_errors`)."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        res = self.patch_residuals(model)
        jac = self.jacobian(x, y, amp, coeffs)
        hess = jac.transpose(1, 2) @ jac + 1e-30 * torch.eye(3, dtype=self.img.dtype, device=self.img.device)
        n_fit = self.inside.sum(1) * self.obs.shape[0]
        var = (res**2).sum((0, 2)) / torch.clamp(n_fit - 3, min=1.0)
        if self.gradient:
            # the Fourier gradient of an integrated field holds only its curl-free half: the residual per
            # channel shows half the CoM noise variance σ², while the Fisher information is JᵀJ/σ²
            var = 2.0 * var
        cov = torch.linalg.inv(hess) * var[:, None, None]
        return cov[:, :2, :2].cpu().numpy()

    def influence(self, x: "torch.Tensor", y: "torch.Tensor", amp: "torch.Tensor", coeffs: "torch.Tensor") -> np.ndarray:
        """(n, n_ch, 2, m) rows x, y of ``(JᵀJ)⁻¹Jᵀ`` of every column on its patch pixels, per channel."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        jac = self.jacobian(x, y, amp, coeffs)  # (n, n_ch·m, 3), channel-major
        hess = jac.transpose(1, 2) @ jac + 1e-30 * torch.eye(3, dtype=self.img.dtype, device=self.img.device)
        infl = torch.linalg.solve(hess, jac.transpose(1, 2))[:, :2]  # (n, 2, n_ch·m)
        n, _, total = infl.shape
        n_ch = self.obs.shape[0]
        return infl.reshape(n, 2, n_ch, total // n_ch).permute(0, 2, 1, 3).cpu().numpy()

    def column_image(self, x: "torch.Tensor", y: "torch.Tensor", amp: "torch.Tensor", coeffs: "torch.Tensor") -> np.ndarray:
        """The columns' profiles rendered in the image domain (h, w), background left out (the gradient
        domain fits the same profile coefficients, up to a constant)."""
        # lazy: torch (~1.2 s to import), only when a torch step runs
        import torch

        h, w = self.img.shape
        dx, dy = self.pxf - x[:, None], self.pyf - y[:, None]
        g = torch.exp(-0.5 * (dx[..., None] ** 2 + dy[..., None] ** 2) / self.sig**2)
        prof = (g * coeffs[self.group][:, None, :]).sum(-1) * amp[:, None] * self.inside
        out = torch.zeros(h * w, dtype=self.img.dtype, device=self.img.device)
        out.index_add_(0, self.flat.reshape(-1), prof.reshape(-1))
        return out.reshape(h, w).cpu().numpy()


def _background_basis(h: int, w: int, spacing_px: float, gradient: bool, device: "torch.device"
                      ) -> tuple["torch.Tensor", "torch.Tensor", list[tuple["torch.Tensor", "torch.Tensor"]]]:
    """Background bumps along y (h, by) and x (w, bx), and per observable channel its (row basis,
    column basis): the image -> (gy, gx); the gradient -> x: (gy, dgx), y: (dgy, gx)."""
    # lazy: torch (~1.2 s to import), only when a torch step runs
    import torch

    dt = torch.float64
    gy_np, dgy_np = _bump_basis(h, spacing_px)
    gx_np, dgx_np = _bump_basis(w, spacing_px)
    gy, gx = torch.as_tensor(gy_np, dtype=dt, device=device), torch.as_tensor(gx_np, dtype=dt, device=device)
    dgy, dgx = torch.as_tensor(dgy_np, dtype=dt, device=device), torch.as_tensor(dgx_np, dtype=dt, device=device)
    return gy, gx, ([(gy, dgx), (dgy, gx)] if gradient else [(gy, gx)])


def _column_arrays(data: np.ndarray, x_px: np.ndarray, y_px: np.ndarray, species: Sequence[str], domain: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray]:
    """The checked inputs: image, start x and y [px], the species labels (sorted) and every column's
    index into them; :class:`InputError` for what cannot be fitted."""
    img_np = np.asarray(data, dtype=float)
    if img_np.ndim != 2:
        raise InputError(f"refine: the image must be 2-D, got shape {img_np.shape}")
    if domain not in ("image", "gradient"):
        raise InputError(f"refine: domain={domain!r}; use 'image' or 'gradient'")
    x0 = np.asarray(x_px, float).ravel().copy()
    y0 = np.asarray(y_px, float).ravel().copy()
    labels_in = np.asarray(species, dtype=object).ravel()
    n = x0.size
    if labels_in.size != n or y0.size != n:
        raise InputError(f"refine: {n} x, {y0.size} y and {labels_in.size} species labels; give one per column")
    if n == 0:
        raise InputError("refine: no columns to refine")
    labels = sorted({str(s) for s in labels_in})
    group = np.array([labels.index(str(s)) for s in labels_in])
    return img_np, x0, y0, labels, group


def _alternate(fit: _JointModel, x: "torch.Tensor", y: "torch.Tensor", amp: "torch.Tensor", options: RefineOptions
               ) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", int, list]:
    """Rounds of (profile + background solve, one Gauss-Newton step of all columns) until the
    columns stop moving (``tolerance_px``), a step no longer lowers the cost, or ``max_rounds``.

    Returns
    -------
    x, y, amp : torch.Tensor
        Positions [px] and amplitudes after the last accepted step.
    rounds : int
        Rounds run.
    history : list of float
        RMS residual after each round.
    """
    # lazy: torch (~1.2 s to import), only when a torch step runs
    import torch

    coeffs = torch.zeros((fit.n_species, fit.sig.shape[0]), dtype=fit.img.dtype, device=fit.img.device)
    bg_w = torch.zeros((fit.gy.shape[1], fit.gx.shape[1]), dtype=fit.img.dtype, device=fit.img.device)
    history = []
    rounds = 0
    for rounds in range(1, options.max_rounds + 1):
        if rounds <= 3 or rounds % options.linear_every == 0:  # the shared profile and background settle first
            coeffs, bg_w = fit.solve_linear(x, y, amp)
            coeffs, amp = fit.normalise(coeffs, amp)
        model = fit.render(x, y, amp, coeffs, bg_w)
        cost = fit.cost(model)
        step, move = fit.gauss_newton_step(x, y, amp, coeffs, model, options.max_step_px)
        t = 1.0
        for _ in range(6):  # halve the step until the cost does not rise
            xn, yn, an = x + t * step[:, 0], y + t * step[:, 1], amp + t * step[:, 2]
            new_cost = fit.cost(fit.render(xn, yn, an, coeffs, bg_w))
            if new_cost <= cost:
                break
            t *= 0.5
        else:
            history.append(np.sqrt(cost))
            break
        x, y, amp = xn, yn, an
        history.append(np.sqrt(new_cost))
        if float(torch.sqrt(torch.mean((t * move) ** 2))) < options.tolerance_px:
            break
    return x, y, amp, rounds, history


def _covariance(fit: _JointModel, x: "torch.Tensor", y: "torch.Tensor", amp: "torch.Tensor", coeffs: "torch.Tensor",
                model: "torch.Tensor", img_np: np.ndarray, pixel_size_A: float, o: RefineOptions
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Every column's (x, y) covariance, and neighbouring columns', under the ``noise_model`` (module
    docstring) [px²]: own (n, 2, 2), pairs (P, 2), their covariances (P, 2, 2), the model used."""
    # lazy: not loaded by `octascope --help` / `import octascope` (start-up)
    from octascope.analysis.noise_covariance import autocovariance, channel_spectra, estimator_covariance, neighbour_pairs

    xs, ys = x.cpu().numpy(), y.cpu().numpy()
    radius_px = o.covariance_radius_A / pixel_size_A
    pairs = neighbour_pairs(xs, ys, radius_px)
    residual = img_np - fit.column_image(x, y, amp, coeffs)
    h, w = residual.shape
    crop = 512
    y0, x0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    noise = estimate_noise_spectrum(residual[y0:y0 + crop, x0:x0 + crop], pixel_size_A)
    mode = o.noise_model
    if mode == "auto":
        slope = noise.slope()
        mode = "spectrum" if np.isfinite(slope) and slope < -1.0 else "white"
    channels = ("dx", "dy") if fit.gradient else ("image",)
    rad_px = max(2, int(np.ceil(o.radius_A / pixel_size_A)))  # the patches' radius (_JointModel.build)
    side = max(2 * (int(np.ceil(radius_px)) + 3 + 3 * rad_px) + 2, min(crop, max(h, w)))
    acov = autocovariance(channel_spectra(noise, (side, side), channels))
    off = np.arange(-rad_px, rad_px + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    disk = (ox**2 + oy**2) <= rad_px**2
    offsets = np.column_stack([ox[disk], oy[disk]])
    centres = np.column_stack([np.rint(fit.pxf[:, 0].cpu().numpy() - offsets[0, 0]),
                               np.rint(fit.pyf[:, 0].cpu().numpy() - offsets[0, 1])]).astype(np.int64)
    own, pair_cov = estimator_covariance(fit.influence(x, y, amp, coeffs), offsets, centres, pairs, acov)
    if mode == "white":
        white = fit.white_covariance(x, y, amp, coeffs, model)
        level = np.sqrt(np.einsum("nii->n", white) / np.maximum(np.einsum("nii->n", own), 1e-300))
        pair_cov = pair_cov * (level[pairs[:, 0]] * level[pairs[:, 1]])[:, None, None]
        own = white
    return own, pairs, pair_cov, mode


def refine_positions(data: np.ndarray, x_px: np.ndarray, y_px: np.ndarray, species: Sequence[str],
                     options: RefineOptions | None = None, *, pixel_size_A: float, domain: str | None = None,
                     **params: Any) -> RefineResult:
    """Fit all columns of ``data`` jointly with one learned profile per species (module docstring).

    Parameters
    ----------
    data : numpy.ndarray
        2-D image.
    x_px, y_px : array_like
        Start positions [px] (e.g. the Gaussian locator's).
    species : sequence of str
        Species label of every column; each distinct label gets its own profile.
    options : RefineOptions, optional
        The fit's parameters (lengths in [Å] or [px] as their names say); the defaults when
        neither it nor ``params`` is given.
    pixel_size_A : float
        Pixel size [Å].
    domain : str, optional
        ``"image"`` (least squares on the pixels: the ML fit for white noise) or ``"gradient"``
        (on the image's Fourier gradient: the whitened ML fit for iDPC/iCoM); default
        ``options.domain``, whose ``auto`` only :func:`refine_columns` resolves (it knows the signal).
    **params
        The keyword form of ``options`` (its field names).

    Returns
    -------
    RefineResult
        Positions, amplitudes and their uncertainties [px], the species profiles, and the fitted
        observables (``model``, 1 or 2 channels) and background.
    """
    o = refine_options(options, params)
    dev = select_device(o.device, "refine")
    domain = o.domain if domain is None else domain
    img_np, x0, y0, labels, group = _column_arrays(data, x_px, y_px, species, domain)
    fit = _JointModel.build(img_np, x0, y0, group, len(labels), pixel_size_A=pixel_size_A, options=o,
                            gradient=domain == "gradient", device=dev)
    x, y = fit.tensor(x0), fit.tensor(y0)
    x, y, amp, rounds, history = _alternate(fit, x, y, fit.start_amplitudes(x, y), o)
    coeffs, bg_w = fit.solve_linear(x, y, amp)
    coeffs, amp = fit.normalise(coeffs, amp)
    model = fit.render(x, y, amp, coeffs, bg_w)
    own, pairs, pair_cov, mode = _covariance(fit, x, y, amp, coeffs, model, img_np, pixel_size_A, o)
    coeffs_np = coeffs.cpu().numpy()
    return RefineResult(
        x=x.cpu().numpy(), y=y.cpu().numpy(), amplitude=amp.cpu().numpy(),
        x_err=np.sqrt(np.clip(own[:, 0, 0], 0, None)), y_err=np.sqrt(np.clip(own[:, 1, 1], 0, None)),
        xy_cov=own[:, 0, 1], pairs=pairs, pair_cov=pair_cov, noise_model=mode,
        profiles={lab: coeffs_np[i] for i, lab in enumerate(labels)}, basis_sigmas_A=tuple(float(s) for s in o.basis_sigmas_A),
        model=model.cpu().numpy(), background=(fit.gy @ bg_w @ fit.gx.T).cpu().numpy(), rounds=rounds,
        cost_history=history,
    )


def refine_columns(image: Any, columns: pd.DataFrame, options: RefineOptions | None = None, *,
                   species_field: str = "species", **params: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Refine a classified column table on ``image`` (an :class:`octascope.core.model.Image`).

    Parameters
    ----------
    image : Image
        The (denoised) image the columns were located on.
    columns : pandas.DataFrame
        Classified columns (``x_px``, ``y_px`` [px], ``x_A``, ``y_A`` [Å], ``amplitude`` and the
        species in ``species_field``).
    options : RefineOptions, optional
        The refinement's parameters (default: :class:`RefineOptions`); ``enabled`` is not read here.
        ``domain="auto"`` fits the gradient for iDPC/iCoM images and the pixels otherwise.
    species_field : str
        Column of ``columns`` holding the species.
    **params
        The keyword form of ``options``.

    Returns
    -------
    columns : pandas.DataFrame
        A copy with ``x_A``, ``y_A``, ``x_px``, ``y_px``, ``amplitude`` replaced by the joint fit,
        ``x_err_A``/``y_err_A`` [Å] and ``xy_corr`` by its uncertainties (the covariances between
        neighbouring refined columns in ``attrs["position_covariance"]``,
        :class:`octascope.analysis.uncertainty.PositionCovariance`, when the table has ``column_id``),
        and the pre-refinement positions kept as ``x_A_locator``/``y_A_locator``. Columns whose species is in ``skip_species`` are part of
        the model but keep the locator's position.
    info : dict
        What the fit did: domain, rounds, RMS residual, the species profiles and basis widths [Å].
    """
    o = refine_options(options, params)
    ps = float(image.pixel_size_A)
    data = np.asarray(image.data, float)
    if species_field not in columns:
        raise InputError("refine: the columns have no species; refine after classification")
    domain = o.domain
    if domain == "auto":  # whitened fit where the noise is integrated (iDPC, iCoM)
        domain = "gradient" if str(getattr(image, "signal", "")).lower() in ("idpc", "icom") else "image"
    on_cpu = select_device(o.device, "refine").type == "cpu"
    with _cpu_threads(o.cpu_threads if on_cpu else None):
        fit = refine_positions(data, columns["x_px"].to_numpy(float), columns["y_px"].to_numpy(float),
                               columns[species_field].astype(str).to_numpy(), o, pixel_size_A=ps, domain=domain)
    out = columns.copy()
    keep = out[species_field].astype(str).isin(list(o.skip_species)).to_numpy()
    out["x_A_locator"], out["y_A_locator"] = out["x_A"].to_numpy(float), out["y_A"].to_numpy(float)
    xr = np.where(keep, out["x_px"].to_numpy(float), fit.x)
    yr = np.where(keep, out["y_px"].to_numpy(float), fit.y)
    out["x_px"], out["y_px"] = xr, yr
    out["x_A"], out["y_A"] = xr * ps, yr * ps
    out["amplitude"] = np.where(keep, out["amplitude"].to_numpy(float), fit.amplitude)
    out["x_err_A"] = np.where(keep, out.get("x_err_A", np.nan), fit.x_err * ps)
    out["y_err_A"] = np.where(keep, out.get("y_err_A", np.nan), fit.y_err * ps)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = fit.xy_cov / (fit.x_err * fit.y_err)
    out["xy_corr"] = np.where(keep, out.get("xy_corr", 0.0), corr)
    if "column_id" in out:
        ids = out["column_id"].to_numpy()
        both = ~keep[fit.pairs[:, 0]] & ~keep[fit.pairs[:, 1]] if len(fit.pairs) else np.zeros(0, bool)
        out.attrs[PAIRS_ATTR] = PositionCovariance(ids[fit.pairs[both, 0]], ids[fit.pairs[both, 1]],
                                                   fit.pair_cov[both] * ps**2)
    info = {"domain": domain, "noise_model": fit.noise_model, "rounds": fit.rounds, "rms_residual": fit.cost_history[-1] if fit.cost_history else None,
            "profiles": {k: v.tolist() for k, v in fit.profiles.items()}, "basis_sigmas_A": list(fit.basis_sigmas_A)}
    return out, info
