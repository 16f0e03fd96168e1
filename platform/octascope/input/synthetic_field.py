"""Synthetic fields of view with several [001] perovskite particles, and their truth.

A field is a list of particles, each a synthetic block of octahedra (:func:`perovskite_columns`)
with its own size, in-plane rotation, core/shell octahedral rotation and position in the field; a
particle may be cut by the frame edge, tilted off the [001] zone axis, or hold a
Ruddlesden-Popper planar fault. It is the fast stand-in of :mod:`octascope.sim.field` for tests:
columns are Gaussians, the noise is Poisson.

Off the zone axis, the atoms of a column no longer line up with the beam: a column of thickness
``t`` tilted by τ projects to a streak of length ``t·tan τ`` perpendicular to the tilt axis. It is
rendered as ``streak_samples`` Gaussians along that streak, which smears the lattice in that
direction as a real tilted particle does.

A Ruddlesden-Popper fault at cell ``fault_at_cell`` splits the block at a plane normal to ``a1``:
the far part is shifted by ``(a/2, a/2)`` in projection (the RP displacement ½[111] seen along
[001]) and keeps its own CsX termination, so the two parts meet at a double CsX layer and the Pb
and Cs sublattices swap across it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from octascope.core.errors import InputError
from octascope.core.model import Image, Truth
from octascope.input.synthetic import Z_COLUMN, SyntheticSpec, perovskite_columns, render_columns


@dataclass(frozen=True)
class FieldParticle:
    """One particle of a synthetic field.

    Parameters
    ----------
    n_cells : tuple of int
        Octahedra along ``a1`` and ``a2``.
    centre_A : tuple of float
        Position of the particle's centre in the field [Å] (it may lie near or beyond the edge).
    angle_deg : float
        In-plane rotation of the particle's lattice in the image [deg].
    rotation_deg : float
        Octahedral rotation of the core bonds [deg].
    shell_rotation_deg : float, optional
        Octahedral rotation of bonds within ``shell_depth`` cells of the surface [deg].
    shell_depth : int
        Shell thickness [unit cells].
    off_axis_deg : float
        Tilt off the [001] zone axis [deg]; 0 is on axis.
    off_axis_direction_deg : float
        Direction of the streak in the image (perpendicular to the tilt axis) [deg].
    thickness_A : float, optional
        Column length along the beam [Å] (default: the particle's mean edge, a cube).
    fault_at_cell : int, optional
        Ruddlesden-Popper fault after this many cells along ``a1`` (``None``: no fault).
    """

    n_cells: tuple[int, int] = (10, 10)
    centre_A: tuple[float, float] = (50.0, 50.0)
    angle_deg: float = 0.0
    rotation_deg: float = 8.0
    shell_rotation_deg: float | None = None
    shell_depth: int = 0
    off_axis_deg: float = 0.0
    off_axis_direction_deg: float = 0.0
    thickness_A: float | None = None
    fault_at_cell: int | None = None


@dataclass(frozen=True)
class FieldSpec:
    """A synthetic field of view.

    Parameters
    ----------
    particles : sequence of FieldParticle
        The particles (ids 1, 2, … in this order).
    shape_px : tuple of int
        Image size (rows, columns) [px].
    pixel_size_A : float
        Pixel size [Å].
    a_A : float
        Pb-Pb spacing [Å].
    sigma_A : float
        Gaussian width of a column [Å].
    dose_e_per_A2 : float, optional
        Dose for Poisson noise [e/Å²]; ``None``: noise-free.
    background : float
        Constant background relative to a Pb peak of 1.
    streak_samples : int
        Gaussians per streak of an off-axis column.
    seed : int
        Noise seed.
    """

    particles: Sequence[FieldParticle] = field(default_factory=lambda: (FieldParticle(),))
    shape_px: tuple[int, int] = (500, 500)
    pixel_size_A: float = 0.2
    a_A: float = 6.25
    sigma_A: float = 0.45
    dose_e_per_A2: float | None = 2000.0
    background: float = 0.05
    streak_samples: int = 9
    seed: int = 0


def _block(p: FieldParticle, a: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Columns and truth octahedra of one particle in its own frame (centred on the origin)."""
    n1, n2 = p.n_cells
    spec = SyntheticSpec(n_cells=(n1, n2), a_A=a, rotation_deg=p.rotation_deg, shell_rotation_deg=p.shell_rotation_deg,
                         shell_depth=p.shell_depth)
    if p.fault_at_cell is None:
        cols, octs = perovskite_columns(spec)
    else:
        k = int(p.fault_at_cell)
        if not 1 <= k < n1:
            raise InputError(f"fault_at_cell={k} must lie in 1..{n1 - 1} for a particle of {n1} cells along a1")
        left = SyntheticSpec(**{**spec.__dict__, "n_cells": (k, n2)})
        right = SyntheticSpec(**{**spec.__dict__, "n_cells": (n1 - k, n2)})
        cl, ol = perovskite_columns(left)
        cr, orr = perovskite_columns(right)
        shift = np.array([k * a + a / 2, a / 2])
        cr = cr.assign(x_A=cr.x_A + shift[0], y_A=cr.y_A + shift[1], i=cr.i + k + 0.5, j=cr.j + 0.5)
        orr = orr.assign(x_A=orr.x_A + shift[0], y_A=orr.y_A + shift[1], i=orr.i + k + 0.5, j=orr.j + 0.5)
        cols = pd.concat([cl.assign(domain=0), cr.assign(domain=1)], ignore_index=True)
        octs = pd.concat([ol.assign(domain=0), orr.assign(domain=1)], ignore_index=True)
    centre = np.array([(n1 - 1) / 2, (n2 - 1) / 2]) * a
    if p.fault_at_cell is not None:
        centre = centre + np.array([a / 4, a / 4])
    return cols.assign(x_A=cols.x_A - centre[0], y_A=cols.y_A - centre[1]), \
        octs.assign(x_A=octs.x_A - centre[0], y_A=octs.y_A - centre[1])


def make_synthetic_field(spec: FieldSpec | None = None) -> tuple[Image, Truth]:
    """A synthetic field with several particles and its truth (module docstring).

    Returns
    -------
    image : Image
        The (noisy) field.
    truth : Truth
        Columns and octahedra in the image frame [Å] with their ``particle`` id (1, 2, …),
        ``valid_001`` (False for an off-axis particle: its projected columns are streaks, no [001]
        truth), and the columns and octahedra outside the frame left out.
    """
    spec = spec or FieldSpec()
    rng = np.random.default_rng(spec.seed)
    h, w = spec.shape_px
    ps = spec.pixel_size_A
    all_cols, all_octs, xs, ys, amps = [], [], [], [], []
    for pid, p in enumerate(spec.particles, start=1):
        cols, octs = _block(p, spec.a_A)
        ang = np.deg2rad(p.angle_deg)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        xy = cols[["x_A", "y_A"]].to_numpy() @ rot.T + np.asarray(p.centre_A)
        oxy = octs[["x_A", "y_A"]].to_numpy() @ rot.T + np.asarray(p.centre_A)
        amp = cols.species.map(Z_COLUMN).to_numpy(float) / Z_COLUMN["Pb"]
        valid = p.off_axis_deg == 0.0
        if valid:
            xs.append(xy[:, 0])
            ys.append(xy[:, 1])
            amps.append(amp)
        else:  # a streak of sub-Gaussians along the projected column
            thick = p.thickness_A if p.thickness_A is not None else spec.a_A * float(np.mean(p.n_cells))
            length = thick * np.tan(np.deg2rad(p.off_axis_deg))
            d = np.deg2rad(p.off_axis_direction_deg)
            t = np.linspace(-0.5, 0.5, spec.streak_samples) * length
            xs.append((xy[:, 0, None] + t * np.cos(d)).ravel())
            ys.append((xy[:, 1, None] + t * np.sin(d)).ravel())
            amps.append(np.repeat(amp / spec.streak_samples, spec.streak_samples))
        inside = (xy[:, 0] >= 0) & (xy[:, 0] <= (w - 1) * ps) & (xy[:, 1] >= 0) & (xy[:, 1] <= (h - 1) * ps)
        oin = (oxy[:, 0] >= 0) & (oxy[:, 0] <= (w - 1) * ps) & (oxy[:, 1] >= 0) & (oxy[:, 1] <= (h - 1) * ps)
        all_cols.append(cols.assign(x_A=xy[:, 0], y_A=xy[:, 1], particle=pid, valid_001=valid)[inside])
        all_octs.append(octs.assign(x_A=oxy[:, 0], y_A=oxy[:, 1], particle=pid, valid_001=valid)[oin])
    x, y, amp = np.concatenate(xs), np.concatenate(ys), np.concatenate(amps)
    clean = render_columns(x / ps, y / ps, amp, (h, w), spec.sigma_A / ps) + spec.background
    if spec.dose_e_per_A2 is None:
        noisy = clean.copy()
    else:
        electrons = spec.dose_e_per_A2 * ps**2
        noisy = rng.poisson(clean * electrons) / electrons
    truth_cols = pd.concat(all_cols, ignore_index=True)
    truth_octs = pd.concat(all_octs, ignore_index=True)
    meta = {"synthetic_field": {"n_particles": len(spec.particles), "pixel_size_A": ps, "dose_e_per_A2": spec.dose_e_per_A2}}
    image = Image(data=noisy.astype(np.float32), pixel_size_A=ps, signal="idpc", dose_e_per_A2=spec.dose_e_per_A2,
                  source=f"synthetic field, {len(spec.particles)} particles, seed {spec.seed}", metadata=meta)
    return image, Truth(columns=truth_cols, octahedra=truth_octs, clean=clean.astype(np.float32), metadata=meta)
