"""Figures of the ``lattice`` metric: Cs-Cs and Pb-Pb spacing maps and the spacing line profile."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from octascope.results.figures import (default_profile_line, draw_tile_map, line_profile, new_figure,
                                       plot_profiles, robust_limits)
from octascope.results.style import styled
from octascope.analysis.lattice import estimate_square_basis

if TYPE_CHECKING:
    from matplotlib.figure import Figure



@styled
def lattice_figures(table: pd.DataFrame, lattice_vectors_A: np.ndarray | None = None) -> dict[str, "Figure"]:
    """Cs-Cs (C1, C2, C3) and Pb-Pb (P1, P2, P3) spacing maps and spacing line profiles.

    Parameters
    ----------
    table : pandas.DataFrame
        The ``lattice`` metric table.
    lattice_vectors_A : numpy.ndarray, optional
        (2, 2) tile vectors [Å]; estimated from the Pb (else Cs) sites if omitted.
    """
    figs: dict[str, Figure] = {}
    sites = {sp: table[table["species"] == sp] for sp in ("Cs", "Pb")}
    if lattice_vectors_A is None:
        ref = sites["Pb"] if len(sites["Pb"]) >= 4 else sites["Cs"]
        lattice_vectors_A = estimate_square_basis(ref[["x_A", "y_A"]].to_numpy(float))
    a1, a2 = np.asarray(lattice_vectors_A, float)
    profiles: dict[str, pd.DataFrame] = {}
    for sp, prefix, key, cmap in (("Cs", "C", "cs_spacing_maps", "plasma"), ("Pb", "P", "pb_spacing_maps", "cividis")):
        t = sites[sp]
        if len(t) == 0:
            continue
        xy = t[["x_A", "y_A"]].to_numpy(float)
        edge = t["edge"].to_numpy(bool)
        names = [f"{prefix}{k}_A" for k in (1, 2, 3)]
        lim = robust_limits(t.loc[~edge, names].to_numpy().ravel())
        fig, axes = new_figure(3, height_in=4.5)
        for ax, name, k in zip(axes, names, (1, 2, 3)):
            draw_tile_map(ax, xy, t[name], a1, a2, label=f"{sp}–{sp} {prefix}{k} [Å]", title=f"{prefix}{k}",
                          excluded=edge, cmap=cmap, limits=lim)
        fig.suptitle(f"{sp}–{sp} spacings per {sp} column: {prefix}1 along a1, {prefix}2 along a2, {prefix}3 their mean; "
                     "grey: rim columns (no value)")
        figs[key] = fig
        good = ~edge
        if good.sum() >= 2:
            start, d, length = default_profile_line(xy[good], a1)
            profiles[f"{prefix}3 ({sp}–{sp})"] = line_profile(xy[good], t.loc[good, f"{prefix}3_A"], start, d,
                                                             spacing_A=float(np.linalg.norm(a1)), length_A=length)
    if profiles:
        fig, (ax,) = new_figure(1, panel_size_in=5.5, height_in=3.5)
        plot_profiles(ax, profiles, "spacing [Å]", "spacing along a1 through the centre\n(4 rows integrated; ± standard error)")
        figs["spacing_line_profile"] = fig
    return figs
