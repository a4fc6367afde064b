"""Targets with ties, fold separation by clip, weights and the feature blocks."""
import numpy as np
import pytest

from qpp.lexical_features import LexicalFeaturizer
from qpp.models import group_folds
from qpp.score_features import score_features
from qpp.targets import badness, compute_targets
from qpp.variation_features import variation_features
from qpp.weights import combsum, weighted_combsum, weights_from_predictions
from retrieval.metrics import clip_major_gt_cols


def test_targets_tie_averaged_and_fork_ordinal():
    sims = np.array([[0.9, 0.5, 0.5, 0.1],   # gt col 0: rank0 0
                     [0.5, 0.5, 0.9, 0.5],   # gt col 1: 1 better + 2 tied others -> 2.0 ; ordinal: 1 + 1 (col 0) = 2
                     [0.3, 0.3, 0.3, 0.3],   # gt col 2: all tied -> 1.5 ; ordinal: 2
                     [0.1, 0.2, 0.3, 0.4]])  # gt col 3: rank0 0
    gt = np.array([0, 1, 2, 3])
    t = compute_targets(sims, gt)
    np.testing.assert_allclose(t["rank0"], [0, 2, 1.5, 0])
    np.testing.assert_allclose(t["log2_rank"], np.log2([1, 3, 2.5, 1]))
    np.testing.assert_allclose(t["rr"], [1, 1 / 3, 1 / 2.5, 1])
    np.testing.assert_allclose(t["hit10"], [1, 1, 1, 1])
    o = compute_targets(sims, gt, ordinal=True)
    np.testing.assert_allclose(o["rank0"], [0, 2, 2, 0])
    # equals the fork's double argsort (stable) on -row
    fork = [np.argsort(np.argsort(-row, kind="stable"), kind="stable")[g] for row, g in zip(sims, gt)]
    np.testing.assert_allclose(o["rank0"], fork)
    np.testing.assert_allclose(badness(t["rr"], "rr"), -t["rr"])


def test_hit10_boundary():
    sims = np.tile(np.arange(20, 0, -1, dtype=float), (2, 1))
    t = compute_targets(sims, np.array([9, 10]))
    assert t["hit10"].tolist() == [1.0, 0.0]


def test_group_folds_never_split_a_clip():
    k, n = 5, 23
    folds = group_folds(n, 4, k, seed=3)
    seen = np.zeros(n * k, dtype=int)
    for fit, ev in folds:
        assert not set(fit) & set(ev)
        fit_clips, ev_clips = set(fit // k), set(ev // k)
        assert not fit_clips & ev_clips
        for rows in (fit, ev):  # every clip that appears, appears with all k captions
            clips, counts = np.unique(rows // k, return_counts=True)
            assert np.all(counts == k)
        seen[ev] += 1
    assert np.all(seen == 1)


def test_softmax_weights_favour_predicted_best():
    pred = np.array([3.0, 0.5, 2.0, 5.0, 1.0, 0, 0, 0, 0, 0])  # log2-rank badness
    w = weights_from_predictions(pred, 5, "softmax", 1.0)
    assert w.dtype == np.float32 and w.shape == (10,)
    np.testing.assert_allclose(w.reshape(2, 5).sum(axis=1), 1.0, rtol=1e-6)
    assert np.argmax(w[:5]) == 1 and np.argmin(w[:5]) == 3
    np.testing.assert_allclose(w[5:], 0.2)
    uni = weights_from_predictions(pred, 5, "softmax", float("inf"))
    np.testing.assert_allclose(uni, 0.2)
    rank = weights_from_predictions(pred, 5, "rank")
    assert np.argmax(rank[:5]) == 1
    fork = weights_from_predictions(pred, 5, "fork")  # the fork's bug: predicted best gets the least
    np.testing.assert_allclose(fork[:5], np.array([4, 1, 3, 5, 2]) / 15)
    assert np.argmin(fork[:5]) == 1


def test_weighted_combsum_with_uniform_weights_ranks_like_combsum():
    rng = np.random.default_rng(0)
    sims = rng.normal(size=(30, 6)).astype(np.float32)
    w = weights_from_predictions(np.zeros(30), 5, "softmax", 1.0)
    a, b = weighted_combsum(sims, 5, w), combsum(sims, 5)
    np.testing.assert_allclose(a * 5, b, rtol=1e-5, atol=1e-6)
    one_hot = np.zeros(30, dtype=np.float32)
    one_hot[2::5] = 1.0
    np.testing.assert_allclose(weighted_combsum(sims, 5, one_hot), sims[2::5], rtol=1e-6)


def test_score_and_variation_features_shapes_and_hand_values():
    rng = np.random.default_rng(0)
    sims = rng.uniform(-1, 1, size=(20, 60)).astype(np.float32)
    s = score_features(sims)
    row = np.sort(sims[0].astype(float))[::-1]
    assert s[0, 0] == pytest.approx(row[0])                       # top1
    assert s[0, 1] == pytest.approx(row[0] - row[1])              # gap
    assert s[0, 2] == pytest.approx(row[:10].std())               # nqc std10
    assert s[0, 4] == pytest.approx(row[:10].mean() - row.mean())  # wig10
    v = variation_features(sims, 5)
    assert v.shape == (20, 8) and np.all(np.isfinite(v))
    # identical caption rows agree perfectly
    same = np.repeat(sims[:4:1][:, None, :], 5, axis=1).reshape(20, 60)
    v2 = variation_features(same, 5)
    np.testing.assert_allclose(v2[:, :5], 1.0, atol=1e-6)
    np.testing.assert_allclose(v2[:, 5], 1.0)
    np.testing.assert_allclose(v2[:, 6], 0.0)
    # loo centroid by brute force for one caption
    g = sims[5:10].astype(float)
    loo = (g.sum(0) - g[2]) / 4
    assert v[7, 3] == pytest.approx(np.corrcoef(g[2], loo)[0, 1])


def test_lexical_fitted_on_fit_captions_only():
    fit = ["a dog barks loudly", "rain falls on a tin roof", "a dog runs", "birds chirp in trees"] * 5
    lex = LexicalFeaturizer(svd_dim=4).fit(fit)
    x = lex.transform(["a dog barks", "zzz unknownword"])
    names = lex.names()
    assert x.shape == (2, len(names))
    assert x[1, names.index("oov_share")] == 1.0
    assert x[0, names.index("oov_share")] == 0.0
    assert x[1, names.index("idf_max")] == pytest.approx(np.log(len(fit)))


@pytest.mark.parametrize("temperature", [1e-310, 5e-324, 1e-300, 1e-12])
def test_softmax_weights_stay_finite_at_tiny_temperatures(temperature):
    """-p / T overflowed to -inf for every caption of a clip (T subnormal): inf - inf gave NaN weights."""
    pred = np.array([0.9, 0.2, 0.5, 0.2 + 1e-9, 3.0, 1.0, 2.0, 0.5, 0.7, 0.1])
    w = weights_from_predictions(pred, 5, "softmax", temperature).reshape(2, 5)
    assert np.all(np.isfinite(w)) and np.allclose(w.sum(axis=1), 1.0)
    assert w[0].argmax() == 1 and w[1].argmax() == 4  # all the weight on the caption predicted best


def test_weight_mappings_exact_values_against_scipy():
    """softmax = scipy.special.softmax(-p / T) per clip; rank: w ∝ K + 1 − r with tie-averaged r (scipy's
    rankdata); fork: r / 15 with the fork's ordinal r (ties in the predictions broken by caption index)."""
    from scipy.special import softmax
    from scipy.stats import rankdata

    pred = np.array([3.0, 0.5, 2.0, 5.0, 1.0, 2.0, 2.0, 0.0, 7.0, 2.0])
    for t in (0.25, 1.0, 3.0):
        np.testing.assert_allclose(weights_from_predictions(pred, 5, "softmax", t),
                                   softmax(-pred.reshape(2, 5) / t, axis=1).ravel(), rtol=1e-6)
    avg = np.array([rankdata(g) for g in pred.reshape(2, 5)])
    assert avg.tolist() == [[4, 1, 3, 5, 2], [3, 3, 1, 5, 3]]
    np.testing.assert_allclose(weights_from_predictions(pred, 5, "rank"), ((6 - avg) / 15).ravel(), rtol=1e-6)
    ordinal = np.array([[4, 1, 3, 5, 2], [2, 3, 1, 5, 4]])  # clip 2's tied 2.0s by caption index, as the fork
    np.testing.assert_allclose(weights_from_predictions(pred, 5, "fork"), (ordinal / 15).ravel(), rtol=1e-6)


def test_badness_orients_every_higher_is_better_target():
    v = np.array([1.0, 0.0, 0.5])
    np.testing.assert_array_equal(badness(v, "hit10"), -v)
    np.testing.assert_array_equal(badness(v, "rr"), -v)
    np.testing.assert_array_equal(badness(v, "log2_rank"), v)


def test_ordinal_ranks_across_row_blocks_equal_the_forks_double_argsort(monkeypatch):
    import qpp.targets as qt

    monkeypatch.setattr(qt, "_row_block", lambda n_cols, per_cell=2: 3)  # 3 rows per block
    rng = np.random.default_rng(2)
    sims = rng.integers(0, 4, (20, 6)).astype(np.float32)  # many ties
    gt = rng.integers(0, 6, 20)
    fork = [np.argsort(np.argsort(-row, kind="stable"), kind="stable")[g] for row, g in zip(sims, gt)]
    np.testing.assert_array_equal(qt.ordinal_ranks_t2a(sims, gt), fork)


def test_fused_ranks_rank_each_clips_own_column_in_its_row():
    from qpp.weights import fused_ranks

    fused = np.array([[0.1, 0.9, 0.5],    # row 0: its column 0 below two others -> 2
                      [0.2, 0.8, 0.3],    # row 1: column 1 first -> 0
                      [0.95, 0.0, 0.9]])  # row 2: column 2 second -> 1
    np.testing.assert_array_equal(fused_ranks(fused), [2, 0, 1])


def test_tune_temperature_ties_go_to_the_largest_temperature():
    """Constant predictions give uniform weights at every temperature: all tie, so plain CombSum (T = inf) wins."""
    from qpp.weights import DEFAULT_TEMPERATURES, tune_temperature

    rng = np.random.default_rng(4)
    sims = rng.normal(size=(6 * 5, 6)).astype(np.float32)
    best, table = tune_temperature(np.zeros(30), sims, 5)
    assert best == float("inf") and set(table) == {str(t) for t in DEFAULT_TEMPERATURES}
    assert tune_temperature(np.zeros(30), sims, 5, temperatures=(0.5, 2.0))[0] == 2.0


def _score_features_reference(row: np.ndarray) -> list[float]:
    """The documented formulas (qpp/score_features.py), one row at a time, in SCORE_NAMES order."""
    row = row.astype(np.float64)
    std = row.std()
    z = (row - row.mean()) / (std if std > 0 else 1.0)
    out = []
    for arr, raw in ((row, True), (z, False)):
        top = np.sort(arr)[::-1]
        u = (top[:10] + 1.0) / 2.0 if raw else top[:10] - arr.min()
        u = np.maximum(u, 1e-6)
        smv = float(np.mean(u * np.abs(np.log(u / u.mean()))))
        out += [top[0], top[0] - top[1], top[:10].std(), top[:50].std(), top[:10].mean() - arr.mean(),
                top[:50].mean() - arr.mean(), smv]
        if raw:
            out += [row.mean(), std]
    return out


@pytest.mark.parametrize("n_cols", [8, 60])  # 8: the top 10 holds the row's minimum (u = 0, floored)
def test_score_features_every_column_against_the_documented_formulas(n_cols):
    from qpp.score_features import SCORE_NAMES

    rng = np.random.default_rng(n_cols)
    sims = rng.uniform(-1, 1, size=(6, n_cols)).astype(np.float32) * np.linspace(0.2, 1, 6)[:, None].astype(np.float32)
    s = score_features(sims)
    assert s.shape == (6, len(SCORE_NAMES)) and np.isfinite(s).all()
    for q in range(6):
        np.testing.assert_allclose(s[q], _score_features_reference(sims[q]), rtol=1e-9, atol=1e-12,
                                   err_msg=f"row {q}")


def test_variation_features_every_column_against_brute_force():
    """The documented definitions, caption by caption with scipy / sets / loops (continuous scores: no ties)."""
    from scipy import stats

    rng = np.random.default_rng(12)
    k, g, n = 4, 3, 70
    sims = (rng.normal(size=(g, 1, n)) + rng.normal(size=(g, k, n))).reshape(g * k, n)
    sims[1] = sims[0] * 2 + 0.1  # a sibling with the same top-1 and top-m sets
    v = variation_features(sims, k)
    for q in range(g * k):
        clip = q // k
        own = sims[q]
        sib = [sims[j] for j in range(clip * k, clip * k + k) if j != q]

        def top(row, m):
            return set(np.argsort(-row)[:m])

        overlap = [np.mean([len(top(own, m) & top(s, m)) / m for s in sib]) for m in (10, 50)]
        spearman = np.mean([stats.spearmanr(own, s).statistic for s in sib])
        loo = np.mean(sib, axis=0)
        full = sims[clip * k:clip * k + k].mean(axis=0)
        top1 = np.mean([np.argmax(s) == np.argmax(own) for s in sib])
        pseudo = np.argmax(loo)
        rank0 = np.sum(own > own[pseudo]) + (np.sum(own == own[pseudo]) - 1) / 2
        want = overlap + [spearman, stats.pearsonr(own, loo).statistic, stats.pearsonr(own, full).statistic, top1,
                          np.log2(rank0 + 1), (own[pseudo] - own.mean()) / own.std()]
        np.testing.assert_allclose(v[q], want, rtol=1e-6, atol=1e-9, err_msg=f"row {q}")  # overlaps: float32 counts


def test_rank_mapping_gives_tied_predictions_equal_weights():
    """Captions with equal predictions (tree leaves, a constant predictor) share the tie-averaged rank's weight:
    caption order must not decide (a constant predictor gives CombSum's uniform weights, not 5/15 .. 1/15)."""
    const = weights_from_predictions(np.full(10, 0.7), 5, "rank")
    np.testing.assert_allclose(const, 0.2, rtol=1e-6)
    w = weights_from_predictions(np.array([1.0, 1.0, 0.0, 3.0, 1.0]), 5, "rank")
    np.testing.assert_allclose(w, np.array([3, 3, 5, 1, 3]) / 15, rtol=1e-6)  # tied at ranks 2..4: mean 3
