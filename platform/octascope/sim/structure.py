"""CsPbX3 nanocube structures: CsX-terminated, charge-balanced, cubic or Pbnm-tilted, halide mixing.

Geometry
--------
The cube has ``n_cells`` corner-sharing PbX6 octahedra along each edge (pseudocubic cells of edge
``a_A``). Pb sits at integer lattice coordinates (i, j, k) = 0 .. n-1, each Pb owns six X at
half-integer offsets along one axis (X shared between neighbouring octahedra), and Cs sits at the
(n+1)³ cube-corner sites (i+½, j+½, k+½), i = -1 .. n-1, so the outer layer on every face is a CsX
plane (CsX termination). The lattice coordinates (Pb at integers, not centred) are kept in ``atoms.arrays["lattice"]`` (units of
``a_A``) so that projected columns and octahedra can be found without guessing after MD.

Composition
-----------
Before balancing: Pb n³, X 3n²(n+1), Cs (n+1)³; the net charge (Cs⁺, Pb²⁺, X⁻) is +(3n+1).
Charge balance removes 3n+1 surface Cs: first the 8 cube corners, then (seeded random) edge sites,
then face sites. Balanced composition: Cs_{(n+1)³-3n-1} Pb_{n³} X_{3n²(n+1)}; e.g. n = 6:
Cs324 Pb216 X756 (1296 atoms, edge ≈ 3.8 nm Cs-Cs).

Tilts
-----
Octahedron (i, j, k) is rotated by R = Rz(s_z γ) Ry(s_y β) Rx(s_x α) with Glazer a⁻a⁻c⁺ signs
(``phase="orthorhombic"``, Pbnm with c⁺ along z, the beam direction): s_z = (-1)^(i+j) (in phase
along z), s_x = s_y = (-1)^(i+j+k) (antiphase). Each shared X sits at the mean of the positions its two
octahedra predict (surface X: the one prediction). ``phase="cubic"`` means no tilts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from scipy.spatial import cKDTree

from octascope.core.errors import InputError
from octascope.core.params import param, require
from octascope.sim.options import StepOptions, finite, resolve_options

if TYPE_CHECKING:
    from ase import Atoms

HALIDES = ("I", "Br")
#: Fraction of the Br placed on corner sites by the method paper's recipe (1700 corner + 100 random).
PAPER_CORNER_SHARE = 1700 / 1800
CHARGE = {"Cs": 1, "Pb": 2, "I": -1, "Br": -1}


def _rotation(alpha: np.ndarray, beta: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Rotation matrices Rz(γ) Ry(β) Rx(α) for arrays of angles [rad], shape (N, 3, 3)."""
    ca, sa, cb, sb, cg, sg = np.cos(alpha), np.sin(alpha), np.cos(beta), np.sin(beta), np.cos(gamma), np.sin(gamma)
    one, zero = np.ones_like(alpha), np.zeros_like(alpha)
    rx = np.stack([one, zero, zero, zero, ca, -sa, zero, sa, ca], -1).reshape(-1, 3, 3)
    ry = np.stack([cb, zero, sb, zero, one, zero, -sb, zero, cb], -1).reshape(-1, 3, 3)
    rz = np.stack([cg, -sg, zero, sg, cg, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def _grid(*ranges: np.ndarray) -> np.ndarray:
    return np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, len(ranges)).astype(float)


@dataclass(frozen=True, kw_only=True)
class StructureOptions(StepOptions):
    """Parameters of :func:`build_nanocube` (config group ``structure``)."""

    group: ClassVar[str] = "structure"
    keyed_unless: ClassVar[dict[str, Any]] = {"shell_tilt_deg": None, "shell_cells": 1}

    n_cells: int = param(6, unit="pseudocubic unit cells", doc="PbX6 octahedra along each cube edge")
    a_A: float = param(6.29, unit="Å", doc="pseudocubic lattice parameter = twice the Pb-X bond length "
                       "(6.29 for CsPbI3)")
    phase: Literal["orthorhombic", "cubic"] = param("orthorhombic", doc="Pbnm start with a⁻a⁻c⁺ tilts of "
                                                     "tilt_deg, or untilted cubic")
    tilt_deg: tuple[float, float, float] = param((6.0, 6.0, 9.0), unit="deg", doc="octahedral rotation about x, "
                                                 "y, z of the orthorhombic start (z is the beam axis)")
    shell_tilt_deg: tuple[float, float, float] | None = param(None, unit="deg", doc="octahedral rotation about x, "
                                                              "y, z of the octahedra in the outer shell_cells cells "
                                                              "(a core/shell tilt gradient); null: tilt_deg everywhere")
    shell_cells: int = param(1, unit="unit cells", doc="thickness of the shell that shell_tilt_deg applies to")
    br_fraction: float = param(0.0, unit="1", doc="fraction of the halide sites occupied by Br; the rest is I")
    mixing: Literal["uniform", "corner", "face", "shell", "paper"] = param(
        "uniform", doc="where the Br goes: uniform-random; the X sites nearest the (-x, -y, -z) corner; the "
        "lowest-x slab; the outermost sites first; or the method paper's recipe (94.4 % of the Br on corner "
        "sites, the rest on random non-corner sites, as its 1700 + 100 of the 9.5 nm QD)")
    charge_balance: bool = param(True, doc="remove 3n+1 surface Cs so the particle is neutral")
    seed: int = param(0, doc="random seed of the halide and Cs-vacancy choices")

    def check(self) -> None:
        require(self.n_cells >= 1, f"n_cells={self.n_cells} must be >= 1 octahedron per edge; e.g. structure.n_cells=6")
        require(finite(self.a_A) and self.a_A > 0, f"a_A={self.a_A} must be > 0 Å; CsPbI3 is about 6.29")
        require(all(finite(t) for t in self.tilt_deg), f"tilt_deg={list(self.tilt_deg)} must be three finite angles [deg]")
        require(self.shell_tilt_deg is None or all(finite(t) for t in self.shell_tilt_deg),
                f"shell_tilt_deg={self.shell_tilt_deg} must be three finite angles [deg] or null")
        require(self.shell_cells >= 1, f"shell_cells={self.shell_cells} must be >= 1")
        require(0.0 <= self.br_fraction <= 1.0, f"br_fraction={self.br_fraction} must lie in [0, 1]")
        require(self.seed >= 0, f"seed={self.seed} must be >= 0")


def build_nanocube(options: StructureOptions | None = None, /, **params: Any) -> Atoms:
    """Build a CsX-terminated CsPbX3 nanocube centred at the origin.

    Parameters
    ----------
    options : StructureOptions, optional
        The parameters; or give them as keywords (``build_nanocube(n_cells=3)``).
    **params
        Fields of :class:`StructureOptions`: ``n_cells`` [cells], ``a_A`` [Å], ``phase``,
        ``tilt_deg`` [deg], ``br_fraction`` [1], ``mixing``, ``charge_balance``, ``seed``.

    Returns
    -------
    ase.Atoms
        Symbols Cs, Pb, I, Br; ``arrays["lattice"]`` (N, 3) lattice coordinates [units of a_A];
        ``info`` holds the parameters and the composition.

    Raises
    ------
    SimulationParameterError
        An unknown parameter or a value out of range.
    """
    opts = resolve_options(StructureOptions, options, params)
    n = opts.n_cells
    tilt = np.deg2rad(np.asarray(opts.tilt_deg, dtype=float)) if opts.phase == "orthorhombic" else np.zeros(3)
    shell_tilt = None
    if opts.shell_tilt_deg is not None and opts.phase == "orthorhombic":
        shell_tilt = (np.deg2rad(np.asarray(opts.shell_tilt_deg, dtype=float)), opts.shell_cells)
    rng = np.random.default_rng(opts.seed)
    pb, rot = _pb_sites(n, tilt, shell_tilt)
    x_lat, x_pos = _x_sites(pb, rot, n)
    cs = _grid(*(np.arange(-1, n) + 0.5,) * 3)
    if opts.charge_balance:
        cs = np.delete(cs, _cs_vacancies(cs, n, 3 * n + 1, rng), axis=0)
    halide = _place_bromide(x_lat, n, opts.br_fraction, opts.mixing, rng)
    symbols = ["Pb"] * len(pb) + list(halide) + ["Cs"] * len(cs)
    lattice = np.concatenate([pb, x_lat, cs])
    positions = np.concatenate([pb, x_pos, cs]) * opts.a_A
    return _atoms(symbols, lattice, positions, opts, tilt)


def _pb_sites(n: int, tilt: np.ndarray, shell_tilt: tuple[np.ndarray, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pb lattice sites (n³, 3) [units of a] and the rotation (n³, 3, 3) of each one's octahedron.

    ``tilt`` (3,) [rad] are the rotations about x, y, z, applied with the Glazer a⁻a⁻c⁺ signs of
    the module docstring; ``shell_tilt`` (angles (3,) [rad], depth [cells]) replaces them for the
    octahedra within that many cells of a face.
    """
    idx = np.arange(n)
    pb = _grid(idx, idx, idx)
    s_xy = (-1.0) ** (pb[:, 0] + pb[:, 1])
    s_anti = (-1.0) ** pb.sum(1)
    angles = np.broadcast_to(tilt, (len(pb), 3)).copy()
    if shell_tilt is not None:
        depth = np.minimum(pb, n - 1 - pb).min(1)
        angles[depth < shell_tilt[1]] = shell_tilt[0]
    rot = _rotation(s_anti * angles[:, 0], s_anti * angles[:, 1], s_xy * angles[:, 2])
    return pb, rot


def _x_sites(pb: np.ndarray, rot: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Lattice sites and positions [units of a] of the halides, (3n²(n+1), 3) each.

    Each X sits at the mean of the positions its (one or two) octahedra predict from their rotations.
    """
    idx = np.arange(n)
    pb_index = {tuple(p.astype(int)): m for m, p in enumerate(pb)}
    x_lat_parts: list[np.ndarray] = []
    x_pos_parts: list[np.ndarray] = []
    for axis in range(3):
        ranges = [idx, idx, idx]
        ranges[axis] = np.arange(-1, n)  # X between Pb (.., m, ..) and (.., m+1, ..)
        lo = _grid(*ranges)
        hi = lo.copy()
        hi[:, axis] += 1
        d = np.zeros(3)
        d[axis] = 0.5
        pred_sum = np.zeros((len(lo), 3))
        count = np.zeros(len(lo))
        for side, sign in ((lo, +1.0), (hi, -1.0)):
            inside = np.all((side >= 0) & (side < n), axis=1)
            m = np.array([pb_index[tuple(s.astype(int))] for s in side[inside]], dtype=int)
            pred_sum[inside] += pb[m] + sign * (rot[m] @ d)
            count[inside] += 1
        lat = lo.copy()
        lat[:, axis] += 0.5
        x_lat_parts.append(lat)
        x_pos_parts.append(pred_sum / count[:, None])
    return np.concatenate(x_lat_parts), np.concatenate(x_pos_parts)


def _atoms(symbols: list[str], lattice: np.ndarray, positions: np.ndarray, opts: StructureOptions,
           tilt: np.ndarray) -> Atoms:
    """ASE Atoms centred at the origin, with ``arrays["lattice"]`` and the parameters and composition in ``info``.

    ``positions`` are [Å] with Pb (0, 0, 0) at the origin; ``tilt`` (3,) [rad] are the rotations applied.
    """
    # lazy: ASE (ase.io ~60 ms to import), only when simulating
    from ase import Atoms

    n = opts.n_cells
    centre = (n - 1) / 2.0
    atoms = Atoms(symbols=symbols, positions=positions - centre * opts.a_A, pbc=False)
    atoms.arrays["lattice"] = lattice
    counts = {el: int(np.sum(np.array(symbols) == el)) for el in ("Cs", "Pb", "I", "Br")}
    atoms.info.update(
        n_cells=n, a_A=float(opts.a_A), phase=opts.phase, tilt_deg=[float(t) for t in np.rad2deg(tilt)],
        br_fraction=float(opts.br_fraction), mixing=opts.mixing, seed=int(opts.seed), composition=counts,
        charge=int(sum(CHARGE[el] * c for el, c in counts.items())),
    )
    return atoms


def _cs_vacancies(cs: np.ndarray, n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of Cs to remove: corners, then edges, then faces, in seeded random order within each."""
    at_face = np.isclose(np.abs(cs - (n - 1) / 2.0), (n) / 2.0)  # on the outer plane along each axis
    n_faces = at_face.sum(1)
    order = np.lexsort((rng.random(len(cs)), -n_faces))
    return np.sort(order[:count])


def _place_bromide(x_lat: np.ndarray, n: int, fraction: float, mixing: str, rng: np.random.Generator) -> np.ndarray:
    """Halide symbol per X site."""
    n_x = len(x_lat)
    n_br = int(round(fraction * n_x))
    tie = rng.random(n_x)
    if mixing == "uniform":
        chosen = rng.permutation(n_x)[:n_br]
    elif mixing == "corner":
        chosen = np.lexsort((tie, np.linalg.norm(x_lat + 0.5, axis=1)))[:n_br]
    elif mixing == "face":
        chosen = np.lexsort((tie, x_lat[:, 0]))[:n_br]
    elif mixing == "shell":
        depth = np.min(np.minimum(x_lat + 0.5, n - 0.5 - x_lat), axis=1)
        chosen = np.lexsort((tie, depth))[:n_br]
    else:  # paper: corner sites, plus random non-corner ones
        n_corner = int(round(PAPER_CORNER_SHARE * n_br))
        corner = np.lexsort((tie, np.linalg.norm(x_lat + 0.5, axis=1)))[:n_corner]
        rest = np.setdiff1d(np.arange(n_x), corner)
        chosen = np.concatenate([corner, rng.choice(rest, n_br - n_corner, replace=False)])
    symbols = np.full(n_x, "I", dtype=object)
    symbols[chosen] = "Br"
    return symbols


def check_structure(atoms: Atoms, *, min_distance_A: float = 1.5) -> None:
    """Raise :class:`InputError` if two atoms are closer than ``min_distance_A`` [Å]."""

    pos = atoms.get_positions()
    if len(pos) < 2:
        return
    d, j = cKDTree(pos).query(pos, k=2)
    worst = int(np.argmin(d[:, 1]))
    if d[worst, 1] < min_distance_A:
        raise InputError(
            f"atoms {worst} and {int(j[worst, 1])} overlap ({d[worst, 1]:.2f} Å apart, minimum {min_distance_A} Å); "
            "fix the structure (remove duplicates or increase the lattice parameter)"
        )


def composition_formula(atoms: Atoms) -> str:
    """Hill-style formula in Cs, Pb, I, Br order, e.g. ``Cs324Pb216I756``."""
    sym = np.array(atoms.get_chemical_symbols())
    return "".join(f"{el}{int((sym == el).sum())}" for el in ("Cs", "Pb", "I", "Br") if (sym == el).any())


def write_structure(atoms: Atoms, path: str | Path) -> None:
    """Write extended XYZ (keeps ``arrays["lattice"]`` and ``info``)."""
    # lazy: ASE (ase.io ~60 ms to import), only when simulating
    from ase.io import write

    write(str(path), atoms, format="extxyz")


def read_structure(path: str | Path) -> Atoms:
    """Read an extended XYZ written by :func:`write_structure`."""
    # lazy: ASE (ase.io ~60 ms to import), only when simulating
    from ase.io import read

    atoms = read(str(path), format="extxyz", index=-1)  # the last (only) frame
    return atoms[-1] if isinstance(atoms, list) else atoms  # read() is typed Atoms | list[Atoms]
