"""QPP evaluation metrics and their exact chance levels (docs/QPP.md §Evaluation).

All functions take *badness* vectors (lower = better query; see ``qpp.targets.badness``) of length ``G·K`` in
clip-major order (the ``K`` captions of clip ``g`` are rows ``g·K .. g·K+K-1``), or ``(G, K)`` arrays.

Per-clip-group metrics (the fork's). The fork broke ties in the predictions by caption index, which gave a constant
predictor credit whenever the true order correlated with caption order (forkTau*100 = 10 vs chance 0 on the
synthetic run). Here tied predictions are scored as the **exact expectation over uniformly random tie-breaks** of
the predictions; the true side keeps the fork's ordinal ranks. Without tied predictions every value is bit-identical
to the fork's definition, and a constant predictor scores exactly each metric's chance value.

* ``kendall_tau_group_mean_ordinal`` (``_x100``) — **the fork's "group tau"**: Kendall's tau between the ordinal
  1..K ranks (argsort of argsort, ties broken by caption index) of the true values and the ranks of the predicted
  values inside each clip, averaged over all clips (never NaN). A pair of captions with equal predictions
  contributes 0 (:func:`fork_tau_groups`). Chance 0. Tables show it as ``forkTau*100``.
* ``kendall_tau_group_mean`` — tau-b on the RAW values inside each clip's K captions (ties count as ties), averaged
  over the groups where it is defined (``tauB*100`` in tables). A group whose true (or predicted) values are all equal has an undefined tau-b
  (0/0, scipy returns NaN); such groups are **excluded** from the mean and counted in ``tau_groups_nan``.
  Computed by :func:`kendall_tau_b_groups`, a vectorised tau-b (equal to ``scipy.stats.kendalltau`` per group).
  Chance: 0 exactly (a uniformly random order of the predictions makes every defined group's tau symmetric around 0).
* ``tau_inspired`` — the fork's distance: ranks ``x`` (true) and ``y`` (predicted) are argsort-of-argsort + 1 in each
  group (rank 1 = smallest value = best); per group ``d = ½ Σ_{i: x_i≠y_i} exp(|x_i−y_i|)/(x_i+y_i)``; the result
  is ``Σ_g d_g / (D_max · G)`` with ``D_max`` the largest ``d`` over all permutations (10.331201022012483 for K=5,
  reached at the full reversal). Lower is better. With tied predictions ``d_g`` is its mean over the predicted
  orders consistent with the ties (:func:`tau_inspired_expected_group`). Chance: the mean of ``d`` over all K!
  permutations ÷ ``D_max`` (0.42839… for K=5), exact because ``d`` depends only on the relative permutation.
* ``pick_best_accuracy`` — per clip, the share of truly best captions (true value = the group minimum) among the
  predicted-best ones (smallest prediction; one caption without ties), averaged over clips. Chance: mean over groups
  of (#truly best) / K.

Global metrics over all queries: Pearson, Spearman, Kendall (tau-b) between predicted and true, chance 0 (NaN where
undefined, e.g. constant predictions); sMARE (Faggioli et al. 2021): ``mean_q |rank_pred(q) − rank_true(q)| / n``
with 1-based tie-averaged ranks over all ``n`` queries (lower is better). Its chance is the expectation when the
predicted tie-averaged ranks ``p`` are assigned to the queries uniformly at random:
``(1/n³) Σ_q Σ_j |r_q − p_j|`` (:func:`smare_chance`); ``(n²−1)/(3n²)`` (≈ 1/3) when neither side ties, the
predictor's own sMARE when its predictions are constant. It depends on the predictor, unlike the others.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
from scipy import stats

TAU_INSPIRED_MAX_5 = 10.331201022012483


# ---------------------------------------------------------------------------------------------- per-group ranks
def group_ranks(values: np.ndarray, k: int) -> np.ndarray:
    """1-based ordinal ranks inside each group, ``argsort(argsort(values)) + 1`` (stable: ties by position)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1, k)
    return np.argsort(np.argsort(v, axis=1, kind="stable"), axis=1, kind="stable") + 1


def kendall_tau_b_groups(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Vectorised Kendall tau-b of each row pair of two ``(G, K)`` arrays; NaN where undefined (a constant row)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"expected two (G, K) arrays of equal shape, got {x.shape} and {y.shape}")
    k = x.shape[1]
    iu, ju = np.triu_indices(k, 1)
    dx = np.sign(x[:, iu] - x[:, ju])
    dy = np.sign(y[:, iu] - y[:, ju])
    s = (dx * dy).sum(axis=1)  # concordant - discordant (ties contribute 0)
    n0 = iu.size
    n1 = np.count_nonzero(dx == 0, axis=1)  # pairs tied in x
    n2 = np.count_nonzero(dy == 0, axis=1)
    denom = np.sqrt((n0 - n1).astype(np.float64) * (n0 - n2))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(denom > 0, s / np.where(denom > 0, denom, 1.0), np.nan)
    return tau


def tau_inspired_group(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The fork's per-group distance ``½ Σ_{x≠y} exp(|x−y|)/(x+y)`` for ``(G, K)`` 1-based rank arrays."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    terms = np.where(x != y, np.exp(np.abs(x - y)) / (x + y), 0.0)
    return terms.sum(axis=1) / 2.0


def _permutation_distances(k: int) -> np.ndarray:
    perms = np.array(list(itertools.permutations(range(1, k + 1))), dtype=np.float64)
    ident = np.broadcast_to(np.arange(1, k + 1, dtype=np.float64), perms.shape)
    return tau_inspired_group(ident, perms)


def tau_inspired_max(k: int) -> float:
    """Largest per-group distance over all permutations of ``k`` (10.331201022012483 for k=5)."""
    if k == 5:
        return TAU_INSPIRED_MAX_5
    if k > 8:
        raise ValueError("tau-inspired normaliser enumerated only for K <= 8")
    return float(_permutation_distances(k).max())


def tau_inspired_chance(k: int) -> float:
    """Exact expected normalised distance of a uniformly random predicted order (0.428389… for k=5)."""
    if k > 8:
        raise ValueError("tau-inspired chance enumerated only for K <= 8")
    return float(_permutation_distances(k).mean() / tau_inspired_max(k))


def predicted_rank_blocks(pred_vals: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)``, each ``(G, K)``: the 1-based ordinal ranks caption i can take inside its clip when the
    predictions' ties are broken at random: ``lo = #{j: p_j < p_i} + 1``, ``hi = #{j: p_j ≤ p_i}``. Under a uniformly
    random tie-break its rank is uniform on ``lo..hi``; ``lo == hi`` where caption i is tied with no other."""
    p = np.asarray(pred_vals, dtype=np.float64).reshape(-1, k)
    less = np.count_nonzero(p[:, None, :] < p[:, :, None], axis=2)  # [g, i]: #j with p_j < p_i
    leq = np.count_nonzero(p[:, None, :] <= p[:, :, None], axis=2)
    return less + 1, leq


def tau_inspired_expected_group(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per-group distance ``d`` averaged over every predicted order consistent with the predictions' ties.

    ``d`` is a sum over captions of a term in (x_i, y_i) alone, so its expectation is the sum of each term's mean
    over the ranks y_i can take: uniform on ``lo_i..hi_i`` (the tie block it sits in). This equals the mean of ``d``
    over the ∏ m! permutations consistent with the predicted order (tests/test_qpp_ties.py enumerates them)."""
    x = np.asarray(x, dtype=np.float64)[:, :, None]
    k = x.shape[1]
    r = np.arange(1, k + 1, dtype=np.float64)
    f = np.where(x != r, np.exp(np.abs(x - r)) / (x + r), 0.0)  # (G, K, K): term if caption i took rank r
    inside = (r >= lo[:, :, None]) & (r <= hi[:, :, None])
    return ((f * inside).sum(axis=2) / (hi - lo + 1)).sum(axis=1) / 2.0


def tau_inspired(true_vals: np.ndarray, pred_vals: np.ndarray, k: int) -> float:
    """The fork's "Kendall's tau inspired" distance (lower is better; ×100 in the fork's table).

    Predictions tied inside a clip get the expectation over uniformly random tie-breaks (the fork broke them by
    caption index, which gave a constant predictor credit whenever the true order correlated with caption order).
    Clips without tied predictions are computed exactly as the fork did."""
    x = group_ranks(true_vals, k)
    d = tau_inspired_group(x, group_ranks(pred_vals, k))
    lo, hi = predicted_rank_blocks(pred_vals, k)
    tied = np.any(hi > lo, axis=1)
    if tied.any():
        d[tied] = tau_inspired_expected_group(x[tied], lo[tied], hi[tied])
    return float(d.sum() / (tau_inspired_max(k) * d.size))


def fork_tau_groups(true_vals: np.ndarray, pred_vals: np.ndarray, k: int) -> np.ndarray:
    """Per clip, the fork's group tau: Kendall tau between the ordinal 1..K ranks of the true values (ties broken by
    caption index, as the fork did) and of the predictions, in expectation over uniformly random tie-breaks of the
    predictions: a pair of captions with equal predictions contributes 0 (either order is equally likely).

    Without tied predictions this is bit-identical to the fork's ``kendalltau(ordinal(t), ordinal(p))``."""
    x = group_ranks(true_vals, k)
    p = np.asarray(pred_vals, dtype=np.float64).reshape(-1, k)
    iu, ju = np.triu_indices(k, 1)
    dx = np.sign(x[:, iu] - x[:, ju])  # never 0: ordinal ranks
    dy = np.sign(p[:, iu] - p[:, ju])  # 0 on a tied pair of predictions
    return (dx * dy).sum(axis=1) / float(iu.size)


# ---------------------------------------------------------------------------------------------- global metrics
def smare(true_vals: np.ndarray, pred_vals: np.ndarray) -> float:
    """Scaled mean absolute rank error: ``mean |rank(pred) − rank(true)| / n`` (1-based tie-averaged ranks)."""
    rt = stats.rankdata(true_vals)
    rp = stats.rankdata(pred_vals)
    return float(np.mean(np.abs(rp - rt)) / rt.size)


def smare_chance(true_vals: np.ndarray, pred_vals: np.ndarray | None = None) -> float:
    """Exact E[sMARE] when the predicted tie-averaged ranks are assigned to the queries uniformly at random.

    ``(1/n³) Σ_q Σ_j |r_q − p_j|`` with ``r`` the true and ``p`` the predicted 1-based tie-averaged ranks (``p`` =
    1..n when ``pred_vals`` is None: a predictor without ties). A constant predictor (every ``p_j`` = (n+1)/2) gets
    its own sMARE as chance. O(n log n): ``p`` sorted, ``Σ_j |r − p_j|`` from prefix sums at ``r``'s insertion
    point. Ranks are multiples of ½ below 2^53, so every sum is exact until the final division.
    """
    r = stats.rankdata(true_vals)
    n = r.size
    p = np.arange(1, n + 1, dtype=np.float64) if pred_vals is None else np.sort(stats.rankdata(pred_vals))
    if p.size != n:
        raise ValueError(f"true/pred lengths {n}/{p.size} differ")
    cum = np.concatenate(([0.0], np.cumsum(p)))
    c = np.searchsorted(p, r, side="right")  # #p_j <= r_q
    total = (c * r - cum[c]) + ((cum[-1] - cum[c]) - (n - c) * r)
    return float(total.sum() / (n * n * n))


def smare_chance_no_ties(n: int) -> float:
    """``(n² − 1) / (3n²)``: E|R − S|/n for independent uniform ranks R, S on 1..n."""
    return (n * n - 1) / (3.0 * n * n)


def pick_best(true_vals: np.ndarray, pred_vals: np.ndarray, k: int) -> tuple[float, float]:
    """(accuracy, exact chance) of "the predicted-best caption of a clip is a truly best one".

    Per clip: the share of truly best captions (true value = the clip's minimum) among the predicted-best ones
    (prediction = the clip's minimum), i.e. the hit probability when ties in the predictions are broken at random;
    0 or 1 without tied predictions (the fork's definition). Chance: mean over clips of (#truly best) / K.
    """
    t = np.asarray(true_vals, dtype=np.float64).reshape(-1, k)
    p = np.asarray(pred_vals, dtype=np.float64).reshape(-1, k)
    best = t.min(axis=1)
    truly = np.isclose(t, best[:, None], rtol=0, atol=1e-12)
    picked = p == p.min(axis=1)[:, None]
    hits = np.count_nonzero(picked & truly, axis=1) / np.count_nonzero(picked, axis=1)
    n_best = np.count_nonzero(truly, axis=1)
    return float(hits.mean()), float((n_best / k).mean())


def _safe(fn, *args) -> float:
    """``fn(*args)[0]``, NaN where it is undefined (constant input: the table prints n/a and says why)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            val = float(fn(*args)[0])
        except (ValueError, FloatingPointError):
            return float("nan")
    return val


# ---------------------------------------------------------------------------------------------- all at once
METRIC_ORDER = ("kendall_tau_group_mean_ordinal", "kendall_tau_group_mean_ordinal_x100", "kendall_tau_group_mean",
                "kendall_tau_group_mean_x100",
                "tau_inspired", "tau_inspired_x100", "pick_best_accuracy", "pearson", "spearman", "kendall",
                "sMARE")
LOWER_IS_BETTER = {"tau_inspired", "tau_inspired_x100", "sMARE"}


def evaluate(true_bad: np.ndarray, pred_bad: np.ndarray, k: int) -> dict:
    """All QPP metrics of one predictor plus ``"chance"``: the exact value of each under a random predictor.

    Both inputs are badness (lower = better), clip-major, length ``G·K``.
    """
    t = np.asarray(true_bad, dtype=np.float64).ravel()
    p = np.asarray(pred_bad, dtype=np.float64).ravel()
    if t.shape != p.shape or t.size % k:
        raise ValueError(f"true/pred lengths {t.size}/{p.size} are not equal multiples of K={k}")
    taus = kendall_tau_b_groups(t.reshape(-1, k), p.reshape(-1, k))
    valid = ~np.isnan(taus)
    tau_mean = float(taus[valid].mean()) if valid.any() else float("nan")
    tau_ord = float(np.mean(fork_tau_groups(t, p, k)))
    ti = tau_inspired(t, p, k)
    acc, acc_chance = pick_best(t, p, k)
    lo, hi = predicted_rank_blocks(p, k)
    out = {
        "kendall_tau_group_mean": tau_mean,
        "kendall_tau_group_mean_x100": 100.0 * tau_mean,
        "kendall_tau_group_mean_ordinal": tau_ord,
        "kendall_tau_group_mean_ordinal_x100": 100.0 * tau_ord,
        "tau_groups": int(taus.size),
        "tau_groups_nan": int(np.count_nonzero(~valid)),
        "tau_inspired": ti,
        "tau_inspired_x100": 100.0 * ti,
        "pick_best_accuracy": acc,
        "pearson": _safe(stats.pearsonr, t, p),
        "spearman": _safe(stats.spearmanr, t, p),
        "kendall": _safe(stats.kendalltau, t, p),
        "sMARE": smare(t, p),
        # how the predictions tie: per-clip metrics score tied predictions as the expectation over random tie-breaks
        "predictions_constant": bool(p.size and np.all(p == p[0])),
        "targets_constant": bool(t.size and np.all(t == t[0])),
        "clips_with_tied_predictions": int(np.count_nonzero(np.any(hi > lo, axis=1))),
    }
    tic = tau_inspired_chance(k)
    out["chance"] = {
        "kendall_tau_group_mean": 0.0, "kendall_tau_group_mean_x100": 0.0, "kendall_tau_group_mean_ordinal": 0.0,
        "kendall_tau_group_mean_ordinal_x100": 0.0,
        "tau_inspired": tic, "tau_inspired_x100": 100.0 * tic, "pick_best_accuracy": acc_chance,
        "pearson": 0.0, "spearman": 0.0, "kendall": 0.0, "sMARE": smare_chance(t, p),
    }
    return out


TABLE_METRICS = ("kendall_tau_group_mean_ordinal_x100", "kendall_tau_group_mean_x100", "tau_inspired_x100",
                 "pick_best_accuracy", "pearson", "spearman", "kendall", "sMARE")
SHORT_NAMES = {"kendall_tau_group_mean_ordinal_x100": "forkTau*100", "kendall_tau_group_mean_x100": "tauB*100",
               "tau_inspired_x100": "tauInsp*100", "pick_best_accuracy": "pickBest", "pearson": "pearson",
               "spearman": "spearman", "kendall": "kendall", "sMARE": "sMARE", "kendall_tau_group_mean": "tauB",
               "tau_inspired": "tauInsp", "kendall_tau_group_mean_ordinal": "forkTau"}
TAU_B = ("kendall_tau_group_mean", "kendall_tau_group_mean_x100")
GLOBAL_CORR = ("pearson", "spearman", "kendall")


def format_table(rows: list[tuple[str, str, dict]], metrics=TABLE_METRICS) -> str:
    """Fixed-width table: one line per (features, model) plus a "chance" line per feature set, then footnotes for
    every value that is partial or undefined (nothing is printed as a bare ``nan`` or averaged silently):

    * ``*`` tau-b averaged over fewer clips than exist (the others are undefined: all-equal values in the clip);
    * ``n/a`` an undefined value (e.g. a correlation with constant predictions), with the reason;
    * ``(constant)`` after the model: its predictions are one value for every query;
    * the chance of sMARE depends on each predictor's ties: the chance line says ``varies`` when it differs.
    """
    notes: dict[str, list[str]] = {}  # footnote text -> the rows it concerns, in order

    def note(text: str, who: str) -> None:
        notes.setdefault(text, []).append(who)

    def cell(res: dict, m: str, who: str) -> str:
        v = res[m]
        if not np.isfinite(v):
            if m in TAU_B:
                why = "n/a in tauB: undefined in every clip (all-equal targets or predictions within each clip)"
            elif m in GLOBAL_CORR:
                why = ("n/a in pearson/spearman/kendall: undefined, " +
                       ("the predictions are constant" if res.get("predictions_constant") else
                        "the targets are constant" if res.get("targets_constant") else "a degenerate input"))
            else:
                why = f"n/a in {SHORT_NAMES.get(m, m)}: not a finite number (a degenerate input)"
            note(why, who)
            return "n/a"
        mark = ""
        if m in TAU_B and res.get("tau_groups_nan"):
            n, bad = res["tau_groups"], res["tau_groups_nan"]
            mark = "*"
            note(f"* tauB over {n - bad} of {n} clips ({bad} clips with all-equal targets or predictions, where "
                 "tau-b is undefined)", who)
        return f"{v:.4f}{mark}"

    labels = {(f, m): f"{m} (constant)" if res.get("predictions_constant") else m for f, m, res in rows}
    fw = max([24] + [len(f) for f, _, _ in rows])
    mw = max([14] + [len(s) for s in labels.values()])
    head = f"{'features':<{fw}} {'model':<{mw}}" + "".join(f"{SHORT_NAMES.get(m, m):>12}" for m in metrics)
    lines = [head, "-" * len(head)]
    tied: dict[str, list[str]] = {}  # feature set -> "model count" of the rows with predictions tied within clips
    varying: dict[str, list[tuple[str, str]]] = {}  # metric -> (row, chance) where its chance differs between rows
    for feat in dict.fromkeys(f for f, _, _ in rows):
        group = [(m, res) for f, m, res in rows if f == feat]
        for m, res in group:
            who = f"{m} [{feat}]"
            lines.append(f"{feat:<{fw}} {labels[(feat, m)]:<{mw}}" + "".join(f"{cell(res, x, who):>12}" for x in metrics))
            if res.get("predictions_constant"):
                note("(constant): one prediction for every query; its per-clip metrics equal their chance values",
                     who)
            elif res.get("clips_with_tied_predictions"):
                tied.setdefault(feat, []).append(f"{m} {res['clips_with_tied_predictions']}")
        chance = []
        for x in metrics:
            vals = [f"{res['chance'][x]:.4f}" for _, res in group]
            chance.append(vals[0] if len(set(vals)) == 1 else "varies")
            if len(set(vals)) > 1:
                varying.setdefault(x, []).extend((f"{m} [{feat}]", v) for (m, _), v in zip(group, vals))
        lines.append(f"{feat:<{fw}} {'(chance)':<{mw}}" + "".join(f"{c:>12}" for c in chance))
    lines.append("forkTau: the fork's group tau (Kendall tau of the ordinal 1..K ranks within each clip); tauB: tau-b "
                 "on the raw values within each clip (ties kept); lower is better: tauInsp, sMARE; higher: the rest")
    if tied:
        lines.append(f"clips (of {rows[0][2]['tau_groups']}) with predictions tied within the clip, scored by forkTau, "
                     "tauInsp and pickBest as the expectation over random tie-breaks: "
                     + "; ".join(f"{f}: {', '.join(v)}" for f, v in tied.items()))
    for x, entries in varying.items():
        values = [v for _, v in entries]
        common = max(sorted(set(values)), key=values.count)
        if values.count(common) == 1:
            common = None  # no value shared by several rows: list them all
        lines.append(f"varies: the chance of {SHORT_NAMES.get(x, x)} depends on the predictor's ties: "
                     + (f"{common} except " if common else "")
                     + ", ".join(f"{w} {v}" for w, v in entries if v != common))
    for text, who in notes.items():
        lines.append(f"{text}: {', '.join(dict.fromkeys(who))}")
    return "\n".join(lines)
