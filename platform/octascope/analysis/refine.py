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

Per-column uncertainty: ``σ² (JᵀJ)⁻¹`` of the column's (x, y, A) in the fitted domain, with σ² the
residual variance on its patch. It is the Cramér-Rao bound of the column model when the noise is
white in that domain (pixels for HAADF; the CoM field, i.e. the image's gradient, for iDPC/iCoM,
whose image-domain noise is ∝ 1/k² and would make a pixel-domain ``σ² (JᵀJ)⁻¹`` wrong), the model
is exact, and the neighbours and background are known (they are nearly orthogonal to a centre).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from octascope.core.errors import InputError
from octascope.core.devices import cpu_threads as _cpu_threads
from octascope.core.devices import select_device

if TYPE_CHECKING:
    import torch

#: feature-image elements held at once in the linear solve (float64: 128 MiB)
_MAX_FEATURE_ELEMENTS = 2**24

DEFAULT_BASIS_SIGMAS_A: tuple[float, ...] = (0.2, 0.3, 0.45, 0.65, 0.9)


@dataclass
class RefineResult:
    """Output of :func:`refine_positions` (pixel units unless stated).

    ``profiles`` maps each species to its coefficients on ``basis_sigmas_A``; ``x_err``/``y_err``
    are per-column 1-σ uncertainties from the fit [px] (module docstring);
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


def _bump_basis(n: int, spacing_px: float) -> tuple[np.ndarray, np.ndarray]:
    """(n, m) Gaussian bumps of width ``spacing_px`` centred every ``spacing_px`` over [−s, n−1+s],
    and their derivatives along the axis."""
    m = int(np.ceil((n - 1) / spacing_px)) + 3
    centres = -spacing_px + np.arange(m) * spacing_px
    u = (np.arange(n, dtype=float)[:, None] - centres[None, :]) / spacing_px
    g = np.exp(-0.5 * u**2)
    return g, -u / spacing_px * g


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
    tolerance_px: float = 1e-3,
    max_step_px: float = 1.0,
    linear_every: int = 4,
    domain: str = "image",
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
        Stop when the RMS move of the columns in a round is below this [px].
    linear_every : int
        After the first three rounds, re-solve the profiles and background every this many rounds
        (they change little once the positions have settled; the solve is the costly part).
    max_step_px : float
        Largest position step of one round [px] (a column that wants more is clipped).
    domain : str
        What is fitted: ``"image"`` (unweighted least squares on the pixels: the ML estimator for
        white noise, HAADF) or ``"gradient"`` (least squares on the image's Fourier gradient: for
        iDPC/iCoM, whose noise is white in the CoM field the image was integrated from, this is the
        whitened, maximum-likelihood fit). ``model`` holds the fitted observables (1 or 2 channels).
    device : str
        ``auto``, ``cpu`` or ``cuda[:i]``.
    """
    import torch

    dev = select_device(device, "refine")
    dt = torch.float64
    img_np = np.asarray(data, dtype=float)
    if img_np.ndim != 2:
        raise InputError(f"refine: the image must be 2-D, got shape {img_np.shape}")
    if domain not in ("image", "gradient"):
        raise InputError(f"refine: domain={domain!r}; use 'image' or 'gradient'")
    h, w = img_np.shape
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
    n_g = len(labels)
    sig = np.asarray(basis_sigmas_A, float) / pixel_size_A
    k_b = sig.size
    rad = max(2, int(np.ceil(radius_A / pixel_size_A)))
    grad = domain == "gradient"

    off = np.arange(-rad, rad + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    disk = (ox**2 + oy**2) <= rad**2
    ox_t = torch.as_tensor(ox[disk], dtype=torch.long, device=dev)
    oy_t = torch.as_tensor(oy[disk], dtype=torch.long, device=dev)

    img = torch.as_tensor(img_np, dtype=dt, device=dev)
    if grad:  # the observables: the image's Fourier gradient (for iDPC/iCoM: the CoM field, white noise)
        # of its mirror extension, so a field of view that is not periodic (a crop) has no edge jump
        ext = torch.cat([torch.cat([img, img.flip(1)], 1), torch.cat([img.flip(0), img.flip(0).flip(1)], 1)], 0)
        f = torch.fft.fft2(ext)
        kx = torch.fft.fftfreq(2 * w, device=dev, dtype=dt)[None, :]
        ky = torch.fft.fftfreq(2 * h, device=dev, dtype=dt)[:, None]
        obs = torch.stack([torch.fft.ifft2(2j * np.pi * kx * f).real[:h, :w],
                           torch.fft.ifft2(2j * np.pi * ky * f).real[:h, :w]])
    else:
        obs = img[None]
    n_ch = obs.shape[0]
    obs_flat = obs.reshape(n_ch, -1)
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

    gy_np, dgy_np = _bump_basis(h, background_spacing_A / pixel_size_A)
    gx_np, dgx_np = _bump_basis(w, background_spacing_A / pixel_size_A)
    gy, gx = torch.as_tensor(gy_np, dtype=dt, device=dev), torch.as_tensor(gx_np, dtype=dt, device=dev)
    dgy, dgx = torch.as_tensor(dgy_np, dtype=dt, device=dev), torch.as_tensor(dgx_np, dtype=dt, device=dev)
    # background channels as (row basis, column basis): image -> (gy, gx); gradient -> x: (gy, dgx), y: (dgy, gx)
    bg_pairs = [(gy, dgx), (dgy, gx)] if grad else [(gy, gx)]
    bb = torch.stack([torch.kron(a.T @ a, b.T @ b) for a, b in bg_pairs]).sum(0)
    rhs_bg = torch.stack([(a.T @ obs[c] @ b).reshape(-1) for c, (a, b) in enumerate(bg_pairs)]).sum(0)
    n_bg = gy.shape[1] * gx.shape[1]

    def channels(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per column, pixel and basis function: the observable channels of a unit-coefficient Gaussian
        (n_ch, n, m, k), and their derivatives with respect to the column's x and y."""
        dx, dy = pxf - x[:, None], pyf - y[:, None]
        dx, dy = dx[..., None], dy[..., None]
        s2 = sig_t**2
        g = torch.exp(-0.5 * (dx**2 + dy**2) / s2)
        if not grad:
            return g[None], (g * dx / s2)[None], (g * dy / s2)[None]
        gxp, gyp = -dx / s2 * g, -dy / s2 * g  # ∂g/∂px, ∂g/∂py
        dxx = -(dx**2 / s2**2 - 1 / s2) * g  # ∂(∂g/∂px)/∂x_i = -∂²g/∂px²
        dxy = -(dx * dy / s2**2) * g
        dyy = -(dy**2 / s2**2 - 1 / s2) * g
        return torch.stack([gxp, gyp]), torch.stack([dxx, dxy]), torch.stack([dxy, dyy])

    amp0 = img.reshape(-1)[torch.round(y).long().clamp(0, h - 1) * w + torch.round(x).long().clamp(0, w - 1)] - img.mean()
    amp = torch.where(amp0.abs() > 1e-12, amp0, torch.full_like(amp0, 1e-12))
    coeffs = torch.zeros((n_g, k_b), dtype=dt, device=dev)
    bg_w = torch.zeros((gy.shape[1], gx.shape[1]), dtype=dt, device=dev)

    def render(x: torch.Tensor, y: torch.Tensor, amp: torch.Tensor, coeffs: torch.Tensor, bg_w: torch.Tensor) -> torch.Tensor:
        g = channels(x, y)[0]
        prof = (g * coeffs[grp_t][None, :, None, :]).sum(-1)  # (n_ch, n, m)
        cols = torch.zeros((n_ch, h * w), dtype=dt, device=dev)
        cols.index_add_(1, flat.reshape(-1), (amp[None, :, None] * prof * inside).reshape(n_ch, -1))
        return cols.reshape(n_ch, h, w) + torch.stack([a @ bg_w @ b.T for a, b in bg_pairs])

    def solve_linear(x: torch.Tensor, y: torch.Tensor, amp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Profile coefficients (per species) and background weights by linear least squares."""
        g = channels(x, y)[0]
        rows = grp_t[:, None, None] * k_b + torch.arange(k_b, device=dev)[None, None, :]
        idx = rows * (h * w) + flat[..., None]  # (n, m, k): feature row and pixel, flattened
        ff = torch.zeros((n_g * k_b, n_g * k_b), dtype=dt, device=dev)
        fb = torch.zeros((n_g * k_b, n_bg), dtype=dt, device=dev)
        rf = torch.zeros(n_g * k_b, dtype=dt, device=dev)
        n_f = n_g * k_b
        chunk = max(1, int(_MAX_FEATURE_ELEMENTS // (h * w)))  # feature images held at once (memory bound)
        for c, (a, b) in enumerate(bg_pairs):
            vals = amp[:, None, None] * g[c] * inside[..., None]  # (n, m, k)
            for f0 in range(0, n_f, chunk):
                f1 = min(n_f, f0 + chunk)
                feats = torch.zeros(((f1 - f0), h * w), dtype=dt, device=dev)
                mine = ((rows >= f0) & (rows < f1)).expand_as(vals)
                feats.view(-1).index_add_(0, idx[mine] - f0 * h * w, vals[mine])
                # rows f0:f1 of the Gram matrix: each feature image gathered on every column's patch
                t = torch.einsum("bnm,nmk->bnk", feats[:, flat], vals)
                ff[f0:f1] += torch.zeros((f1 - f0, n_g, k_b), dtype=dt, device=dev).index_add_(1, grp_t, t).reshape(f1 - f0, n_f)
                fb[f0:f1] += torch.einsum("ya,fyx,xb->fab", a, feats.reshape(-1, h, w), b).reshape(f1 - f0, n_bg)
                rf[f0:f1] += feats @ obs_flat[c]
        a_mat = torch.cat([torch.cat([ff, fb], 1), torch.cat([fb.T, bb], 1)], 0)
        rhs = torch.cat([rf, rhs_bg])
        d = torch.diagonal(a_mat).abs()
        sol = torch.linalg.solve(a_mat + torch.diag(1e-9 * d + 1e-12 * d.max()), rhs)
        return sol[: n_g * k_b].reshape(n_g, k_b), sol[n_g * k_b:].reshape(bg_w.shape)

    def cost_of(model: torch.Tensor) -> float:
        return float(((obs - model) ** 2).mean())

    def normalise(coeffs: torch.Tensor, amp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        peak = coeffs.sum(1)  # P_s(0)
        peak = torch.where(peak.abs() > 1e-30, peak, torch.ones_like(peak))
        return coeffs / peak[:, None], amp * peak[grp_t]

    history = []
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        if rounds <= 3 or rounds % linear_every == 0:  # the shared profile and background settle first
            coeffs, bg_w = solve_linear(x, y, amp)
            coeffs, amp = normalise(coeffs, amp)
        model = render(x, y, amp, coeffs, bg_w)
        cost = cost_of(model)
        res = (obs - model).reshape(n_ch, -1)[:, flat] * inside  # (n_ch, n, m)
        g, gdx, gdy = channels(x, y)
        c = coeffs[grp_t][None, :, None, :]
        jx = amp[None, :, None] * (gdx * c).sum(-1) * inside
        jy = amp[None, :, None] * (gdy * c).sum(-1) * inside
        ja = (g * c).sum(-1) * inside
        jac = torch.stack([jx, jy, ja], -1).permute(1, 0, 2, 3).reshape(n, -1, 3)  # (n, n_ch*m, 3)
        hess = jac.transpose(1, 2) @ jac
        gvec = (jac * res.permute(1, 0, 2).reshape(n, -1)[..., None]).sum(1)
        hess = hess + 1e-9 * torch.diag_embed(torch.diagonal(hess, dim1=1, dim2=2)) + 1e-30 * torch.eye(3, dtype=dt, device=dev)
        step = torch.linalg.solve(hess, gvec[..., None])[..., 0]
        move = torch.sqrt(step[:, 0] ** 2 + step[:, 1] ** 2)
        step = step * torch.clamp(max_step_px / torch.clamp(move, min=1e-30), max=1.0)[:, None]
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
        if float(torch.sqrt(torch.mean((t * move) ** 2))) < tolerance_px:
            break

    coeffs, bg_w = solve_linear(x, y, amp)
    coeffs, amp = normalise(coeffs, amp)
    coeffs_np = coeffs.cpu().numpy()
    model = render(x, y, amp, coeffs, bg_w)
    # per-column covariance of (x, y, A): sigma^2 (J^T J)^-1 with the noise variance of the residual
    # (white in the fitted domain: pixels for HAADF, the gradient/CoM field for iDPC and iCoM)
    res = (obs - model).reshape(n_ch, -1)[:, flat] * inside
    g, gdx, gdy = channels(x, y)
    c = coeffs[grp_t][None, :, None, :]
    jac = torch.stack([amp[None, :, None] * (gdx * c).sum(-1) * inside, amp[None, :, None] * (gdy * c).sum(-1) * inside,
                       (g * c).sum(-1) * inside], -1).permute(1, 0, 2, 3).reshape(n, -1, 3)
    hess = jac.transpose(1, 2) @ jac + 1e-30 * torch.eye(3, dtype=dt, device=dev)
    n_fit = inside.sum(1) * n_ch
    var = (res**2).sum((0, 2)) / torch.clamp(n_fit - 3, min=1.0)
    if grad:
        # the Fourier gradient of an integrated field holds only its curl-free half: the residual per
        # channel shows half the CoM noise variance σ², while the Fisher information is JᵀJ/σ²
        var = 2.0 * var
    cov = torch.linalg.inv(hess) * var[:, None, None]
    x_err = torch.sqrt(torch.clamp(cov[:, 0, 0], min=0)).cpu().numpy()
    y_err = torch.sqrt(torch.clamp(cov[:, 1, 1], min=0)).cpu().numpy()
    bg = (gy @ bg_w @ gx.T).cpu().numpy()
    return RefineResult(
        x=x.cpu().numpy(), y=y.cpu().numpy(), amplitude=amp.cpu().numpy(), x_err=x_err, y_err=y_err,
        profiles={lab: coeffs_np[i] for i, lab in enumerate(labels)}, basis_sigmas_A=tuple(float(s) for s in basis_sigmas_A),
        model=model.cpu().numpy(), background=bg, rounds=rounds, cost_history=history,
    )


def refine_columns(image: Any, columns: pd.DataFrame, *, species_field: str = "species",
                   domain: str = "image", skip_species: Sequence[str] = (), cpu_threads: int = 1,
                   **params: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Refine a classified column table on ``image`` (an :class:`octascope.core.model.Image`).

    Returns a copy of ``columns`` with ``x_A``, ``y_A``, ``x_px``, ``y_px``, ``amplitude`` replaced
    by the joint fit, ``x_err_A``/``y_err_A`` by its uncertainties, and the pre-refinement positions
    kept as ``x_A_locator``/``y_A_locator``. Columns whose species is in ``skip_species`` are part
    of the model but their position is the locator's. ``domain``: ``"image"`` (default) fits the
    pixels, ``"gradient"`` the image's gradient (the ML fit for iDPC/iCoM noise, see the module
    docstring for when it is biased), ``"auto"`` the gradient for iDPC/iCoM and the pixels otherwise. ``params`` go to :func:`refine_positions`.
    Also returns what the fit did: domain, rounds, RMS residual, the species profiles.
    """
    ps = float(image.pixel_size_A)
    data = np.asarray(image.data, float)
    if species_field not in columns:
        raise InputError("refine: the columns have no species; refine after classification")
    if domain == "auto":  # whitened fit where the noise is integrated (iDPC, iCoM)
        domain = "gradient" if str(getattr(image, "signal", "")).lower() in ("idpc", "icom") else "image"
    device = params.pop("device", "auto")
    on_cpu = select_device(device, "refine").type == "cpu"
    with _cpu_threads(cpu_threads if on_cpu else None):
        fit = refine_positions(data, columns["x_px"].to_numpy(float), columns["y_px"].to_numpy(float),
                               columns[species_field].astype(str).to_numpy(), pixel_size_A=ps,
                               domain=domain, device=device, **params)
    out = columns.copy()
    keep = out[species_field].astype(str).isin(list(skip_species)).to_numpy()
    out["x_A_locator"], out["y_A_locator"] = out["x_A"].to_numpy(float), out["y_A"].to_numpy(float)
    xr = np.where(keep, out["x_px"].to_numpy(float), fit.x)
    yr = np.where(keep, out["y_px"].to_numpy(float), fit.y)
    out["x_px"], out["y_px"] = xr, yr
    out["x_A"], out["y_A"] = xr * ps, yr * ps
    out["amplitude"] = np.where(keep, out["amplitude"].to_numpy(float), fit.amplitude)
    out["x_err_A"] = np.where(keep, out.get("x_err_A", np.nan), fit.x_err * ps)
    out["y_err_A"] = np.where(keep, out.get("y_err_A", np.nan), fit.y_err * ps)
    info = {"domain": domain, "rounds": fit.rounds, "rms_residual": fit.cost_history[-1] if fit.cost_history else None,
            "profiles": {k: v.tolist() for k, v in fit.profiles.items()}, "basis_sigmas_A": list(fit.basis_sigmas_A)}
    return out, info
