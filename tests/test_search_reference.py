"""search.answer against a brute-force reference: a plain numpy argsort over the full score matrix (no model).

Synthetic indexes (no training, fast): clips missing one expert, clips with no expert at all (never returned, their
removal shifts every later column), exact integer scores with many ties (rank order: score desc, then clip order),
and the FAISS flat back end with a candidate depth below the collection and below k.
"""
from __future__ import annotations

import numpy as np
import pytest

import search
from retrieval.index import AudioIndex, Layout


def _index(n=240, renormalise=True, integer=False, seed=0):
    rng = np.random.default_rng(seed)
    layout = Layout(("audio", "vggsound"), (6, 10), renormalise)
    emb = (rng.integers(-2, 3, (n, layout.dim)) if integer else rng.standard_normal((n, layout.dim)))
    avail = np.ones((n, 2), bool)
    if renormalise:
        avail[rng.random(n) < 0.2, 0] = False
        avail[rng.random(n) < 0.2, 1] = False
        avail[[0, 5, 6, 77, n - 1]] = False  # no expert: NaN in the model, never returned
    ids = [f"clip_{i:04d}.wav" for i in range(n)]
    caps = [[f"caption {i}"] for i in range(n)]
    return AudioIndex(layout, ids, emb.astype(np.float32), avail, caps)


def _queries(p, seed=1, integer=False):
    rng = np.random.default_rng(seed)
    if integer:
        return [rng.integers(-2, 3, (p, d)).astype(np.float32) for d in (6, 10)], np.full((p, 2), 0.5, np.float32)
    return [rng.standard_normal((p, d)).astype(np.float32) for d in (6, 10)], \
        rng.dirichlet([1, 1], size=p).astype(np.float32)


def _model_scores(index, emb, w):
    """(P, N) float64: the model's formula written out clip by clip (NaN for a clip with no expert)."""
    off = index.layout.offsets
    out = np.empty((w.shape[0], len(index)))
    for b in range(len(index)):
        wt = (w * index.avail[b]).astype(np.float64) if index.layout.renormalise else np.ones(w.shape)
        with np.errstate(invalid="ignore"):
            wt = wt / wt.sum(axis=1, keepdims=True) if index.layout.renormalise else wt
        out[:, b] = sum(wt[:, m] * (emb[m].astype(np.float64) @ index.emb[b, off[m]:off[m + 1]]) for m in range(2))
    return out


def _brute_force(index, emb, w, k):
    """(columns, fused scores) of the reference top k: CombSum, NaN clips out, score desc then column asc."""
    s = _model_scores(index, emb, w)
    fused = s.sum(axis=0)
    cols = np.flatnonzero(~np.isnan(fused))
    order = cols[np.lexsort((cols, -fused[cols]))][:k]
    return order, fused[order], s


def _check(res, index, emb, w, k):
    ref_cols, ref_scores, s = _brute_force(index, emb, w, k)
    got = res["results"]
    assert [r["rank"] for r in got] == list(range(1, len(ref_cols) + 1))
    assert [r["clip_id"] for r in got] == [index.clip_ids[c] for c in ref_cols]
    np.testing.assert_allclose([r["score"] for r in got], ref_scores, rtol=0, atol=1e-5)
    np.testing.assert_allclose([r["phrasing_scores"] for r in got], s[:, ref_cols].T.reshape(len(got), -1),
                               rtol=0, atol=1e-5)
    assert [r["captions"] for r in got] == [index.captions[c] for c in ref_cols]


@pytest.mark.parametrize("p", [1, 3])
@pytest.mark.parametrize("k", [1, 7, 240])
def test_numpy_answer_is_the_brute_force_top_k_with_expert_less_clips_left_out(p, k):
    index = _index()
    emb, w = _queries(p)
    res = search.answer(index, emb, w, [f"q{i}" for i in range(p)], k=k)
    assert res["backend"] == "numpy"
    _check(res, index, emb, w, k)
    none = int((~index.avail.any(axis=1)).sum())  # clips with no expert: never returned
    assert none >= 5 and len(res["results"]) == min(k, len(index) - none)
    assert f"{none} clips have no expert and cannot be scored" in res["notes"]


@pytest.mark.parametrize("p", [1, 3])
def test_exact_ties_rank_by_clip_order(p):
    """Integer embeddings, weight 1 (keep_missing_modalities): exact float scores, many ties at every cut-off."""
    index = _index(renormalise=False, integer=True)
    emb, w = _queries(p, integer=True)
    fused = _model_scores(index, emb, w).sum(axis=0)
    assert len(np.unique(fused)) < len(index) // 3  # the test is about ties: make sure there are many
    for k in (1, 10, 50, 240):
        res = search.answer(index, emb, w, [f"q{i}" for i in range(p)], k=k)
        _check(res, index, emb, w, k)


@pytest.mark.parametrize("depth,k", [(1, 1), (5, 5), (5, 20), (20, 5), (64, 64), (240, 240)])
def test_faiss_flat_with_a_shallow_depth_is_the_exact_top_k_of_one_phrasing(depth, k):
    """One phrasing: the exact top max(depth, k) candidates hold the exact top k, re-scored with the right clip ids."""
    pytest.importorskip("faiss")
    index = _index()
    emb, w = _queries(1)
    res = search.answer(index, emb, w, ["q"], k=k, backend="flat", depth=depth)
    assert res["backend"] == "faiss-flat"
    _check(res, index, emb, w, k)
    assert len(res["results"]) == min(k, int(index.avail.any(axis=1).sum()))


def test_json_and_trec_outputs_carry_the_brute_force_ranking(capsys):
    index = _index()
    emb, w = _queries(2)
    res = search.answer(index, emb, w, ["q1", "q2"], k=12)
    ref_cols, ref_scores, _ = _brute_force(index, emb, w, 12)
    lines = [ln.split() for ln in search.trec_lines(res, "need 1").splitlines()]
    assert [ln[2] for ln in lines] == [index.clip_ids[c] for c in ref_cols]
    assert [int(ln[3]) for ln in lines] == list(range(1, 13))
    assert all(ln[:2] == ["need%201", "Q0"] and ln[5] == "search-combsum" for ln in lines)
    np.testing.assert_allclose([float(ln[4]) for ln in lines], ref_scores, rtol=1e-6, atol=1e-6)
    text = search.text_report({**res, "run": "R", "split": "test", "audio": None})
    ranked = [ln.split() for ln in text.splitlines()[1:] if not ln.startswith(("       - ", "note:"))]
    assert [ln[2] for ln in ranked] == [index.clip_ids[c] for c in ref_cols]
    assert [int(ln[0]) for ln in ranked] == list(range(1, 13))


@pytest.mark.parametrize("block_bytes", [1, 4 * 16 * 7, 4 * 16 * 50])
def test_scores_in_small_clip_blocks_are_the_full_matrix(monkeypatch, block_bytes):
    """Block boundaries inside and across availability groups: every column once, with its own group's weights."""
    import retrieval.index as ri

    index = _index(n=97)
    emb, w = _queries(3)
    ref = _model_scores(index, emb, w)
    monkeypatch.setattr(ri, "_BLOCK_BYTES", block_bytes)  # 1 clip, 7 clips, 50 clips per block (D = 16 > Q)
    np.testing.assert_allclose(index.scores(emb, w), ref, rtol=0, atol=1e-5, equal_nan=True)
    cols = np.array([96, 3, 0, 50, 49, 5, 1])
    np.testing.assert_allclose(index.scores_at(emb, w, cols), ref[:, cols], rtol=0, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("k", [1, 10, 50])
def test_faiss_flat_breaks_exact_ties_at_the_depth_cut_off_by_clip_order(k):
    """Integer scores tied across availability groups: the candidates cut at depth = k are those numpy ranks first."""
    pytest.importorskip("faiss")
    index = _index(renormalise=True, integer=True)
    emb, w = _queries(1, integer=True)
    fused = _model_scores(index, emb, w)[0]
    assert len(np.unique(fused[~np.isnan(fused)])) < len(index) // 3
    res = search.answer(index, emb, w, ["q"], k=k, backend="flat", depth=k)
    _check(res, index, emb, w, k)


def test_auto_back_end_switches_to_faiss_ivf_from_the_threshold_on():
    """--faiss-threshold N: "clips from which --backend auto switches to FAISS IVF" (N clips: IVF; N + 1: numpy)."""
    pytest.importorskip("faiss")
    index = _index(n=120)
    emb, w = _queries(1)
    assert search.answer(index, emb, w, ["q"], k=5, faiss_threshold=121)["backend"] == "numpy"
    res = search.answer(index, emb, w, ["q"], k=5, faiss_threshold=120, nprobe=64, depth=120)
    assert res["backend"] == "faiss-ivf"
    _check(res, index, emb, w, 5)


def test_a_one_clip_index_answers():
    index = AudioIndex(Layout(("audio", "vggsound"), (6, 10)), ["only.wav"], np.ones((1, 16), np.float32),
                       np.ones((1, 2), bool), [["the only clip"]])
    emb, w = _queries(2)
    res = search.answer(index, emb, w, ["q1", "q2"], k=10)
    _check(res, index, emb, w, 10)
    assert [r["clip_id"] for r in res["results"]] == ["only.wav"]
