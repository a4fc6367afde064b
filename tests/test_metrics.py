"""retrieval.metrics against independent oracles: ir-measures on a TREC export, brute-force tie averaging,
and hand-made matrices with ties (t2a, a2t min over captions, mAP@10)."""
import numpy as np
import pytest

from retrieval.metrics import (clip_major_gt_cols, gt_ranks_a2t, gt_ranks_t2a, metrics_from_ranks,
                               reciprocal_ranks, t2a_metrics)
from retrieval.trec import write_trec_qrels, write_trec_run


def test_hand_made_ties_t2a():
    sims = np.array([[0.5, 0.5, 0.1],    # gt 0 tied with 1 -> rank 0 + 1/2
                     [0.3, 0.2, 0.3],    # gt 1 below two -> rank 2
                     [0.7, 0.7, 0.7]])   # gt 2 tied with two -> rank 0 + 2/2
    ranks = gt_ranks_t2a(sims, np.array([0, 1, 2]))
    np.testing.assert_allclose(ranks, [0.5, 2.0, 1.0])
    m = metrics_from_ranks(ranks)
    assert m["R1"] == 0.0  # a tie at the top is not a hit
    assert m["R5"] == 100.0 and m["MedR"] == 1.0 + 1.0
    assert m["MeanR"] == pytest.approx(1 + (0.5 + 2 + 1) / 3)
    assert m["mAP10"] == pytest.approx(100 * (1 / 1.5 + 1 / 3 + 1 / 2) / 3)
    assert m["geometric_mean_R1-R5-R10"] == 0.0


def test_hand_made_a2t_min_over_captions():
    sims = np.array([[0.9, 0.2],    # caption 0 of clip 0
                     [0.1, 0.8],    # caption 1 of clip 0
                     [0.9, 0.3],    # caption 0 of clip 1
                     [0.5, 0.1]])   # caption 1 of clip 1
    # clip 0 column [.9,.1,.9,.5]: its captions rank 0 + 1/2 (tie with row 2) and 3 -> min 0.5
    # clip 1 column [.2,.8,.3,.1]: its captions rank 1 and 3 -> min 1
    np.testing.assert_allclose(gt_ranks_a2t(sims, clip_major_gt_cols(2, 2)), [0.5, 1.0])


def test_map10_cutoff():
    ranks = np.array([0.0, 9.0, 10.0, 3.5])
    np.testing.assert_allclose(reciprocal_ranks(ranks, cutoff=10), [1, 1 / 10, 0, 1 / 4.5])
    assert metrics_from_ranks(ranks)["mAP10"] == pytest.approx(100 * (1 + 0.1 + 0 + 1 / 4.5) / 4)


def test_tie_averaging_vs_brute_force_positions():
    rng = np.random.default_rng(0)
    sims = np.round(rng.random((40, 9)), 1)
    gt = rng.integers(0, 9, 40)
    expected = []
    for row, g in zip(sims, gt):
        ordered = np.sort(row)[::-1]
        expected.append(np.flatnonzero(ordered == row[g]).mean())  # mean of the tied positions
    np.testing.assert_allclose(gt_ranks_t2a(sims, gt), expected)


def test_against_ir_measures_on_trec_export(tmp_path):
    ir_measures = pytest.importorskip("ir_measures")
    from ir_measures import P, R, RR

    rng = np.random.default_rng(3)
    n, k = 60, 3
    sims = rng.standard_normal((n * k, n)).astype(np.float32)  # continuous: no ties
    gt = clip_major_gt_cols(n, k)
    sims[np.arange(n * k), gt] += 1.5
    qids = [f"q {i}" for i in range(n * k)]
    docs = [f"clip {j}.wav" for j in range(n)]
    write_trec_run(tmp_path / "run.trec", sims, qids, docs, "t", depth=20)
    write_trec_qrels(tmp_path / "qrels.trec", {q: [docs[g]] for q, g in zip(qids, gt)})
    qrels = list(ir_measures.read_trec_qrels(str(tmp_path / "qrels.trec")))
    run = list(ir_measures.read_trec_run(str(tmp_path / "run.trec")))
    oracle = ir_measures.calc_aggregate([RR @ 10, R @ 10, P @ 1], qrels, run)
    ours = t2a_metrics(sims, gt)
    assert ours["mAP10"] == pytest.approx(100 * oracle[RR @ 10], abs=1e-9)
    assert ours["R10"] == pytest.approx(100 * oracle[R @ 10], abs=1e-9)
    assert ours["R1"] == pytest.approx(100 * oracle[P @ 1], abs=1e-9)
    assert 0 < ours["R1"] < 100 and 0 < ours["R10"] < 100  # not a degenerate check


def test_a2t_minus_inf_scores_and_clips_without_captions():
    """-inf scores (clips a TREC run did not retrieve) tie among themselves; a clip no caption belongs to is nan."""
    sims = np.array([[0.5, -np.inf, -np.inf],
                     [-np.inf, -np.inf, 0.2]])
    ranks = gt_ranks_a2t(sims, np.array([1, 1]))  # both captions belong to clip 1; clips 0 and 2 have none
    assert np.isnan(ranks[0]) and np.isnan(ranks[2])
    assert ranks[1] == 0.5  # best score -inf, tied with the other caption's -inf


def _tie_averaged_position(values: np.ndarray, target: float) -> float:
    """Brute-force oracle: mean of the 0-based positions holding ``target`` in the descending sort."""
    return float(np.flatnonzero(np.sort(values)[::-1] == target).mean())


def test_recall_cut_offs_and_median_at_the_boundaries_against_ir_measures():
    """Relevant clips exactly at 0-based ranks 0, 1, 4, 5, 9, 10, 49, 50, 59: R@k counts rank < k (R@5 takes rank 4
    and not 5, R@50 takes 49 and not 50), MedR / MeanR are 1-based."""
    ir_measures = pytest.importorskip("ir_measures")
    from ir_measures import RR, Success

    target = [0, 1, 4, 5, 9, 10, 49, 50, 59]
    n = 60
    sims = np.empty((len(target), n))
    gt = np.empty(len(target), dtype=np.int64)
    for q, r in enumerate(target):
        order = np.random.default_rng(q).permutation(n)  # column order[i] holds the i-th best score
        sims[q, order] = np.linspace(1.0, 0.0, n)
        gt[q] = order[r]
    ranks = gt_ranks_t2a(sims, gt)
    np.testing.assert_array_equal(ranks, target)
    m = metrics_from_ranks(ranks)
    run = {f"q{q}": {f"d{j}": float(s) for j, s in enumerate(row)} for q, row in enumerate(sims)}
    qrels = {f"q{q}": {f"d{g}": 1} for q, g in enumerate(gt)}
    oracle = ir_measures.calc_aggregate([Success @ 1, Success @ 5, Success @ 10, Success @ 50, RR @ 10], qrels, run)
    for k in (1, 5, 10, 50):
        assert m[f"R{k}"] == pytest.approx(100 * oracle[Success @ k], abs=1e-9), k
    assert (m["R1"], m["R5"], m["R10"], m["R50"]) == pytest.approx((100 / 9, 300 / 9, 500 / 9, 700 / 9))
    assert m["mAP10"] == pytest.approx(100 * oracle[RR @ 10], abs=1e-9)
    assert m["MedR"] == 10.0 and m["MeanR"] == pytest.approx(1 + sum(target) / 9)


def test_geometric_mean_of_r1_r5_r10():
    m = metrics_from_ranks(np.array([0.0, 3.0, 7.0, 20.0]))  # R1 = 25, R5 = 50, R10 = 75
    assert (m["R1"], m["R5"], m["R10"]) == (25.0, 50.0, 75.0)
    assert m["geometric_mean_R1-R5-R10"] == pytest.approx((25 * 50 * 75) ** (1 / 3))


def test_nan_ranks_are_left_out_not_counted_as_hits():
    """A clip without caption (a2t rank nan) is not a query: the summary equals that of the other ranks."""
    with_nan = metrics_from_ranks(np.array([np.nan, 0.0, 4.0, np.nan, 12.0]))
    assert with_nan == metrics_from_ranks(np.array([0.0, 4.0, 12.0]))
    assert with_nan["R1"] == pytest.approx(100 / 3) and with_nan["MeanR"] == pytest.approx(1 + 16 / 3)


def test_counts_do_not_overflow_with_more_than_32767_items():
    """The rank counters sum bool bytes in a small integer type: 40000 clips (t2a) or captions (a2t) must not wrap."""
    n = 40000
    t2a = np.zeros((2, n), dtype=np.float32)
    t2a[0] = np.linspace(1, 2, n, dtype=np.float32)   # row 0: its clip 0 is below all others
    np.testing.assert_array_equal(gt_ranks_t2a(t2a, np.array([0, 5])), [n - 1, (n - 1) / 2])
    a2t = np.zeros((n, 2), dtype=np.float32)          # n captions x 2 clips
    a2t[:, 1] = np.arange(n, dtype=np.float32)
    a2t[n - 1, 1] = -1.0                              # clip 1's only caption scores below the 39999 others
    gt = np.zeros(n, dtype=np.int64)
    gt[n - 1] = 1                                     # clip 0: captions 0..n-2, all tied with every caption
    np.testing.assert_array_equal(gt_ranks_a2t(a2t, gt), [(n - 1) / 2, n - 1])


def test_block_boundaries_do_not_shift_the_ground_truth(monkeypatch):
    """With tiny blocks (many row blocks), every row still ranks its own ground truth (brute-force oracle)."""
    import retrieval.metrics as metrics

    monkeypatch.setattr(metrics, "_CACHE_BLOCK_BYTES", 8 * 7 * 3)   # 3 rows per comparison block
    monkeypatch.setattr(metrics, "_BLOCK_BYTES", 5)                 # 5 rows per gather block
    rng = np.random.default_rng(7)
    sims = np.round(rng.random((41, 7)), 2)  # some ties
    gt = rng.integers(0, 7, 41)
    expected = [_tie_averaged_position(row, row[g]) for row, g in zip(sims, gt)]
    np.testing.assert_array_equal(gt_ranks_t2a(sims, gt), expected)
    expected_a2t = []
    for c in range(7):
        own = np.flatnonzero(gt == c)
        expected_a2t.append(min(_tie_averaged_position(sims[:, c], sims[q, c]) for q in own) if own.size else np.nan)
    np.testing.assert_array_equal(gt_ranks_a2t(sims, gt), expected_a2t)
