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
