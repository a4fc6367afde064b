"""Several-run statistics: paired t-test vs scipy, Holm vs hand-computed values, CIs, risk-reward counts."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st

from fusion.stats import compare_to_baseline, metric_cis, per_query_values, risk_reward
from retrieval.metrics import metrics_from_ranks
from retrieval.significance import bootstrap_ci, holm, paired_t_test, student_t_two_sided_p, t_ci


@pytest.mark.parametrize("n,shift,scale", [(2, 0.1, 0.3), (3, 0.5, 0.2), (10, 0.0, 1.0), (200, 0.05, 0.3),
                                           (5000, 0.02, 0.5)])
def test_paired_t_test_equals_scipy(n, shift, scale):
    rng = np.random.default_rng(n)
    a = rng.random(n)
    b = a + rng.normal(shift, scale, n)
    ours, ref = paired_t_test(a, b), st.ttest_rel(a, b)
    assert ours["t"] == pytest.approx(ref.statistic, rel=1e-10)
    assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
    assert ours["df"] == n - 1


def test_t_distribution_tails_and_ties():
    for t, df in ((0.0, 5), (1.96, 1000), (3.5, 3), (40.0, 7), (-2.2, 12)):
        assert student_t_two_sided_p(t, df) == pytest.approx(2 * st.t.sf(abs(t), df), rel=1e-9, abs=1e-300)
    rr = np.array([1.0, 0.5, 0.25, 1.0])  # ties: identical systems, and a constant shift
    assert paired_t_test(rr, rr)["p"] == 1.0
    assert paired_t_test(rr + 0.1, rr)["p"] == 0.0
    with pytest.raises(ValueError):
        paired_t_test(rr[:1], rr[:1])


def test_holm_matches_hand_computed_values():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max with 0.06 -> 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]).tolist() == pytest.approx([1.0, 1.0])  # capped at 1, monotone
    assert holm([0.02]).tolist() == [0.02]
    assert holm([]).size == 0


def test_confidence_intervals():
    rng = np.random.default_rng(0)
    x = rng.random(400)
    lo, hi = t_ci(x)
    ref = st.t.interval(0.95, x.size - 1, loc=x.mean(), scale=st.sem(x))
    assert (lo, hi) == pytest.approx(ref, rel=1e-9)
    b_lo, b_hi = bootstrap_ci(x, 2000, seed=1)
    assert b_lo < x.mean() < b_hi and abs((b_hi - b_lo) - (hi - lo)) < 0.2 * (hi - lo)
    assert np.array_equal(bootstrap_ci(x, 500, seed=3), bootstrap_ci(x, 500, seed=3))  # seeded
    ranks = np.array([0, 0, 3, 7, 12, 40, 0.5, 2])
    assert per_query_values(ranks).mean(axis=0).tolist() == pytest.approx(
        [metrics_from_ranks(ranks)[m] for m in ("R1", "R5", "R10", "mAP10")])
    cis = metric_cis(ranks, 1000)
    assert all(cis[m][0] <= metrics_from_ranks(ranks)[m] <= cis[m][1] for m in cis)


def test_compare_to_baseline_holm_family_and_risk_reward():
    rng = np.random.default_rng(2)
    base = rng.random(300)
    scores = {"better": base + 0.05 + rng.normal(0, 0.05, 300), "same": base + rng.normal(0, 0.05, 300)}
    res = compare_to_baseline(scores, base, resamples=2000)
    raw = [res[n]["p_t"] for n in scores]
    assert [res[n]["p_t_holm"] for n in scores] == pytest.approx(holm(raw).tolist())
    assert res["better"]["p_randomisation"] < 0.01 and res["better"]["mean_diff"] > 0
    rr = risk_reward(np.array([1.0, 0.5, 0.2, 0.3]), np.array([0.5, 0.5, 0.25, 1.0]), alpha=1.0)
    assert (rr["wins"], rr["losses"], rr["ties"]) == (1, 2, 1)
    # URisk = (0.5 + 2 * (-0.05 - 0.7)) / 4
    assert rr["urisk"] == pytest.approx((0.5 + 2 * (-0.05 - 0.7)) / 4)
    assert sum(rr["delta_histogram"]) == 3


def _exact_randomisation_p(diff: np.ndarray) -> float:
    """Oracle: the two-sided sign-flip p-value over all 2^n sign vectors (mean at least as extreme, ties included)."""
    import itertools

    observed = abs(diff.mean())
    signs = np.array(list(itertools.product((-1.0, 1.0), repeat=diff.size)))
    return float(np.mean(np.abs(signs @ diff) / diff.size >= observed - 1e-12))


@pytest.mark.parametrize("diff", [
    np.array([1.0] * 8 + [-1.0] * 2 + [0.0] * 2),      # integer differences: many sign vectors tie the observed mean
    np.random.default_rng(4).normal(0.3, 1.0, 12),      # continuous
])
def test_randomisation_test_against_exact_enumeration(diff):
    from retrieval.significance import paired_randomization_test

    exact = _exact_randomisation_p(diff)
    assert 0.01 < exact < 0.5  # not a degenerate check
    b = np.random.default_rng(5).random(diff.size)
    p = paired_randomization_test(b + diff, b, n_resamples=20_000, seed=1)
    assert p == pytest.approx(exact, abs=0.01)
    assert paired_randomization_test(b, b + diff, n_resamples=20_000, seed=1) == p  # two-sided: symmetric


def test_randomisation_test_plus_one_correction_and_identical_systems():
    from retrieval.significance import paired_randomization_test

    a = np.linspace(0.5, 1.0, 40)
    # every difference positive: no sign flip reaches the observed mean (probability 2 / 2^40), so p = 1 / (R + 1)
    assert paired_randomization_test(a, a - 0.3, n_resamples=999) == 1 / 1000
    assert paired_randomization_test(a, a.copy(), n_resamples=999) == 1.0


def test_bootstrap_percentiles_equal_exact_binomial_quantiles():
    """Mean of 20 resampled Bernoulli values (4 ones) ~ Binomial(20, 0.2) / 20: its 2.5% and 97.5% quantiles are
    1/20 and 8/20 (the 5% / 95% ones would be 1/20 and 7/20), far from the CDF's jumps, so the percentile bootstrap
    with many resamples lands on them exactly. Also through metric_cis (R@1 of ranks with 4 zeros in 20)."""
    x = np.zeros(20)
    x[[3, 9, 14, 19]] = 1.0  # the last query among the ones: every index must be drawable
    assert st.binom.ppf([0.025, 0.975], 20, 0.2).tolist() == [1.0, 8.0]
    assert bootstrap_ci(x, 20_000, seed=0).tolist() == [1 / 20, 8 / 20]
    assert bootstrap_ci(x, 20_000, level=0.9, seed=0).tolist() == [1 / 20, 7 / 20]
    ranks = np.where(x == 1, 0.0, 20.0)
    assert metric_cis(ranks, 20_000)["R1"] == pytest.approx([100 / 20, 100 * 8 / 20])


def test_holm_over_the_family_in_compare_to_baseline_and_caption_significance():
    """Independent Holm step-down on scipy's paired t-test p-values; CombSum is not compared with itself."""
    from fusion.stats import caption_fusion_significance

    rng = np.random.default_rng(13)
    base = rng.random(60)
    scores = {name: base + rng.normal(shift, 0.3, 60) for name, shift in (("a", 0.06), ("b", 0.08), ("c", 0.1))}
    raw = {name: st.ttest_rel(s, base).pvalue for name, s in scores.items()}
    assert 0.001 < min(raw.values()) and max(raw.values()) < 0.2  # adjustments are visible

    def holm_oracle(p):
        order = sorted(p, key=p.get)
        out, running = {}, 0.0
        for i, name in enumerate(order):
            running = max(running, min(1.0, (len(order) - i) * p[name]))
            out[name] = running
        return out

    res = compare_to_baseline(scores, base, resamples=2000)
    expected = holm_oracle(raw)
    for name in scores:
        assert res[name]["p_t"] == pytest.approx(raw[name], rel=1e-9)
        assert res[name]["p_t_holm"] == pytest.approx(expected[name], rel=1e-9)
    assert res["c"]["p_t_holm"] == pytest.approx(3 * raw["c"], rel=1e-9)  # the smallest p, times the family size
    assert res["b"]["p_t_holm"] == res["c"]["p_t_holm"] > 2 * raw["b"]      # step-down: kept monotone
    rand = {name: res[name]["p_randomisation"] for name in scores}
    for name, adj in holm_oracle(rand).items():
        assert res[name]["p_randomisation_holm"] == pytest.approx(adj, rel=1e-12)

    fused = {"combsum": scores["a"], "rrf": scores["b"], "borda": scores["c"]}
    sig = caption_fusion_significance(fused, base, resamples=500)
    assert set(sig["vs_combsum"]) == {"rrf", "borda"} and set(sig["vs_baseline_per_clip"]) == set(fused)
    vs_cs = {name: st.ttest_rel(fused[name], fused["combsum"]).pvalue for name in ("rrf", "borda")}
    for name, adj in holm_oracle(vs_cs).items():  # a family of 2, not 3
        assert sig["detail"]["vs_combsum"][name]["p_t_holm"] == pytest.approx(adj, rel=1e-9)


def test_risk_reward_trisk_means_and_histogram():
    """TRisk is the one-sample t statistic of the URisk terms (scipy); the means are over wins / losses only; the
    histogram counts every non-tied query, differences beyond ±1 in the edge bins; ±1e-12 is a tie."""
    system = np.array([1.0, 0.5, 0.2, 0.3, 0.9, 2.0, 1e-12, 0.0])
    baseline = np.array([0.5, 0.5, 0.25, 1.0, 0.6, 0.0, 0.0, 1e-12])
    d = system - baseline
    rr = risk_reward(system, baseline, alpha=2.0)
    terms = np.where(d < 0, 3.0 * d, d)
    assert rr["urisk"] == pytest.approx(terms.mean())
    assert rr["trisk"] == pytest.approx(st.ttest_1samp(terms, 0.0).statistic, rel=1e-12)
    assert (rr["wins"], rr["losses"], rr["ties"], rr["queries"]) == (3, 2, 3, 8)
    assert rr["mean_gain_on_wins"] == pytest.approx((0.5 + 0.3 + 2.0) / 3)
    assert rr["mean_loss_on_losses"] == pytest.approx((-0.05 - 0.7) / 2)
    assert sum(rr["delta_histogram"]) == 5 and rr["delta_histogram"][-1] == 2  # +0.5 and +2.0 (clipped to 1)


def test_t_p_value_of_infinite_and_nan_t():
    assert student_t_two_sided_p(np.inf, 5) == 0.0 == 2 * st.t.sf(np.inf, 5)
    assert student_t_two_sided_p(-np.inf, 5) == 0.0
    assert np.isnan(student_t_two_sided_p(np.nan, 5))
