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

Per-column uncertainty: the Cramér-Rao bound of the column model under the image's noise power
spectrum S(k) (iDPC noise is strongly correlated, ∝ 1/k², so a white-noise ``σ² (JᵀJ)⁻¹`` would
be wrong): for a column with amplitude A and profile P, the Fisher information of its x position is
``A² Σ_k |F[∂P/∂x](k)|² / (N S(k))`` (F the unnormalised FFT over N samples, S normalised as in
:class:`octascope.noise_spectrum.NoiseSpectrum`). Assumptions: Gaussian noise with a stationary
spectrum, an exact column model, the other columns, the amplitude and the background known or
decoupled (for a centrosymmetric profile x is orthogonal to A and to a smooth background).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import InputError
from .torch_runtime import cpu_threads as _cpu_threads
from .torch_runtime import select_device

DEFAULT_BASIS_SIGMAS_A: tuple[float, ...] = (0.12, 0.2, 0.3, 0.45, 0.65, 0.9)


@dataclass
class RefineResult:
    """Output of :func:`refine_positions` (pixel units unless stated).

    ``profiles`` maps each species to its coefficients on ``basis_sigmas_A``; ``x_err``/``y_err``
    are per-column 1-σ Cramér-Rao bounds [px] (NaN when no noise spectrum was given);
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


def profile_values(coeffs: np.ndarray, sigmas_px: np.ndarray, r_px: np.ndarray) -> np.ndarray:
    """``P(r) = Σ_k c_k exp(-r²/(2σ_k²))`` at radii ``r_px`` [px]."""
    r2 = np.asarray(r_px, float)[..., None] ** 2
    return (np.exp(-0.5 * r2 / sigmas_px**2) * coeffs).sum(-1)


def _bump_basis(n: int, spacing_px: float) -> np.ndarray:
    """(n, m) Gaussian bumps of width ``spacing_px`` centred every ``spacing_px`` over [−s, n−1+s]."""
    m = int(np.ceil((n - 1) / spacing_px)) + 3
    centres = -spacing_px + np.arange(m) * spacing_px
    t = np.arange(n, dtype=float)[:, None]
    return np.exp(-0.5 * ((t - centres[None, :]) / spacing_px) ** 2)


def refine_positions(
    data: np.ndarray,
    x_px: np.ndarray,
    y_px: np.ndarray,
    species: Sequence[str],
    *,
    pixel_size_A: float,
    basis_sigmas_A: Sequence[float] = DEFAULT_BASIS_SIGMAS_A,
    radius_A: float = 2.0,
    background_spacing_A: float = 4.0,
    max_rounds: int = 30,
    tolerance_px: float = 1e-4,
    max_step_px: float = 1.0,
    noise_power: np.ndarray | None = None,
    device: str = "auto",
) -> RefineResult:
    """Fit all columns of ``data`` jointly with one learned profile per species (module docstring).

    Parameters
    ----------
    data : numpy.ndarray
        2-D image.
    x_px, y_px : array_like
        Start positions [px] (e.g. the Gaussian locator's).
    species : sequence of str
        Species label of every column; each distinct label gets its own profile.
    pixel_size_A : float
        Pixel size [Å].
    basis_sigmas_A : sequence of float
        Widths of the Gaussians whose combination is a species profile [Å].
    radius_A : float
        Radius around each column over which its profile is rendered [Å] (covers the side-lobes).
    background_spacing_A : float
        Spacing and width of the background bumps [Å].
    max_rounds : int
        Alternations (profile + background solve, then one Gauss-Newton step of all columns) at most.
    tolerance_px : float
        Stop when no column moved more than this in a round [px].
    max_step_px : float
        Largest position step of one round [px] (a column that wants more is clipped).
    noise_power : numpy.ndarray, optional
        Noise power on the image's FFT grid, normalised so that the noise variance is its mean
        (:meth:`octascope.noise_spectrum.NoiseSpectrum.power_on_grid`); gives ``x_err``/``y_err``.
    device : str
        ``auto``, ``cpu`` or ``cuda[:i]``.
    """
    import torch

    dev = select_device(device, "refine")
    dt = torch.float64
    img_np = np.asarray(data, dtype=float)
    if img_np.ndim != 2:
        raise InputError(f"refine: the image must be 2-D, got shape {img_np.shape}")
    h, w = img_np.shape
    x0 = np.asarray(x_px, float).ravel().copy()
    y0 = np.asarray(y_px, float).ravel().copy()
    species = np.asarray(species, dtype=object).ravel()
    n = x0.size
    if species.size != n or y0.size != n:
        raise InputError(f"refine: {n} x, {y0.size} y and {species.size} species labels; give one per column")
    if n == 0:
        raise InputError("refine: no columns to refine")
    labels = sorted({str(s) for s in species})
    group = np.array([labels.index(str(s)) for s in species])
    n_g = len(labels)
    sig = np.asarray(basis_sigmas_A, float) / pixel_size_A
    k_b = sig.size
    rad = max(2, int(np.ceil(radius_A / pixel_size_A)))

    off = np.arange(-rad, rad + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    disk = (ox**2 + oy**2) <= rad**2
    ox_t = torch.as_tensor(ox[disk], dtype=torch.long, device=dev)
    oy_t = torch.as_tensor(oy[disk], dtype=torch.long, device=dev)

    img = torch.as_tensor(img_np, dtype=dt, device=dev)
    flat_img = img.reshape(-1)
    sig_t = torch.as_tensor(sig, dtype=dt, device=dev)
    grp_t = torch.as_tensor(group, dtype=torch.long, device=dev)
    x = torch.as_tensor(x0, dtype=dt, device=dev)
    y = torch.as_tensor(y0, dtype=dt, device=dev)

    # patches: fixed pixel sets around the start positions (columns move far less than a pixel)
    cx, cy = torch.round(x).long(), torch.round(y).long()
    px = cx[:, None] + ox_t[None, :]
    py = cy[:, None] + oy_t[None, :]
    inside = ((px >= 0) & (px < w) & (py >= 0) & (py < h)).to(dt)
    flat = py.clamp(0, h - 1) * w + px.clamp(0, w - 1)
    pxf, pyf = px.to(dt), py.to(dt)

    gy = torch.as_tensor(_bump_basis(h, background_spacing_A / pixel_size_A), dtype=dt, device=dev)
    gx = torch.as_tensor(_bump_basis(w, background_spacing_A / pixel_size_A), dtype=dt, device=dev)
    gyy, gxx = gy.T @ gy, gx.T @ gx
    n_bg = gy.shape[1] * gx.shape[1]

    def basis(x, y):
        dx, dy = pxf - x[:, None], pyf - y[:, None]
        g = torch.exp(-0.5 * (dx**2 + dy**2)[..., None] / sig_t**2)  # (n, m, k)
        return dx, dy, g

    # start: peak heights from the image minus a blurred background, flat-ish profile
    amp = flat_img[torch.round(y).long().clamp(0, h - 1) * w + torch.round(x).long().clamp(0, w - 1)].clone()
    amp = amp - img.mean()
    amp = torch.where(amp.abs() > 1e-12, amp, torch.full_like(amp, 1e-12))
    coeffs = torch.zeros((n_g, k_b), dtype=dt, device=dev)
    bg_w = torch.zeros((gy.shape[1], gx.shape[1]), dtype=dt, device=dev)

    def render(x, y, amp, coeffs, bg_w):
        _, _, g = basis(x, y)
        prof = (g * coeffs[grp_t][:, None, :]).sum(-1)
        cols = torch.zeros(h * w, dtype=dt, device=dev)
        cols.index_add_(0, flat.reshape(-1), (amp[:, None] * prof * inside).reshape(-1))
        return cols.reshape(h, w) + gy @ bg_w @ gx.T

    def solve_linear(x, y, amp):
        """Profile coefficients (per species) and background weights by linear least squares."""
        _, _, g = basis(x, y)
        feats = torch.zeros((n_g * k_b, h * w), dtype=dt, device=dev)
        vals = amp[:, None, None] * g * inside[..., None]  # (n, m, k)
        rows = grp_t[:, None, None] * k_b + torch.arange(k_b, device=dev)[None, None, :]
        idx = rows * (h * w) + flat[..., None]
        feats.view(-1).index_add_(0, idx.reshape(-1), vals.reshape(-1))
        f_img = feats.reshape(n_g * k_b, h, w)
        ff = feats @ feats.T
        fb = torch.einsum("ya,fyx,xb->fab", gy, f_img, gx).reshape(n_g * k_b, n_bg)
        bb = torch.kron(gyy, gxx)
        top = torch.cat([ff, fb], 1)
        bot = torch.cat([fb.T, bb], 1)
        a_mat = torch.cat([top, bot], 0)
        rhs = torch.cat([feats @ flat_img, (gy.T @ img @ gx).reshape(-1)])
        ridge = 1e-10 * torch.diagonal(a_mat).abs().max()
        sol = torch.linalg.solve(a_mat + ridge * torch.eye(a_mat.shape[0], dtype=dt, device=dev), rhs)
        return sol[: n_g * k_b].reshape(n_g, k_b), sol[n_g * k_b:].reshape(bg_w.shape)

    def cost_of(model):
        return float(((img - model) ** 2).mean())

    history = []
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        coeffs, bg_w = solve_linear(x, y, amp)
        peak = coeffs.sum(1)  # P_s(0)
        peak = torch.where(peak.abs() > 1e-30, peak, torch.ones_like(peak))
        coeffs = coeffs / peak[:, None]
        amp = amp * peak[grp_t]
        model = render(x, y, amp, coeffs, bg_w)
        cost = cost_of(model)
        res = (img - model).reshape(-1)[flat] * inside  # (n, m)
        dx, dy, g = basis(x, y)
        c = coeffs[grp_t][:, None, :]
        prof = (g * c).sum(-1)
        jx = amp[:, None] * (g * c / sig_t**2).sum(-1) * dx * inside
        jy = amp[:, None] * (g * c / sig_t**2).sum(-1) * dy * inside
        ja = prof * inside
        jac = torch.stack([jx, jy, ja], -1)  # (n, m, 3)
        hess = jac.transpose(1, 2) @ jac
        grad = (jac * res[..., None]).sum(1)
        hess = hess + 1e-9 * torch.diag_embed(torch.diagonal(hess, dim1=1, dim2=2)) + 1e-30 * torch.eye(3, dtype=dt, device=dev)
        step = torch.linalg.solve(hess, grad[..., None])[..., 0]
        move = torch.sqrt(step[:, 0] ** 2 + step[:, 1] ** 2)
        scale = torch.clamp(max_step_px / torch.clamp(move, min=1e-30), max=1.0)
        step = step * scale[:, None]
        t = 1.0
        for _ in range(6):
            xn, yn, an = x + t * step[:, 0], y + t * step[:, 1], amp + t * step[:, 2]
            new_cost = cost_of(render(xn, yn, an, coeffs, bg_w))
            if new_cost <= cost:
                break
            t *= 0.5
        else:
            history.append(np.sqrt(cost))
            break
        x, y, amp = xn, yn, an
        history.append(np.sqrt(new_cost))
        if float((t * move).max()) < tolerance_px:
            break

    coeffs, bg_w = solve_linear(x, y, amp)
    peak = coeffs.sum(1)
    peak = torch.where(peak.abs() > 1e-30, peak, torch.ones_like(peak))
    coeffs = coeffs / peak[:, None]
    amp = amp * peak[grp_t]
    model = render(x, y, amp, coeffs, bg_w)
    coeffs_np = coeffs.cpu().numpy()
    x_err = np.full(n, np.nan)
    if noise_power is not None:
        fisher = {lab: profile_fisher(coeffs_np[i], sig, noise_power) for i, lab in enumerate(labels)}
        a = amp.cpu().numpy()
        per = np.array([fisher[labels[gi]] for gi in group])
        with np.errstate(divide="ignore", invalid="ignore"):
            x_err = 1.0 / (np.abs(a) * np.sqrt(per))
    bg = (gy @ bg_w @ gx.T).cpu().numpy()
    return RefineResult(
        x=x.cpu().numpy(), y=y.cpu().numpy(), amplitude=amp.cpu().numpy(), x_err=x_err, y_err=x_err.copy(),
        profiles={lab: coeffs_np[i] for i, lab in enumerate(labels)}, basis_sigmas_A=tuple(float(s) for s in basis_sigmas_A),
        model=model.cpu().numpy(), background=bg, rounds=rounds, cost_history=history,
    )


def profile_fisher(coeffs: np.ndarray, sigmas_px: np.ndarray, noise_power: np.ndarray) -> float:
    """Fisher information of the x position of a unit-amplitude column [1/px²] under coloured noise.

    ``noise_power`` is the noise power on an FFT grid, normalised so that the pixel variance is its
    mean. The derivative ``∂P/∂x`` is known analytically in Fourier space for a sum of Gaussians:
    ``F[exp(-r²/2σ²)](k) = 2πσ² exp(-2π²σ²k²)`` (k in cycles/px), times ``-2πi k_x`` for ``∂/∂x``.
    """
    hh, ww = noise_power.shape
    ky = np.fft.fftfreq(hh)[:, None]
    kx = np.fft.fftfreq(ww)[None, :]
    k2 = kx**2 + ky**2
    ft = sum(c * 2 * np.pi * s**2 * np.exp(-2 * np.pi**2 * s**2 * k2) for c, s in zip(coeffs, sigmas_px))
    d = (2 * np.pi * kx) ** 2 * np.abs(ft) ** 2  # |F[∂P/∂x]|² per unit area; the DFT of samples ≈ this
    # DFT of point samples of a band-limited function = continuous FT (unit pixel); Fisher = Σ|D|²/(N S)
    return float(np.sum(d / np.maximum(noise_power, 1e-300)) / (hh * ww))


def position_crb_px(amplitude: float, coeffs: np.ndarray, sigmas_px: np.ndarray, noise_power: np.ndarray) -> float:
    """1-σ Cramér-Rao bound of one coordinate of a column position [px] (see :func:`profile_fisher`)."""
    return float(1.0 / (abs(amplitude) * np.sqrt(profile_fisher(coeffs, sigmas_px, noise_power))))


def refine_columns(image: Any, columns: pd.DataFrame, *, species_field: str = "species", noise: Any = "auto",
                   skip_species: Sequence[str] = (), cpu_threads: int = 1, **params: Any) -> pd.DataFrame:
    """Refine a classified column table on ``image`` (an :class:`octascope.model.Image`).

    Returns a copy of ``columns`` with ``x_A``, ``y_A``, ``x_px``, ``y_px``, ``amplitude`` replaced
    by the joint fit, ``x_err_A``/``y_err_A`` by its Cramér-Rao bounds under the image's estimated
    noise spectrum (``noise="auto"``; ``None`` leaves them NaN), and the pre-refinement positions
    kept as ``x_A_locator``/``y_A_locator``. Columns whose species is in ``skip_species`` are part
    of the model but their position is the locator's. ``params`` go to :func:`refine_positions`.
    """
    from .noise_spectrum import estimate_noise_spectrum

    ps = float(image.pixel_size_A)
    data = np.asarray(image.data, float)
    if species_field not in columns:
        raise InputError("refine: the columns have no species; refine after classification")
    power = None
    if isinstance(noise, str) and noise == "auto":
        power = estimate_noise_spectrum(data, ps).power_on_grid(data.shape)
    elif noise is not None:
        power = np.asarray(noise, float)
    device = params.pop("device", "auto")
    on_cpu = select_device(device, "refine").type == "cpu"
    with _cpu_threads(cpu_threads if on_cpu else None):
        fit = refine_positions(data, columns["x_px"].to_numpy(float), columns["y_px"].to_numpy(float),
                               columns[species_field].astype(str).to_numpy(), pixel_size_A=ps,
                               noise_power=power, device=device, **params)
    out = columns.copy()
    out.attrs = dict(columns.attrs)
    keep = out[species_field].astype(str).isin(list(skip_species)).to_numpy()
    out["x_A_locator"], out["y_A_locator"] = out["x_A"].to_numpy(float), out["y_A"].to_numpy(float)
    xr = np.where(keep, out["x_px"].to_numpy(float), fit.x)
    yr = np.where(keep, out["y_px"].to_numpy(float), fit.y)
    out["x_px"], out["y_px"] = xr, yr
    out["x_A"], out["y_A"] = xr * ps, yr * ps
    out["amplitude"] = np.where(keep, out["amplitude"].to_numpy(float), fit.amplitude)
    out["x_err_A"] = np.where(keep, out.get("x_err_A", np.nan), fit.x_err * ps)
    out["y_err_A"] = np.where(keep, out.get("y_err_A", np.nan), fit.y_err * ps)
    out.attrs["refine"] = {"rounds": fit.rounds, "rms_residual": fit.cost_history[-1] if fit.cost_history else None,
                           "profiles": {k: v.tolist() for k, v in fit.profiles.items()},
                           "basis_sigmas_A": list(fit.basis_sigmas_A)}
    return out
