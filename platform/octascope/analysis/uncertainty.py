"""Column position uncertainty — statistical and systematic — and its linear propagation, with
correlations, to the octahedral geometry and to means and differences over octahedra.

Error model
-----------
The position errors of all columns form one Gaussian vector (x₁, y₁, x₂, y₂, …) with covariance
``Σ = Σ_stat + Σ_sys`` [Å²] (:class:`ColumnCovariance`):

``Σ_stat`` — the noise of this image:

1. the locator's (or the refinement's) fit covariance: each column's ``x_err_A``, ``y_err_A`` and
   the correlation ``xy_corr`` of its x and y errors, and the covariance between neighbouring
   columns (:class:`PositionCovariance`, keyed by ``column_id``), all computed with the noise
   power spectrum fitted to the image (:mod:`octascope.analysis.noise_covariance`);
2. the denoiser's Monte Carlo variance ``v`` (``Image.variance``, per pixel, of the *denoised*
   image), when present. The residual of a fit to a denoised image does not see this spread
   (the image looks clean), so it is added. A Gaussian peak of height ``A`` fitted to an image
   with white noise of variance ``v`` per pixel has the Cramér-Rao position variance
   ``2 v / (π A²)`` [px²] along each axis, independent of the peak width (Fisher information
   ``∫ (∂f/∂x0)² / v = π A² / (2 v)``). ``v`` is averaged over the 3 × 3 pixels at the column
   centre; its spatial correlation is ignored (a lower bound when neighbouring pixels co-vary).

``Σ_sys`` — what no noise model contains: the image peak of a column whose atoms are thermally
smeared or not aligned is not their mean position. Per column ``x_sys_A``, ``y_sys_A``,
``xy_sys_corr`` (:func:`systematic_covariance`: by species, depth and, for X, along and across its
Pb–X bond; the study that sets it is in ``docs/uncertainty.md``), independent between columns for
one octahedron, shared by the octahedra of a mean (:meth:`GeometryCovariance.error`).

A missing source counts as zero; a column with neither statistical source gives NaN.

Propagation
-----------
Every geometric quantity ``q`` of an octahedron (φ, θ, σ, L) is a function of its Pb and X
positions; to first order ``δq = G δr`` with a sparse gradient row per octahedron
(:func:`octascope.analysis.octahedral_geometry.octahedral_geometry`). A mean over octahedra, or a
difference of two means, is ``wᵀq``, so its variance is ``wᵀ G Σ Gᵀ w``: X columns shared by two
octahedra and correlated neighbours are counted once, with their covariance
(:class:`GeometryCovariance`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.spatial import cKDTree

from octascope.core.model import Image, Octahedra

#: which part of the covariance: the noise's, the model error's, or both
Part = Literal["stat", "sys", "total"]


#: the columns-table attribute through which a locator hands its pair covariances to the pipeline
PAIRS_ATTR = "position_covariance"


@dataclass(frozen=True, eq=False)
class PositionCovariance:
    """Covariances between the position errors of pairs of columns [Å²], keyed by ``column_id``.

    A column's own covariance is in the column table (``x_err_A``, ``y_err_A``, ``xy_corr``); this
    holds the off-diagonal blocks: ``cov[p] = Cov((x_a, y_a), (x_b, y_b))`` of columns
    ``a[p]`` and ``b[p]`` (their ``column_id``), a pair listed once. Pairs not listed are
    uncorrelated.
    """

    a: np.ndarray
    b: np.ndarray
    cov: np.ndarray

    def __post_init__(self) -> None:
        a, b = np.asarray(self.a, np.int64).ravel(), np.asarray(self.b, np.int64).ravel()
        cov = np.asarray(self.cov, float).reshape(-1, 2, 2)
        if not (len(a) == len(b) == len(cov)):
            raise ValueError(f"PositionCovariance: {len(a)} a, {len(b)} b and {len(cov)} covariances; give one per pair")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "cov", cov)

    def __len__(self) -> int:
        return len(self.a)

    @classmethod
    def empty(cls) -> "PositionCovariance":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2, 2)))

    def subset(self, ids: np.ndarray) -> "PositionCovariance":
        """The pairs whose both columns are among ``ids``."""
        keep = np.isin(self.a, ids) & np.isin(self.b, ids)
        return PositionCovariance(self.a[keep], self.b[keep], self.cov[keep])

    def merged(self, other: "PositionCovariance") -> "PositionCovariance":
        """These pairs, with those of ``other`` replacing any listed in both (either order)."""
        key_self = np.minimum(self.a, self.b) * (1 << 32) + np.maximum(self.a, self.b)
        key_other = np.minimum(other.a, other.b) * (1 << 32) + np.maximum(other.a, other.b)
        keep = ~np.isin(key_self, key_other)
        return PositionCovariance(np.r_[self.a[keep], other.a], np.r_[self.b[keep], other.b],
                                  np.concatenate([self.cov[keep], other.cov]))

    def table(self) -> pd.DataFrame:
        """The pairs as a table: ``column_a``, ``column_b``, ``cov_xx_A2``, ``cov_xy_A2``, ``cov_yx_A2``, ``cov_yy_A2``."""
        return pd.DataFrame({"column_a": self.a, "column_b": self.b, "cov_xx_A2": self.cov[:, 0, 0],
                             "cov_xy_A2": self.cov[:, 0, 1], "cov_yx_A2": self.cov[:, 1, 0], "cov_yy_A2": self.cov[:, 1, 1]})


def pop_position_covariance(columns: pd.DataFrame) -> PositionCovariance | None:
    """The pair covariances a locator attached to its column table (``columns.attrs``), removed from
    it (pandas deep-copies ``attrs`` on every operation); ``None`` when there are none."""
    pc = columns.attrs.pop(PAIRS_ATTR, None)
    return pc if isinstance(pc, PositionCovariance) else None


def column_position_variance(columns: pd.DataFrame, denoised: Image | None = None) -> np.ndarray:
    """Statistical variance of every column position [Å²] (the diagonal of ``Σ_stat``).

    Parameters
    ----------
    columns : pandas.DataFrame
        Column table (``x_err_A``, ``y_err_A``, and ``x_px``, ``y_px``, ``amplitude`` for the
        denoiser term).
    denoised : Image, optional
        The image the columns were fitted on; its ``variance`` map (if any) adds the Monte Carlo term.

    Returns
    -------
    numpy.ndarray
        (N, 2) array of ``(var_x, var_y)`` [Å²]; NaN where no uncertainty information exists.
    """
    n = len(columns)
    fit = np.full((n, 2), np.nan)
    for k, name in enumerate(("x_err_A", "y_err_A")):
        if name in columns:
            fit[:, k] = columns[name].to_numpy(float) ** 2
    mc = denoiser_position_variance(columns, denoised) if denoised is not None else np.full(n, np.nan)
    have_any = np.isfinite(fit) | np.isfinite(mc)[:, None]
    total = np.nan_to_num(fit) + np.nan_to_num(mc)[:, None]
    return np.where(have_any, total, np.nan)


def denoiser_position_variance(columns: pd.DataFrame, denoised: Image) -> np.ndarray:
    """Position variance from the denoiser's Monte Carlo variance map [Å²] (same along x and y).

    Uses ``2 v / (π A²)`` [px²] with ``v`` the mean variance of the 3 × 3 pixels at the column
    centre and ``A`` the fitted amplitude (see the module docstring). NaN when the image has no
    variance map or the column lacks an amplitude.
    """
    n = len(columns)
    if denoised.variance is None or n == 0 or "amplitude" not in columns:
        return np.full(n, np.nan)
    var = np.asarray(denoised.variance, dtype=float)
    h, w = var.shape
    cx = np.rint(columns["x_px"].to_numpy(float))
    cy = np.rint(columns["y_px"].to_numpy(float))
    ok = np.isfinite(cx) & np.isfinite(cy)
    cx = np.where(ok, cx, 0).astype(int)
    cy = np.where(ok, cy, 0).astype(int)
    offs = np.array([-1, 0, 1])
    rr = np.clip(cy[:, None, None] + offs[None, :, None], 0, h - 1)
    cc = np.clip(cx[:, None, None] + offs[None, None, :], 0, w - 1)
    v = var[rr, cc].mean(axis=(1, 2))
    amp = columns["amplitude"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_px2 = 2.0 * v / (np.pi * amp**2)
    var_px2 = np.where(ok & (amp > 0), var_px2, np.nan)
    return var_px2 * denoised.pixel_size_A**2


def angle_gradient(b: np.ndarray) -> np.ndarray:
    """Gradient of the polar angle of vectors ``b`` with respect to ``b`` [rad/Å].

    ``d atan2(b_y, b_x) / d b = (-b_y, b_x) / |b|²``; the same holds for the angle measured from
    any fixed reference direction.
    """
    r2 = (b**2).sum(-1, keepdims=True)
    return np.stack([-b[..., 1], b[..., 0]], axis=-1) / r2


def length_gradient(b: np.ndarray) -> np.ndarray:
    """Gradient of ``|b|`` with respect to ``b`` (unit vector along ``b``) [1]."""
    return b / np.linalg.norm(b, axis=-1, keepdims=True)


def _blocks_to_sparse(n: int, rows: np.ndarray, cols: np.ndarray, blocks: np.ndarray) -> sparse.csr_matrix:
    """The (2n, 2n) matrix with the 2 × 2 ``blocks`` at block positions (rows, cols)."""
    r = (2 * np.asarray(rows, np.int64))[:, None, None] + np.arange(2)[None, :, None]
    c = (2 * np.asarray(cols, np.int64))[:, None, None] + np.arange(2)[None, None, :]
    r, c = np.broadcast_arrays(r, c)
    return sparse.csr_matrix((np.asarray(blocks, float).ravel(), (r.ravel(), c.ravel())), shape=(2 * n, 2 * n))


@dataclass(frozen=True, eq=False)
class ColumnCovariance:
    """Covariance of the position errors of the rows of one column table [Å²].

    ``stat`` and ``sys`` are sparse (2n, 2n) matrices in the order x₀, y₀, x₁, y₁, … of the
    table's rows (``labels``, the table's row labels); ``missing`` (2n,) marks coordinates without
    a statistical uncertainty (their rows and columns are 0 in ``stat``): anything that depends on
    them has an unknown (NaN) uncertainty.
    """

    labels: np.ndarray
    stat: sparse.csr_matrix
    sys: sparse.csr_matrix
    missing: np.ndarray

    @classmethod
    def build(cls, labels: np.ndarray, stat: sparse.spmatrix, sys: sparse.spmatrix) -> "ColumnCovariance":
        """From matrices that may hold NaN for a missing uncertainty (set to 0 and marked ``missing``)."""
        stat = sparse.csr_matrix(stat)
        missing = ~np.isfinite(stat.diagonal())
        bad = ~np.isfinite(stat.data)
        if bad.any() or missing.any():
            stat = stat.tocoo()
            keep = np.isfinite(stat.data) & ~missing[stat.row] & ~missing[stat.col]
            stat = sparse.csr_matrix((stat.data[keep], (stat.row[keep], stat.col[keep])), shape=stat.shape)
        sys = sparse.csr_matrix(sys)
        sys.data = np.nan_to_num(sys.data)
        return cls(labels=np.asarray(labels), stat=stat, sys=sys, missing=missing)

    def part(self, which: Part) -> sparse.csr_matrix:
        """``stat``, ``sys`` or their sum ``total``."""
        return self.stat if which == "stat" else self.sys if which == "sys" else (self.stat + self.sys).tocsr()

    def variance(self, which: Part = "stat") -> np.ndarray:
        """(n, 2) variances of x and y [Å²] (NaN where the statistical one is missing)."""
        v = self.part(which).diagonal()
        return np.where(self.missing, np.nan, v).reshape(-1, 2)


def column_covariance(columns: pd.DataFrame, denoised: Image | None = None,
                      pairs: PositionCovariance | None = None) -> ColumnCovariance:
    """The covariance of a column table's positions (module docstring).

    Parameters
    ----------
    columns : pandas.DataFrame
        ``x_err_A``, ``y_err_A`` [Å] and optionally ``xy_corr`` [1], ``x_sys_A``, ``y_sys_A`` [Å],
        ``column_id`` (what ``pairs`` names) and the fields of the denoiser term.
    denoised : Image, optional
        The image the columns were fitted on (its Monte Carlo ``variance`` adds to ``stat``).
    pairs : PositionCovariance, optional
        Covariances between neighbouring columns; pairs with a column not in the table are ignored.
    """
    n = len(columns)
    var = column_position_variance(columns, denoised)
    own = np.zeros((n, 2, 2))
    own[:, 0, 0], own[:, 1, 1] = var[:, 0], var[:, 1]
    if "xy_corr" in columns and "x_err_A" in columns and "y_err_A" in columns:
        rho = np.nan_to_num(columns["xy_corr"].to_numpy(float))
        cxy = rho * np.nan_to_num(columns["x_err_A"].to_numpy(float)) * np.nan_to_num(columns["y_err_A"].to_numpy(float))
        own[:, 0, 1] = own[:, 1, 0] = cxy
    rows, cols, blocks = [np.arange(n)], [np.arange(n)], [own]
    if pairs is not None and len(pairs) and "column_id" in columns:
        ids = columns["column_id"].to_numpy()
        ids = np.where(pd.isna(ids), -1, ids).astype(np.int64)
        pos = pd.Series(np.arange(n), index=ids)
        pos = pos[(pos.index >= 0) & ~pos.index.duplicated()]
        ra, rb = pos.reindex(pairs.a).to_numpy(), pos.reindex(pairs.b).to_numpy()
        ok = np.isfinite(ra) & np.isfinite(rb)
        ra, rb, cv = ra[ok].astype(np.int64), rb[ok].astype(np.int64), pairs.cov[ok]
        rows += [ra, rb]
        cols += [rb, ra]
        blocks += [cv, np.transpose(cv, (0, 2, 1))]
    stat = _blocks_to_sparse(n, np.concatenate(rows), np.concatenate(cols), np.concatenate(blocks))
    sys_own = np.zeros((n, 2, 2))
    for k, name in enumerate(("x_sys_A", "y_sys_A")):
        if name in columns:
            sys_own[:, k, k] = np.nan_to_num(columns[name].to_numpy(float)) ** 2
    if "xy_sys_corr" in columns:
        sys_own[:, 0, 1] = sys_own[:, 1, 0] = np.nan_to_num(columns["xy_sys_corr"].to_numpy(float)) * np.sqrt(
            sys_own[:, 0, 0] * sys_own[:, 1, 1])
    sys_m = _blocks_to_sparse(n, np.arange(n), np.arange(n), sys_own)
    return ColumnCovariance.build(columns.index.to_numpy(), stat, sys_m)


def diagonal_covariance(labels: np.ndarray, variance: np.ndarray) -> ColumnCovariance:
    """A :class:`ColumnCovariance` of independent columns with (n, 2) variances [Å²] (NaN: missing)."""
    var = np.asarray(variance, float).reshape(-1, 2)
    n = len(var)
    own = np.zeros((n, 2, 2))
    own[:, 0, 0], own[:, 1, 1] = var[:, 0], var[:, 1]
    idx = np.arange(n)
    return ColumnCovariance.build(labels, _blocks_to_sparse(n, idx, idx, own), sparse.csr_matrix((2 * n, 2 * n)))


@dataclass(frozen=True, eq=False)
class GeometryCovariance:
    """The first-order propagation of column position errors to every octahedron's quantities.

    ``gradients[q]`` is a sparse (n_octahedra, 2m) matrix ``∂q/∂r`` for each quantity ``q`` (a
    column of the geometry table: ``theta3_deg`` [deg/Å], ``L1_A`` [1], …) over the positions of
    the ``m`` columns ``labels``; ``columns`` their :class:`ColumnCovariance`. Rows follow the
    geometry table. The variance of a linear combination ``wᵀq`` is ``wᵀ G Σ Gᵀ w``
    (:meth:`combination`), which keeps the correlation of octahedra through shared X columns and
    correlated neighbours. ``bias[q]`` (n_octahedra,) is a systematic term of each octahedron that
    is no column's: the upward bias of an absolute angle under noise (:func:`folded_bias`).
    """

    gradients: Mapping[str, sparse.csr_matrix]
    columns: ColumnCovariance
    n_octahedra: int = field(default=0)
    bias: Mapping[str, np.ndarray] = field(default_factory=dict)

    def combination(self, quantity: str, weights: np.ndarray, which: Part = "stat") -> np.ndarray:
        """Covariance matrix (k, k) of the k linear combinations ``weights @ q`` (weights (k, n) or
        (n,)) with the columns' covariance ``which`` taken as it is (the systematic part of
        columns independent); NaN rows and columns for a combination that depends on a column
        without uncertainty. :meth:`error` treats the systematic part of a combination as shared."""
        w = np.atleast_2d(np.asarray(weights, float))
        a = (sparse.csr_matrix(w) @ self.gradients[quantity]).toarray()  # (k, 2m)
        cov = a @ (self.columns.part(which) @ a.T)
        unknown = (np.abs(a) @ self.columns.missing.astype(float)) > 0
        cov[unknown, :] = np.nan
        cov[:, unknown] = np.nan
        return cov

    def error(self, quantity: str, weights: np.ndarray, which: Part = "total") -> float:
        """1σ of ``weights @ q`` (NaN when a column it depends on has no uncertainty).

        The statistical part is ``√(wᵀ G Σ_stat Gᵀ w)``. The systematic part of an angle
        (:data:`SHARED_SYSTEMATIC`) is a bias that the octahedra of a region share (the image peak
        of a thermally smeared X column sits further out along its tilt than its mean atom
        position, throughout a particle; ``docs/uncertainty.md``), so it does not average down:
        octahedra entering with a positive weight are taken as fully correlated, those with a
        negative weight too, the two sides of a difference as independent —
        ``√((Σ_{w>0} w σ_sys)² + (Σ_{w<0} |w| σ_sys)²)`` with each octahedron's own ``σ_sys``
        (:meth:`errors`). For other quantities (lengths) the columns' systematic errors are taken
        as independent: ``√(wᵀ G Σ_sys Gᵀ w)``.
        """
        w = np.asarray(weights, float).ravel()
        parts: dict[str, float] = {}
        if which in ("stat", "total"):
            v = float(self.combination(quantity, w, "stat")[0, 0])
            parts["stat"] = v if v >= 0 else float("nan")
        if which in ("sys", "total"):
            if not quantity.startswith(SHARED_SYSTEMATIC):
                parts["sys"] = float(self.combination(quantity, w, "sys")[0, 0])
                if quantity in self.bias:
                    parts["sys"] += float(np.abs(w) @ np.nan_to_num(self.bias[quantity])) ** 2
            else:
                on = w != 0
                s = self.errors(quantity, "sys")
                if np.isnan(s[on]).any():
                    parts["sys"] = float("nan")
                else:
                    s = np.where(on, s, 0.0)
                    parts["sys"] = float(np.sum(np.clip(w, 0, None) * s)) ** 2 + float(np.sum(np.clip(-w, 0, None) * s)) ** 2
        return float(np.sqrt(sum(parts.values())))

    def errors(self, quantity: str, which: Part = "total") -> np.ndarray:
        """1σ of ``quantity`` for every octahedron (n,)."""
        g = self.gradients[quantity]
        v = np.asarray((g @ self.columns.part(which)).multiply(g).sum(axis=1)).ravel()
        if which != "stat" and quantity in self.bias:
            v = v + np.nan_to_num(self.bias[quantity]) ** 2
        unknown = (abs(g) @ self.columns.missing.astype(float)) > 0 if which != "sys" else np.zeros(len(v), bool)
        return np.sqrt(np.where((v >= 0) & ~unknown, v, np.nan))

    def derived(self, name: str, coefficients: Mapping[str, float]) -> "GeometryCovariance":
        """This propagation with one more quantity ``name = Σ c_q q`` per octahedron (e.g. the mean
        X–Pb–X length ``{"L1_A": 0.5, "L2_A": 0.5}``)."""
        g = sum((c * self.gradients[q] for q, c in coefficients.items()), sparse.csr_matrix(next(iter(self.gradients.values())).shape))
        bias = dict(self.bias)
        if any(q in self.bias for q in coefficients):
            bias[name] = sum(abs(c) * np.nan_to_num(self.bias.get(q, 0.0)) for q, c in coefficients.items())
        return GeometryCovariance(gradients={**self.gradients, name: sparse.csr_matrix(g)}, columns=self.columns,
                                  n_octahedra=self.n_octahedra, bias=bias)

    @staticmethod
    def join(parts: Sequence["GeometryCovariance"]) -> "GeometryCovariance":
        """The propagation of several networks (e.g. the particles of a frame) whose tables are
        concatenated in this order; columns of different parts are independent."""
        names = set.intersection(*(set(p.gradients) for p in parts)) if parts else set()
        grads = {q: sparse.block_diag([p.gradients[q] for p in parts], format="csr") for q in sorted(names)}
        cols = ColumnCovariance(labels=np.concatenate([p.columns.labels for p in parts]),
                                stat=sparse.block_diag([p.columns.stat for p in parts], format="csr"),
                                sys=sparse.block_diag([p.columns.sys for p in parts], format="csr"),
                                missing=np.concatenate([p.columns.missing for p in parts]))
        bias = {q: np.concatenate([np.asarray(p.bias[q], float) if q in p.bias else np.zeros(p.n_octahedra) for p in parts])
                for q in set().union(*(set(p.bias) for p in parts))}
        return GeometryCovariance(gradients=grads, columns=cols, n_octahedra=sum(p.n_octahedra for p in parts), bias=bias)


def folded_bias(value: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Upward bias of an absolute value measured with Gaussian noise: ``E|μ + ε| − |μ|`` for
    ``ε ~ N(0, σ²)``, evaluated at the measured ``|value|`` (same units as ``value``; 0 where σ is 0).

    An angle φ is reported as ``|φ|`` (the tilt, whatever its sense), so noise of 1σ comparable to
    the tilt raises it on average: by 0.80 σ at φ = 0, 0.17 σ at φ = σ, 0.02 σ at φ = 2 σ and less
    than 0.001 σ beyond 3 σ.
    """
    # scipy.special, not scipy.stats (~0.4 s to import for this one function)
    from scipy.special import ndtr

    mu = np.abs(np.asarray(value, float))
    s = np.asarray(sigma, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(s > 0, mu / s, np.inf)
        folded = np.where(s > 0, s * np.sqrt(2 / np.pi) * np.exp(-0.5 * r**2) + mu * (1 - 2 * ndtr(-r)), mu)
    return np.where(np.isfinite(folded), folded - mu, np.nan)


def region_weights(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Weights of the mean of the finite ``values`` inside ``mask`` (zeros where none)."""
    use = np.asarray(mask, bool) & np.isfinite(np.asarray(values, float))
    w = np.zeros(len(use))
    if use.any():
        w[use] = 1.0 / use.sum()
    return w


#: depth classes of a column for the systematic term: in the particle's outermost unit cell (or of
#: unknown depth), or deeper
DEPTH_CLASSES = ("outer", "inner")


def column_depth_class(columns: pd.DataFrame, octahedra: Octahedra) -> np.ndarray:
    """``outer`` or ``inner`` for every row of ``columns``, from the network's shell index.

    A Pb column takes its octahedron's ``shell``, an X column the smallest shell of the octahedra
    it bonds to, a Cs column the smallest shell of the Pb columns within 0.8 a (its four nearest
    Pb at a/√2); ``inner`` when that is ≥ 1. Columns without an octahedron nearby, and octahedra
    of unknown depth (``shell`` < 0: a particle cut by the frame edge), count as ``outer``.
    """

    n = len(columns)
    depth = np.full(n, -1.0)
    tab = octahedra.table
    if n == 0 or len(tab) == 0 or "shell" not in tab:
        return np.full(n, "outer", dtype=object)
    shell = tab["shell"].to_numpy(float)
    shell = np.where(shell >= 0, shell, -1.0)
    index = columns.index
    best = np.full(n, np.inf)
    for col in ("pb", *octahedra.NEIGHBOURS):
        if col not in tab:
            continue
        labels = tab[col].to_numpy()
        rows = index.get_indexer(np.where(pd.isna(labels), -1, labels).astype(np.int64))
        ok = (rows >= 0) & (np.where(pd.isna(labels), -1, labels).astype(np.int64) >= 0)
        np.minimum.at(best, rows[ok], np.where(shell[ok] < 0, -1.0, shell[ok]))
    species = columns["species"].astype(str).to_numpy() if "species" in columns else np.full(n, "unknown")
    cs = np.flatnonzero((species == "Cs") & ~np.isfinite(best))
    if len(cs) and len(tab):
        basis = np.asarray(octahedra.lattice_vectors_A, float)
        a = float(np.nanmean(np.linalg.norm(basis, axis=1))) if np.isfinite(basis).all() else 6.3
        pb_xy = tab[["x_A", "y_A"]].to_numpy(float)
        near = cKDTree(pb_xy).query_ball_point(columns[["x_A", "y_A"]].to_numpy(float)[cs], 0.8 * a)
        for k, nb in zip(cs, near):
            if nb:
                best[k] = float(np.min(shell[nb])) if np.all(shell[nb] >= 0) else -1.0
    depth = np.where(np.isfinite(best), best, -1.0)
    return np.where(depth >= 1, "inner", "outer").astype(object)


def column_bond_axes(columns: pd.DataFrame, octahedra: Octahedra) -> np.ndarray:
    """Unit vector (n, 2) of the Pb–X bond of every X column of the network (the local ``a1`` of
    the octahedron it is the right or left neighbour of, ``a2`` for up or down); NaN for other
    columns."""
    n = len(columns)
    axes = np.full((n, 2), np.nan)
    tab = octahedra.table
    if n == 0 or len(tab) == 0:
        return axes
    for names, vec in ((("x_right", "x_left"), "a1"), (("x_up", "x_down"), "a2")):
        if f"{vec}_x_A" in tab:
            v = tab[[f"{vec}_x_A", f"{vec}_y_A"]].to_numpy(float)
        else:
            v = np.broadcast_to(np.asarray(octahedra.lattice_vectors_A, float)[0 if vec == "a1" else 1], (len(tab), 2))
        unit = v / np.linalg.norm(v, axis=1, keepdims=True)
        for name in names:
            if name not in tab:
                continue
            labels = tab[name].to_numpy()
            labels = np.where(pd.isna(labels), -1, labels).astype(np.int64)
            rows = columns.index.get_indexer(labels)
            ok = (labels >= 0) & (rows >= 0) & np.isfinite(unit).all(1)
            axes[rows[ok]] = unit[ok]
    return axes


#: systematic position error [Å] by species and depth class (``docs/uncertainty.md``): (along the
#: Pb–X bond, across it) for X columns, (per axis, per axis) for Pb and Cs. The RMS error of the
#: default analysis on noise-free weak-phase iDPC images of the 3.8 nm CsPbI3 and Br-segregated
#: CsPbI3−xBrx cubes after 300 K ReaxFF MD
#: (``python experiments/benchmarks/calibration.py --study-systematic``)
SYSTEMATIC_A: dict[tuple[str, str], tuple[float, float]] = {
    ("Pb", "inner"): (0.024, 0.024), ("Pb", "outer"): (0.033, 0.033),
    ("X", "inner"): (0.010, 0.023), ("X", "outer"): (0.046, 0.110),
    ("Cs", "inner"): (0.035, 0.035), ("Cs", "outer"): (0.111, 0.111),
}

#: quantities whose systematic error is a bias shared by the octahedra of a mean (angles: the image
#: of a thermally smeared X column overestimates its tilt throughout a particle); the others' (lengths)
#: is taken as independent between octahedra (``docs/uncertainty.md``)
SHARED_SYSTEMATIC = ("phi", "theta")


def systematic_covariance(columns: pd.DataFrame, octahedra: Octahedra | None = None,
                          table: Mapping[tuple[str, str], tuple[float, float]] | None = None) -> np.ndarray:
    """The systematic covariance (n, 2, 2) of every column's position [Å²] (module docstring).

    Looked up by species (``Pb``, ``X``, ``Cs``; anything else takes the largest value) and depth
    class (:func:`column_depth_class`; ``outer`` without a network) in ``table`` (default
    :data:`SYSTEMATIC_A`): an X column with a bond in the network gets its two values along and
    across the bond (:func:`column_bond_axes`), any other column the larger one on both axes.
    """
    table = SYSTEMATIC_A if table is None else table
    n = len(columns)
    out = np.zeros((n, 2, 2))
    if not table or n == 0:
        return out
    depth = column_depth_class(columns, octahedra) if octahedra is not None else np.full(n, "outer", dtype=object)
    axes = column_bond_axes(columns, octahedra) if octahedra is not None else np.full((n, 2), np.nan)
    species = columns["species"].astype(str).to_numpy() if "species" in columns else np.full(n, "unknown")
    worst = max(max(v) for v in table.values())
    for k, (sp, d) in enumerate(zip(species, depth)):
        par, perp = table.get((sp, d), (worst, worst))
        u = axes[k]
        if np.isfinite(u).all():
            v = np.array([-u[1], u[0]])
            out[k] = par**2 * np.outer(u, u) + perp**2 * np.outer(v, v)
        else:
            out[k] = max(par, perp) ** 2 * np.eye(2)
    return out


def with_systematic(columns: pd.DataFrame, octahedra: Octahedra | None = None,
                    table: Mapping[tuple[str, str], tuple[float, float]] | None = None) -> pd.DataFrame:
    """``columns`` with their systematic 1σ ``x_sys_A``, ``y_sys_A`` [Å] and correlation
    ``xy_sys_corr`` (:func:`systematic_covariance`) and the totals ``x_total_err_A``,
    ``y_total_err_A`` (statistical and systematic in quadrature) [Å]."""
    cov = systematic_covariance(columns, octahedra, table)
    sx, sy = np.sqrt(cov[:, 0, 0]), np.sqrt(cov[:, 1, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(sx * sy > 0, cov[:, 0, 1] / (sx * sy), 0.0)
    out = columns.assign(x_sys_A=sx, y_sys_A=sy, xy_sys_corr=corr)
    for axis, sys_a in (("x", sx), ("y", sy)):
        stat = out[f"{axis}_err_A"].to_numpy(float) if f"{axis}_err_A" in out else np.full(len(out), np.nan)
        out[f"{axis}_total_err_A"] = np.hypot(stat, sys_a)
    return out
