"""Amorphous-carbon support film: the few nm of random carbon a quantum dot lies on in a real TEM grid.

The film is a slab of carbon atoms at random, seeded positions (random sequential addition with a
hard-core minimum C–C distance, periodic in x and y over the field of view so that abTEM's periodic
cell holds no seam) at a set mass density. It is added to the projected potential of every image
mode (:mod:`octascope.sim.imaging`) below the particle, on the beam exit side; the ground truth stays
the particle's alone (:mod:`octascope.sim.truth` never sees the film).

Numbers: amorphous evaporated carbon films have 1.8–2.2 g/cm³ (graphite 2.27); the shortest C–C
distance in amorphous carbon is ≈1.4 Å (sp² 1.42 Å, sp³ 1.54 Å, double bonds 1.34 Å), so a hard
core of 1.35 Å excludes unphysical overlaps while keeping the packing fraction (≈0.13 at 2 g/cm³)
far below the random-sequential-addition jamming limit (0.38), where insertion becomes slow.
The positions are random, not a relaxed network: what matters for the image is the projected
potential of a random, uncorrelated carbon layer of the right areal density.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np
from scipy.spatial import cKDTree

from octascope.core.errors import InputError
from octascope.core.params import param, require
from octascope.sim.options import StepOptions, finite, resolve_options

#: Avogadro's number [1/mol].
_N_A = 6.02214076e23
#: Molar mass of carbon [g/mol].
_M_C = 12.011


def carbon_number_density_per_A3(density_g_cm3: float) -> float:
    """Carbon atoms per Å³ at a mass density [g/cm³] (2.0 g/cm³ → 0.1003 /Å³)."""
    return density_g_cm3 / _M_C * _N_A * 1e-24


@dataclass(frozen=True, kw_only=True)
class SupportOptions(StepOptions):
    """Parameters of the support film (config group ``support``): :func:`amorphous_carbon` and ``gap_A``."""

    group: ClassVar[str] = "support"

    thickness_A: float = param(30.0, unit="Å", doc="film thickness along z (the beam)")
    density_g_cm3: float = param(2.0, unit="g/cm³", doc="mass density (amorphous carbon films: about 2.0)")
    min_distance_A: float = param(1.35, unit="Å", doc="smallest allowed C-C distance (periodic in x, y)")
    seed: int = param(0, doc="random seed: the same seed and sizes give the same film")
    gap_A: float = param(3.0, unit="Å", doc="distance from the particle's lowest atom to the film")

    def check(self) -> None:
        require(finite(self.thickness_A) and self.thickness_A > 0, f"thickness_A={self.thickness_A} must be > 0 Å")
        require(finite(self.density_g_cm3) and self.density_g_cm3 > 0,
                f"density_g_cm3={self.density_g_cm3} must be > 0 g/cm³; amorphous carbon is about 2.0")
        require(finite(self.min_distance_A) and self.min_distance_A >= 0, f"min_distance_A={self.min_distance_A} must be >= 0 Å")
        require(self.seed >= 0, f"seed={self.seed} must be >= 0")
        require(finite(self.gap_A) and self.gap_A >= 0, f"gap_A={self.gap_A} must be >= 0 Å")

    def key_params(self, given: Mapping[str, Any] | StepOptions | None = None) -> dict[str, Any]:
        """The film's parameters as they enter the image's cache key (``gap_A`` as a float)."""
        out = super().key_params(given)
        out["gap_A"] = self.gap_A
        return out


def amorphous_carbon(extent_A: tuple[float, float], options: SupportOptions | None = None, /, *,
                     max_rounds: int = 200, **params: Any) -> np.ndarray:
    """Random positions of a flat amorphous-carbon slab.

    Parameters
    ----------
    extent_A : tuple of float
        Lateral size (x, y) of the slab [Å]; positions are periodic in x and y with these periods.
    options : SupportOptions, optional
        The film; or give its fields as keywords: ``thickness_A`` [Å] (atoms have
        0 <= z < thickness_A), ``density_g_cm3`` [g/cm³], ``min_distance_A`` [Å], ``seed``
        (``gap_A`` is where the imaging puts the film, unused here).
    max_rounds : int
        Insertion rounds before giving up (a density too high for the hard core).

    Returns
    -------
    numpy.ndarray
        Positions (N, 3) [Å] with N = round(number density × extent_x × extent_y × thickness).

    Raises
    ------
    InputError
        Bad sizes, or the film cannot be packed at this density and minimum distance.
    """
    opts = resolve_options(SupportOptions, options, params)
    thickness_A, density_g_cm3, min_distance_A = opts.thickness_A, opts.density_g_cm3, opts.min_distance_A
    lx, ly = (float(v) for v in extent_A)
    if not (lx > 0 and ly > 0):
        raise InputError(f"support extent {extent_A} must be > 0 Å")
    n_target = int(round(carbon_number_density_per_A3(density_g_cm3) * lx * ly * thickness_A))
    packing = n_target * np.pi * min_distance_A**3 / 6.0 / (lx * ly * thickness_A)
    if packing > 0.3:
        raise InputError(f"a {density_g_cm3} g/cm³ film with C–C >= {min_distance_A} Å has packing fraction "
                         f"{packing:.2f}, too close to random jamming (0.38); lower the density or the distance")
    rng = np.random.default_rng(opts.seed)
    accepted = _random_sequential_addition(n_target, (lx, ly, thickness_A), min_distance_A, rng, max_rounds)
    if len(accepted) < n_target:
        raise InputError(f"could place only {len(accepted)} of {n_target} carbon atoms with C–C >= {min_distance_A} Å; "
                         "lower support.density_g_cm3 or support.min_distance_A")
    return accepted


def _random_sequential_addition(n_target: int, size: tuple[float, float, float], d_min: float,
                                rng: np.random.Generator, max_rounds: int) -> np.ndarray:
    """Up to ``n_target`` random points in a slab, none closer than ``d_min`` [Å] (periodic in x, y).

    Each round draws a batch of candidates uniformly in the slab ``size`` (x, y, thickness) [Å],
    drops those within ``d_min`` of an accepted point, then of each close pair inside the batch
    the later one, and accepts the rest in order; after ``max_rounds`` rounds it returns what it has.

    Returns
    -------
    numpy.ndarray
        Positions (≤ n_target, 3) [Å].
    """

    lx, ly, thickness = size
    box = np.array([lx, ly, thickness + 4.0 * max(d_min, 1.0)])  # z: no wrap-around within the slab
    scale = np.array([lx, ly, thickness])
    accepted = np.zeros((0, 3))
    for _ in range(max_rounds):
        need = n_target - len(accepted)
        if need <= 0:
            break
        cand = rng.random((max(64, int(need * 1.2)), 3)) * scale
        cand[:, :2] %= [lx, ly]
        if d_min > 0:
            if len(accepted):
                d, _ = cKDTree(accepted, boxsize=box).query(cand, k=1, distance_upper_bound=d_min)
                cand = cand[~(d < d_min)]
            # conflicts inside the batch: keep the earlier point of each close pair, in order
            pairs = cKDTree(cand, boxsize=box).query_pairs(d_min, output_type="ndarray")
            if len(pairs):
                keep = np.ones(len(cand), bool)
                for a, b in pairs[np.argsort(pairs.max(1), kind="stable")]:
                    if keep[min(a, b)]:
                        keep[max(a, b)] = False
                cand = cand[keep]
        accepted = np.vstack([accepted, cand[:need]])
    return accepted
