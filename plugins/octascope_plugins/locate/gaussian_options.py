"""Parameters of the ``gaussian`` locator (:class:`GaussianOptions`) and the binning rule of its fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from octascope.core.devices import check_device_name
from octascope.core.params import param, require

from octascope_plugins.locate.peaks import CandidateSearch

#: fewest pixels of a fit-window radius: a 3 px disk has 29 pixels for the 7 parameters
MIN_FIT_RADIUS_PX = 3


@dataclass(frozen=True, kw_only=True)
class GaussianOptions(CandidateSearch):
    """Parameters of :class:`GaussianLocator`: the candidate search (inherited from
    :class:`~octascope_plugins.locate.peaks.CandidateSearch`) and the fit.

    Every length of the fit window is its own knob in Å. They are converted to whole pixels of the
    fit grid (the image's pixels, or k × k bins, see ``fit_pixel_A``) by :meth:`fit_px`: rounded,
    and at least 3 px. By default the width bound and the background window equal the patch
    radius and neighbours are rendered to twice it.
    """

    patch_radius_A: float = param(1.2, unit="Å", doc="radius of the circular patch each Gaussian is fitted on "
                                  "(≈0.4 of the Pb-X spacing, as Atomap's default mask)")
    max_sigma_A: float = param(1.2, unit="Å", doc="widest usable fit: a fit whose Cholesky determinant "
                               "allows a larger width is failed")
    background_radius_A: float = param(1.2, unit="Å", doc="the start background is the 10th percentile "
                                       "within this radius of the patch centre (the patch where that is smaller)")
    neighbour_radius_A: float = param(2.4, unit="Å", doc="each neighbour's model is rendered out to this "
                                      "radius when subtracted from a patch")
    sigma_init_A: float = param(0.5, unit="Å", doc="starting Gaussian width")
    neighbour_rounds: int = param(3, doc="refits with the model of all other columns subtracted (0: off; 1 takes "
                                  "0.6-0.8 of the fit time for the same RMSE on separated columns, but leaves ~1 pm "
                                  "of bias between columns 2.5 Å apart at σ 0.7 Å, against 0.3 pm with 3)")
    profile_groups: int = param(3, doc="columns are grouped by amplitude into at most this many groups whose members "
                                "share one elliptical profile (position, amplitude and background free per column); "
                                "0: every column fits its own shape")
    profile_iterations: int = param(15, doc="Levenberg-Marquardt iterations of a group's shared profile per round at "
                                    "most (each round starts from the last one's; 15: RMSE unchanged against 100 at "
                                    "100-300 e/Å², experiments/benchmarks/results/locator_sweep.md)")
    shape_iterations: int = param(10, doc="after a shared-profile fit, each column's own shape (widths, ellipticity, "
                                  "rotation) is refined from it by at most this many iterations; 0: columns report "
                                  "their group's shape")
    max_iterations: int = param(100, doc="Levenberg-Marquardt iterations per fit at most")
    tolerance: float = param(1e-6, doc="relative cost change at which a fit has converged (paper: 1e-6)")
    max_residual: float = param(0.08, doc="RMS misfit beyond the pixel noise, relative to the peak height, "
                                "above which a fit of its own shape is restarted (paper: 0.08; profile_groups=0)")
    max_restarts: int = param(2, doc="restart attempts per round (run together)")
    restart_shift_A: float = param(0.2, unit="Å", doc="largest random shift of a restart's start position")
    fit_pixel_A: float = param(0.15, unit="Å", doc="finer images are fitted on k x k binned pixels, "
                               "k = floor(fit_pixel_A / pixel size); 0: off")
    min_separation_A: float = param(1.0, unit="Å", doc="fitted columns closer than this are merged (the weaker dropped)")
    noise_model: Literal["auto", "spectrum", "white"] = param(
        "auto", doc="noise the position covariances assume: spectrum (the image's fitted noise power spectrum, "
                    "correlated; iDPC/iCoM), white (each fit's residual, heteroscedastic; HAADF), auto (spectrum when "
                    "the noise power falls faster than 1/k)")
    covariance_radius_A: float = param(4.5, unit="Å", doc="columns closer than this get the covariance of their "
                                       "position errors (pairs table); 0: none")
    seed: int = param(0, doc="seed of the random restart shifts")
    device: str = param("auto", doc="'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:i]'")
    cpu_threads: int = param(1, doc="torch threads of a CPU fit (0 keeps torch's setting)")

    def check(self) -> None:
        super().check()
        for key in ("patch_radius_A", "max_sigma_A", "background_radius_A", "neighbour_radius_A", "sigma_init_A",
                    "max_iterations", "tolerance", "max_residual", "profile_iterations"):
            require(getattr(self, key) > 0, f"{key} must be > 0, got {getattr(self, key)}; give a positive value")
        for key in ("neighbour_rounds", "max_restarts", "min_separation_A", "restart_shift_A", "fit_pixel_A",
                    "cpu_threads", "covariance_radius_A", "profile_groups", "shape_iterations"):
            require(getattr(self, key) >= 0, f"{key} must be >= 0, got {getattr(self, key)}")
        try:
            check_device_name(self.device, "locator 'gaussian'")
        except Exception as exc:  # the device error explains itself; one error type for a bad value
            require(False, f"device: {exc}")

    @staticmethod
    def fit_px(length_A: float, pixel_size_A: float) -> int:
        """A length of the fit window in whole pixels of the fit grid: rounded, at least 3 px.

        Parameters
        ----------
        length_A : float
            Length [Å].
        pixel_size_A : float
            Pixel size of the fit grid [Å].

        Returns
        -------
        int
            The length [px]; the 3 px floor binds only above 0.4 Å/px at the default 1.2 Å patch.
        """
        return max(MIN_FIT_RADIUS_PX, int(round(length_A / pixel_size_A)))

    def fit_bin(self, pixel_size_A: float) -> int:
        """Binning factor of the fit for a pixel size [Å] (1 = the image's own pixels), see ``fit_pixel_A``."""
        return fit_bin(self.fit_pixel_A, pixel_size_A)


def fit_bin(fit_pixel_A: float, pixel_size_A: float) -> int:
    """Binning factor k of the fit for a pixel size (1 = the image's own pixels).

    Parameters
    ----------
    fit_pixel_A : float
        Finest sampling the fit runs at [Å]; 0 turns binning off.
    pixel_size_A : float
        Pixel size of the image [Å].

    Returns
    -------
    int
        ``k = ⌊fit_pixel_A / pixel_size_A⌋``, at least 1.
    """
    if fit_pixel_A <= 0:
        return 1
    return max(1, int(np.floor(fit_pixel_A / pixel_size_A + 1e-6)))
