"""Synthetic [001] CsPbX3 images with known geometry (the `source=synthetic` input and test fixtures).

The particle is an n1 x n2 block of corner-sharing PbX6 octahedra seen along [001], CsX
terminated: Pb columns (Pb + apical X) on a square lattice of spacing ``a_A``, X columns
between neighbouring Pb, Cs columns at the square centres, with one more ring of X and Cs
around the Pb block. The in-plane octahedral rotation (a0a0c+ style, alternating sign in a
checkerboard) moves each X column perpendicular to its Pb-Pb line by ``(a/2)·tan(α)``, so every
projected Pb-X bond makes the angle α with the Pb-Pb direction: θ1 = θ2 = θ3 = α.

Columns are rendered as Gaussians with amplitudes proportional to the summed atomic number of
one unit-cell repeat (iDPC contrast is roughly linear in Z): Pb+I 135, I 53, Cs 55. Noise is
Poisson at a dose in e/Å².

The truth here is computed from the generated positions with its own arithmetic, sharing no
code with the metric plugins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from octascope.core.errors import InputError
from octascope.core.model import Image, Truth

#: summed atomic number per unit-cell repeat of each column type
Z_COLUMN = {"Pb": 82 + 53, "X": 53, "Cs": 55}


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of a synthetic perovskite image.

    Parameters
    ----------
    n_cells : tuple of int
        Octahedra (Pb columns) along the two lattice directions.
    a_A : float
        Pb-Pb spacing [Å].
    rotation_deg : float
        In-plane octahedral rotation of core bonds [deg].
    shell_rotation_deg : float, optional
        Rotation of bonds touching an octahedron within ``shell_depth`` cells of the edge [deg];
        defaults to ``rotation_deg``.
    shell_depth : int
        Shell thickness in unit cells (0 = no shell).
    particle_angle_deg : float
        Rotation of the whole particle in the image [deg].
    pixel_size_A : float
        Pixel size [Å].
    sigma_A : float
        Gaussian width of a column [Å].
    margin_A : float
        Empty border around the particle [Å].
    dose_e_per_A2 : float, optional
        Electron dose [e/Å²] for Poisson noise; ``None`` for a noise-free image.
    background : float
        Constant background relative to a Pb peak of 1.
    missing_fraction : float
        Fraction of non-Pb columns removed at random (vacancies / missed columns).
    seed : int
        Random seed (noise and missing columns).
    """

    n_cells: tuple[int, int] = (10, 10)
    a_A: float = 6.25
    rotation_deg: float = 8.0
    shell_rotation_deg: float | None = None
    shell_depth: int = 0
    particle_angle_deg: float = 0.0
    pixel_size_A: float = 0.2
    sigma_A: float = 0.45
    margin_A: float = 8.0
    dose_e_per_A2: float | None = 2000.0
    background: float = 0.05
    missing_fraction: float = 0.0
    seed: int = 0


def perovskite_columns(spec: SyntheticSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Projected columns and per-octahedron truth geometry in particle coordinates [Å].

    Returns
    -------
    columns : pandas.DataFrame
        ``x_A``, ``y_A`` (particle frame, Pb (0, 0) at the origin, before particle rotation),
        ``species``, ``i``, ``j`` (half-integer lattice coordinates), ``shell``.
    octahedra : pandas.DataFrame
        Per Pb: ``i``, ``j``, ``x_A``, ``y_A``, ``phi1_deg`` .. ``phi4_deg``, ``theta1_deg``,
        ``theta2_deg``, ``theta3_deg``, ``sigma1_A`` .. ``sigma4_A``, ``L1_A``, ``L2_A``, ``shell``.
    """
    n1, n2 = spec.n_cells
    a = spec.a_A
    core = float(np.deg2rad(spec.rotation_deg))
    shell_rot = float(np.deg2rad(spec.rotation_deg if spec.shell_rotation_deg is None else spec.shell_rotation_deg))

    def oct_shell(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return np.minimum(np.minimum(i, n1 - 1 - i), np.minimum(j, n2 - 1 - j))

    def clip_shell(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return oct_shell(np.clip(i, 0, n1 - 1), np.clip(j, 0, n2 - 1))

    def bond_alpha(i_a: np.ndarray, j_a: np.ndarray, i_b: np.ndarray, j_b: np.ndarray) -> np.ndarray:
        # a bond between two octahedra (one may be outside): shell rotation if either is in the shell
        s = np.minimum(clip_shell(i_a, j_a), clip_shell(i_b, j_b))
        return np.where(s < spec.shell_depth, shell_rot, core)

    ii, jj = (g.ravel() for g in np.meshgrid(np.arange(n1), np.arange(n2), indexing="ij"))
    pb = pd.DataFrame({"x_A": ii * a, "y_A": jj * a, "species": "Pb", "i": ii * 1.0, "j": jj * 1.0, "shell": oct_shell(ii, jj)})

    # horizontal-bond X: between (i, j) and (i+1, j), i = -1 .. n1-1
    hi, hj = (g.ravel() for g in np.meshgrid(np.arange(-1, n1), np.arange(n2), indexing="ij"))
    sign_h = np.where(hi >= 0, (-1.0) ** (hi + hj), -((-1.0) ** (hi + 1 + hj)))
    ah = bond_alpha(hi, hj, hi + 1, hj)
    xh = pd.DataFrame({
        "x_A": (hi + 0.5) * a, "y_A": hj * a + sign_h * (a / 2) * np.tan(ah), "species": "X",
        "i": hi + 0.5, "j": hj * 1.0, "shell": clip_shell(hi, hj) * 0 + np.minimum(clip_shell(hi, hj), clip_shell(hi + 1, hj)),
    })
    # vertical-bond X: between (i, j) and (i, j+1)
    vi, vj = (g.ravel() for g in np.meshgrid(np.arange(n1), np.arange(-1, n2), indexing="ij"))
    sign_v = np.where(vj >= 0, (-1.0) ** (vi + vj), -((-1.0) ** (vi + vj + 1)))
    av = bond_alpha(vi, vj, vi, vj + 1)
    xv = pd.DataFrame({
        "x_A": vi * a - sign_v * (a / 2) * np.tan(av), "y_A": (vj + 0.5) * a, "species": "X",
        "i": vi * 1.0, "j": vj + 0.5, "shell": np.minimum(clip_shell(vi, vj), clip_shell(vi, vj + 1)),
    })
    ci, cj = (g.ravel() for g in np.meshgrid(np.arange(-1, n1), np.arange(-1, n2), indexing="ij"))
    cs = pd.DataFrame({"x_A": (ci + 0.5) * a, "y_A": (cj + 0.5) * a, "species": "Cs", "i": ci + 0.5, "j": cj + 0.5,
                       "shell": np.minimum(clip_shell(ci, cj), clip_shell(ci + 1, cj + 1))})
    columns = pd.concat([pb, xh, xv, cs], ignore_index=True)

    # truth octahedra from the generated X positions
    key = {(float(r.i), float(r.j)): (r.x_A, r.y_A) for r in columns.itertuples() if r.species == "X"}
    rows = []
    for r in pb.itertuples():
        p = np.array([r.x_A, r.y_A])
        right = np.array(key[(r.i + 0.5, r.j)]) - p
        left = np.array(key[(r.i - 0.5, r.j)]) - p
        up = np.array(key[(r.i, r.j + 0.5)]) - p
        down = np.array(key[(r.i, r.j - 0.5)]) - p
        phi = [
            np.degrees(abs(np.arctan2(right[1], right[0]))),
            np.degrees(abs(np.arctan2(left[1], -left[0]))),
            np.degrees(abs(np.arctan2(up[0], up[1]))),
            np.degrees(abs(np.arctan2(down[0], -down[1]))),
        ]
        sig = [float(np.hypot(*b)) for b in (right, left, up, down)]
        rows.append({
            "i": r.i, "j": r.j, "x_A": r.x_A, "y_A": r.y_A,
            **{f"phi{k + 1}_deg": phi[k] for k in range(4)},
            "theta1_deg": (phi[0] + phi[1]) / 2, "theta2_deg": (phi[2] + phi[3]) / 2,
            "theta3_deg": sum(phi) / 4,
            **{f"sigma{k + 1}_A": sig[k] for k in range(4)},
            "L1_A": sig[0] + sig[1], "L2_A": sig[2] + sig[3], "shell": r.shell,
        })
    return columns, pd.DataFrame(rows)


def render_columns(
    x_px: np.ndarray, y_px: np.ndarray, amplitude: np.ndarray, shape: tuple[int, int], sigma_px: float
) -> np.ndarray:
    """Sum of isotropic Gaussians, each evaluated on a local window (vectorised over columns).

    Parameters
    ----------
    x_px, y_px : numpy.ndarray
        Column centres [px].
    amplitude : numpy.ndarray
        Peak heights.
    shape : tuple of int
        Output shape (rows, cols).
    sigma_px : float
        Gaussian width [px].
    """
    h = int(np.ceil(4 * sigma_px))
    offs = np.arange(-h, h + 1)
    cx = np.rint(x_px).astype(int)
    cy = np.rint(y_px).astype(int)
    gx = cx[:, None] + offs[None, :]  # (N, W)
    gy = cy[:, None] + offs[None, :]
    ex = np.exp(-0.5 * ((gx - x_px[:, None]) / sigma_px) ** 2)
    ey = np.exp(-0.5 * ((gy - y_px[:, None]) / sigma_px) ** 2)
    patch = amplitude[:, None, None] * ey[:, :, None] * ex[:, None, :]  # (N, W, W)
    rows = np.broadcast_to(gy[:, :, None], patch.shape)
    cols = np.broadcast_to(gx[:, None, :], patch.shape)
    ok = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    out = np.zeros(shape, dtype=np.float64)
    np.add.at(out, (rows[ok], cols[ok]), patch[ok])
    return out


def make_synthetic(spec: SyntheticSpec | None = None, **overrides: Any) -> tuple[Image, Truth]:
    """A synthetic iDPC-like image of a perovskite particle and its truth.

    Parameters
    ----------
    spec : SyntheticSpec, optional
        Generator parameters; keyword ``overrides`` replace individual fields.

    Returns
    -------
    image : Image
        The (noisy) image with its pixel size and dose.
    truth : Truth
        True columns in the image frame [Å], octahedra with analytic angles and lengths, the
        clean image.
    """
    spec = spec or SyntheticSpec()
    if overrides:
        spec = SyntheticSpec(**{**spec.__dict__, **overrides})
    rng = np.random.default_rng(spec.seed)
    cols, octs = perovskite_columns(spec)
    if spec.missing_fraction > 0:
        drop = (cols.species != "Pb") & (rng.random(len(cols)) < spec.missing_fraction)
        cols = cols[~drop].reset_index(drop=True)

    # rotate the particle about its centre, then centre it in the field of view
    n1, n2 = spec.n_cells
    centre = np.array([(n1 - 1) / 2, (n2 - 1) / 2]) * spec.a_A
    ang = np.deg2rad(spec.particle_angle_deg)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])

    def place(df: pd.DataFrame) -> np.ndarray:
        xy = (df[["x_A", "y_A"]].to_numpy() - centre) @ rot.T
        return xy

    xy_c = place(cols)
    half = np.abs(xy_c).max(axis=0) + spec.margin_A
    size_px = np.ceil(2 * half / spec.pixel_size_A).astype(int) + 1
    shape = (int(size_px[1]), int(size_px[0]))
    offset = (np.array([shape[1], shape[0]]) - 1) / 2 * spec.pixel_size_A
    xy_c = xy_c + offset
    xy_o = place(octs) + offset

    amp = cols.species.map(Z_COLUMN).to_numpy(float) / Z_COLUMN["Pb"]
    clean = render_columns(xy_c[:, 0] / spec.pixel_size_A, xy_c[:, 1] / spec.pixel_size_A, amp, shape,
                           spec.sigma_A / spec.pixel_size_A) + spec.background
    if spec.dose_e_per_A2 is None:
        noisy = clean.copy()
    else:
        if spec.dose_e_per_A2 <= 0:

            raise InputError(f"dose must be > 0 e/Å², got {spec.dose_e_per_A2}")
        electrons = spec.dose_e_per_A2 * spec.pixel_size_A**2  # per pixel at relative intensity 1
        noisy = rng.poisson(clean * electrons) / electrons

    truth_cols = cols.assign(x_A=xy_c[:, 0], y_A=xy_c[:, 1])
    truth_octs = octs.assign(x_A=xy_o[:, 0], y_A=xy_o[:, 1])
    image = Image(
        data=noisy.astype(np.float32),
        pixel_size_A=spec.pixel_size_A,
        signal="idpc",
        dose_e_per_A2=spec.dose_e_per_A2,
        source=f"synthetic perovskite {n1}x{n2} cells, rotation {spec.rotation_deg} deg, seed {spec.seed}",
        metadata={"synthetic": dict(spec.__dict__)},
    )
    truth = Truth(columns=truth_cols, octahedra=truth_octs, clean=clean.astype(np.float32),
                  metadata={"synthetic": dict(spec.__dict__)})
    return image, truth
