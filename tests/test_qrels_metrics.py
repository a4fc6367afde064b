"""Multi-relevance metrics (retrieval.qrels_metrics) against ir-measures / pytrec_eval, an exhaustive tie-aware
reference, and today's one-relevant metrics (which they must reproduce exactly, ties included)."""
import itertools

import numpy as np
import pytest

from retrieval.metrics import both_directions, clip_major_gt_cols, gt_ranks_a2t, metrics_from_ranks
from retrieval.qrels import Qrels
from retrieval.qrels_metrics import per_query_metrics, qrels_metrics, relevant_positions

ir_measures = pytest.importorskip("ir_measures")
from ir_measures import AP, RR, Success, nDCG  # noqa: E402


def _random_qrels(rng, n_q, n_d, max_rel=5, graded=False):
    rows, cols, gains = [], [], []
    for q in range(n_q):
        k = int(rng.integers(1, max_rel + 1))
        picked = rng.choice(n_d, size=k, replace=False)
        rows += [q] * k
        cols += picked.tolist()
        gains += (rng.integers(1, 4, size=k) if graded else np.ones(k, int)).tolist()
    return Qrels.from_triples(np.array(rows), np.array(cols), np.array(gains, float), n_q, n_d)


def _ir_measures(sims, qrels, measures):
    run = {f"q{i}": {f"d{j}": float(s) for j, s in enumerate(row)} for i, row in enumerate(sims)}
    dense = qrels.to_dense()
    judged = {f"q{i}": {f"d{j}": int(g) for j, g in enumerate(row) if g > 0} for i, row in enumerate(dense)}
    per = {m: np.zeros(len(sims)) for m in measures}
    for res in ir_measures.iter_calc(measures, judged, run):
        per[res.measure][int(res.query_id[1:])] = res.value
    return per


MEASURES = [Success @ 1, Success @ 5, Success @ 10, AP @ 10, AP @ 16, nDCG @ 10, RR]
OURS = {Success @ 1: "R1", Success @ 5: "R5", Success @ 10: "R10", AP @ 10: "mAP10", AP @ 16: "mAP16",
        nDCG @ 10: "nDCG10", RR: "MRR"}


@pytest.mark.parametrize("graded", [False, True])
def test_equals_ir_measures_without_ties(graded):
    rng = np.random.default_rng(0)
    sims = rng.standard_normal((80, 60))
    qrels = _random_qrels(rng, 80, 60, max_rel=20, graded=graded)
    sims += 1.5 * qrels.to_dense() > 0  # some signal so the cut-offs matter
    ours = qrels_metrics(sims, qrels)
    oracle = _ir_measures(sims, qrels, MEASURES)
    for measure, key in OURS.items():
        assert ours[key] == pytest.approx(100 * oracle[measure].mean(), abs=1e-9), key
    assert 0 < ours["R1"] < 100 and 0 < ours["mAP16"] < 100 and ours["n_queries"] == 80


def test_pure_tie_groups_equal_ir_measures():
    """Ties only among relevant or only among non-relevant clips: every tie-breaking gives the same ranks."""
    rng = np.random.default_rng(1)
    n_q, n_d = 60, 40
    qrels = _random_qrels(rng, n_q, n_d, max_rel=8, graded=False)
    rel = qrels.to_dense() > 0
    sims = np.where(rel, 2 * rng.integers(0, 6, (n_q, n_d)) + 1, 2 * rng.integers(0, 12, (n_q, n_d))).astype(float)
    ours = qrels_metrics(sims, qrels)
    oracle = _ir_measures(sims, qrels, MEASURES)
    for measure, key in OURS.items():
        assert ours[key] == pytest.approx(100 * oracle[measure].mean(), abs=1e-9), key
    pos = relevant_positions(sims, qrels)[1]
    assert np.array_equal(pos, np.round(pos))  # integer positions: nothing averaged


def _expected_positions(row_scores, relevant, gains):
    """Exhaustive reference: shuffle every tie group in all possible ways, average the sorted positions of the
    relevant clips (and the gains they carry) slot by slot."""
    values = sorted(set(row_scores.tolist()), reverse=True)
    positions, slot_gains, base = [], [], 0
    for v in values:
        members = [j for j in range(len(row_scores)) if row_scores[j] == v]
        rel_members = [j for j in members if j in relevant]
        if rel_members:
            sums = np.zeros(len(rel_members))
            gsum = np.zeros(len(rel_members))
            perms = list(itertools.permutations(members))
            for perm in perms:
                slots = [p for p, j in enumerate(perm) if j in relevant]
                sums += slots
                gsum += [gains[perm[p]] for p in slots]
            positions += list(base + sums / len(perms))
            slot_gains += list(gsum / len(perms))
        base += len(members)
    return np.array(positions), np.array(slot_gains)


def test_mixed_ties_match_exhaustive_reference_and_are_bracketed_by_ir_measures():
    rng = np.random.default_rng(2)
    n_q, n_d = 30, 9
    qrels = _random_qrels(rng, n_q, n_d, max_rel=4, graded=True)
    sims = rng.integers(0, 4, (n_q, n_d)).astype(float)  # heavy ties, mixed groups
    rows, pos, slot_gains = relevant_positions(sims, qrels)
    dense = qrels.to_dense()
    for q in range(n_q):
        rel = {int(j): dense[q, j] for j in np.flatnonzero(dense[q])}
        exp_pos, exp_gain = _expected_positions(sims[q], rel, rel)
        got = slice(qrels.indptr[q], qrels.indptr[q + 1])
        np.testing.assert_allclose(pos[got], exp_pos, atol=1e-12)
        np.testing.assert_allclose(slot_gains[got], exp_gain, atol=1e-12)
    # per query, ours lies between the most pessimistic and the most optimistic tie-breaking (trec_eval on
    # tie-free runs built by a tiny nudge towards / away from the relevant and higher-graded clips)
    ours = per_query_metrics(sims, qrels)
    nudge = 1e-6 * dense
    optimistic = _ir_measures(sims + nudge, qrels, [AP @ 10, nDCG @ 10, Success @ 5])
    pessimistic = _ir_measures(sims - 1e-6 * (dense > 0) + 1e-7 * (3 - dense) * (dense > 0) - 1e-5 * (dense > 0),
                               qrels, [AP @ 10, nDCG @ 10, Success @ 5])
    for measure, key in [(AP @ 10, "AP@10"), (nDCG @ 10, "nDCG@10")]:
        assert (ours[key] <= optimistic[measure] + 1e-12).all(), key
        assert (ours[key] >= pessimistic[measure] - 1e-12).all(), key
    assert (ours[key] < optimistic[nDCG @ 10] - 1e-9).any()  # ties really matter here


def test_one_relevant_reproduces_todays_metrics_exactly_with_ties():
    rng = np.random.default_rng(3)
    n, k = 50, 5
    sims = np.round(rng.standard_normal((n * k, n)), 1).astype(np.float32)  # many ties
    gt = clip_major_gt_cols(n, k)
    today = both_directions(sims, gt)["t2a"]
    ours = qrels_metrics(sims, Qrels.from_gt_cols(gt, n))
    assert {key: ours[key] for key in today} == today
    assert ours["mAP10"] == today["mAP10"] and ours["n_queries"] == n * k
    # the general (multi-relevance) path gives the same numbers: grade 2 disables the one-relevant fast path
    graded = Qrels.from_triples(np.arange(n * k), gt, np.full(n * k, 2.0), n * k, n)
    general = qrels_metrics(sims, graded)
    assert {key: general[key] for key in today} == today
    assert general["nDCG10"] == pytest.approx(100 * np.mean(np.where(
        np.array(per_query_metrics(sims, graded)["first_rank"]) < 10,
        1 / np.log2(per_query_metrics(sims, graded)["first_rank"] + 2), 0)))


def test_a2t_reads_the_judgements_the_other_way():
    rng = np.random.default_rng(4)
    n, k = 40, 5
    sims = rng.standard_normal((n * k, n)).astype(np.float32)
    gt = clip_major_gt_cols(n, k)
    ours = qrels_metrics(sims, Qrels.from_gt_cols(gt, n), direction="a2t")
    today = metrics_from_ranks(gt_ranks_a2t(sims, gt))
    for key in ("R1", "R5", "R10", "R50", "MedR", "MeanR"):
        assert ours[key] == today[key], key
    assert ours["mean_relevant"] == k and ours["n_queries"] == n
    # mAP over the clip's 5 captions, DCASE denominator 5: below the best-caption reciprocal rank
    assert ours["mAP10"] < ours["MRR"]


def test_queries_without_relevant_clips_are_left_out():
    sims = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [0.1, 0.2, 0.3]])
    qrels = Qrels.from_triples(np.array([0, 0, 2]), np.array([0, 2, 1]), None, 3, 3)
    per = per_query_metrics(sims, qrels)
    assert np.isnan(per["AP@10"][1]) and per["AP@10"][0] == pytest.approx(1.0)
    assert per["AP@10"][2] == pytest.approx(0.5)       # one relevant at position 1 -> precision 1/2, R = 1
    m = qrels_metrics(sims, qrels)
    assert m["n_queries"] == 2 and m["R1"] == 50.0 and m["mAP10"] == pytest.approx(75.0)


def test_dcase_denominator_counts_every_relevant_clip():
    """Two of 20 relevant clips in the top 16: AP@16 = (1/1 + 2/2) / 20, not / min(16, 20)."""
    sims = np.arange(40, 0, -1, dtype=float)[None, :]
    qrels = Qrels.from_triples(np.zeros(20, int), np.r_[0, 1, np.arange(20, 38)], None, 1, 40)
    assert per_query_metrics(sims, qrels)["AP@16"][0] == pytest.approx(2 / 20)


def test_hand_made_mixed_tie_group():
    """[0.9, 0.5, 0.5, 0.5, 0.1], relevant: col 1 (grade 1), col 3 (grade 3), col 4 (grade 1). The tie group
    {1, 2, 3} (t = 3, b = 1) holds m = 2 relevant clips: slots at 1 + j·4/3 − 1 = 4/3 and 8/3, each with the
    group's mean grade 2; col 4 sits at position 4."""
    sims = np.array([[0.9, 0.5, 0.5, 0.5, 0.1]])
    qrels = Qrels.from_triples(np.zeros(3, int), np.array([1, 3, 4]), np.array([1.0, 3.0, 1.0]), 1, 5)
    _, pos, gains = relevant_positions(sims, qrels)
    np.testing.assert_allclose(pos, [4 / 3, 8 / 3, 4])
    np.testing.assert_allclose(gains, [2, 2, 1])
    per = per_query_metrics(sims, qrels)
    assert per["AP@10"][0] == pytest.approx((1 / (7 / 3) + 2 / (11 / 3) + 3 / 5) / 3)
    dcg = 2 / np.log2(4 / 3 + 2) + 2 / np.log2(8 / 3 + 2) + 1 / np.log2(6)
    assert per["nDCG@10"][0] == pytest.approx(dcg / (3 + 1 / np.log2(3) + 1 / np.log2(4)))
    assert per["RR"][0] == pytest.approx(3 / 7)
    m = qrels_metrics(sims, qrels)
    assert m["R1"] == 0.0 and m["R5"] == 100.0 and m["MedR"] == pytest.approx(1 + 4 / 3)
    # trec_eval on the two extreme tie-breakings of this run brackets it
    best = _ir_measures(sims + [[0, 1e-3, 0, 2e-3, 0]], qrels, [AP @ 10, nDCG @ 10])
    worst = _ir_measures(sims + [[0, -2e-3, 0, -1e-3, 0]], qrels, [AP @ 10, nDCG @ 10])
    assert worst[AP @ 10][0] < per["AP@10"][0] < best[AP @ 10][0]
    assert worst[nDCG @ 10][0] < per["nDCG@10"][0] < best[nDCG @ 10][0]


def test_a2t_equals_t2a_on_the_transposed_matrix_with_ties():
    rng = np.random.default_rng(5)
    qrels = _random_qrels(rng, 70, 30, max_rel=6, graded=True)
    sims = rng.integers(0, 5, (70, 30)).astype(np.float32)
    assert qrels_metrics(sims, qrels, "a2t") == qrels_metrics(np.ascontiguousarray(sims.T), qrels.transpose())


def test_sorting_and_comparison_counts_agree(monkeypatch, tmp_path):
    """The two counting strategies (one sort per row / one comparison pass per relevant clip) and the two a2t
    read paths (transposed copy / column reads of a memmap) give identical numbers, -0.0 == 0.0 included."""
    import retrieval.qrels_metrics as qm

    rng = np.random.default_rng(6)
    qrels = _random_qrels(rng, 90, 40, max_rel=30, graded=True)
    sims = np.round(rng.standard_normal((90, 40)), 1).astype(np.float32)
    sims[0, :4] = [0.0, -0.0, 0.0, -0.0]
    results = []
    for sort_above in (0, 10**9):
        monkeypatch.setattr(qm, "SORT_ABOVE", sort_above)
        results.append(qm.per_query_metrics(sims, qrels))
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key])
    np.save(tmp_path / "s.npy", sims)
    mm = np.load(tmp_path / "s.npy", mmap_mode="r")
    assert qrels_metrics(mm, qrels, "a2t") == qrels_metrics(sims, qrels, "a2t")


@pytest.mark.parametrize("graded", [False, True])
def test_a2t_multi_relevance_equals_ir_measures_on_the_transposed_judgements(graded):
    """Independent of Qrels.transpose: the judgements read the other way come from the dense matrix's transpose."""
    rng = np.random.default_rng(8)
    n_q, n_d = 90, 30
    qrels = _random_qrels(rng, n_q, n_d, max_rel=6, graded=graded)
    sims = rng.standard_normal((n_q, n_d))  # continuous: no ties, so trec_eval is exact
    dense_t = qrels.to_dense().T
    np.testing.assert_array_equal(qrels.transpose().to_dense(), dense_t)
    has = dense_t.sum(axis=1) > 0
    judged_t = Qrels.from_triples(*np.nonzero(dense_t), dense_t[np.nonzero(dense_t)], n_d, n_q)
    oracle = _ir_measures(np.ascontiguousarray(sims.T), judged_t, MEASURES)
    ours = qrels_metrics(sims, qrels, "a2t")
    for measure, key in OURS.items():
        assert ours[key] == pytest.approx(100 * oracle[measure][has].mean(), abs=1e-9), key
    assert ours["n_queries"] == has.sum()
    assert ours["mean_relevant"] == pytest.approx((dense_t[has] > 0).sum(axis=1).mean())


def test_mean_relevant_counts_only_queries_with_a_relevant_clip():
    qrels = Qrels.from_triples(np.array([0, 0, 0, 2]), np.array([0, 1, 2, 1]), None, 4, 3)  # rows 1, 3: none
    m = qrels_metrics(np.random.default_rng(0).standard_normal((4, 3)), qrels)
    assert m["n_queries"] == 2 and m["mean_relevant"] == 2.0


def test_slice_rows_keeps_each_rows_judgements():
    qrels = _random_qrels(np.random.default_rng(9), 12, 20, max_rel=4, graded=True)
    np.testing.assert_array_equal(qrels.slice_rows(5, 9).to_dense(), qrels.to_dense()[5:9])


@pytest.mark.parametrize("sort_above", [0, 10**9])
def test_row_blocks_and_entry_chunks_keep_each_entry_on_its_row(monkeypatch, sort_above):
    """Tiny row blocks (3 rows) and entry chunks (8 entries), both counting strategies: still ir-measures' numbers."""
    import retrieval.qrels_metrics as qm

    rng = np.random.default_rng(10)
    sims = rng.standard_normal((40, 30)).astype(np.float32)  # continuous: no ties
    qrels = _random_qrels(rng, 40, 30, max_rel=8, graded=True)
    monkeypatch.setattr(qm, "_BLOCK_BYTES", 30 * 16 * 3)
    monkeypatch.setattr(qm, "SORT_ABOVE", sort_above)
    ours = qm.qrels_metrics(sims, qrels)
    oracle = _ir_measures(sims, qrels, MEASURES)
    for measure, key in OURS.items():
        assert ours[key] == pytest.approx(100 * oracle[measure].mean(), abs=1e-9), key


def test_a2t_column_reads_of_a_memmap_taller_than_one_row_block(tmp_path):
    """The memmap a2t path reads 4096 rows at a time: counts must accumulate over the blocks."""
    rng = np.random.default_rng(11)
    n_captions, n_clips = 5000, 4
    sims = rng.standard_normal((n_captions, n_clips)).astype(np.float32)
    qrels = Qrels.from_gt_cols(rng.integers(0, n_clips, n_captions), n_clips)
    np.save(tmp_path / "s.npy", sims)
    mm = np.load(tmp_path / "s.npy", mmap_mode="r")
    assert qrels_metrics(mm, qrels, "a2t") == qrels_metrics(sims, qrels, "a2t")
    best_caption = metrics_from_ranks(gt_ranks_a2t(sims, qrels.cols))
    assert qrels_metrics(mm, qrels, "a2t")["MeanR"] == pytest.approx(best_caption["MeanR"])
