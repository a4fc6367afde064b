"""QPP metrics against scipy and hand computations, and their exact chance levels."""
import itertools

import numpy as np
import pytest
from scipy import stats

from qpp import evaluate as ev


def test_tau_inspired_max_is_full_reversal_of_5():
    x = np.array([[1, 2, 3, 4, 5]], dtype=float)
    y = np.array([[5, 4, 3, 2, 1]], dtype=float)
    # hand: positions with x != y: (1,5),(2,4),(4,2),(5,1) -> 2*e^4/6 + 2*e^2/6, halved
    hand = (2 * np.exp(4) / 6 + 2 * np.exp(2) / 6) / 2
    assert ev.tau_inspired_group(x, y)[0] == pytest.approx(hand)
    assert hand == pytest.approx(10.331201022012483)
    assert ev.tau_inspired_max(5) == 10.331201022012483
    perms = np.array(list(itertools.permutations(range(1, 6))), dtype=float)
    d = ev.tau_inspired_group(np.broadcast_to(x, perms.shape), perms)
    assert d.max() == pytest.approx(10.331201022012483)
    assert np.argmax(d) == len(perms) - 1  # the reversal


def test_tau_inspired_random_mean_is_exact_4284():
    perms = np.array(list(itertools.permutations(range(1, 6))), dtype=float)
    ident = np.broadcast_to(np.arange(1, 6, dtype=float), perms.shape)
    mean = ev.tau_inspired_group(ident, perms).mean() / 10.331201022012483
    assert ev.tau_inspired_chance(5) == pytest.approx(mean)
    assert 100 * mean == pytest.approx(42.84, abs=0.005)
    # a non-identity true order gives the same expectation (the distance depends on the relative permutation)
    true = np.tile([3, 1, 5, 2, 4], len(perms)).astype(float)
    assert ev.tau_inspired(true, perms.ravel() + 0.0, 5) == pytest.approx(mean)


def test_tau_inspired_perfect_is_zero_and_uses_smallest_as_rank1():
    t = np.array([0.0, 1, 2, 3, 4, 4, 3, 2, 1, 0])
    assert ev.tau_inspired(t, t * 10, 5) == 0.0
    assert ev.tau_inspired(t, -t, 5) == pytest.approx(1.0)  # full reversal in both groups
    assert ev.group_ranks([0.5, 0.1, 0.9, 0.3, 0.2], 5).tolist() == [[4, 1, 5, 3, 2]]


def test_group_tau_b_matches_scipy_including_ties_and_nan():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(300, 5)).astype(float)
    y = rng.integers(0, 4, size=(300, 5)).astype(float)
    x[0] = 1.0  # constant -> NaN
    y[1] = 2.0
    got = ev.kendall_tau_b_groups(x, y)
    for i in range(len(x)):
        want = stats.kendalltau(x[i], y[i]).statistic
        if np.isnan(want):
            assert np.isnan(got[i])
        else:
            assert got[i] == pytest.approx(want)
    assert np.isnan(got[0]) and np.isnan(got[1])


def test_evaluate_global_metrics_match_scipy_and_chance():
    rng = np.random.default_rng(1)
    t = rng.normal(size=500)
    p = t + rng.normal(size=500)
    r = ev.evaluate(t, p, 5)
    assert r["pearson"] == pytest.approx(stats.pearsonr(t, p)[0])
    assert r["spearman"] == pytest.approx(stats.spearmanr(t, p)[0])
    assert r["kendall"] == pytest.approx(stats.kendalltau(t, p)[0])
    taus = [stats.kendalltau(a, b)[0] for a, b in zip(t.reshape(-1, 5), p.reshape(-1, 5))]
    assert r["kendall_tau_group_mean"] == pytest.approx(np.mean(taus))
    assert r["kendall_tau_group_mean_x100"] == pytest.approx(100 * np.mean(taus))
    assert r["chance"]["kendall_tau_group_mean"] == 0.0
    assert r["chance"]["tau_inspired"] == pytest.approx(0.428385, abs=1e-5)
    assert r["chance"]["pick_best_accuracy"] == pytest.approx(0.2)


def test_smare_definition_and_exact_chance():
    t = np.array([0.1, 0.5, 0.3, 0.9])
    p = np.array([0.2, 0.1, 0.4, 0.8])
    rt, rp = stats.rankdata(t), stats.rankdata(p)
    assert ev.smare(t, p) == pytest.approx(np.mean(np.abs(rt - rp)) / 4)
    assert ev.smare(t, t) == 0.0
    # no ties: chance = (n^2 - 1) / (3 n^2), checked by enumerating all permutations
    for n in (4, 5, 6):
        perms = np.array(list(itertools.permutations(range(1, n + 1))), dtype=float)
        brute = np.mean(np.abs(perms - np.arange(1, n + 1)).mean(axis=1) / n)
        assert ev.smare_chance_no_ties(n) == pytest.approx(brute)
        assert ev.smare_chance(np.arange(n, dtype=float)) == pytest.approx(brute)
    assert ev.smare_chance_no_ties(5225) == pytest.approx(1 / 3, abs=1e-6)
    # with ties in the truth, the closed form equals brute force over the permutations
    tt = np.array([0.0, 0.0, 1.0, 2.0, 2.0])
    r = stats.rankdata(tt)
    perms = np.array(list(itertools.permutations(range(1, 6))), dtype=float)
    brute = np.mean(np.abs(perms - r).mean(axis=1) / 5)
    assert ev.smare_chance(tt) == pytest.approx(brute)


def test_pick_best_accuracy_and_chance_with_ties():
    t = np.array([0, 1, 2, 3, 4, 0, 0, 2, 3, 4.0])
    p = np.array([0.1, 0, 1, 1, 1, 9, 8, 7, 0.5, 6])
    acc, chance = ev.pick_best(t, p, 5)
    assert acc == 0.0  # group 1 picks index 1 (true 1), group 2 picks index 8 (true 3)
    assert chance == pytest.approx((1 / 5 + 2 / 5) / 2)
    acc, _ = ev.pick_best(t, t, 5)
    assert acc == 1.0


def test_random_predictor_is_near_chance():
    rng = np.random.default_rng(3)
    t = rng.normal(size=5 * 4000)
    r = ev.evaluate(t, rng.normal(size=t.size), 5)
    assert abs(r["kendall_tau_group_mean"]) < 0.02
    assert r["tau_inspired"] == pytest.approx(r["chance"]["tau_inspired"], abs=0.01)
    assert r["sMARE"] == pytest.approx(r["chance"]["sMARE"], abs=0.01)
    assert r["pick_best_accuracy"] == pytest.approx(0.2, abs=0.02)


def test_group_ranks_are_ordinal_with_ties_broken_by_caption_index():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 3, (200, 5)).astype(float)
    want = np.array([stats.rankdata(row, method="ordinal") for row in v])
    np.testing.assert_array_equal(ev.group_ranks(v.ravel(), 5), want)


def test_tau_b_group_mean_leaves_out_undefined_groups():
    """A clip whose true values are all equal has no tau-b (scipy: nan): the mean is over the other clips."""
    rng = np.random.default_rng(5)
    t = rng.normal(size=(6, 5))
    t[2] = 1.5
    p = rng.normal(size=(6, 5))
    per = np.array([stats.kendalltau(a, b).statistic for a, b in zip(t, p)])
    r = ev.evaluate(t.ravel(), p.ravel(), 5)
    assert np.isnan(per[2]) and r["tau_groups_nan"] == 1
    assert r["kendall_tau_group_mean"] == pytest.approx(np.nanmean(per), rel=1e-12)
