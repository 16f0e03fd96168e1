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

import numpy as np

from octascope.core.errors import InputError

#: Avogadro's number [1/mol].
_N_A = 6.02214076e23
#: Molar mass of carbon [g/mol].
_M_C = 12.011


def carbon_number_density_per_A3(density_g_cm3: float) -> float:
    """Carbon atoms per Å³ at a mass density [g/cm³] (2.0 g/cm³ → 0.1003 /Å³)."""
    return density_g_cm3 / _M_C * _N_A * 1e-24


def amorphous_carbon(
    extent_A: tuple[float, float],
    *,
    thickness_A: float = 30.0,
    density_g_cm3: float = 2.0,
    min_distance_A: float = 1.35,
    seed: int = 0,
    max_rounds: int = 200,
) -> np.ndarray:
    """Random positions of a flat amorphous-carbon slab.

    Parameters
    ----------
    extent_A : tuple of float
        Lateral size (x, y) of the slab [Å]; positions are periodic in x and y with these periods.
    thickness_A : float
        Slab thickness along z (the beam) [Å]; atoms have 0 <= z < ``thickness_A``.
    density_g_cm3 : float
        Mass density [g/cm³] (amorphous carbon films: ≈2.0).
    min_distance_A : float
        Smallest allowed C–C distance (periodic in x, y) [Å].
    seed : int
        Random seed: the same seed and sizes give the same film.
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
    from scipy.spatial import cKDTree

    lx, ly = (float(v) for v in extent_A)
    if not (lx > 0 and ly > 0 and thickness_A > 0):
        raise InputError(f"support extent {extent_A} and thickness_A={thickness_A} must be > 0 Å")
    if not density_g_cm3 > 0 or not min_distance_A >= 0:
        raise InputError(f"support density_g_cm3={density_g_cm3} must be > 0 and min_distance_A={min_distance_A} >= 0")
    n_target = int(round(carbon_number_density_per_A3(density_g_cm3) * lx * ly * thickness_A))
    packing = n_target * np.pi * min_distance_A**3 / 6.0 / (lx * ly * thickness_A)
    if packing > 0.3:
        raise InputError(f"a {density_g_cm3} g/cm³ film with C–C >= {min_distance_A} Å has packing fraction "
                         f"{packing:.2f}, too close to random jamming (0.38); lower the density or the distance")
    rng = np.random.default_rng(seed)
    box = np.array([lx, ly, thickness_A + 4.0 * max(min_distance_A, 1.0)])  # z: no wrap-around within the slab
    scale = np.array([lx, ly, thickness_A])
    accepted = np.zeros((0, 3))
    for _ in range(max_rounds):
        need = n_target - len(accepted)
        if need <= 0:
            break
        cand = rng.random((max(64, int(need * 1.2)), 3)) * scale
        cand[:, :2] %= [lx, ly]
        if min_distance_A > 0:
            if len(accepted):
                d, _ = cKDTree(accepted, boxsize=box).query(cand, k=1, distance_upper_bound=min_distance_A)
                cand = cand[~(d < min_distance_A)]
            # conflicts inside the batch: keep the earlier point of each close pair, in order
            pairs = cKDTree(cand, boxsize=box).query_pairs(min_distance_A, output_type="ndarray")
            if len(pairs):
                keep = np.ones(len(cand), bool)
                for a, b in pairs[np.argsort(pairs.max(1), kind="stable")]:
                    if keep[min(a, b)]:
                        keep[max(a, b)] = False
                cand = cand[keep]
        accepted = np.vstack([accepted, cand[:need]])
    if len(accepted) < n_target:
        raise InputError(f"could place only {len(accepted)} of {n_target} carbon atoms with C–C >= {min_distance_A} Å; "
                         "lower support.density_g_cm3 or support.min_distance_A")
    return accepted
