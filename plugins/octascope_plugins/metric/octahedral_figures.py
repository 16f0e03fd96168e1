"""Figures of the ``octahedral`` metric: θ/φ/L maps, core/shell histograms, tilt line profile, network overlay.

The maps are drawn over the (denoised) image with a scale bar; every figure names what its angles
are (:data:`~octascope.results.figures.THETA_DEFINITION`, :data:`~octascope.results.figures.PHI_DEFINITION`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from octascope.analysis.lattice import estimate_square_basis
from octascope.analysis.particle_table import core_shell_masks, particle_tilts
from octascope.results.figures import (L_DEFINITION, PHI_DEFINITION, THETA_DEFINITION, THETA_DEFINITION_SHORT,
                                       default_profile_line,
                                       draw_particles, draw_tile_map, image_limits, line_profile, network_overlay,
                                       new_figure, plain_axes, plot_profiles, robust_limits)
from octascope.results.style import styled

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from octascope.core.model import Image, Octahedra, Particle


@styled
def octahedral_figures(
    image: "Image", columns: pd.DataFrame, octahedra: "Octahedra", table: pd.DataFrame, shell_depth_cells: int,
    particles: Sequence["Particle"] = (),
) -> dict[str, "Figure"]:
    """All figures of the octahedral metric.

    Returns
    -------
    dict
        ``network_overlay``, ``theta_maps`` (θ1, θ2, θ3), ``phi_maps`` (φ1-φ4),
        ``bond_length_maps`` (L1, L2), ``tilt_histograms`` (core vs shell), ``tilt_line_profile``
        and, when errors were propagated, ``theta_uncertainty_map`` (the total — statistical and
        systematic — 1σ of θ3 when the systematic part is known, else the statistical one); with several particles
        ``particle_histograms`` (sizes and mean tilts over the frame's particles).
    """
    figs: dict[str, Figure] = {"network_overlay": network_overlay(image, columns, octahedra, particles)}
    several = len(particles) > 1
    xy = table[["x_A", "y_A"]].to_numpy(float)
    a1, a2 = _tile_vectors(octahedra, xy)
    edge = table["edge"].to_numpy(bool)
    grey = image_limits(image)
    rim = "; grey tiles: rim octahedra (no value)" if edge.any() else ""
    good = ~edge
    figs["theta_maps"] = _theta_maps(image, table, xy, a1, a2, edge, grey, rim, particles if several else ())
    figs["phi_maps"] = _phi_maps(image, table, xy, a1, a2, edge, grey, rim)
    figs["bond_length_maps"] = _bond_length_maps(image, table, xy, a1, a2, edge, grey, rim)
    figs["tilt_histograms"] = _tilt_histograms(table, shell_depth_cells)
    if good.sum() >= 2:
        figs["tilt_line_profile"] = _tilt_line_profile(table, xy, a1, good)
    unc = "theta3_total_err_deg" if "theta3_total_err_deg" in table else "theta3_err_deg"
    if unc in table and np.isfinite(table.loc[good, unc]).any():
        fig, (ax,) = new_figure(1)
        what = "statistical ⊕ systematic" if unc == "theta3_total_err_deg" else "statistical"
        draw_tile_map(ax, xy, table[unc], a1, a2, label="σ(θ3) [°]", title=f"θ3 uncertainty (1σ, {what})",
                      excluded=edge, cmap="magma", image=image, image_limits=grey)
        figs["theta_uncertainty_map"] = fig
    if several:
        figs["particle_histograms"] = particle_histograms(particles, table, shell_depth_cells)
    return figs


def _tile_vectors(octahedra: "Octahedra", xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each octahedron's lattice vectors a1, a2 [Å], which shape its tile on the maps: its own where
    finite, else the frame's lattice vectors (else a square basis estimated from the centres ``xy`` [Å])."""
    tab = octahedra.table.reset_index(drop=True)
    a1 = tab[["a1_x_A", "a1_y_A"]].to_numpy(float) if "a1_x_A" in tab else None
    a2 = tab[["a2_x_A", "a2_y_A"]].to_numpy(float) if "a2_x_A" in tab else None
    glob = np.asarray(octahedra.lattice_vectors_A, float)
    if not np.isfinite(glob).all():
        glob = estimate_square_basis(xy) if len(xy) >= 4 else np.eye(2) * 6.0
    if a1 is None or a2 is None or not np.isfinite(a1).all() or not np.isfinite(a2).all():
        a1 = np.where(np.isfinite(a1), a1, glob[0]) if a1 is not None else np.broadcast_to(glob[0], xy.shape)
        a2 = np.where(np.isfinite(a2), a2, glob[1]) if a2 is not None else np.broadcast_to(glob[1], xy.shape)
    return a1, a2


def _theta_maps(image: "Image", table: pd.DataFrame, xy: np.ndarray, a1: np.ndarray, a2: np.ndarray,
                edge: np.ndarray, grey: tuple[float, float], rim: str, particles: Sequence["Particle"]) -> "Figure":
    """θ1, θ2, θ3 per octahedron over the image, on one colour scale (with the outlines of ``particles``, if any)."""
    good = ~edge
    theta_lim = robust_limits(table.loc[good, ["theta1_deg", "theta2_deg", "theta3_deg"]].to_numpy().ravel())
    fig, axes = new_figure(3, height_in=4.7)
    titles = ("θ1 = mean(φ1, φ2): bonds along a1", "θ2 = mean(φ3, φ4): bonds along a2", "θ3 = (θ1 + θ2)/2")
    for ax, k, title in zip(axes, (1, 2, 3), titles):
        draw_tile_map(ax, xy, table[f"theta{k}_deg"], a1, a2, label=f"θ{k} [°]", title=title, excluded=edge,
                      cmap="viridis", limits=theta_lim, image=image, image_limits=grey)
        if len(particles):
            draw_particles(ax, particles)
    fig.suptitle(f"Octahedral tilt per octahedron, over the image{rim}\n{PHI_DEFINITION}")
    return fig


def _phi_maps(image: "Image", table: pd.DataFrame, xy: np.ndarray, a1: np.ndarray, a2: np.ndarray,
              edge: np.ndarray, grey: tuple[float, float], rim: str) -> "Figure":
    """The Pb–X bond tilts φ1–φ4 per octahedron over the image, on one colour scale."""
    good = ~edge
    phi_lim = robust_limits(table.loc[good, [f"phi{k}_deg" for k in range(1, 5)]].to_numpy().ravel())
    fig, axes = new_figure(4, panel_size_in=3.6, height_in=4.1)
    for ax, k in zip(axes, range(1, 5)):
        draw_tile_map(ax, xy, table[f"phi{k}_deg"], a1, a2, label=f"φ{k} [°]", title=f"φ{k}", excluded=edge, limits=phi_lim,
                      image=image, image_limits=grey)
    fig.suptitle(f"Pb–X bond tilts, over the image{rim}\n{PHI_DEFINITION}")
    return fig


def _bond_length_maps(image: "Image", table: pd.DataFrame, xy: np.ndarray, a1: np.ndarray, a2: np.ndarray,
                      edge: np.ndarray, grey: tuple[float, float], rim: str) -> "Figure":
    """The bond lengths L1, L2 [Å] per octahedron over the image, on one colour scale."""
    good = ~edge
    L_lim = robust_limits(table.loc[good, ["L1_A", "L2_A"]].to_numpy().ravel())
    fig, axes = new_figure(2, height_in=4.7)
    for ax, k in zip(axes, (1, 2)):
        draw_tile_map(ax, xy, table[f"L{k}_A"], a1, a2, label=f"L{k} (X–Pb–X) [Å]", title=f"L{k}", excluded=edge,
                      cmap="cividis", limits=L_lim, image=image, image_limits=grey)
    fig.suptitle(f"Bond lengths, over the image{rim}\n{L_DEFINITION}")
    return fig


def _tilt_histograms(table: pd.DataFrame, shell_depth_cells: int) -> "Figure":
    """Histograms of θ1, θ2, θ3 over the core and the shell (the outer ``shell_depth_cells`` cells)."""
    fig, axes = new_figure(3, panel_size_in=3.8, height_in=3.6)
    in_core, in_shell = core_shell_masks(table, shell_depth_cells)
    colours = {"core": "#0072B2", "shell": "#E69F00"}
    counts = {}
    for ax, k in zip(axes, (1, 2, 3)):
        v = table[f"theta{k}_deg"].to_numpy(float)
        core, shell = v[in_core], v[in_shell]
        core, shell = core[np.isfinite(core)], shell[np.isfinite(shell)]
        counts = {"core": core.size, "shell": shell.size}
        both = np.concatenate([core, shell])
        bins = np.linspace(both.min(), both.max() + 1e-9, 16).tolist() if both.size else 10
        means = []
        for region, vals in (("core", core), ("shell", shell)):
            if vals.size:
                ax.hist(vals, bins=bins, alpha=0.6, color=colours[region], label=region)
                means.append(f"{region} {vals.mean():.2f}°")
        ax.set_xlabel(f"θ{k} [°]")
        ax.set_ylabel("octahedra")
        ax.set_title(f"θ{k}: mean " + ", ".join(means) if means else f"θ{k}: no octahedra")
        plain_axes(ax)
    # lazy: matplotlib (0.1-0.25 s to import), only when figures are drawn
    from matplotlib.patches import Patch

    labels = {"core": f"core: ≥ {shell_depth_cells} cells below the surface (n={counts.get('core', 0)})",
              "shell": f"shell: the outer {shell_depth_cells} cells (n={counts.get('shell', 0)})"}
    fig.legend([Patch(facecolor=colours[r], alpha=0.6) for r in labels], list(labels.values()),
               loc="outside lower center", ncols=2)
    fig.suptitle(THETA_DEFINITION)
    return fig


def _tilt_line_profile(table: pd.DataFrame, xy: np.ndarray, a1: np.ndarray, good: np.ndarray) -> "Figure":
    """θ1–θ3 along a1 through the particle's centre, over the measured (``good``) octahedra."""
    a1_mean = np.nanmean(a1[good], axis=0)
    start, d, length = default_profile_line(xy[good], a1_mean)
    spacing = float(np.linalg.norm(a1_mean))
    profs = {f"θ{k}": line_profile(xy[good], table.loc[good, f"theta{k}_deg"], start, d, spacing_A=spacing,
                                   length_A=length) for k in (1, 2, 3)}
    fig, (ax,) = new_figure(1, panel_size_in=5.5, height_in=4.0)
    plot_profiles(ax, profs, "tilt [°]", "tilt along a1 through the centre\n(4 rows integrated; ± standard error)")
    fig.suptitle(THETA_DEFINITION_SHORT)
    return fig


@styled
def particle_histograms(particles: Sequence["Particle"], table: pd.DataFrame, shell_depth_cells: int) -> "Figure":
    """The frame's particles: their size (√(extent along a1 × along a2)) and their mean θ3 in core
    and shell, one count per analysed particle."""

    done = [p for p in particles if p.verdict == "analysed"]
    sizes = np.array([np.sqrt(p.size_A[0] * p.size_A[1]) / 10.0 for p in done])
    tilts = particle_tilts(table, shell_depth_cells) if "particle" in table else pd.DataFrame()
    fig, axes = new_figure(2, panel_size_in=4.2, height_in=3.2)
    axes[0].hist(sizes, bins=max(3, min(12, len(sizes))), color="#1f77b4")
    axes[0].set_xlabel("particle size √(a1 extent × a2 extent) [nm]")
    axes[0].set_ylabel("particles")
    axes[0].set_title(f"{len(done)} analysed of {len(particles)} particles")
    plain_axes(axes[0])
    plain_axes(axes[1])
    for region, colour in (("core", "#0072B2"), ("shell", "#E69F00")):
        col = f"theta3_deg_{region}"
        v = tilts[col].to_numpy(float) if col in tilts else np.array([])
        v = v[np.isfinite(v)]
        if v.size:
            axes[1].hist(v, bins=max(3, min(12, v.size)), alpha=0.6, color=colour, label=f"{region} (n={v.size})")
    axes[1].set_xlabel("mean θ3 = (θ1 + θ2)/2 per particle [°]")
    axes[1].set_ylabel("particles")
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig
