"""The ``gaussian`` locator: candidate search, then a batched elliptical-Gaussian fit of all columns.

This module holds the plugin only. The pieces: :mod:`.gaussian_options` (its parameters), :mod:`.peaks` (candidate search,
shared with ``atomap``), :mod:`.gaussian_fit` (the fit rounds and the column table),
:mod:`.lm_solver` (batched Levenberg-Marquardt, model and Jacobian), :mod:`.patches` (pixel
patches), :mod:`.neighbours` (neighbour rendering) and :mod:`.binning` (fits on binned pixels).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np
import pandas as pd

from octascope.analysis.noise_spectrum import PEAK_ROUGHNESS_ATTR
from octascope.analysis.region import frame_noise_spectrum
from octascope.core.model import Image
from octascope.core.params import Plugin
from octascope.core.devices import cpu_threads

from octascope_plugins.locate.binning import bin_image, to_binned, unbin_fit
from octascope_plugins.locate.arrays import fit_arrays
from octascope_plugins.locate.gaussian_fit import fit_gaussians, fit_to_columns
from octascope_plugins.locate.gaussian_options import GaussianOptions

__all__ = ["GaussianLocator"]

class GaussianLocator(Plugin):
    """Atomap-style column finding with a batched elliptical-Gaussian fit of all columns.

    Candidates are maxima (within ``search_radius_A``) of the band-passed image that are
    significant under the image's own noise spectrum (correlated iDPC noise included, see
    :func:`~octascope_plugins.locate.peaks.find_candidates`); each is moved to the centre of mass
    in a circular aperture of ``com_radius_A``, then all columns are fitted together with an
    elliptical 2-D Gaussian plus constant background by batched Levenberg-Marquardt
    (:mod:`.lm_solver`; NumPy on the CPU, torch on a GPU when present). Fits whose RMS residual exceeds
    ``max_residual`` of the peak height are restarted from a perturbed centre-of-mass start.
    Neighbouring columns are removed from each patch by iterative neighbour subtraction
    (``neighbour_rounds``) so their tails do not pull a column's centre. On images finer than
    ``fit_pixel_A`` the fit runs on k × k binned pixels (binning keeps every count, so the noise
    per Å² is unchanged; a 0.15 Å bin widens a 0.4 Å column by 0.3 % and moves no centre), so the
    cost per column does not grow as the pixel size shrinks.

    Parameters are those of :class:`GaussianOptions` (``GaussianLocator(patch_radius_A=1.6)`` or
    ``GaussianLocator(GaussianOptions(...))``). ``cpu_threads``: the batched solves are many small
    operations, which run best on one thread: more threads spin-wait on each other when the cores
    are shared.
    """

    name: ClassVar[str] = "gaussian"
    Options = GaussianOptions
    options: GaussianOptions

    def candidates(self, image: Image) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Candidate positions after centre-of-mass refinement [px], their significance and the
        significance threshold [1]."""
        return self.options(image.data, image.pixel_size_A, frame_noise_spectrum(image))

    def refine(self, image: Image, x_px: np.ndarray, y_px: np.ndarray,
               significance: np.ndarray | None = None, threshold: float | None = None) -> pd.DataFrame:
        """Fit Gaussians from given start positions and return the column table.

        Parameters
        ----------
        image : Image
            The image.
        x_px, y_px : numpy.ndarray
            Start positions [px].
        significance : numpy.ndarray, optional
            Detection significance of each start [1] (becomes the ``significance`` column).
        threshold : float, optional
            Significance above which a column is ``significant`` [1].

        Returns
        -------
        pandas.DataFrame
            Column table (:data:`octascope.core.model.COLUMN_FIELDS`, ``fit_ok``, ``significance``).
        """
        o = self.options
        ps = image.pixel_size_A
        k = o.fit_bin(ps)
        data, fps = np.asarray(image.data), ps * k
        xs, ys = np.asarray(x_px, float), np.asarray(y_px, float)
        if k > 1:
            data, xs, ys = bin_image(data, k), to_binned(xs, k), to_binned(ys, k)
        arrays = fit_arrays(o.device)  # NumPy on the CPU (torch is not imported), torch on a GPU
        threads = o.cpu_threads if arrays.name == "torch" and arrays.device_type == "cpu" else None
        with cpu_threads(threads), _round_bar(len(xs), o.neighbour_rounds + 1) as bar:
            fit = fit_gaussians(data, xs, ys, o, pixel_size_A=fps, progress=bar, arrays=arrays)
        if k > 1:
            fit = unbin_fit(fit, k, np.asarray(x_px, float), np.asarray(y_px, float))
        return fit_to_columns(fit, ps, o.min_separation_A, significance=significance, threshold=threshold,
                              failed_err_A=0.5 * o.com_radius_A)

    def locate(self, image: Image) -> pd.DataFrame:
        """Find and fit all columns of ``image``; see the class docstring. The table's
        ``attrs["peak_roughness_per_A2"]`` says how rough the search's noise was (a classifier's
        test of the site candidates needs it; NaN under the whole image's noise estimate)."""
        x, y, z, threshold = self.candidates(image)
        table = self.refine(image, x, y, z, threshold)
        table.attrs[PEAK_ROUGHNESS_ATTR] = self.options.roughness(image.data, image.pixel_size_A,
                                                                  frame_noise_spectrum(image))
        return table


#: fits of at least this many columns show a progress bar (on CPU, ~1 ms per column and round)
PROGRESS_MIN_COLUMNS = 2000


class _round_bar:
    """A tqdm bar over the fitting rounds of a large fit (stderr); nothing for small ones."""

    def __init__(self, n_columns: int, n_rounds: int) -> None:
        self.n_columns, self.n_rounds = n_columns, n_rounds
        self.bar: Any = None  # a tqdm bar (tqdm is untyped) while a large fit runs

    def __enter__(self) -> "Callable[[int, int], None] | None":
        if self.n_columns < PROGRESS_MIN_COLUMNS:
            return None
        # lazy: tqdm (~14 ms to import), only when a progress bar is shown
        from tqdm.auto import tqdm

        bar = self.bar = tqdm(total=self.n_rounds, unit="round", desc=f"fitting {self.n_columns:,} columns", leave=False)
        return lambda done, total: bar.update(done - bar.n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
