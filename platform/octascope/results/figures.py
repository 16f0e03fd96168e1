"""Figures a microscopist expects from one analysis (the method paper's Fig. 2 and 3).

All figures are :class:`matplotlib.figure.Figure` objects built without pyplot (no global figure
state, no GUI backend; ``fig.savefig`` renders with Agg). Matplotlib is imported inside the
functions. Every map is drawn in the image frame in Å with y pointing down, like the image
itself; every colour bar carries its unit. Edge-flagged (unreliable) octahedra and columns are
drawn as light-grey tiles without a value, so the delineated rim is visible but carries no data.

The figures only one metric draws live next to that metric
(``octascope_plugins/metric/octahedral_figures.py``, ``lattice_figures.py``); this module keeps
the pieces they share and the figures of the core (network overlay, crystal region).

Line profiles follow the paper's Fig. 2d/3d: values are projected on a line and averaged over a
band of ``n_rows`` lattice rows next to it, in bins of one lattice spacing
(:func:`line_profile`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from octascope.analysis.lattice import estimate_square_basis

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from octascope.core.model import CrystalRegion, Image, Octahedra, Particle

SPECIES_COLOURS = {"Pb": "#d62728", "X": "#9467bd", "Cs": "#ff7f0e", "unknown": "#7f7f7f"}
EDGE_GREY = "#d9d9d9"


def new_figure(n_panels: int = 1, panel_size_in: float = 4.2, height_in: float | None = None) -> tuple["Figure", list["Axes"]]:
    """A pyplot-free figure with ``n_panels`` axes side by side (constrained layout)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_size_in * n_panels, height_in or panel_size_in), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def robust_limits(values: np.ndarray, lo: float = 2.0, hi: float = 98.0) -> tuple[float, float]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    a, b = np.percentile(v, [lo, hi])
    if b <= a:
        a, b = a - 0.5, b + 0.5
    return float(a), float(b)


def _frame_axes(ax: "Axes", xlabel: bool = True) -> None:
    ax.set_aspect("equal")
    if not ax.yaxis_inverted():
        ax.invert_yaxis()
    if xlabel:
        ax.set_xlabel("x [Å]")
    ax.set_ylabel("y [Å]")


def tile_polygons(xy_A: np.ndarray, a1_A: np.ndarray, a2_A: np.ndarray) -> np.ndarray:
    """Corner coordinates of the unit-cell tile (parallelogram spanned by a1, a2) centred on each point.

    Returns
    -------
    numpy.ndarray
        (N, 4, 2) polygon corners [Å].
    """
    a1 = np.broadcast_to(np.asarray(a1_A, float), np.shape(xy_A))
    a2 = np.broadcast_to(np.asarray(a2_A, float), np.shape(xy_A))
    signs = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    return xy_A[:, None, :] + signs[None, :, 0, None] * a1[:, None, :] + signs[None, :, 1, None] * a2[:, None, :]


def draw_tile_map(
    ax: "Axes",
    xy_A: np.ndarray,
    values: np.ndarray,
    a1_A: np.ndarray,
    a2_A: np.ndarray,
    *,
    label: str,
    title: str = "",
    excluded: np.ndarray | None = None,
    cmap: str = "viridis",
    limits: tuple[float, float] | None = None,
) -> Any:
    """Draw one value per lattice site as a coloured unit-cell tile, with a colour bar.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    xy_A : numpy.ndarray
        (N, 2) tile centres [Å].
    values : numpy.ndarray
        (N,) values; NaN tiles are not drawn.
    a1_A, a2_A : numpy.ndarray
        (2,) or (N, 2) lattice vectors spanning the tiles [Å].
    label : str
        Colour-bar label with its unit, e.g. ``"θ1 [°]"``.
    excluded : numpy.ndarray of bool, optional
        Sites drawn light grey without a value (edge, unreliable).
    limits : tuple of float, optional
        Colour range; by default the 2nd-98th percentile of the shown values.
    """
    from matplotlib.collections import PolyCollection

    xy = np.asarray(xy_A, float)
    v = np.asarray(values, float)
    excl = np.zeros(len(v), bool) if excluded is None else np.asarray(excluded, bool)
    polys = tile_polygons(xy, a1_A, a2_A)
    show = np.isfinite(v) & ~excl
    if excl.any():
        ax.add_collection(PolyCollection(polys[excl], facecolors=EDGE_GREY, edgecolors="none"))
    vmin, vmax = limits or robust_limits(v[show])
    coll = PolyCollection(polys[show], array=v[show], cmap=cmap, edgecolors="face", linewidths=0.2)
    coll.set_clim(vmin, vmax)
    ax.add_collection(coll)
    if len(polys):
        lo, hi = polys.reshape(-1, 2).min(0), polys.reshape(-1, 2).max(0)
        pad = 0.05 * (hi - lo).max()
        ax.set_xlim(lo[0] - pad, hi[0] + pad)
        ax.set_ylim(hi[1] + pad, lo[1] - pad)
    _frame_axes(ax)
    ax.set_title(title)
    ax.figure.colorbar(coll, ax=ax, label=label, shrink=0.85)
    return coll


def show_image(ax: "Axes", image: "Image", cmap: str = "gray") -> Any:
    """Show an image in Å (origin at the centre of pixel [0, 0], y down) with an intensity bar."""
    p = image.pixel_size_A
    h, w = image.shape
    im = ax.imshow(image.data, cmap=cmap, extent=(-0.5 * p, (w - 0.5) * p, (h - 0.5) * p, -0.5 * p), interpolation="nearest")
    ax.set_xlabel("x [Å]")
    ax.set_ylabel("y [Å]")
    unit = {"idpc": "iDPC [a.u.]", "icom": "iCoM [a.u.]", "haadf": "HAADF [counts]", "abf": "ABF [counts]"}
    ax.figure.colorbar(im, ax=ax, label=unit.get(image.signal, "intensity [a.u.]"), shrink=0.85)
    return im


def draw_particles(ax: "Axes", particles: Sequence["Particle"]) -> None:
    """Outline and id of every particle: solid white when analysed, dashed red when refused."""
    for p in particles:
        ok = p.verdict == "analysed"
        if len(p.outline_A) >= 3:
            ax.plot(p.outline_A[:, 0], p.outline_A[:, 1], color="white" if ok else "#d62728", lw=1.0,
                    ls="-" if ok else "--", alpha=0.9)
        ax.annotate(str(p.id) if ok else f"{p.id} (refused)", p.centroid_A, color="white" if ok else "#d62728",
                    fontsize=10, fontweight="bold", ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "black", "alpha": 0.5, "lw": 0})


def network_overlay(image: "Image", columns: pd.DataFrame, octahedra: "Octahedra | None" = None,
                    particles: Sequence["Particle"] = ()) -> "Figure":
    """The (denoised) image with columns coloured by species, the Pb-X bonds, and (with several
    particles or a refused one) each particle's outline and id."""
    from matplotlib.collections import LineCollection

    fig, (ax,) = new_figure(1, panel_size_in=7.0)
    show_image(ax, image)
    xy = columns[["x_A", "y_A"]].to_numpy(float)
    if octahedra is not None and len(octahedra.bonds):
        rows = columns.index.get_indexer(np.asarray(octahedra.bonds).ravel()).reshape(-1, 2)
        ok = (rows >= 0).all(1)
        segs = xy[rows[ok]]
        ax.add_collection(LineCollection(segs, colors="#17becf", linewidths=0.8, alpha=0.9, label="Pb–X bond"))
    species = columns["species"].astype(str).to_numpy() if "species" in columns else np.full(len(columns), "unknown")
    edge = columns["edge"].to_numpy(bool) if "edge" in columns else np.zeros(len(columns), bool)
    size = max(2.0, 300.0 / max(np.sqrt(len(columns)), 1.0))
    for sp, colour in SPECIES_COLOURS.items():
        sel = species == sp
        if sel.any():
            ax.scatter(xy[sel & ~edge, 0], xy[sel & ~edge, 1], s=size, c=colour, label=sp, linewidths=0)
            if (sel & edge).any():
                ax.scatter(xy[sel & edge, 0], xy[sel & edge, 1], s=size, facecolors="none", edgecolors=colour, linewidths=0.8)
    if len(particles) > 1 or any(p.verdict != "analysed" for p in particles):
        draw_particles(ax, particles)
    ax.set_title("columns by species (hollow: edge) and Pb–X network")
    ax.legend(loc="upper right", fontsize="small", markerscale=1.5)
    return fig


def line_profile(
    xy_A: np.ndarray,
    values: np.ndarray,
    start_A: Sequence[float] | np.ndarray,
    direction: Sequence[float] | np.ndarray,
    *,
    spacing_A: float,
    n_rows: int = 4,
    length_A: float | None = None,
) -> pd.DataFrame:
    """Profile of a site quantity along a line, integrating neighbouring lattice rows.

    Sites within ``n_rows / 2`` lattice spacings on either side of the line (perpendicular
    distance) are projected onto it and averaged in bins one lattice spacing long (the paper's
    "integrating four regions adjacent to the arrow, each separated by one lattice spacing").

    Parameters
    ----------
    xy_A : numpy.ndarray
        (N, 2) site positions [Å].
    values : numpy.ndarray
        (N,) site values (NaN values are ignored).
    start_A : sequence of float or numpy.ndarray
        Start point of the line [Å].
    direction : sequence of float or numpy.ndarray
        Direction of the line (any length).
    spacing_A : float
        Lattice spacing: bin length and row separation [Å].
    n_rows : int
        Number of lattice rows integrated across the line.
    length_A : float, optional
        Line length [Å]; by default up to the farthest site in the band.

    Returns
    -------
    pandas.DataFrame
        ``distance_A`` (bin centre along the line [Å]), ``mean``, ``std``, ``sem``, ``count``.
    """
    d = np.asarray(direction, float)
    d = d / np.linalg.norm(d)
    perp = np.array([-d[1], d[0]])
    rel = np.asarray(xy_A, float) - np.asarray(start_A, float)
    s = rel @ d
    t = rel @ perp
    v = np.asarray(values, float)
    keep = (np.abs(t) <= n_rows * spacing_A / 2) & (s >= -spacing_A / 2) & np.isfinite(v)
    if length_A is not None:
        keep &= s <= length_A + spacing_A / 2
    s, v = s[keep], v[keep]
    if s.size == 0:
        return pd.DataFrame({"distance_A": [], "mean": [], "std": [], "sem": [], "count": []})
    b = np.floor(s / spacing_A + 0.5).astype(int)
    df = pd.DataFrame({"bin": b, "v": v}).groupby("bin")["v"].agg(["mean", "std", "count"]).reset_index()
    df["sem"] = df["std"] / np.sqrt(df["count"])
    df.insert(0, "distance_A", df.pop("bin") * spacing_A)
    return df[["distance_A", "mean", "std", "sem", "count"]]


def default_profile_line(xy_A: np.ndarray, a1_A: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A line along ``a1`` through the particle centroid spanning the particle: (start, direction, length)."""
    d = np.asarray(a1_A, float) / np.linalg.norm(a1_A)
    c = np.nanmean(xy_A, axis=0)
    s = (xy_A - c) @ d
    return c + s.min() * d, d, float(s.max() - s.min())


def plot_profiles(ax: "Axes", profiles: dict[str, pd.DataFrame], ylabel: str, title: str = "") -> None:
    """Plot line profiles (mean ± standard error per bin) on one axis."""
    for name, prof in profiles.items():
        ax.errorbar(prof["distance_A"], prof["mean"], yerr=prof["sem"].fillna(0), marker="o", ms=3, capsize=2, label=name)
    ax.set_xlabel("distance along the line [Å]")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(profiles) > 1:
        ax.legend(fontsize="small")


def region_overlay(image: "Image", region: "CrystalRegion", outside_xy_A: np.ndarray | None = None) -> "Figure":
    """The image with the crystal region's outline (and the dropped columns outside it)."""
    fig, (ax,) = new_figure(1, panel_size_in=7.0)
    show_image(ax, image)
    h, w = region.mask.shape
    p = image.pixel_size_A
    ax.contour(np.arange(w) * p, np.arange(h) * p, region.mask.astype(float), levels=[0.5], colors="#d62728", linewidths=1.2)
    if outside_xy_A is not None and len(outside_xy_A):
        ax.scatter(outside_xy_A[:, 0], outside_xy_A[:, 1], s=6, c="#ff7f0e", linewidths=0, label="dropped (outside)")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_title(f"crystal region ({region.source}, {100 * region.fraction:.0f} % of the image)")
    return fig
