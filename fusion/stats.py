"""Statistics for the fusion reports: confidence intervals, tests against one baseline (Holm), risk-reward.

Every results table the fusion stages write shows a 95% percentile-bootstrap interval beside R@1/5/10 and mAP@10
(:func:`metric_cis`). Comparisons of several systems with one baseline report the paired randomisation test and the
paired t-test, each with Holm's correction over the family (:func:`compare_to_baseline`). The risk-reward view
counts the queries a system improves / degrades against the baseline, by how much, with URisk and TRisk
(Dinçer, Macdonald & Ounis 2014; the win/loss view of Benham & Culpepper's fusion studies).
"""
from __future__ import annotations

import math

import numpy as np

from retrieval.metrics import reciprocal_ranks
from retrieval.significance import bootstrap_ci, holm, paired_randomization_test, paired_t_test

CI_METRICS = ("R1", "R5", "R10", "mAP10")
CI_LEVEL = 0.95
DELTA_EDGES = (-1.0, -0.5, -0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.5, 1.0)  # bins of the per-query ΔRR


def per_query_values(ranks: np.ndarray) -> np.ndarray:
    """``(Q, 4)`` per-query values whose means (×100) are R@1, R@5, R@10 and mAP@10 of ``metrics_from_ranks``."""
    r = np.asarray(ranks, dtype=np.float64)
    r = r[~np.isnan(r)]
    return 100.0 * np.column_stack([r == 0, r < 5, r < 10, reciprocal_ranks(r, cutoff=10)]).astype(np.float64)


def metric_cis(ranks: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict[str, list[float]]:
    """``{metric: [low, high]}`` 95% percentile-bootstrap intervals over queries for :data:`CI_METRICS`."""
    ci = bootstrap_ci(per_query_values(ranks), resamples, CI_LEVEL, seed)
    return {m: [float(lo), float(hi)] for m, (lo, hi) in zip(CI_METRICS, ci)}


def compare_to_baseline(scores: dict[str, np.ndarray], baseline: np.ndarray, resamples: int = 10_000,
                        seed: int = 0) -> dict[str, dict[str, float]]:
    """Each system's per-query scores vs one baseline's: mean difference, randomisation and t-test p-values, and
    both Holm-adjusted over the family of all systems compared here."""
    out = {}
    for name, s in scores.items():
        t = paired_t_test(s, baseline)
        out[name] = {"mean_diff": t["mean_diff"], "p_randomisation": paired_randomization_test(s, baseline, resamples, seed),
                     "t": t["t"], "p_t": t["p"]}
    names = list(out)
    for key in ("p_randomisation", "p_t"):
        for name, adj in zip(names, holm([out[n][key] for n in names])):
            out[name][f"{key}_holm"] = float(adj)
    return out


def risk_reward(system: np.ndarray, baseline: np.ndarray, alpha: float = 1.0) -> dict:
    """Wins / losses / ties of ``system`` vs ``baseline`` on per-query scores (e.g. RR), with a ΔRR histogram.

    URisk_alpha = (1/c) [Σ_{wins} δ + (1 + alpha) Σ_{losses} δ] (δ = system − baseline), TRisk_alpha = URisk / SE
    of the same per-query terms; TRisk < −2: significantly riskier than the baseline, > 2: significantly safer gain.
    """
    d = np.asarray(system, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    eps = 1e-12
    terms = np.where(d < 0, (1.0 + alpha) * d, d)
    urisk = float(terms.mean())
    se = float(terms.std(ddof=1)) / math.sqrt(d.size) if d.size > 1 else 0.0
    hist, _ = np.histogram(np.clip(d[np.abs(d) > eps], -1, 1), bins=DELTA_EDGES)
    return {"wins": int(np.count_nonzero(d > eps)), "losses": int(np.count_nonzero(d < -eps)),
            "ties": int(np.count_nonzero(np.abs(d) <= eps)), "queries": int(d.size),
            "mean_gain_on_wins": float(d[d > eps].mean()) if np.any(d > eps) else 0.0,
            "mean_loss_on_losses": float(d[d < -eps].mean()) if np.any(d < -eps) else 0.0,
            "urisk": urisk, "trisk": urisk / se if se > 0 else float("nan"), "alpha": alpha,
            "delta_edges": list(DELTA_EDGES), "delta_histogram": hist.tolist()}


def fmt_ci(value: float, ci: list[float] | None) -> str:
    """``12.34 [11.02, 13.70]`` (or the bare value when there is no interval)."""
    return f"{value:.2f}" if not ci else f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def fmt_p(p: float | None) -> str:
    return "-" if p is None else (f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}")


def caption_fusion_significance(fused_rr: dict[str, np.ndarray], per_clip_baseline: np.ndarray,
                                resamples: int = 10_000) -> dict:
    """fusion.py's significance block: every method vs the per-clip unfused baseline and vs CombSum.

    ``vs_combsum`` / ``vs_baseline_per_clip`` keep the randomisation p-values (floats, as before); ``detail`` adds
    the paired t-test and Holm-adjusted p-values of both tests within each family."""
    sig = {"test": f"paired randomisation, two-sided, {resamples} resamples, and paired t-test, on per-clip "
                   "reciprocal rank 1/(rank+1); baseline per clip = mean RR of its K caption queries; Holm over "
                   "the methods of each family",
           "vs_combsum": {}, "vs_baseline_per_clip": {}, "detail": {}}
    families = {"vs_baseline_per_clip": (fused_rr, per_clip_baseline)}
    if "combsum" in fused_rr:
        families["vs_combsum"] = ({n: rr for n, rr in fused_rr.items() if n != "combsum"}, fused_rr["combsum"])
    for family, (scores, base) in families.items():
        detail = compare_to_baseline(scores, base, resamples) if scores else {}
        sig["detail"][family] = detail
        sig[family] = {name: d["p_randomisation"] for name, d in detail.items()}
    return sig
