"""Fusion of systems: ``fusion.py --runs RUN1 RUN2 ...`` fuses several runs of one split (e.g. CE + MoEE +
CE-VGGish, or three seeds) query by query, then fuses the caption queries of each clip on top.

* The S systems' rows of one query are fused with the caption-fusion kernels of :mod:`fusion.methods` (a query's
  S rows play the role of a clip's K caption rows), after ``--systems-norm`` (default min-max, as ranx's
  ``optimize_fusion``: score scales differ between models).
* ``weighted_combsum`` uses per-system weights **learned on val** (grid over the simplex, or coordinate ascent, by
  ``--optimize-metric`` of the fused val caption queries; ties go to the candidate closest to equal weights); test
  is never looked at. The best single system is also chosen on val.
* Reports: part A = caption queries (K·N rows), part B = after caption fusion (one query per clip); each with
  95% bootstrap CIs, paired randomisation + t-tests against the best single system with Holm over the family,
  and a risk-reward view (wins / losses, ΔRR histogram, URisk / TRisk). Tests and risk-reward use one unit, the
  clip: in part A a clip's score is the mean RR of its K caption queries (captions of a clip are not independent).
"""
from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from fusion.registry import fuse
from fusion.stats import compare_to_baseline, metric_cis, risk_reward
from fusion.system_inputs import System
from retrieval.metrics import gt_ranks_t2a, metrics_from_ranks, reciprocal_ranks
from retrieval.sims_io import save_sims
from utils.io import write_json

LEARNED = "weighted_combsum"
GRID_LIMIT = 500  # --weights-search auto: the simplex grid when it has at most this many points


# ------------------------------------------------------------------------------------------------- stacking
class StackedRows:
    """S ``(Q, N)`` matrices seen as one ``(S·Q, N)`` matrix (row ``s·Q + q`` = system s, query q), without a copy:
    :func:`fusion.methods._fuse` gathers only the rows of one chunk of queries at a time (memmaps stay on disk)."""

    def __init__(self, mats: Sequence[np.ndarray]):
        self.mats = list(mats)
        self.q, self.n = mats[0].shape
        self.shape = (len(mats) * self.q, self.n)

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        system, row = np.divmod(idx, self.q)
        out = np.empty((idx.size, self.n), dtype=np.float32)
        for s in np.unique(system):
            mask = system == s
            out[mask] = self.mats[s][row[mask]]
        return out

    def query_rows(self) -> np.ndarray:
        """``(Q, S)``: the stacked rows of each query (the ``rows`` argument of the fusion kernels)."""
        return np.arange(self.shape[0]).reshape(len(self.mats), self.q).T


def fuse_systems(method: str, mats: Sequence[np.ndarray], *, norm: str, weights: np.ndarray | None = None,
                 params: dict | None = None, device: str = "cpu") -> np.ndarray:
    """``(Q, N)``: the S systems' rows of every query fused with ``method`` (weights: one per system)."""
    stacked = StackedRows(mats)
    p = {**(params or {}), "norm": norm}
    if weights is not None:
        p["weights"] = np.repeat(np.asarray(weights, dtype=np.float64), stacked.q)  # one per stacked row
    return fuse(method, stacked, len(mats), params=p, rows=stacked.query_rows(), device=device)


# ------------------------------------------------------------------------------------------------- weights
def simplex_grid(n_systems: int, step: float) -> np.ndarray:
    """Every weight vector with entries in multiples of ``step`` summing to 1, closest to equal weights first."""
    units = int(round(1 / step))
    points = []
    for bars in itertools.combinations(range(units + n_systems - 1), n_systems - 1):
        edges = (-1,) + bars + (units + n_systems - 1,)
        points.append([edges[i + 1] - edges[i] - 1 for i in range(n_systems)])
    points.sort(key=lambda q: (sum(abs(x * n_systems - units) for x in q), [-x for x in q]))
    return np.asarray(points, dtype=np.float64) / units


def learn_weights(val: Sequence[np.ndarray], gt_cols: np.ndarray, *, norm: str, metric: str = "mAP10",
                  search: str = "auto", step: float = 0.1, device: str = "cpu", progress: bool = False
                  ) -> tuple[np.ndarray, dict]:
    """Per-system weights (summing to 1) maximising ``metric`` of weighted CombSum on the val caption queries."""
    s = len(val)
    cache: dict[tuple, float] = {}

    def score(w: np.ndarray) -> float:
        key = tuple(np.round(w / w.sum(), 9))
        if key not in cache:
            fused = fuse_systems(LEARNED, val, norm=norm, weights=w, device=device)
            cache[key] = metrics_from_ranks(gt_ranks_t2a(fused, gt_cols))[metric]
        return cache[key]

    n_grid = math.comb(int(round(1 / step)) + s - 1, s - 1)  # counted, not listed: it grows as steps^(s-1)
    use_grid = search == "grid" or (search == "auto" and n_grid <= GRID_LIMIT)
    equal = np.full(s, 1.0 / s)
    best_w, best = equal, score(equal)
    if use_grid:
        for w in tqdm(simplex_grid(s, step), desc="weights (grid)", disable=not progress, leave=False):
            v = score(w)
            if v > best + 1e-9:
                best_w, best = w, v
    else:
        values = np.round(np.arange(0, 1 + step / 2, step), 9)
        w = np.ones(s)
        for _ in range(10):  # rounds of coordinate ascent; stops when a full round changes nothing
            changed = False
            for i in range(s):
                for v in values:
                    cand = w.copy()
                    cand[i] = v
                    if cand.sum() > 0 and score(cand) > best + 1e-9:
                        w, best, changed = cand, score(cand), True
            if not changed:
                break
        best_w = w / w.sum()
    info = {"fit_split": "val", "search": "grid" if use_grid else "coordinate", "step": step, "metric": metric,
            "norm": norm, "evaluated": len(cache), f"val_{metric}": best, f"val_{metric}_equal_weights": score(equal)}
    return best_w, info


# ------------------------------------------------------------------------------------------------- pipeline
def run_system_fusion(systems: Sequence[System], out_dir: str | os.PathLike, methods: Sequence[str], *,
                      systems_norm: str = "min-max", captions_method: str = "combsum", params: dict | None = None,
                      search: str = "auto", step: float = 0.1, metric: str = "mAP10", device: str = "cpu",
                      resamples: int = 10_000, plot: bool = True, progress: bool = False, command: str = "",
                      eval_qrels=None) -> dict:
    """Fuse the systems with every method (+ caption fusion on top), evaluate, write weights.json, the primary
    fused matrix and risk-reward.png; returns the results dict (the caller writes results.json/.md).
    ``eval_qrels``: ``(path, Qrels)`` to score the caption-query rows with multi-relevance metrics too."""
    from fusion.qrels_eval import block, row_metrics
    from fusion.run import clip_rows

    out_dir = Path(out_dir)
    params = dict(params or {})
    man = systems[0].test.manifest
    k, n = man.captions_per_clip, len(man.clip_ids)
    rows = clip_rows(man)
    by_clip = np.arange(k * n).reshape(n, k) if rows is None else rows
    gt, diag = man.gt_cols(), np.arange(n)
    test = [s.test.sims for s in systems]
    names = [s.name for s in systems]

    weights, weight_info, val_single = None, None, {}
    if systems[0].val is not None:
        val = [s.val.sims for s in systems]
        val_gt = systems[0].val.manifest.gt_cols()
        val_single = {nm: metrics_from_ranks(gt_ranks_t2a(v, val_gt))[metric] for nm, v in zip(names, val)}
        if LEARNED in methods:
            weights, weight_info = learn_weights(val, val_gt, norm=systems_norm, metric=metric, search=search,
                                                 step=step, device=device, progress=progress)
            weight_info["weights"] = {nm: float(w) for nm, w in zip(names, weights)}
    if val_single:
        best_name, selected_on = max(names, key=lambda nm: val_single[nm]), "val"
    else:
        selected_on = "test (no val runs: the best single system is picked on the evaluated split itself)"
        best_name = max(names, key=lambda nm: metrics_from_ranks(gt_ranks_t2a(test[names.index(nm)], gt))[metric])

    def caption_fused_ranks(sims: np.ndarray) -> np.ndarray | None:
        if sims is None:
            return None
        return gt_ranks_t2a(fuse(captions_method, sims, k, params=params, rows=rows, device=device), diag)

    ranks_a, ranks_b, kind, multi = {}, {}, {}, {}
    for nm, sims in zip(names, test):
        # captions of a single system are fused from its --systems-norm rows, like those of a system fusion, so
        # that weights (1, 0, ...) reproduce the single system exactly in both parts
        normalised = None if captions_method == "none" else fuse_systems("combsum", [sims], norm=systems_norm,
                                                                         device=device)
        ranks_a[nm], ranks_b[nm], kind[nm] = gt_ranks_t2a(sims, gt), caption_fused_ranks(normalised), "single system"
        if eval_qrels is not None:
            multi[nm] = row_metrics(sims, eval_qrels[1])
        del normalised
    primary = LEARNED if LEARNED in methods else methods[0]
    for method in tqdm(methods, desc="system fusion", disable=not progress):
        fused = fuse_systems(method, test, norm=systems_norm, weights=weights if method == LEARNED else None,
                             params=params, device=device)
        label = f"fusion: {method}"
        ranks_a[label], ranks_b[label], kind[label] = gt_ranks_t2a(fused, gt), caption_fused_ranks(fused), "system fusion"
        if eval_qrels is not None:
            multi[label] = row_metrics(fused, eval_qrels[1])
        if method == primary:
            from retrieval.sims_io import SimsManifest
            source = {"system_fusion": method, "systems": names, "weights": weight_info and weight_info["weights"],
                      "norm": systems_norm}
            save_sims(out_dir, f"systems-{method}", fused, SimsManifest(**{**man.to_json(), "source": source}))
        del fused

    parts = {"caption_queries": _part(ranks_a, kind, best_name, lambda r: reciprocal_ranks(r)[by_clip].mean(axis=1),
                                      resamples)}
    if captions_method != "none":
        parts["clip_queries"] = _part(ranks_b, kind, best_name, reciprocal_ranks, resamples)
    results = {
        "split": man.split, "queries": len(man.query_ids), "clips": n, "captions_per_clip": k,
        "systems": [{"name": s.name, "source": s.source, "test": s.test.where, "val": s.val and s.val.where}
                    for s in systems],
        "best_single": {"name": best_name, "selected_on": selected_on, f"val_{metric}": val_single or None},
        "systems_norm": systems_norm, "captions_method": captions_method, "params": params,
        "weights": weight_info, "primary": f"fusion: {primary}", **parts,
        "notes": ("part caption_queries: every caption row fused across systems (K*N queries); part clip_queries: "
                  f"then the K caption rows of each clip fused with {captions_method} (N queries; a single system's "
                  f"rows are {systems_norm}-normalised first, like a fusion's). Tests (paired "
                  "randomisation and paired t, Holm over the family of all rows compared with the best single "
                  "system) and risk-reward use per-clip reciprocal ranks (part caption_queries: mean over the "
                  "clip's K captions). CIs: 95% percentile bootstrap over queries."),
        "command": command,
    }
    if eval_qrels is not None:
        results["multi_relevance"] = block(eval_qrels[0], eval_qrels[1], multi)
    if weight_info:
        write_json(out_dir / "weights.json", weight_info)
    if plot:
        from fusion.plot import plot_risk_reward
        plot_risk_reward(out_dir / "risk-reward.png", {p: results[p]["risk_reward"] for p in parts}, best_name)
    return results


def _part(ranks: dict[str, np.ndarray], kind: dict[str, str], best: str, per_clip, resamples: int) -> dict:
    """Metrics + CIs of every row, and tests / risk-reward of every other row against the best single system."""
    scores = {nm: per_clip(r) for nm, r in ranks.items()}
    others = {nm: s for nm, s in scores.items() if nm != best}
    return {"rows": {nm: {"kind": kind[nm], "queries": int(r.size), "metrics": metrics_from_ranks(r),
                          "ci": metric_cis(r, min(resamples, 2000))} for nm, r in ranks.items()},
            "baseline": best,
            "significance": compare_to_baseline(others, scores[best], resamples),
            "risk_reward": {nm: risk_reward(s, scores[best]) for nm, s in others.items()}}
