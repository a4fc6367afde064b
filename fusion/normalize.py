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

Ranks (used by ``rank`` and by RRF / Borda / ISR) come from **one sort per row** of the negated scores,
scattered back. **Tied scores share the mean** of the per-rank values of the positions they occupy (a tie
over ranks 2 and 3 gives both 2.5, or both ``(1/62 + 1/63) / 2`` in RRF), as the metrics average ties: no
column index is favoured. Untied scores get exactly the value of their rank; a chunk without ties does no
extra work beyond one comparison of sorted neighbours.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable

import numpy as np

from utils.errors import UserError


_HIGH_HALF = 1 if sys.byteorder == "little" else 0  # the int32 holding the high half of an int64
_TIE_BLOCK = 2**20  # scores per block of tied rows: the run-mean temporaries stay near 40 MB whatever the chunk


def _run_means(per_rank: np.ndarray, tied: np.ndarray) -> np.ndarray:
    """``(R, N)`` values by sorted position: ``per_rank``, each run of tied neighbours replaced by its mean.

    ``tied[r, p]``: sorted positions ``p`` and ``p + 1`` of row ``r`` hold equal scores. A run of one keeps its
    value bit for bit (``0 + v``, divided by 1).
    """
    rows, n = tied.shape[0], tied.shape[1] + 1
    starts = np.ones((rows, n), dtype=bool)
    starts[:, 1:] = ~tied
    run = np.cumsum(starts.ravel()) - 1
    means = np.bincount(run, weights=np.tile(per_rank, rows)) / np.bincount(run)
    return means[run].reshape(rows, n)


class NumpyOps:
    """Array operations on numpy arrays; the reductions act on an explicit axis, transforms on the last axis."""

    name = "numpy"

    def asarray(self, x: np.ndarray, dtype=None) -> np.ndarray:
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        return x

    def ranks(self, x: np.ndarray) -> np.ndarray:
        """1-based descending float64 ranks along the last axis (ties: the mean of their positions)."""
        return self.rank_scatter(x, np.arange(1, x.shape[-1] + 1, dtype=np.float64))

    def rank_scatter(self, x: np.ndarray, per_rank: np.ndarray) -> np.ndarray:
        """``out[..., j] = per_rank[r_j - 1]`` with ``r_j`` the 1-based descending rank of ``x[..., j]``; tied
        scores get the mean of ``per_rank`` over their positions.

        One sort per row and no argsort: float32 rows are sorted as unique int64 keys
        ``(order-preserving int of -score) << 32 | column``, so a plain (fast, SIMD, unstable) sort yields a
        deterministic order, the sorted keys carry the column back, and equal high halves of neighbouring keys
        are the ties. Scattering a per-rank value (a rank, ``1/(k+r)``, ...) directly saves a pass over the
        matrix. Other dtypes use a stable argsort.
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
            high = keys.view(np.int32)[:, _HIGH_HALF::2]  # the score part of each key, a view (no copy)
            tied = high[:, 1:] == high[:, :-1]
        else:
            order = np.argsort(-flat, axis=1, kind="stable")
            ordered = np.take_along_axis(flat, order, axis=1)
            tied = ordered[:, 1:] == ordered[:, :-1]
        out = np.empty(flat.shape, dtype=per_rank.dtype)
        np.put_along_axis(out, order, per_rank[None, :], axis=1)
        if tied.any():  # only the rows with ties are redone, in blocks of bounded memory
            tied_rows = np.flatnonzero(tied.any(axis=1))
            step = max(1, _TIE_BLOCK // n)
            for start in range(0, tied_rows.size, step):
                rows = tied_rows[start:start + step]
                sub = np.empty((rows.size, n), dtype=per_rank.dtype)
                np.put_along_axis(sub, order[rows], _run_means(per_rank, tied[rows]), axis=1)
                out[rows] = sub
        return out.reshape(x.shape)

    def top_k_mask(self, x: np.ndarray, k: int) -> np.ndarray:
        """Scores ``>=`` the ``k``-th highest of their row: every score tied at the cut-off is in (no column
        bias; ``retrieval.trec.top_k_mask`` keeps exactly ``k`` for TREC files)."""
        flat = x.reshape(-1, x.shape[-1])
        if k >= flat.shape[1]:
            return np.ones(x.shape, dtype=bool)
        kth = -np.partition(-flat, k - 1, axis=1)[:, k - 1:k]
        return (flat >= kth).reshape(x.shape)

    def reduce(self, x: np.ndarray, how: str, axis: int) -> np.ndarray:
        """Sums accumulate in float64 (rounded once by the caller): float32 accumulation order broke exact ties."""
        if how == "sum":
            return np.sum(x, axis=axis, dtype=np.float64)
        return {"max": np.max, "min": np.min, "median": np.median}[how](x, axis=axis)

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
        torch = self.torch
        flat = x.reshape(-1, x.shape[-1])
        ordered, order = torch.sort(-flat, dim=1, stable=True)
        per_rank = torch.from_numpy(np.ascontiguousarray(per_rank)).to(x.device)
        out = torch.empty(flat.shape, dtype=per_rank.dtype, device=x.device).scatter_(1, order, per_rank.expand_as(flat))
        tied = ordered[:, 1:] == ordered[:, :-1]
        if tied.any():  # as NumpyOps: each run of tied sorted positions gets its mean, only rows with ties redone
            rows = tied.any(dim=1).nonzero().squeeze(1)
            starts = torch.ones((rows.numel(), flat.shape[1]), dtype=torch.bool, device=x.device)
            starts[:, 1:] = ~tied[rows]
            run = starts.reshape(-1).cumsum(0) - 1
            n_runs = int(run[-1]) + 1
            sums = torch.zeros(n_runs, dtype=per_rank.dtype, device=x.device).index_add_(0, run, per_rank.repeat(rows.numel()))
            counts = torch.zeros(n_runs, dtype=per_rank.dtype, device=x.device).index_add_(0, run, torch.ones_like(sums[run]))
            means = (sums / counts)[run].reshape(starts.shape)
            out[rows] = torch.empty_like(means).scatter_(1, order[rows], means)
        return out.reshape(x.shape)

    def top_k_mask(self, x, k: int):
        flat = x.reshape(-1, x.shape[-1])
        if k >= flat.shape[1]:
            return self.torch.ones_like(x, dtype=self.torch.bool)
        kth = -self.torch.kthvalue(-flat, k, dim=1, keepdim=True).values
        return (flat >= kth).reshape(x.shape)

    def reduce(self, x, how: str, axis: int):
        if how == "sum":
            return x.sum(dim=axis, dtype=self.torch.float64)
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
        bound = math.frexp(float(self.torch.finfo(m.dtype).max))[1] - 2  # as NumpyOps: finfo.maxexp - 2
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
