"""Time series: every frame of a stack analysed, registered for drift, its particles tracked.

:func:`analyse_series` takes the frames (calibrated :class:`~octascope.core.model.Image` objects,
read one at a time) and

1. registers each frame on the one before by phase correlation
   (:func:`skimage.registration.phase_cross_correlation`) of the images low-passed below the column
   spacing, so the peak is the particles' envelope and never a lattice translation; the shifts are
   summed into the drift of every frame against the first [px];
2. analyses each frame on its own (any ``analyse(image) -> Result``, by default
   :func:`octascope.analysis.pipeline.analyze`), cached per frame on disk under a key of the
   frame's pixels, its index and the analysis configuration, so a re-run after an interruption
   does not recompute the frames it finished;
3. fits each particle's Pb lattice (``origin + i a1 + j a2`` over its Pb columns, least squares with
   the residual scatter as the position error): lattice parameters |a1|, |a2| [Å] and the in-plane
   rotation [deg] with 1σ errors (:func:`fit_particle_lattice`);
4. tracks particles from frame to frame by their drift-corrected centroids and rotations
   (:func:`track_particles`): one id per particle across the series; a particle that appears gets
   a new id, one missing for more than ``max_gap_frames`` frames ends its track.

The result (:class:`SeriesResult`) holds the per-frame tables concatenated with a ``frame`` column
(``particle`` is the track id there, ``frame_particle`` the frame's own particle number) and the
``series`` table: per frame and particle, time and dose, mean tilts ± errors, lattice parameters ±
errors, rotation ± error (:data:`SERIES_CSV_FIRST`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from octascope.core.errors import InputError
from octascope.core.model import Image
from octascope.core.params import Options, param, require, options_from
from octascope.analysis.pipeline import analyze
from octascope.sim.cache import write_folder

if TYPE_CHECKING:
    from octascope.core.model import Result

#: public column order of series.csv (more columns may follow)
SERIES_CSV_FIRST = ["frame", "time_s", "dose_e_per_A2", "particle", "frame_particle", "verdict", "centroid_x_A",
                    "centroid_y_A", "drift_x_A", "drift_y_A", "n_octahedra_measured",
                    "theta1_deg", "theta1_err_deg", "theta2_deg", "theta2_err_deg", "theta3_deg", "theta3_err_deg",
                    "a1_A", "a1_err_A", "a2_A", "a2_err_A", "rotation_deg", "rotation_err_deg"]
#: the per-frame tables of a series (``columns``, ``octahedra``, ``particles``), as the single-image run writes them
FRAME_TABLES = ("columns", "octahedra", "particles")
#: bump when the per-frame cache's content changes, so old entries are not reused
SERIES_CACHE_VERSION = 1


class Frames(Protocol):
    """What :func:`analyse_series` needs of its frames: a length and one :class:`Image` per index
    (a list, or a lazy reader such as :class:`octascope.input.readers.ImageStack`)."""

    def __len__(self) -> int: ...

    def __getitem__(self, k: int) -> Image: ...


@dataclass(frozen=True, kw_only=True)
class SeriesOptions(Options):
    """How the frames of a series are registered and their particles tracked."""

    lowpass_A: float = param(2.0, unit="Å", doc="σ of the Gaussian low-pass applied before registration (removes the "
                             "column lattice, ≥ 2 Å spacing, so the envelope of the particles is registered)")
    upsample: int = param(20, unit="1/px", doc="sub-pixel factor of the phase correlation (steps of 1/upsample px)")
    max_move_A: float = param(15.0, unit="Å", doc="largest move of a particle's drift-corrected centroid between two "
                              "frames in which it is seen (per frame of gap)")
    max_rotation_deg: float = param(10.0, unit="deg", doc="largest change of a particle's in-plane rotation between "
                                    "two frames in which it is seen")
    max_gap_frames: int = param(2, doc="a particle missing from up to this many frames in a row keeps its id")

    def check(self) -> None:
        require(self.lowpass_A >= 0, f"series.lowpass_A must be >= 0 Å, got {self.lowpass_A}")
        require(self.upsample >= 1, f"series.upsample must be >= 1, got {self.upsample}")
        require(self.max_move_A > 0, f"series.max_move_A must be > 0 Å, got {self.max_move_A}")
        require(0 < self.max_rotation_deg <= 45, f"series.max_rotation_deg must be in (0, 45] deg, got {self.max_rotation_deg}")
        require(self.max_gap_frames >= 0, f"series.max_gap_frames must be >= 0, got {self.max_gap_frames}")


@dataclass(frozen=True)
class FrameTables:
    """What the series keeps of one frame's analysis: its tables (``columns``, ``octahedra``,
    ``particles``; possibly empty) and whether they came from the cache."""

    frame: int
    tables: Mapping[str, pd.DataFrame]
    cached: bool = False
    error: str | None = None


@dataclass(frozen=True)
class SeriesResult:
    """The analysis of a time series.

    Parameters
    ----------
    frames : numpy.ndarray
        Frame indices in the stack, in the order analysed.
    time_s : numpy.ndarray
        Time of each frame [s] (NaN where unknown).
    dose_e_per_A2 : numpy.ndarray
        Cumulative dose at the end of each frame [e/Å²] (NaN where unknown).
    drift_px : numpy.ndarray
        (n, 2) drift (x, y) of each frame against the first [px]: a feature at (x, y) in the first
        frame is at (x, y) + drift in this one.
    pixel_size_A : float
        Pixel size [Å].
    columns, octahedra, particles : pandas.DataFrame
        The frames' tables concatenated, with ``frame`` and the tracked ``particle`` id
        (``frame_particle``: the frame's own number).
    series : pandas.DataFrame
        One row per frame and particle (:data:`SERIES_CSV_FIRST`).
    n_cached : int
        Frames read from the cache rather than analysed.
    failed : dict
        Frame -> reason for frames whose analysis was refused (they have no rows).
    """

    frames: np.ndarray
    time_s: np.ndarray
    dose_e_per_A2: np.ndarray
    drift_px: np.ndarray
    pixel_size_A: float
    columns: pd.DataFrame
    octahedra: pd.DataFrame
    particles: pd.DataFrame
    series: pd.DataFrame
    n_cached: int = 0
    failed: Mapping[int, str] = field(default_factory=dict)

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables by output name (``columns``, ``octahedra``, ``particles``, ``series``)."""
        return {"columns": self.columns, "octahedra": self.octahedra, "particles": self.particles, "series": self.series}

    def rotation_change_deg(self, particle: int) -> tuple[float, float]:
        """Total rotation of a tracked particle over the frames it is seen in, from a weighted
        straight-line fit of its rotation against frame index (slope × (last − first frame)), and
        its 1σ [deg]: from the per-frame errors, scaled up by the reduced χ² when the points scatter
        more than their errors say (NaN with fewer than 2 frames)."""
        rows = self.series[(self.series["particle"] == particle) & np.isfinite(self.series["rotation_deg"])]
        if len(rows) < 2:
            return float("nan"), float("nan")
        x = rows["frame"].to_numpy(float)
        y = rows["rotation_deg"].to_numpy(float)
        e = rows["rotation_err_deg"].to_numpy(float)
        known = bool(np.all(np.isfinite(e) & (e > 0)))
        w = 1.0 / e**2 if known else np.ones_like(x)
        S, Sx, Sxx, Sy, Sxy = w.sum(), (w * x).sum(), (w * x * x).sum(), (w * y).sum(), (w * x * y).sum()
        delta = S * Sxx - Sx**2
        if delta <= 0:
            return float("nan"), float("nan")
        slope = (S * Sxy - Sx * Sy) / delta
        var = S / delta
        n = len(x)
        if n > 2:
            chi2 = float(np.sum(w * (y - (Sy - slope * Sx) / S - slope * x) ** 2) / (n - 2))
            var *= max(chi2, 1.0) if known else chi2
        elif not known:
            var = float("nan")
        span = x.max() - x.min()
        return float(slope * span), float(np.sqrt(var) * span)


# ----------------------------------------------------------------------------------------------- drift


def register_frames(frames: Sequence[np.ndarray], pixel_size_A: float, *, lowpass_A: float = 2.0,
                    upsample: int = 20) -> np.ndarray:
    """Drift of every frame against the first [px], (n, 2) as (x, y).

    Each frame is registered on the one before (phase correlation of the frames low-passed with a
    Gaussian of σ ``lowpass_A``, :func:`skimage.registration.phase_cross_correlation` with
    ``upsample_factor``) and the steps summed, so slow changes of the particles (rotation,
    ripening) never face a distant reference. Without the low-pass a crystal's correlation has
    peaks at every lattice translation, and noise can pick the wrong one.
    """
    # lazy: scikit-image (a few ms to import), not loaded at start-up
    from skimage.registration import phase_cross_correlation

    sigma_px = lowpass_A / pixel_size_A

    def prep(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        a = gaussian_filter(a, sigma_px) if sigma_px > 0 else a
        return a - np.median(a)  # the background at zero: the frame edges add no step to correlate

    drift = np.zeros((len(frames), 2))
    prev = prep(frames[0]) if len(frames) else None
    for k in range(1, len(frames)):
        cur = prep(frames[k])
        with np.errstate(all="ignore"):
            shift, _err, _phase = phase_cross_correlation(cur, prev, upsample_factor=upsample, normalization=None)
        # the shift that registers prev (moving) onto cur (reference) is the content's move (y, x)
        drift[k] = drift[k - 1] + np.array([shift[1], shift[0]])
        prev = cur
    return drift


# --------------------------------------------------------------------------------------------- lattice


def fit_particle_lattice(octahedra: pd.DataFrame) -> dict[str, float]:
    """The Pb lattice of one particle from its octahedra (``x_A``, ``y_A``, ``i``, ``j``).

    Least squares of ``(x, y) = origin + i a1 + j a2`` (after one round rejecting columns more than
    4σ off the lattice); the position error is the residual scatter (per coordinate, 2N − 6
    degrees of freedom), propagated to |a1|, |a2| and to the angles of a1
    and a2 − 90°, whose weighted mean is the rotation, folded into (−45, 45] [deg].

    Returns
    -------
    dict
        ``a1_A``, ``a1_err_A``, ``a2_A``, ``a2_err_A``, ``rotation_deg``, ``rotation_err_deg``,
        ``n_pb``; NaN with fewer than 4 Pb columns or a degenerate lattice.
    """
    out = dict.fromkeys(("a1_A", "a1_err_A", "a2_A", "a2_err_A", "rotation_deg", "rotation_err_deg"), float("nan"))
    need = {"x_A", "y_A", "i", "j"}
    if octahedra is None or not need <= set(octahedra):
        return {**out, "n_pb": 0}
    t = octahedra[["x_A", "y_A", "i", "j"]].to_numpy(float)
    t = t[np.isfinite(t).all(axis=1)]
    n = len(t)
    out["n_pb"] = n
    if n < 4:
        return out
    A = np.column_stack([np.ones(n), t[:, 2], t[:, 3]])
    if np.linalg.matrix_rank(A) < 3:
        return out
    coef, *_ = np.linalg.lstsq(A, t[:, :2], rcond=None)
    resid = t[:, :2] - A @ coef
    dof = 2 * n - 6
    s2 = float((resid**2).sum() / dof) if dof > 0 else float("nan")
    # one round of rejection: a Pb column given the wrong lattice index (or a misfit) is far off the lattice
    far = np.hypot(*resid.T) > 4.0 * np.sqrt(2.0 * s2) if np.isfinite(s2) else np.zeros(n, bool)
    if far.any() and n - far.sum() >= 4 and np.linalg.matrix_rank(A[~far]) == 3:
        A, t = A[~far], t[~far]
        n = len(t)
        coef, *_ = np.linalg.lstsq(A, t[:, :2], rcond=None)
        resid = t[:, :2] - A @ coef
        dof = 2 * n - 6
        s2 = float((resid**2).sum() / dof) if dof > 0 else float("nan")
    inv = np.linalg.inv(A.T @ A)
    a1, a2 = coef[1], coef[2]
    n1, n2 = float(np.hypot(*a1)), float(np.hypot(*a2))
    e1, e2 = float(np.sqrt(s2 * inv[1, 1])), float(np.sqrt(s2 * inv[2, 2]))
    ang1 = np.degrees(np.arctan2(a1[1], a1[0]))
    ang2 = np.degrees(np.arctan2(a2[1], a2[0]))
    # a square lattice: both axes give the rotation modulo 90°; average on the 4θ circle
    w = np.array([1 / max((e1 / n1) ** 2, 1e-30), 1 / max((e2 / n2) ** 2, 1e-30)])
    z = np.sum(w * np.exp(4j * np.radians([ang1, ang2]))) / w.sum()
    rot = float(np.degrees(np.angle(z)) / 4.0)
    rot_err = float(np.degrees(1.0 / np.sqrt(w.sum())))
    out.update(a1_A=n1, a1_err_A=e1, a2_A=n2, a2_err_A=e2, rotation_deg=rot, rotation_err_deg=rot_err)
    return out


def _particle_tilts(octahedra: pd.DataFrame) -> dict[str, float]:
    """Mean θ1, θ2, θ3 of one particle's measured octahedra and their standard errors (sd/√n, or the
    one octahedron's propagated error) [deg]."""
    out: dict[str, float] = {}
    for k in (1, 2, 3):
        name = f"theta{k}_deg"
        v = octahedra[name].to_numpy(float) if name in octahedra else np.array([])
        ok = np.isfinite(v)
        if ok.sum() >= 2:
            out[name], out[f"theta{k}_err_deg"] = float(v[ok].mean()), float(v[ok].std(ddof=1) / np.sqrt(ok.sum()))
        elif ok.sum() == 1:
            err_col = f"theta{k}_total_err_deg"
            err = octahedra[err_col].to_numpy(float)[ok][0] if err_col in octahedra else float("nan")
            out[name], out[f"theta{k}_err_deg"] = float(v[ok][0]), float(err)
        else:
            out[name], out[f"theta{k}_err_deg"] = float("nan"), float("nan")
    return out


# -------------------------------------------------------------------------------------------- tracking


def _angle_diff_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a − b| modulo the 90° symmetry of a square lattice [deg]."""
    d = np.mod(np.asarray(a) - np.asarray(b) + 45.0, 90.0) - 45.0
    return np.abs(d)


def track_particles(detections: pd.DataFrame, options: SeriesOptions | None = None) -> np.ndarray:
    """Track ids for particle detections over frames.

    Parameters
    ----------
    detections : pandas.DataFrame
        One row per particle and frame: ``frame``, ``x_A``, ``y_A`` (drift-corrected centroid [Å]) and
        ``rotation_deg`` (NaN where unknown: matched on position alone).
    options : SeriesOptions, optional
        ``max_move_A`` (per frame of gap), ``max_rotation_deg``, ``max_gap_frames``.

    Returns
    -------
    numpy.ndarray
        Track id (1, 2, …, in order of first appearance) of each row. Detections are matched
        frame by frame to the live tracks by least total distance
        (:func:`scipy.optimize.linear_sum_assignment`) within the gates; the unmatched start new
        tracks; a track unseen for more than ``max_gap_frames`` frames is closed.
    """
    # lazy: scipy.optimize (~25 ms to import), only here
    from scipy.optimize import linear_sum_assignment

    o = options or SeriesOptions()
    ids = np.zeros(len(detections), dtype=int)
    tracks: list[dict[str, float]] = []  # live tracks: id, x, y, rot, frame
    next_id = 1
    frames = detections["frame"].to_numpy()
    xy = detections[["x_A", "y_A"]].to_numpy(float)
    rot = detections["rotation_deg"].to_numpy(float)
    for f in np.unique(frames):
        rows = np.flatnonzero(frames == f)
        tracks = [t for t in tracks if f - t["frame"] <= o.max_gap_frames + 1]
        assigned: dict[int, int] = {}
        if tracks and len(rows):
            txy = np.array([[t["x"], t["y"]] for t in tracks])
            trot = np.array([t["rot"] for t in tracks])
            gap = np.array([f - t["frame"] for t in tracks], float)
            dist = np.linalg.norm(xy[rows][:, None, :] - txy[None, :, :], axis=2)
            with np.errstate(invalid="ignore"):
                drot = _angle_diff_deg(rot[rows][:, None], trot[None, :])
            ok = (dist <= o.max_move_A * gap[None, :]) & ~(drot > o.max_rotation_deg)  # NaN rotation: position only
            cost = np.where(ok, dist, 1e12)
            r, c = linear_sum_assignment(cost)
            for ri, ci in zip(r, c):
                if ok[ri, ci]:
                    assigned[int(rows[ri])] = int(ci)
        for row in (int(r) for r in rows):
            if row in assigned:
                t = tracks[assigned[row]]
            else:
                t = {"id": next_id}
                next_id += 1
                tracks.append(t)
            t.update(x=xy[row, 0], y=xy[row, 1], frame=f)
            if np.isfinite(rot[row]) or "rot" not in t:
                t["rot"] = rot[row]
            ids[row] = int(t["id"])
    return ids


# ----------------------------------------------------------------------------------------------- cache


def frame_key(data: np.ndarray, frame: int, config: Mapping[str, Any]) -> str:
    """Cache key (16 hex) of one frame's analysis: its pixels, its index and the configuration."""
    h = hashlib.sha256()
    arr = np.ascontiguousarray(data)
    h.update(str((arr.shape, str(arr.dtype))).encode())
    h.update(arr.tobytes())
    h.update(json.dumps({"frame": int(frame), "config": config, "v": SERIES_CACHE_VERSION}, sort_keys=True,
                        default=str).encode())
    return h.hexdigest()[:16]


def _load_cached(folder: Path) -> dict[str, pd.DataFrame] | None:
    if not (folder / "done.json").exists():
        return None
    out = {}
    for name in FRAME_TABLES:
        p = folder / f"{name}.csv"
        out[name] = pd.read_csv(p) if p.exists() and p.stat().st_size > 1 else pd.DataFrame()
    return out


def _store(folder: Path, tables: Mapping[str, pd.DataFrame], meta: Mapping[str, Any]) -> None:
    """Write one frame's tables to a temporary folder and rename it into place (no half entries)."""

    def write(tmp: Path) -> None:
        for name in FRAME_TABLES:
            df = tables.get(name)
            (df if df is not None else pd.DataFrame()).to_csv(tmp / f"{name}.csv", index=False)
        (tmp / "done.json").write_text(json.dumps(dict(meta), default=str))

    write_folder(folder, write, "done.json")  # another process may store the same frame first


def _frame_tables(result: "Result") -> dict[str, pd.DataFrame]:
    """The tables of one frame's analysis kept by the series."""
    empty = pd.DataFrame()
    return {"columns": result.columns if result.columns is not None else empty,
            "octahedra": result.tables.get("octahedra", empty),
            "particles": result.tables.get("particles", empty)}


# ------------------------------------------------------------------------------------------- the series


def analyse_series(
    frames: Frames,
    *,
    analyse: Callable[[Image], "Result"] | None = None,
    frame_indices: Sequence[int] | None = None,
    time_s: Sequence[float] | np.ndarray | None = None,
    dose_per_frame_e_per_A2: float | None = None,
    options: SeriesOptions | Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    cache_config: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SeriesResult:
    """Analyse every frame of a time series, register the drift and track the particles.

    Parameters
    ----------
    frames : Frames
        The frames, in time order, all with the same shape and pixel size [Å]; read one at a time
        (a lazy sequence works: only ``len`` and indexing are used).
    analyse : callable, optional
        ``analyse(image) -> Result`` for one frame; default :func:`octascope.analysis.pipeline.analyze`
        with its defaults. A frame it refuses (:class:`InputError`, e.g. no crystal) has no rows
        and is listed in ``failed``.
    frame_indices : sequence of int, optional
        Index of each frame in the stack (default 0, 1, …).
    time_s : sequence of float, optional
        Time of each frame [s] (from the file's time axis, or index × frame time); NaN if unknown.
    dose_per_frame_e_per_A2 : float, optional
        Dose of one frame [e/Å²]: the series' dose column is the cumulative dose at each frame's end.
    options : SeriesOptions or Mapping, optional
        Registration and tracking options (:class:`SeriesOptions`).
    cache_dir : path, optional
        Folder of the per-frame cache; ``None``: no cache. A frame whose key (:func:`frame_key` of
        its pixels, its index and ``cache_config``) is there is read back, not analysed.
    cache_config : Mapping, optional
        Everything the per-frame analysis depends on (the run configuration); part of the key.
    progress : callable, optional
        Called with one line per frame.

    Returns
    -------
    SeriesResult
    """

    opts = options if isinstance(options, SeriesOptions) else options_from(SeriesOptions, dict(options or {}), "series")
    n = len(frames)
    if n == 0:
        raise InputError("the series holds no frames; check source.frames")
    idx = np.arange(n) if frame_indices is None else np.asarray(list(frame_indices), dtype=int)
    if analyse is None:
        def analyse(image: Image) -> "Result":
            return analyze(image, progress=None)

    say = progress or (lambda _m: None)
    cache_root = Path(cache_dir) if cache_dir is not None else None
    per_frame: list[FrameTables] = []
    first = frames[0]
    pixel_size = float(first.pixel_size_A)
    lowpassed: list[np.ndarray] = []
    for k in range(n):
        img = frames[k] if k else first
        if img.shape != first.shape or abs(img.pixel_size_A - pixel_size) > 1e-9 * pixel_size:
            raise InputError(f"frame {idx[k]} is {img.shape} at {img.pixel_size_A:g} Å/px, the first "
                             f"{first.shape} at {pixel_size:g} Å/px; a series needs frames of one shape and pixel size")
        lowpassed.append(img.data)
        folder = cache_root / frame_key(img.data, int(idx[k]), cache_config or {}) if cache_root else None
        cached = _load_cached(folder) if folder is not None else None
        if cached is not None:
            per_frame.append(FrameTables(int(idx[k]), cached, cached=True))
            say(f"frame {idx[k]} ({k + 1}/{n}): from the cache")
            continue
        try:
            result = analyse(img)
            tables = _frame_tables(result)
            error = None
        except InputError as exc:
            tables, error = {name: pd.DataFrame() for name in FRAME_TABLES}, str(exc)
        if folder is not None and error is None:
            _store(folder, tables, {"frame": int(idx[k])})
        per_frame.append(FrameTables(int(idx[k]), tables, error=error))
        npart = len(tables["particles"])
        say(f"frame {idx[k]} ({k + 1}/{n}): {npart} particle(s)" + (f"; refused: {error}" if error else ""))
    drift_px = register_frames(lowpassed, pixel_size, lowpass_A=opts.lowpass_A, upsample=opts.upsample)
    del lowpassed
    times = np.full(n, np.nan) if time_s is None else np.asarray(list(time_s), dtype=float)
    dose = (np.full(n, np.nan) if dose_per_frame_e_per_A2 is None
            else (np.arange(n) + 1.0) * float(dose_per_frame_e_per_A2))
    return _assemble(per_frame, idx, times, dose, drift_px, pixel_size, opts)


def _assemble(per_frame: list[FrameTables], idx: np.ndarray, times: np.ndarray, dose: np.ndarray,
              drift_px: np.ndarray, pixel_size: float, opts: SeriesOptions) -> SeriesResult:
    """Per-particle series rows, tracking, and the concatenated tables."""
    rows: list[dict[str, Any]] = []
    for k, ft in enumerate(per_frame):
        parts = ft.tables["particles"]
        octs = ft.tables["octahedra"]
        dx, dy = drift_px[k] * pixel_size
        for p in parts.itertuples(index=False) if len(parts) else ():
            pid = int(getattr(p, "particle"))
            mine = octs[octs["particle"] == pid] if len(octs) and "particle" in octs else pd.DataFrame()
            lat = fit_particle_lattice(mine)
            rows.append({
                "frame": ft.frame, "time_s": times[k], "dose_e_per_A2": dose[k], "frame_particle": pid,
                "verdict": getattr(p, "verdict", ""), "centroid_x_A": float(getattr(p, "centroid_x_A")),
                "centroid_y_A": float(getattr(p, "centroid_y_A")), "drift_x_A": dx, "drift_y_A": dy,
                "n_octahedra_measured": int(getattr(p, "n_octahedra_measured", 0)),
                **_particle_tilts(mine), **{k2: v for k2, v in lat.items() if k2 != "n_pb"},
                "segmentation_rotation_deg": float(getattr(p, "rotation_deg", np.nan)),
                **{c: getattr(p, c) for c in parts.columns if c.startswith("theta") and ("_core" in c or "_shell" in c)},
            })
    series = pd.DataFrame(rows)
    if len(series):
        rot = series["rotation_deg"].to_numpy(float)
        rot = np.where(np.isfinite(rot), rot, series["segmentation_rotation_deg"].to_numpy(float))
        det = pd.DataFrame({"frame": series["frame"],
                            "x_A": series["centroid_x_A"] - series["drift_x_A"],
                            "y_A": series["centroid_y_A"] - series["drift_y_A"], "rotation_deg": rot})
        series.insert(3, "particle", track_particles(det, opts))
        # a track's rotation continuous through the ±45° fold of a square lattice
        for _pid, grp in series.groupby("particle"):
            r = grp["rotation_deg"].to_numpy(float).copy()
            ok = np.isfinite(r)
            if ok.sum() > 1:
                r[ok] = np.degrees(np.unwrap(np.radians(r[ok]) * 4.0) / 4.0)
                series.loc[grp.index, "rotation_deg"] = r
        first = [c for c in SERIES_CSV_FIRST if c in series]
        series = series[first + [c for c in series.columns if c not in first]]
    else:
        series = pd.DataFrame(columns=SERIES_CSV_FIRST)
    track = {(int(r.frame), int(r.frame_particle)): int(r.particle) for r in series.itertuples()} if len(series) else {}

    def concat(name: str) -> pd.DataFrame:
        parts = []
        for ft in per_frame:
            df = ft.tables[name]
            if not len(df):
                continue
            df = df.copy()
            if "particle" in df:
                fp = df["particle"].to_numpy()
                df["frame_particle"] = fp
                df["particle"] = [track.get((ft.frame, int(v)), -1) if np.isfinite(v) else -1
                                  for v in pd.to_numeric(df["particle"], errors="coerce").to_numpy(float)]
            df.insert(0, "frame", ft.frame)
            parts.append(df)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["frame"])

    failed = {ft.frame: ft.error for ft in per_frame if ft.error}
    return SeriesResult(frames=np.asarray(idx), time_s=times, dose_e_per_A2=dose, drift_px=drift_px,
                        pixel_size_A=pixel_size, columns=concat("columns"), octahedra=concat("octahedra"),
                        particles=concat("particles"), series=series,
                        n_cached=sum(ft.cached for ft in per_frame), failed=failed)


def default_progress(message: str) -> None:
    """Progress lines on standard error."""
    print(message, file=sys.stderr, flush=True)
