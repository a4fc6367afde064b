"""Statistics on per-query scores (numpy + math only): paired tests, Holm correction, confidence intervals.

* Paired randomisation (permutation) test: under the null hypothesis the two systems are exchangeable on every
  query, so the sign of each per-query difference is a fair coin. The p-value is the share of sign-flipped mean
  differences at least as extreme as the observed one (two-sided), with the +1 correction so it is never 0.
* Paired t-test (Student's t, two-sided; the t distribution through the regularised incomplete beta function).
* Holm's step-down correction when several systems are compared against one baseline.
* Percentile bootstrap and Student-t confidence intervals of a mean over queries.
"""
from __future__ import annotations

import math

import numpy as np


def paired_randomization_test(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 10_000, seed: int = 0, block: int = 1000
) -> float:
    """Two-sided p-value for ``mean(a - b) != 0``; ``a`` and ``b`` are per-query scores (e.g. RR)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be 1-D and of equal length, got {a.shape} and {b.shape}")
    diff = a - b
    observed = abs(diff.mean())
    if observed == 0.0:
        return 1.0
    rng = np.random.default_rng(seed)
    extreme = 0
    tolerance = 1e-12 * max(1.0, observed)
    for start in range(0, n_resamples, block):
        n = min(block, n_resamples - start)
        signs = rng.integers(0, 2, size=(n, diff.size), dtype=np.int8) * 2 - 1
        means = np.abs(signs @ diff) / diff.size
        extreme += int(np.count_nonzero(means >= observed - tolerance))
    return (extreme + 1) / (n_resamples + 1)


# ---------------------------------------------------------------------------------------------- paired t-test
def _betacf(a: float, b: float, x: float, max_iter: int = 300, eps: float = 1e-15) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)`` for ``a, b > 0``, ``0 <= x <= 1`` (numpy-free: retrieval/ stays free of scipy)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value ``P(|T| >= |t|)`` of Student's t with ``df`` degrees of freedom: ``I_{df/(df+t²)}(df/2, ½)``."""
    if not math.isfinite(t):
        return 0.0 if not math.isnan(t) else float("nan")
    return min(1.0, regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t)))


def paired_t_test(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Paired two-sided t-test of ``mean(a - b) = 0``: ``{"t", "df", "p", "mean_diff"}``.

    ``t = mean(d) / (std(d, ddof=1) / sqrt(n))``, ``df = n - 1`` (equals ``scipy.stats.ttest_rel``). All differences
    equal: ``p = 1`` if they are 0, else 0 (an exact, zero-variance difference).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be 1-D and of equal length, got {a.shape} and {b.shape}")
    n = a.size
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, got {n}")
    diff = a - b
    mean = float(diff.mean())
    sd = float(diff.std(ddof=1))
    if sd <= 1e-15 * max(1.0, abs(mean)):
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        return {"t": t, "df": n - 1, "p": 1.0 if mean == 0.0 else 0.0, "mean_diff": mean}
    t = mean / (sd / math.sqrt(n))
    return {"t": t, "df": n - 1, "p": student_t_two_sided_p(t, n - 1), "mean_diff": mean}


# ---------------------------------------------------------------------------------------------- multiple comparisons
def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down), in the input order.

    Sorted ascending ``p_(1) <= ... <= p_(m)``: ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``. Controls the
    family-wise error rate for any dependence between the tests; reject ``H_i`` at level alpha iff ``adj_i <= alpha``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


# ---------------------------------------------------------------------------------------------- confidence intervals
def bootstrap_ci(per_query: np.ndarray, n_resamples: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> np.ndarray:
    """Percentile bootstrap interval of the mean of each column of ``per_query`` ``(Q,)`` or ``(Q, M)``.

    One set of resampled query indices serves every column (so the columns' intervals are coherent). Returns
    ``(2,)`` or ``(M, 2)`` ``[low, high]``. Memory is bounded: resamples are drawn in blocks.
    """
    x = np.asarray(per_query, dtype=np.float64)
    squeeze = x.ndim == 1
    x = x[:, None] if squeeze else x
    q = x.shape[0]
    if q == 0:
        raise ValueError("no queries to bootstrap")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = np.empty((n_resamples, x.shape[1]))
    block = max(1, 2**22 // (q * x.shape[1]))
    for start in range(0, n_resamples, block):
        n = min(block, n_resamples - start)
        means[start:start + n] = x[rng.integers(0, q, size=(n, q))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    ci = np.percentile(means, [tail, 100 - tail], axis=0).T
    return ci[0] if squeeze else ci


def t_ci(per_query: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean: ``mean ± t_{(1+level)/2, n-1} · sd / sqrt(n)`` (the t quantile by bisection)."""
    x = np.asarray(per_query, dtype=np.float64)
    n = x.size
    if n < 2:
        raise ValueError("a t interval needs at least 2 values")
    alpha = 1.0 - level
    lo, hi = 0.0, 1e3
    for _ in range(200):  # two-sided p(t) is decreasing in t: find p(t) = alpha
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if student_t_two_sided_p(mid, n - 1) > alpha else (lo, mid)
    half = (lo + hi) / 2 * float(x.std(ddof=1)) / math.sqrt(n)
    return float(x.mean()) - half, float(x.mean()) + half
