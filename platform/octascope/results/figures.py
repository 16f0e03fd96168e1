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

Every figure is built in one style (:mod:`octascope.results.style`, applied in an
``rc_context`` so the user's matplotlib settings are untouched), every picture of the specimen
carries a scale bar (:func:`add_scale_bar`), the tilt and bond-length maps are drawn over the image
(``draw_tile_map(..., image=...)``), and legends sit outside the data. The definitions of the
angles are in :data:`THETA_DEFINITION` and :data:`PHI_DEFINITION` (the figures' titles and the
report's captions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from octascope.analysis.lattice import estimate_square_basis
from octascope.results.style import STYLE, styled

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from octascope.core.model import CrystalRegion, Image, Octahedra, Particle

SPECIES_COLOURS = {"Pb": "#d62728", "X": "#9467bd", "Cs": "#ff7f0e", "unknown": "#7f7f7f"}
EDGE_GREY = "#d9d9d9"
#: opacity of the value tiles of a map drawn over the image
TILE_ALPHA = 0.72

#: what φ1-φ4 are (DESIGN.md "Definitions", the method paper's Fig. 1d)
PHI_DEFINITION = ("φ1, φ2: angle of the right and left Pb–X bond from the local Pb–Pb axis a1; "
                  "φ3, φ4: of the upper and lower bond from a2 (unsigned, projected)")
#: what θ1-θ3 are
THETA_DEFINITION = "θ1 = mean(φ1, φ2) (bonds along a1), θ2 = mean(φ3, φ4) (bonds along a2), θ3 = (θ1 + θ2)/2"
#: the same in two short lines (narrow figures)
THETA_DEFINITION_SHORT = ("θ1 = mean(φ1, φ2), θ2 = mean(φ3, φ4), θ3 = (θ1 + θ2)/2\n"
                          "φk: angle of Pb–X bond k from its local lattice axis")
#: what L1, L2 are
L_DEFINITION = "L1 = σ1 + σ2 (X–Pb–X along a1), L2 = σ3 + σ4 (along a2); σk: the Pb–X bond lengths"


def new_figure(n_panels: int = 1, panel_size_in: float = 4.2, height_in: float | None = None) -> tuple["Figure", list["Axes"]]:
    """A pyplot-free figure with ``n_panels`` axes side by side (constrained layout).

    Call it inside :func:`octascope.results.style.figure_style` (the figure functions here are
    :func:`~octascope.results.style.styled`); the tick label size is pinned on the axes, since
    matplotlib creates ticks when the figure is drawn.
    """
    # lazy: matplotlib (0.1-0.25 s to import), only when figures are drawn
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_size_in * n_panels, height_in or panel_size_in), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    for ax in axes:
        ax.tick_params(labelsize=STYLE["xtick.labelsize"])
    return fig, list(axes)


def plain_axes(ax: "Axes") -> None:
    """A plot (histogram, profile), not a picture: no top and right spines."""
    ax.spines[["top", "right"]].set_visible(False)


def scale_bar_length_A(span_A: float) -> float:
    """A round scale-bar length [Å] near a fifth of ``span_A``: 1, 2 or 5 × 10^n Å."""
    target = max(float(span_A), 1e-6) / 5.0
    exp = np.floor(np.log10(target))
    steps = np.array([1.0, 2.0, 5.0, 10.0]) * 10.0 ** exp
    return float(steps[np.argmin(np.abs(np.log(steps / target)))])


def add_scale_bar(ax: "Axes", *, colour: str = "white", loc: str = "lower left") -> Any:
    """A scale bar in the axes' data units (Å), about a fifth of the shown width, labelled in nm
    (Å below 1 nm), on a dark translucent box so it reads on any image."""
    # lazy: matplotlib (0.1-0.25 s to import), only when figures are drawn
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    x0, x1 = ax.get_xlim()
    length = scale_bar_length_A(abs(x1 - x0))
    label = f"{length / 10:g} nm" if length >= 10 else f"{length:g} Å"
    y0, y1 = ax.get_ylim()
    bar = AnchoredSizeBar(ax.transData, length, label, loc, pad=0.35, borderpad=0.6, sep=3, color=colour,
                          frameon=True, size_vertical=abs(y1 - y0) / 120,
                          fontproperties=FontProperties(size=STYLE["legend.fontsize"]))
    bar.patch.set(facecolor="black", alpha=0.45, edgecolor="none")
    ax.add_artist(bar)
    return bar


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
    image: "Image | None" = None,
    image_limits: tuple[float, float] | None = None,
) -> Any:
    """Draw one value per lattice site as a coloured unit-cell tile, with a colour bar.

    With ``image`` the tiles are drawn translucent (:data:`TILE_ALPHA`) over the image in grey,
    and a scale bar is added: the map stays tied to the columns it was measured from.

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
    image : Image, optional
        Drawn underneath in grey (no colour bar of its own).
    image_limits : tuple of float, optional
        Grey range of the image (by default :func:`image_limits`).
    """
    # lazy: matplotlib (0.1-0.25 s to import), only when figures are drawn
    from matplotlib.collections import PolyCollection

    if image is not None:
        show_image(ax, image, colorbar=False, limits=image_limits)
    alpha = TILE_ALPHA if image is not None else None
    xy = np.asarray(xy_A, float)
    v = np.asarray(values, float)
    excl = np.zeros(len(v), bool) if excluded is None else np.asarray(excluded, bool)
    polys = tile_polygons(xy, a1_A, a2_A)
    show = np.isfinite(v) & ~excl
    if excl.any():
        ax.add_collection(PolyCollection(polys[excl], facecolors=EDGE_GREY, edgecolors="none", alpha=alpha))
    vmin, vmax = limits or robust_limits(v[show])
    coll = PolyCollection(polys[show], array=v[show], cmap=cmap, edgecolors="face", linewidths=0.2, alpha=alpha)
    coll.set_clim(vmin, vmax)
    ax.add_collection(coll)
    if len(polys):
        lo, hi = polys.reshape(-1, 2).min(0), polys.reshape(-1, 2).max(0)
        pad = 0.05 * (hi - lo).max()
        ax.set_xlim(lo[0] - pad, hi[0] + pad)
        ax.set_ylim(hi[1] + 3.2 * pad, lo[1] - pad)  # room for the scale bar below the tiles
    _frame_axes(ax)
    ax.set_title(title)
    ax.figure.colorbar(coll, ax=ax, label=label, shrink=0.85)
    if image is not None or len(polys):
        add_scale_bar(ax)
    return coll


def image_limits(image: "Image") -> tuple[float, float]:
    """Grey range of an image: its 0.5-99.5th percentile (a few hot pixels do not wash it out)."""
    data = np.asarray(image.data)
    step = max(1, int(np.sqrt(data.size / 262144)))  # a 512² subsample is plenty for two percentiles
    return robust_limits(data[::step, ::step], 0.5, 99.5)


#: an image shown in a figure is block-averaged to at most this many pixels a side: a panel is
#: ≈ 750-1,000 px at the figures' 150 dpi, and colour-mapping and resampling a 2048² frame
#: for every panel was most of the time of drawing a paper-size run's figures
DISPLAY_MAX_PX = 1024


def display_pixels(data: np.ndarray, max_px: int = DISPLAY_MAX_PX) -> tuple[np.ndarray, int]:
    """The image as shown: block means of k × k pixels, k the smallest integer that brings both
    sides to at most ``max_px`` (the rows and columns left over at the far edges are dropped:
    fewer than k), and k."""
    data = np.asarray(data)
    k = max(1, -(-max(data.shape) // max_px))
    if k == 1:
        return data, 1
    h, w = data.shape[0] // k, data.shape[1] // k
    return data[:h * k, :w * k].reshape(h, k, w, k).mean(axis=(1, 3), dtype=np.float64).astype(np.float32), k


def show_image(ax: "Axes", image: "Image", cmap: str = "gray", *, colorbar: bool = True,
               limits: tuple[float, float] | None = None) -> Any:
    """Show an image in Å (origin at the centre of pixel [0, 0], y down), with an intensity bar
    unless ``colorbar`` is False; grey range ``limits`` (default :func:`image_limits`). A large
    image is shown block-averaged (:func:`display_pixels`), on the same coordinates."""
    p = image.pixel_size_A
    vmin, vmax = limits or image_limits(image)
    shown, k = display_pixels(image.data)
    h, w = shown.shape
    im = ax.imshow(shown, cmap=cmap, extent=(-0.5 * p, (w * k - 0.5) * p, (h * k - 0.5) * p, -0.5 * p),
                   interpolation="nearest", vmin=vmin, vmax=vmax)
    ax.set_xlabel("x [Å]")
    ax.set_ylabel("y [Å]")
    if colorbar:
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


@styled
def network_overlay(image: "Image", columns: pd.DataFrame, octahedra: "Octahedra | None" = None,
                    particles: Sequence["Particle"] = ()) -> "Figure":
    """The (denoised) image with columns coloured by species, the Pb-X bonds, and (with several
    particles or a refused one) each particle's outline and id."""
    # lazy: matplotlib (0.1-0.25 s to import), only when figures are drawn
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
    ax.set_title("atomic columns by species (hollow: at the rim) and the Pb–X network")
    add_scale_bar(ax)
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # below the image, never over the columns
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), markerscale=2.0)
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
    plain_axes(ax)
    if len(profiles) > 1:  # beside the plot, not over the points
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


@styled
def region_overlay(image: "Image", region: "CrystalRegion", outside_xy_A: np.ndarray | None = None) -> "Figure":
    """The image with the crystal region's outline (and the dropped columns outside it)."""
    fig, (ax,) = new_figure(1, panel_size_in=7.0)
    show_image(ax, image)
    h, w = region.mask.shape
    p = image.pixel_size_A
    ax.contour(np.arange(w) * p, np.arange(h) * p, region.mask.astype(float), levels=[0.5], colors="#d62728", linewidths=1.2)
    if outside_xy_A is not None and len(outside_xy_A):
        ax.scatter(outside_xy_A[:, 0], outside_xy_A[:, 1], s=6, c="#ff7f0e", linewidths=0, label="dropped (outside)")
        fig.legend(loc="outside lower center")
    ax.set_title(f"crystal region (red outline; {region.source}, {100 * region.fraction:.0f} % of the image)")
    add_scale_bar(ax)
    return fig
