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
