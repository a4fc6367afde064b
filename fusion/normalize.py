"""Per-query score normalisation and the array backend (numpy by default, torch behind ``--device N``).

Every normaliser maps the scores of each query row (last axis) to new scores; it is applied to each
caption row before fusion. Formulas, for one row ``s`` of ``N`` scores:

* ``none``    : ``s`` (the fork's choice).
* ``min-max`` : ``(s - min s) / (max s - min s)``; a constant row becomes all 0.
* ``z-score`` : ``(s - mean s) / std s`` (population std); a constant row becomes all 0.
* ``rank``    : ``(N - r) / (N - 1)`` with ``r`` the 1-based rank of :meth:`NumpyOps.ranks` (1 = best, 0 = worst).

Ranks (used by ``rank`` and by RRF / Borda / ISR) come from **one stable sort per row** of the negated
scores, scattered back: tied scores get distinct ranks and **the lower column index wins** (gets the
better rank). That is the fork's double-argsort ordering made deterministic, with one sort instead of two.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from retrieval.trec import top_k_mask
from utils.errors import UserError


class NumpyOps:
    """Array operations on numpy arrays; the reductions act on an explicit axis, transforms on the last axis."""

    name = "numpy"

    def asarray(self, x: np.ndarray, dtype=None) -> np.ndarray:
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        return x

    def ranks(self, x: np.ndarray) -> np.ndarray:
        """1-based descending float64 ranks along the last axis (ties: lower index first)."""
        return self.rank_scatter(x, np.arange(1, x.shape[-1] + 1, dtype=np.float64))

    def rank_scatter(self, x: np.ndarray, per_rank: np.ndarray) -> np.ndarray:
        """``out[..., j] = per_rank[r_j - 1]`` with ``r_j`` the 1-based descending rank of ``x[..., j]``.

        One sort per row and no argsort: float32 rows are sorted as unique int64 keys
        ``(order-preserving int of -score) << 32 | column``, so a plain (fast, SIMD, unstable) sort yields the
        stable order (the column breaks ties) and the sorted keys carry the column back. Scattering a per-rank
        value (a rank, ``1/(k+r)``, ...) directly saves a pass over the matrix. Other dtypes use a stable argsort.
        """
        flat = x.reshape(-1, x.shape[-1])
        n = flat.shape[1]
        if flat.dtype == np.float32 and n < 2**31:
            bits = (flat + np.float32(0)).view(np.int32)  # + 0 turns -0.0 into 0.0
            bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # int32 order == float order
            keys = np.empty(flat.shape, dtype=np.int64)
            np.left_shift(np.invert(bits), 32, out=keys, dtype=np.int64, casting="unsafe")  # ascending = best first
            keys |= np.arange(n, dtype=np.int64)
            keys.sort(axis=1)
            order = keys & 0xFFFFFFFF
        else:
            order = np.argsort(-flat, axis=1, kind="stable")
        out = np.empty(flat.shape, dtype=per_rank.dtype)
        np.put_along_axis(out, order, per_rank[None, :], axis=1)
        return out.reshape(x.shape)

    def top_k_mask(self, x: np.ndarray, k: int) -> np.ndarray:
        return top_k_mask(x.reshape(-1, x.shape[-1]), k).reshape(x.shape)

    def reduce(self, x: np.ndarray, how: str, axis: int) -> np.ndarray:
        return {"sum": np.sum, "max": np.max, "min": np.min, "median": np.median}[how](x, axis=axis)

    def stat(self, x: np.ndarray, how: str) -> np.ndarray:
        """Per-row statistic over the last axis, kept as a trailing axis of size 1."""
        return {"min": np.min, "max": np.max, "mean": np.mean, "std": np.std}[how](x, axis=-1, keepdims=True)

    def where(self, cond, a, b):
        return np.where(cond, a, b)


class TorchOps(NumpyOps):
    """The same operations with torch on ``device`` (e.g. ``cuda:0``); imported only when asked for."""

    name = "torch"

    def __init__(self, device: str):
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a runtime dependency
            raise UserError("--device: torch is not installed; use --device cpu") from None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        self.torch = torch
        self.device = torch.device(device)

    def asarray(self, x, dtype=None):
        return self.torch.from_numpy(np.ascontiguousarray(x, dtype=dtype)).to(self.device)

    def to_numpy(self, x) -> np.ndarray:
        return x.cpu().numpy()

    def ranks(self, x):
        return self.rank_scatter(x, np.arange(1, x.shape[-1] + 1, dtype=np.float64))

    def rank_scatter(self, x, per_rank: np.ndarray):
        flat = x.reshape(-1, x.shape[-1])
        order = self.torch.sort(-flat, dim=1, stable=True).indices
        values = self.torch.from_numpy(np.ascontiguousarray(per_rank)).to(x.device).expand_as(flat)
        return self.torch.empty(flat.shape, dtype=values.dtype, device=x.device).scatter_(1, order, values).reshape(x.shape)

    def top_k_mask(self, x, k: int):
        flat = x.reshape(-1, x.shape[-1])
        n = flat.shape[1]
        if k >= n:
            return self.torch.ones_like(x, dtype=self.torch.bool)
        kth = -self.torch.kthvalue(-flat, k, dim=1, keepdim=True).values
        above, at = flat > kth, flat == kth
        room = k - above.sum(dim=1, keepdim=True)
        return (above | (at & (self.torch.cumsum(at, dim=1) <= room))).reshape(x.shape)

    def reduce(self, x, how: str, axis: int):
        if how == "sum":
            return x.sum(dim=axis)
        if how in ("max", "min"):
            return getattr(x, how)(dim=axis).values
        # median as numpy defines it (mean of the two middle values for an even count); torch.median takes the lower
        ordered = x.sort(dim=axis).values
        n = x.shape[axis]
        lo, hi = ordered.narrow(axis, (n - 1) // 2, 1), ordered.narrow(axis, n // 2, 1)
        return ((lo + hi) / 2).squeeze(axis)

    def stat(self, x, how: str):
        if how in ("min", "max"):
            return getattr(x, "amin" if how == "min" else "amax")(dim=-1, keepdim=True)
        if how == "mean":
            return x.mean(dim=-1, keepdim=True)
        return x.std(dim=-1, keepdim=True, unbiased=False)

    def where(self, cond, a, b):
        return self.torch.where(cond, a, b)


def get_ops(device: str | int = "cpu") -> NumpyOps:
    """``cpu`` -> numpy; ``N`` or ``cuda:N`` -> torch on that GPU; ``torch:cpu`` -> torch on the CPU (tests)."""
    device = str(device)
    if device == "cpu":
        return NumpyOps()
    if device.isdigit():
        return TorchOps(f"cuda:{device}")
    if device.startswith("cuda"):
        return TorchOps(device)
    if device == "torch:cpu":
        return TorchOps("cpu")
    raise UserError(f"--device {device!r}: expected cpu, a GPU index (0, 1, ...) or cuda:N")


def _safe_divide(ops: NumpyOps, num, den):
    zero = den == 0
    return ops.where(zero, num * 0, num / ops.where(zero, den * 0 + 1, den))


def norm_none(ops: NumpyOps, x):
    return x


def norm_min_max(ops: NumpyOps, x):
    low = ops.stat(x, "min")
    return _safe_divide(ops, x - low, ops.stat(x, "max") - low)


def norm_z_score(ops: NumpyOps, x):
    return _safe_divide(ops, x - ops.stat(x, "mean"), ops.stat(x, "std"))


def norm_rank(ops: NumpyOps, x):
    n = x.shape[-1]
    return (n - ops.ranks(x)) / max(n - 1, 1)


Normalizer = Callable[[NumpyOps, Any], Any]

NORMALIZERS: dict[str, Normalizer] = {
    "none": norm_none,
    "min-max": norm_min_max,
    "z-score": norm_z_score,
    "rank": norm_rank,
}


def get_normalizer(name: str) -> Normalizer:
    try:
        return NORMALIZERS[name]
    except KeyError:
        raise UserError(f"--norm {name!r}: unknown normalisation; valid: {', '.join(NORMALIZERS)}") from None
