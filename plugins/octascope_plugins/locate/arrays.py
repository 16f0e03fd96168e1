"""The array library the batched fit runs on: NumPy on the CPU, torch on a CUDA GPU.

The fit (:mod:`.lm_solver`, :mod:`.gaussian_fit`, :mod:`.patches`, :mod:`.neighbours`) is written
once, with Python's operators (``+ - * / @``, indexing, in-place ``*=``) that mean the same on NumPy
arrays and torch tensors, and with the functions of this module's :class:`Arrays` where the two
libraries differ (names, ``out=``, batched solves that report singular matrices). On the CPU NumPy
does the same work as torch in about the same time, and the command does not pay torch's import
(≈1.2 s) for it; torch is imported only for a GPU (``device=cuda``, or ``auto`` where an NVIDIA
driver is present), and by the tests that check both libraries give the same fit.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from octascope.core.devices import check_device_name, select_device


#: a NumPy array or a torch tensor (the fit's functions take either and return the same kind)
Array = Any


class Arrays:
    """NumPy's functions for the fit (the base class; :class:`TorchArrays` overrides them)."""

    name = "numpy"
    device_type = "cpu"

    # creation ------------------------------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = np.float64) -> Any:
        """``a`` as an array of this library (floats are float64; ``dtype=None`` keeps ``a``'s)."""
        return np.array(a, dtype=dtype) if dtype is not None else np.asarray(a)

    def index(self, a: Any) -> Any:
        """``a`` as an array of int64 indices."""
        return np.asarray(a, dtype=np.int64)

    def mask(self, a: Any) -> Any:
        """``a`` as a bool array."""
        return np.asarray(a, dtype=bool)

    def empty(self, shape: tuple[int, ...]) -> Any:
        return np.empty(shape)

    def zeros(self, shape: tuple[int, ...] | int) -> Any:
        return np.zeros(shape)

    def full(self, shape: tuple[int, ...] | int, value: float) -> Any:
        return np.full(shape, value, dtype=np.float64)

    def falses(self, n: int) -> Any:
        return np.zeros(n, dtype=bool)

    def arange(self, n: int) -> Any:
        return np.arange(n)

    def eye(self, n: int) -> Any:
        return np.eye(n)

    def to_numpy(self, a: Any) -> np.ndarray:
        """A NumPy copy-free view where possible (``a`` is one already)."""
        return np.asarray(a)

    # element-wise -------------------------------------------------------------------------------
    def exp(self, a: Any, out: Any = None) -> Any:
        return np.exp(a, out=out)

    def mul(self, a: Any, b: Any, out: Any = None) -> Any:
        return np.multiply(a, b, out=out)

    def sub(self, a: Any, b: Any, out: Any = None) -> Any:
        return np.subtract(a, b, out=out)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return np.where(cond, a, b)

    def isfinite(self, a: Any) -> Any:
        return np.isfinite(a)

    def sqrt(self, a: Any) -> Any:
        return np.sqrt(a)

    def abs(self, a: Any) -> Any:
        return np.abs(a)

    def round(self, a: Any) -> Any:
        return np.round(a)

    def clip(self, a: Any, lo: float | None = None, hi: float | None = None) -> Any:
        return np.clip(a, lo, hi)

    def nan_to_num(self, a: Any, nan: float) -> Any:
        return np.nan_to_num(a, nan=nan)

    def copy(self, a: Any) -> Any:
        return a.copy()

    def as_int(self, a: Any) -> Any:
        return a.astype(np.int64)

    def as_float(self, a: Any) -> Any:
        return a.astype(np.float64)

    # reductions and indexing --------------------------------------------------------------------
    def amax(self, a: Any, axis: int, keepdims: bool = False) -> Any:
        return a.max(axis=axis, keepdims=keepdims)

    def argmin(self, a: Any, axis: int) -> Any:
        return a.argmin(axis=axis)

    def nanquantile(self, a: Any, q: float, axis: int) -> Any:
        """The ``q`` quantile of the finite values along ``axis`` of a 2-D ``a`` (linear interpolation,
        NumPy's and torch's default; NaN where a row has none): one sort of the whole array, where
        ``np.nanquantile`` runs a Python loop over the rows."""
        s = np.sort(np.moveaxis(a, axis, -1), axis=-1)  # NaN sorts last
        n = (~np.isnan(s)).sum(-1)
        pos = q * np.maximum(n - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        a_lo = np.take_along_axis(s, lo[..., None], -1)[..., 0]
        a_hi = np.take_along_axis(s, hi[..., None], -1)[..., 0]
        return np.where(n > 0, a_lo + (pos - lo) * (a_hi - a_lo), np.nan)

    def nonzero(self, mask: Any) -> Any:
        """Indices where the 1-D ``mask`` is true."""
        return np.flatnonzero(mask)

    def index_add(self, out: Any, idx: Any, src: Any) -> Any:
        """``out[idx[k]] += src[k]`` along the first axis, repeated indices summed (in place)."""
        if out.ndim == 1:
            out += np.bincount(idx, weights=src, minlength=out.shape[0])
        else:
            np.add.at(out, idx, src)
        return out

    def tile(self, a: Any, n: int) -> Any:
        """``a`` repeated ``n`` times along its first axis."""
        return np.tile(a, (n,) + (1,) * (a.ndim - 1))

    def broadcast(self, a: Any, shape: tuple[int, ...]) -> Any:
        return np.broadcast_to(a, shape)

    # linear algebra -------------------------------------------------------------------------------
    def t(self, a: Any) -> Any:
        """The batched transpose (last two axes)."""
        return a.swapaxes(-1, -2)

    def diag_embed(self, v: Any) -> Any:
        """(..., k) -> (..., k, k) diagonal matrices."""
        return v[..., None] * self.eye(v.shape[-1])

    def diagonal(self, a: Any) -> Any:
        """The diagonals (..., k) of (..., k, k) matrices (read only)."""
        return a.diagonal(0, -2, -1)

    def solve(self, a: Any, b: Any) -> tuple[Any, Any]:
        """Batched ``a x = b`` for (N, k, k) ``a`` and (N, k, m) ``b``: ``x`` and (N,) bool, True where
        ``a`` was solvable (elsewhere ``x`` is NaN)."""
        try:
            return np.linalg.solve(a, b), np.ones(a.shape[0], dtype=bool)
        except np.linalg.LinAlgError:  # one singular matrix fails the batch: solve one by one
            x = np.full(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + b.shape[-2:], np.nan)
            ok = np.zeros(a.shape[0], dtype=bool)
            for i in range(a.shape[0]):
                try:
                    x[i] = np.linalg.solve(a[i], b[i])
                    ok[i] = True
                except np.linalg.LinAlgError:
                    pass
            return x, ok

    def inv(self, a: Any) -> tuple[Any, Any]:
        """Batched inverse of (N, k, k) ``a`` and (N,) bool, True where ``a`` was invertible."""
        n, k = a.shape[0], a.shape[-1]
        return self.solve(a, np.broadcast_to(np.eye(k), (n, k, k)).copy())


class TorchArrays(Arrays):
    """torch's functions for the fit, on one device (a CUDA GPU, or the CPU in the tests)."""

    name = "torch"

    def __init__(self, device: Any = "cpu") -> None:
        # lazy: torch (~1.2 s to import), only for the GPU path
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.device_type = self.device.type

    def asarray(self, a: Any, dtype: Any = np.float64) -> Any:
        t = self.torch
        if isinstance(a, np.ndarray) and not a.flags.writeable:
            a = a.copy()  # torch does not take non-writable memory
        if dtype is None:
            return t.as_tensor(a, device=self.device)
        return t.as_tensor(a, dtype=t.float64 if dtype in (np.float64, float) else dtype, device=self.device)

    def index(self, a: Any) -> Any:
        return self.torch.as_tensor(np.asarray(a, np.int64), device=self.device)

    def mask(self, a: Any) -> Any:
        return self.torch.as_tensor(np.asarray(a, bool), device=self.device)

    def empty(self, shape: tuple[int, ...]) -> Any:
        return self.torch.empty(shape, dtype=self.torch.float64, device=self.device)

    def zeros(self, shape: tuple[int, ...] | int) -> Any:
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.device)

    def full(self, shape: tuple[int, ...] | int, value: float) -> Any:
        return self.torch.full(shape if isinstance(shape, tuple) else (shape,), value, dtype=self.torch.float64,
                               device=self.device)

    def falses(self, n: int) -> Any:
        return self.torch.zeros(n, dtype=self.torch.bool, device=self.device)

    def arange(self, n: int) -> Any:
        return self.torch.arange(n, device=self.device)

    def eye(self, n: int) -> Any:
        return self.torch.eye(n, dtype=self.torch.float64, device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        return a.detach().cpu().numpy()

    def exp(self, a: Any, out: Any = None) -> Any:
        return self.torch.exp(a, out=out) if out is not None else self.torch.exp(a)

    def mul(self, a: Any, b: Any, out: Any = None) -> Any:
        return self.torch.mul(a, b, out=out) if out is not None else self.torch.mul(a, b)

    def sub(self, a: Any, b: Any, out: Any = None) -> Any:
        return self.torch.sub(a, b, out=out) if out is not None else self.torch.sub(a, b)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return self.torch.where(cond, a, b)

    def isfinite(self, a: Any) -> Any:
        return self.torch.isfinite(a)

    def sqrt(self, a: Any) -> Any:
        return self.torch.sqrt(a)

    def abs(self, a: Any) -> Any:
        return self.torch.abs(a)

    def round(self, a: Any) -> Any:
        return self.torch.round(a)

    def clip(self, a: Any, lo: float | None = None, hi: float | None = None) -> Any:
        return self.torch.clamp(a, lo, hi)

    def nan_to_num(self, a: Any, nan: float) -> Any:
        return self.torch.nan_to_num(a, nan=nan)

    def copy(self, a: Any) -> Any:
        return a.clone()

    def as_int(self, a: Any) -> Any:
        return a.long()

    def as_float(self, a: Any) -> Any:
        return a.to(self.torch.float64)

    def amax(self, a: Any, axis: int, keepdims: bool = False) -> Any:
        return a.amax(dim=axis, keepdim=keepdims)

    def argmin(self, a: Any, axis: int) -> Any:
        return a.argmin(dim=axis)

    def nanquantile(self, a: Any, q: float, axis: int) -> Any:
        return self.torch.nanquantile(a, q, dim=axis)

    def nonzero(self, mask: Any) -> Any:
        return mask.nonzero().ravel()

    def index_add(self, out: Any, idx: Any, src: Any) -> Any:
        return out.index_add_(0, idx, src)

    def tile(self, a: Any, n: int) -> Any:
        return a.repeat((n,) + (1,) * (a.ndim - 1))

    def broadcast(self, a: Any, shape: tuple[int, ...]) -> Any:
        return a.expand(shape)

    def solve(self, a: Any, b: Any) -> tuple[Any, Any]:
        x, info = self.torch.linalg.solve_ex(a, b)
        return x, info == 0

    def inv(self, a: Any) -> tuple[Any, Any]:
        x, info = self.torch.linalg.inv_ex(a)
        return x, info == 0


#: the NumPy functions (stateless: one instance serves every fit)
NUMPY = Arrays()


def arrays_of(a: Any) -> Arrays:
    """The :class:`Arrays` of the library (and device) ``a`` belongs to."""
    if isinstance(a, np.ndarray):
        return NUMPY
    return TorchArrays(a.device)


def nvidia_driver_present() -> bool:
    """Whether this machine has an NVIDIA driver loaded (``/proc/driver/nvidia``), decided without
    importing torch: without one CUDA cannot be available, and ``device=auto`` stays on NumPy."""
    return os.path.isdir("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")


def fit_arrays(device: str, who: str = "locator 'gaussian'") -> Arrays:
    """The arrays a fit with ``device`` runs on: NumPy for ``cpu``; torch on the GPU for ``cuda``,
    ``cuda:N``, and for ``auto`` when CUDA is available (checked only where an NVIDIA driver is
    present, so a CPU-only machine never imports torch). CUDA asked for but absent falls back to
    NumPy with a warning."""
    check_device_name(device, who)
    if device == "cpu" or (device == "auto" and not nvidia_driver_present()):
        return NUMPY
    dev = select_device(device, who)  # imports torch: only where a GPU may be
    return NUMPY if dev.type == "cpu" else TorchArrays(dev)
