"""One figure style for every octascope figure, applied without touching the user's matplotlib.

:data:`STYLE` holds the rcParams (sizes for a two-column journal page at 150 dpi, editable SVG
text, colour-blind-safe line colours); :func:`figure_style` applies them inside a
:func:`matplotlib.rc_context`, so the user's own ``matplotlib.rcParams`` are the same before and
after (nothing leaks into a notebook or another library). Figure functions are wrapped with
:func:`styled`; :func:`octascope.results.outputs.save_figure` saves inside the same context (a few
settings — SVG fonts, ticks created at draw time — are read when the figure is drawn).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, TypeVar

#: Okabe & Ito's colour-blind-safe palette (black left out), the line and histogram colours
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442")

#: the rcParams of every octascope figure
STYLE: dict[str, Any] = {
    "font.size": 9.0,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9.0,
    "xtick.labelsize": 8.0,
    "ytick.labelsize": 8.0,
    "legend.fontsize": 8.0,
    "figure.titlesize": 9.0,
    "legend.frameon": False,
    "axes.linewidth": 0.8,
    "xtick.major.width": 0.8,
    "ytick.major.width": 0.8,
    "xtick.major.size": 3.0,
    "ytick.major.size": 3.0,
    "lines.linewidth": 1.2,
    "lines.markersize": 4.0,
    "image.interpolation": "nearest",
    "image.origin": "upper",
    "svg.fonttype": "none",      # SVG text stays text: editable in Inkscape/Illustrator, smaller files
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
    "axes.formatter.useoffset": False,
}

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Apply :data:`STYLE` for the duration of the block (``matplotlib.rc_context``: restored after)."""
    # lazy: matplotlib (0.1-0.25 s to import), only when figures are drawn
    import matplotlib
    from matplotlib import cycler  # type: ignore[attr-defined]  # matplotlib re-exports cycler (its dependency)

    rc: dict[str, Any] = {**STYLE, "axes.prop_cycle": cycler(color=list(OKABE_ITO))}
    with matplotlib.rc_context(rc):  # type: ignore[arg-type]  # the stubs list every rc key as a Literal
        yield


def styled(fn: F) -> F:
    """Decorator: build the figure inside :func:`figure_style`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with figure_style():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
