"""Per-query score normalisation and the array backend (numpy by default, torch behind ``--device N``).

Every normaliser maps the scores of each query row (last axis) to new scores; it is applied to each
caption row before fusion. Formulas, for one row ``s`` of ``N`` scores:

* ``none``    : ``s`` (the fork's choice).
* ``min-max`` : ``(s - min s) / (max s - min s)``; a constant row becomes all 0.
* ``z-score`` : ``(s - mean s) / std s`` (population std); a constant row becomes all 0.

Both are scale-invariant, so when a statistic would leave the safe range (``max - min`` or the variance of
scores near 1e20 overflows float32, of scores near 1e-25 underflows to 0) the chunk is first multiplied by a
per-row power of two: exact, hence the same bits as before for every row whose statistics were fine.
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

    def any(self, mask) -> bool:
        return bool(mask.any())

    def pow2_scale(self, m):
        """``2**-e`` with ``m = f * 2**e``, ``0.5 <= f < 1``: brings ``m`` into [0.5, 1) exactly (1 for 0, inf, NaN);
        ``e`` is clipped so that the scale itself is a normal number (subnormal ``m`` lands near 2**-23)."""
        bound = np.finfo(m.dtype).maxexp - 2
        return np.ldexp(np.ones_like(m), np.clip(-np.frexp(m)[1], -bound, bound))


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

    def pow2_scale(self, m):
        exponent = self.torch.frexp(m).exponent
        exponent = self.torch.where(self.torch.isfinite(m), exponent, self.torch.zeros_like(exponent))
        bound = int(np.log2(self.torch.finfo(m.dtype).max)) - 1
        return self.torch.ldexp(self.torch.ones_like(m), (-exponent).clamp(-bound, bound))


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


_SAFE_LOW, _SAFE_HIGH = 2.0 ** -40, 2.0 ** 40  # a statistic in here cannot have overflowed or underflowed


def _outside_safe_range(ops: NumpyOps, stat) -> bool:
    """Any row whose statistic (max - min, std) is inf, NaN or outside the safe range (0 included)."""
    return ops.any(~((stat >= _SAFE_LOW) & (stat <= _SAFE_HIGH)))


def _pow2_rescaled(ops: NumpyOps, x, low=None, high=None):
    """``x`` times a per-row power of two that brings ``max |x|`` into [0.5, 1): exact (no rounding)."""
    low = ops.stat(x, "min") if low is None else low
    high = ops.stat(x, "max") if high is None else high
    return x * ops.pow2_scale(ops.where(abs(high) > abs(low), abs(high), abs(low)))


def norm_min_max(ops: NumpyOps, x):
    low, high = ops.stat(x, "min"), ops.stat(x, "max")
    den = high - low
    if _outside_safe_range(ops, ops.where(den == 0, den + 1, den)):  # a constant row (den 0) is fine: all 0
        x = _pow2_rescaled(ops, x, low, high)
        low, high = ops.stat(x, "min"), ops.stat(x, "max")
        den = high - low
    return _safe_divide(ops, x - low, den)


def norm_z_score(ops: NumpyOps, x):
    std = ops.stat(x, "std")
    if _outside_safe_range(ops, std):  # also constant rows (std 0): rare, and rescaling keeps them 0
        x = _pow2_rescaled(ops, x)
        std = ops.stat(x, "std")
    return _safe_divide(ops, x - ops.stat(x, "mean"), std)


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
