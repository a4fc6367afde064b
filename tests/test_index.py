"""The audio index: exactly the model's similarity (retrieval/index.py), on disk (retrieval/index_store.py), FAISS
(retrieval/faiss_index.py)."""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from retrieval.index import AudioIndex, Layout, query_vectors
from retrieval.index_store import IndexStore
from utils.errors import UserError


def _random_index(n=300, dims=(16, 24), seed=0, missing=True, renormalise=True):
    rng = np.random.default_rng(seed)
    layout = Layout(("audio", "vggsound"), dims, renormalise)
    emb = rng.standard_normal((n, layout.dim)).astype(np.float32)
    avail = np.ones((n, 2), bool)
    if missing:
        avail[rng.random(n) < 0.15, 0] = False
        avail[rng.random(n) < 0.15, 1] = False
    ids = [f"clip_{i:04d}.wav" for i in range(n)]
    caps = [[f"caption {i} {k}" for k in range(5)] for i in range(n)]
    return AudioIndex(layout, ids, emb, avail, caps)


def _random_queries(q=7, dims=(16, 24), seed=1):
    rng = np.random.default_rng(seed)
    emb = [rng.standard_normal((q, d)).astype(np.float32) for d in dims]
    w = rng.dirichlet([1, 1], size=q).astype(np.float32)
    return emb, w


def _reference(index: AudioIndex, emb, w):
    """The model's formula written out clip by clip."""
    off = index.layout.offsets
    out = np.empty((w.shape[0], len(index)), np.float64)
    for b in range(len(index)):
        wt = w * index.avail[b] if index.layout.renormalise else np.ones_like(w)
        with np.errstate(invalid="ignore"):
            wt = wt / wt.sum(axis=1, keepdims=True) if index.layout.renormalise else wt
        out[:, b] = sum(wt[:, m] * (emb[m] @ index.emb[b, off[m]:off[m + 1]]) for m in range(2))
    return out


@pytest.mark.parametrize("renormalise", [True, False])
def test_scores_follow_the_weight_renormalisation_per_availability_pattern(renormalise):
    index = _random_index(renormalise=renormalise)
    index.avail[3] = False  # a clip with no expert: NaN in the model (0/0) when renormalising
    index = AudioIndex(index.layout, index.clip_ids, index.emb, index.avail, index.captions)
    emb, w = _random_queries()
    got = index.scores(emb, w)
    ref = _reference(index, emb, w)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert np.isnan(got[:, 3]).all() == renormalise
    assert len(index.groups) == (4 if renormalise else 1)
    cols = np.array([5, 3, 0, 299, 17])
    np.testing.assert_allclose(index.scores_at(emb, w, cols), got[:, cols], rtol=1e-6, atol=1e-6, equal_nan=True)


def test_query_vectors_reduce_to_the_plain_concatenation_when_every_expert_is_present():
    layout = Layout(("a", "b"), (2, 3))
    emb, w = [np.ones((1, 2), np.float32), 2 * np.ones((1, 3), np.float32)], np.array([[0.25, 0.75]], np.float32)
    np.testing.assert_allclose(query_vectors(layout, emb, w, np.array([True, True])),
                               [[0.25, 0.25, 1.5, 1.5, 1.5]])
    np.testing.assert_allclose(query_vectors(layout, emb, w, np.array([False, True])), [[0, 0, 2, 2, 2]])


@pytest.mark.parametrize("use_ce", ["pairwise", ""])
def test_index_equals_the_model_similarity_with_missing_experts(tiny_config, use_ce):
    """CE and MoEE, eval mode: the index reproduces trainer.export.compute_sims including clips missing experts."""
    from data.clotho import load_clotho
    from model import build_model
    from model.query import encode_audio, encode_text, layout_of
    from trainer.export import compute_sims

    cfg = copy.deepcopy(tiny_config)
    cfg["arch"]["args"]["use_ce"] = use_ce
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    split = load_clotho(cfg, ["test"])["test"]
    for i, gone in ((0, ["audio"]), (1, ["vggsound"]), (2, ["audio", "vggsound"]), (5, ["audio"])):
        for m in gone:
            split.experts[m][i] = np.nan
            split.ind[m][i] = False
    sims = compute_sims(model, split)
    emb, avail = encode_audio(model, split.experts, split.ind)
    experts, dims, renorm = layout_of(model)
    index = AudioIndex(Layout(tuple(experts), tuple(dims), renorm), split.clip_ids, emb, avail, split.captions)
    n, k = len(split), split.text.shape[1]
    text_emb, w = encode_text(model, split.text.reshape(n * k, *split.text.shape[2:]), split.text_lens.reshape(-1))
    got = index.scores(text_emb, w)
    assert np.isnan(sims[:, 2]).all() and np.isnan(got[:, 2]).all()
    assert np.isfinite(np.delete(sims, 2, axis=1)).all()
    np.testing.assert_allclose(got, sims, rtol=0, atol=2e-6, equal_nan=True)
    assert len(index.groups) == 4


def test_store_roundtrip_append_and_staleness(tmp_path):
    full = _random_index(n=120)
    emb, w = _random_queries()
    store = IndexStore(tmp_path / "run" / "index" / "split-test")
    fp = {"model": {"checkpoint": [1, 2]}, "source": {"files": {"a": [3, 4]}}}
    assert store.status(fp) == "missing"
    first = AudioIndex(full.layout, full.clip_ids[:80], full.emb[:80], full.avail[:80], full.captions[:80])
    store.create(first, fp)
    assert store.status(fp) == "current"
    assert store.status({**fp, "model": {"checkpoint": [1, 5]}}) == "stale: model.checkpoint changed"
    fp2 = {**fp, "source": {"files": {"a": [3, 4], "b": [5, 6]}}}
    assert store.append(full.clip_ids[80:], full.emb[80:], full.avail[80:], full.captions[80:], fp2) == 120
    assert store.status(fp2) == "current" and store.status(fp).startswith("stale: source.files")
    loaded = store.load()
    assert loaded.clip_ids == full.clip_ids and loaded.captions == full.captions
    np.testing.assert_array_equal(loaded.scores(emb, w), full.scores(emb, w))
    with pytest.raises(UserError, match="already in the index"):
        store.append(full.clip_ids[:1], full.emb[:1], full.avail[:1], None, fp2)
    store.create(first, fp)  # replacing is atomic too: no temporary folders left behind
    assert sorted(p.name for p in store.folder.parent.iterdir()) == ["split-test"]
    assert len(store.load()) == 80
    os.remove(store.folder / "shard-00000.emb.npy")
    with pytest.raises(UserError, match="shard-00000.emb.npy: file not found"):
        store.load()


def test_index_rejects_bad_arrays():
    layout = Layout(("a", "b"), (2, 2))
    with pytest.raises(ValueError, match="shape"):
        AudioIndex(layout, ["x"], np.zeros((1, 3)), np.ones((1, 2), bool))
    with pytest.raises(ValueError, match="duplicate"):
        AudioIndex(layout, ["x", "x"], np.zeros((2, 4)), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="non-finite"):
        AudioIndex(layout, ["x"], np.full((1, 4), np.nan), np.ones((1, 2), bool))
    # a missing expert's (NaN) embedding is ignored, as the model ignores it
    idx = AudioIndex(layout, ["x"], np.array([[np.nan, np.nan, 1, 0]]), np.array([[False, True]]))
    assert np.isfinite(idx.emb).all()


# ------------------------------------------------------------------------------------------------ FAISS
def test_faiss_flat_and_full_probe_ivf_give_the_exact_top_k():
    from retrieval.faiss_index import FaissSearcher
    from retrieval.trec import top_k

    index = _random_index(n=400)
    emb, w = _random_queries()
    exact = index.scores(emb, w)
    ref_cols, ref_scores = top_k(np.nan_to_num(exact, nan=-np.inf), 10)
    for kind, opts in (("flat", {}), ("ivf", {"nlist": 8, "nprobe": 8})):
        cols, scores = FaissSearcher(index, kind, **opts).search(emb, w, 10)
        np.testing.assert_array_equal(cols, ref_cols, err_msg=kind)
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    cols, _ = FaissSearcher(index, "hnsw", ef_search=200).search(emb, w, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(cols.tolist(), ref_cols.tolist())])
    assert recall >= 0.95
    with pytest.raises(UserError, match="unknown FAISS index"):
        FaissSearcher(index, "lsh")


def test_hnsw_searches_with_the_measured_default_ef_unless_told_otherwise():
    """The default efSearch is the one docs/SEARCH.md measured (recall@10 >= 0.95 at 1M); the CLI passes it on."""
    import search
    from retrieval.faiss_index import DEFAULT_EF_SEARCH, FaissSearcher

    index = _random_index(n=300)
    assert DEFAULT_EF_SEARCH == 2048
    assert search.build_parser().parse_args(["q"]).ef_search == DEFAULT_EF_SEARCH
    parts = FaissSearcher(index, "hnsw").parts
    assert parts and all(sub.hnsw.efSearch == DEFAULT_EF_SEARCH for *_, sub in parts)
    assert all(sub.hnsw.efSearch == 64 for *_, sub in FaissSearcher(index, "hnsw", ef_search=64).parts)
