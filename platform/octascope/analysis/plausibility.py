"""Does the image show what the analysis assumes? Refuse or flag, never return confident nonsense.

The analysis assumes an [001] projection of a lead-halide perovskite with bright columns: a
square column lattice of spacing a/2 ≈ 2.7-3.5 Å, a Pb sublattice brighter than the rest, and
most columns of the crystal on perovskite sites. Each check below either raises
:class:`~octascope.core.errors.InputError` with a one-line reason and fix (the image cannot be analysed
as such), or returns flags: short sentences that go into the summary, the tables' metadata and
MLflow, so a reader sees that the numbers are not to be trusted as they stand.
"""

from __future__ import annotations

import numpy as np

from octascope.core.errors import InputError

#: Pseudocubic lattice parameters of lead-halide perovskites span ≈5.6 (CsPbCl3) to ≈6.4 Å (FAPbI3);
#: a little margin either side for strain and calibration error [Å].
PB_SPACING_RANGE_A = (5.2, 7.0)
#: Largest deviation of the Pb lattice from square: length ratio and angle from 90° [1, deg].
MAX_ASPECT = 1.12
MAX_SHEAR_DEG = 8.0
#: Smallest ratio of the Pb columns' median amplitude to the others' for a Pb sublattice [1].
MIN_PB_CONTRAST = 1.08
#: Largest fraction of crystal columns on no perovskite site before the result is flagged [1].
MAX_UNKNOWN_FRACTION = 0.25


def check_contrast(band_passed: np.ndarray, mask: np.ndarray) -> float:
    """Refuse images whose columns are dark (ABF, inverted iDPC) [returns the skewness].

    The band-passed image of a lattice of bright columns has a long positive tail (sharp column
    peaks over broad shallow troughs): positive skewness inside the crystal. Dark columns give the
    mirror image.

    Raises
    ------
    InputError
        When the skewness inside the crystal is below −0.3.
    """
    v = np.asarray(band_passed, float)[np.asarray(mask, bool)]
    if v.size < 100:
        return float("nan")
    v = v - v.mean()
    sd = v.std()
    skew = float(np.mean(v**3) / sd**3) if sd > 0 else 0.0
    if skew < -0.3:
        raise InputError(
            f"the columns look dark on a bright background (band-passed skewness {skew:.2f} inside the crystal), "
            "as in ABF or an inverted iDPC image; octascope needs bright columns (iDPC/HAADF): give source.invert=true to invert the contrast"
        )
    return skew


def check_lattice(basis_A: np.ndarray, *, pixel_size_A: float) -> None:
    """Refuse a Pb lattice that is not a square perovskite lattice of plausible spacing.

    Parameters
    ----------
    basis_A : numpy.ndarray
        (2, 2) Pb-Pb lattice vectors found by the classifier [Å].
    pixel_size_A : float
        Pixel size, named in the message because a wrong calibration is the usual cause [Å].
    """
    b = np.asarray(basis_A, float)
    n1, n2 = np.linalg.norm(b, axis=1)
    a = 0.5 * (n1 + n2)
    if not (np.isfinite(b).all() and min(n1, n2) > 1e-3 * max(max(n1, n2), 1e-12)):
        # one lattice direction only (a row of columns, or a projection off every zone axis): no ratio, no angle
        found = ", ".join(f"{n:.2f} Å" for n in (n1, n2) if np.isfinite(n) and n > 1e-3 * max(max(n1, n2), 1e-12)) or "none"
        raise InputError(
            f"the columns form no two-dimensional lattice (one lattice direction found, spacing {found}): octascope "
            "analyses [001] perovskite projections; tilt the particle to a [001] zone axis"
        )
    aspect = max(n1, n2) / min(n1, n2)
    angle = float(np.degrees(np.arccos(np.clip(abs(b[0] @ b[1]) / (n1 * n2), 0, 1))))
    if aspect > MAX_ASPECT or abs(90.0 - angle) > MAX_SHEAR_DEG:
        raise InputError(
            f"the column lattice is not square (|a1| {n1:.2f} Å, |a2| {n2:.2f} Å, angle {angle:.1f}°): "
            "octascope analyses [001] perovskite projections; tilt the particle to a [001] zone axis"
        )
    lo, hi = PB_SPACING_RANGE_A
    if not lo <= a <= hi:
        true_px = 6.2 / a * pixel_size_A
        raise InputError(
            f"Pb-Pb spacing {a:.2f} Å is not a lead-halide perovskite's ({lo}-{hi} Å) at {pixel_size_A:g} Å/px: "
            f"check the pixel size (a CsPbI3 lattice would need ≈{true_px:.3g} Å/px) or that the image is a perovskite"
        )


def classification_flags(species: np.ndarray, amplitude: np.ndarray) -> list[str]:
    """Flags from the classified columns inside the crystal: Pb contrast and unplaced columns."""
    sp = np.asarray(species).astype(str)
    amp = np.asarray(amplitude, float)
    flags = []
    pb, rest = amp[(sp == "Pb") & np.isfinite(amp)], amp[np.isin(sp, ("X", "Cs")) & np.isfinite(amp)]
    if pb.size and rest.size:
        contrast = float(np.median(pb) / np.median(rest)) if np.median(rest) > 0 else float("inf")
        if contrast < MIN_PB_CONTRAST:
            flags.append(f"Pb columns are only {contrast:.2f}x as bright as the others (< {MIN_PB_CONTRAST}): "
                         "the Pb sublattice is uncertain; is this a lead-halide perovskite?")
    unknown = float(np.mean(sp == "unknown")) if sp.size else 0.0
    if unknown > MAX_UNKNOWN_FRACTION:
        flags.append(f"{unknown:.0%} of the columns in the crystal sit on no perovskite site "
                     f"(> {MAX_UNKNOWN_FRACTION:.0%}): the lattice model does not describe this image well")
    return flags
