"""The ``atomap`` locator: the real Atomap package, for side-by-side comparison with ``gaussian``."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pandas as pd

from octascope.analysis.noise_spectrum import PEAK_ROUGHNESS_ATTR
from octascope.analysis.region import frame_noise_spectrum
from octascope.core.model import Image, make_columns
from octascope.core.params import Plugin, param, require

from octascope_plugins.locate.peaks import CandidateSearch


@contextlib.contextmanager
def _quiet():
    """Silence Atomap/HyperSpy warnings, log records and progress output."""
    loggers = [logging.getLogger(name) for name in ("hyperspy", "atomap")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def atomap_refine(
    data: np.ndarray,
    x_px: np.ndarray,
    y_px: np.ndarray,
    *,
    com_radius_px: float = 3.0,
    percent_to_nn: float = 0.4,
    rotation_enabled: bool = True,
) -> dict[str, np.ndarray]:
    """Refine positions with Atomap: centre of mass, then one 2-D Gaussian fit per column.

    Parameters
    ----------
    data : numpy.ndarray
        2-D image, columns bright.
    x_px, y_px : numpy.ndarray
        Start positions [px].
    com_radius_px : float
        Radius of Atomap's centre-of-mass mask [px].
    percent_to_nn : float
        Atomap's Gaussian mask radius as a fraction of the distance to the nearest neighbour [1].
    rotation_enabled : bool
        Let the Gaussians rotate (elliptical fit).

    Returns
    -------
    dict
        ``x``, ``y`` [px], ``sigma_x``, ``sigma_y`` [px], ``rotation`` [rad, Atomap's
        convention], ``amplitude`` (peak height), ``fitted`` (False where Atomap fell back to
        the centre of mass).
    """
    with _quiet():
        # lazy: Atomap (~1.6 s to import), only for locator=atomap
        import atomap.api as am

        positions = np.column_stack([np.asarray(x_px, float), np.asarray(y_px, float)])
        sub = am.Sublattice(positions, image=np.asarray(data, dtype=np.float64))
        sub.find_nearest_neighbors(nearest_neighbors=min(9, len(positions) - 1))
        sub.refine_atom_positions_using_center_of_mass(mask_radius=com_radius_px, show_progressbar=False)
        sub.refine_atom_positions_using_2d_gaussian(percent_to_nn=percent_to_nn, rotation_enabled=rotation_enabled,
                                                    show_progressbar=False)
        sx, sy = sub.sigma_x, sub.sigma_y
        volume = sub.atom_amplitude_gaussian2d
        fitted = np.array([bool(a._gaussian_fitted) and a.amplitude_gaussian > 0 for a in sub.atom_list])
        return {
            "x": sub.x_position, "y": sub.y_position, "sigma_x": sx, "sigma_y": sy, "rotation": sub.rotation,
            # HyperSpy's Gaussian2D amplitude is the integral; the peak height is A / (2 pi sx sy)
            "amplitude": volume / (2 * np.pi * sx * sy), "fitted": fitted,
        }


def atomap_to_columns(fit: dict[str, np.ndarray], pixel_size_A: float, shape: tuple[int, int],
                      edge_px: float) -> pd.DataFrame:
    """Column table from :func:`atomap_refine` output.

    ``rotation_deg`` is the major-axis angle in octascope's convention (from +x towards +y);
    HyperSpy's ``rotation`` turns the other way in that frame, hence the sign flip.
    """
    sx, sy, rot = fit["sigma_x"], fit["sigma_y"], fit["rotation"]
    major, minor = np.maximum(sx, sy), np.minimum(sx, sy)
    major_angle = np.where(sx >= sy, rot, rot + np.pi / 2)
    rotation_deg = np.degrees(-major_angle) % 180.0
    x, y = fit["x"], fit["y"]
    h, w = shape
    edge = (x < edge_px) | (y < edge_px) | (x > w - 1 - edge_px) | (y > h - 1 - edge_px)
    ok = fit["fitted"]
    nan = np.where(ok, 1.0, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ellipticity = major / minor
    return make_columns(
        x, y, pixel_size_A,
        amplitude=fit["amplitude"] * nan, sigma_major_A=major * pixel_size_A * nan,
        sigma_minor_A=minor * pixel_size_A * nan, rotation_deg=rotation_deg * nan, ellipticity=ellipticity * nan,
        edge=edge, fit_ok=ok,
    )


@dataclass(frozen=True, kw_only=True)
class AtomapOptions(CandidateSearch):
    """Parameters of :class:`AtomapLocator`: the candidate search shared with ``gaussian``
    (inherited from :class:`~octascope_plugins.locate.peaks.CandidateSearch`; ``com_radius_A`` is
    the radius of Atomap's own centre-of-mass mask) and Atomap's refinement."""

    candidates: Literal["local_max", "atomap"] = param(
        "local_max", doc="'local_max': octascope's candidate search (as gaussian); 'atomap': atomap.get_atom_positions")
    separation_A: float = param(1.2, unit="Å", doc="least candidate separation for candidates='atomap'")
    percent_to_nn: float = param(0.4, doc="Gaussian mask radius as a fraction of the nearest-neighbour distance "
                                 "(Atomap's default 0.4)")
    rotation_enabled: bool = param(True, doc="fit elliptical, rotating Gaussians")
    edge_A: float = param(1.5, unit="Å", doc="columns closer than this to the image border are flagged edge")

    def check(self) -> None:
        super().check()
        require(0 < self.percent_to_nn <= 1, f"percent_to_nn must be in (0, 1], got {self.percent_to_nn}")
        require(self.separation_A > 0, f"separation_A must be > 0 Å, got {self.separation_A}")


class AtomapLocator(Plugin):
    """Column finding with the real Atomap package (one SciPy Gaussian fit per column).

    The reference the batched ``gaussian`` locator is compared with: the same candidates (local
    maxima of the smoothed image, or Atomap's own ``get_atom_positions``), then
    ``atomap.Sublattice`` with ``find_nearest_neighbors``,
    ``refine_atom_positions_using_center_of_mass`` and
    ``refine_atom_positions_using_2d_gaussian``. Atomap subtracts a low-percentile background
    instead of fitting one, so ``background``, ``residual`` and the position uncertainties are
    left NaN.

    Parameters are those of :class:`AtomapOptions`.
    """

    name: ClassVar[str] = "atomap"
    Options = AtomapOptions
    options: AtomapOptions

    def _candidates(self, image: Image) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float | None]:
        if self.options.candidates == "atomap":
            with _quiet():
                # lazy: Atomap (~1.6 s to import), only for locator=atomap
                import atomap.api as am
                # lazy: HyperSpy (~50 ms to import), only for that file format
                import hyperspy.api as hs

                sep = max(1, int(round(self.options.separation_A / image.pixel_size_A)))
                xy = am.get_atom_positions(hs.signals.Signal2D(image.data), separation=sep)
            xy = np.asarray(xy, dtype=float).reshape(-1, 2)
            return xy[:, 0], xy[:, 1], None, None
        # the same candidates as the gaussian locator, site candidates included
        return self.options.find(image.data, image.pixel_size_A, frame_noise_spectrum(image))

    def refine(self, image: Image, x_px: np.ndarray, y_px: np.ndarray) -> pd.DataFrame:
        """Refine given start positions [px] with Atomap and return the column table."""
        if len(x_px) < 2:
            # Atomap needs a nearest neighbour for its masks
            return make_columns(x_px, y_px, image.pixel_size_A, fit_ok=np.zeros(len(x_px), bool))
        o = self.options
        fit = atomap_refine(image.data, x_px, y_px, com_radius_px=o.com_radius_A / image.pixel_size_A,
                            percent_to_nn=o.percent_to_nn, rotation_enabled=o.rotation_enabled)
        return atomap_to_columns(fit, image.pixel_size_A, image.shape, o.edge_A / image.pixel_size_A)

    def locate(self, image: Image) -> pd.DataFrame:
        """Find columns and refine them with Atomap; see the class docstring."""
        x, y, z, threshold = self._candidates(image)
        table = self.refine(image, x, y)
        if z is not None and len(table) == len(z):  # Atomap keeps one row per start position
            table["significance"] = z
            table["significant"] = z >= threshold
            table.attrs["significance_threshold"] = threshold
            table.attrs[PEAK_ROUGHNESS_ATTR] = self.options.roughness(image.data, image.pixel_size_A,
                                                                      frame_noise_spectrum(image))
        return table
