"""Elliptical-Gaussian shape conversions shared by the locators."""

from __future__ import annotations

import numpy as np


def ellipse_from_covariance(
    cxx: np.ndarray, cxy: np.ndarray, cyy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal widths and orientation of a 2-D Gaussian from its covariance.

    Parameters
    ----------
    cxx, cxy, cyy : numpy.ndarray
        Covariance entries of the Gaussian [px²] (x along array axis 1, y along axis 0).

    Returns
    -------
    sigma_major, sigma_minor : numpy.ndarray
        Widths along the major and minor axes [px]; ``sigma_major >= sigma_minor``.
    rotation_deg : numpy.ndarray
        Angle of the major axis from +x towards +y (``atan2(dy, dx)`` in the image frame),
        in [0, 180) [deg].
    """
    cxx, cxy, cyy = (np.asarray(v, dtype=np.float64) for v in (cxx, cxy, cyy))
    mean = 0.5 * (cxx + cyy)
    half_diff = np.sqrt((0.5 * (cxx - cyy)) ** 2 + cxy**2)
    major = np.sqrt(np.clip(mean + half_diff, 0, None))
    minor = np.sqrt(np.clip(mean - half_diff, 0, None))
    rotation = np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy)) % 180.0
    return major, minor, rotation


def covariance_from_axes(
    sigma_a: np.ndarray, sigma_b: np.ndarray, angle_rad: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Covariance entries of a Gaussian with width ``sigma_a`` along ``angle_rad`` and ``sigma_b`` across.

    Parameters
    ----------
    sigma_a, sigma_b : numpy.ndarray
        Widths along the axis at ``angle_rad`` and perpendicular to it [px].
    angle_rad : numpy.ndarray
        Axis angle from +x towards +y [rad].

    Returns
    -------
    cxx, cxy, cyy : numpy.ndarray
        Covariance entries [px²].
    """
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    a2, b2 = np.asarray(sigma_a, dtype=np.float64) ** 2, np.asarray(sigma_b, dtype=np.float64) ** 2
    return a2 * c * c + b2 * s * s, (a2 - b2) * c * s, a2 * s * s + b2 * c * c
