"""FAISS back ends for an :class:`retrieval.index.AudioIndex` (package ``faiss-cpu``): exact and approximate top-k.

* ``flat``: ``IndexFlatIP``, exact inner product (same top-k as the numpy product, up to float ties);
* ``ivf``: ``IndexIVFFlat`` (inner product), ``nlist`` k-means cells (default ≈ sqrt(N)), ``nprobe`` cells searched;
* ``hnsw``: ``IndexHNSWFlat`` (inner product), ``M`` links per node, ``efSearch`` candidates per search.

One FAISS index per availability-pattern group of the AudioIndex (each group has its own query vector, see
``retrieval.index``); the groups' top-k lists are merged. Columns are returned in the AudioIndex's clip order.
Small collections are better served by the plain numpy product (``AudioIndex.scores``): see docs/SEARCH.md.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from retrieval.index import AudioIndex, query_vectors
from utils.errors import UserError

KINDS = ("flat", "ivf", "hnsw")
# HNSW candidates per search: 2048 reached recall@10 0.978 at 1M clips on the hard case of
# bench/bench_search.py --like (128: 0.643, 1024: 0.948; docs/SEARCH.md), ~41 ms per query on 2 cores.
DEFAULT_EF_SEARCH = 2048


def _faiss():
    try:
        import faiss
    except ImportError:
        raise UserError("faiss: package faiss-cpu not installed "
                        "(pip install -r requirements/requirements.txt)") from None
    return faiss


def default_nlist(n: int) -> int:
    """About sqrt(N) cells, at least 1, and at least 39 training points per cell (FAISS's minimum advice)."""
    return max(1, min(int(round(math.sqrt(n))), n // 39 or 1))


def default_train_size(n: int, nlist: int) -> int:
    """IVF k-means training vectors: 64 per cell (at least 10,000), at most the whole collection."""
    return min(n, max(64 * nlist, 10000))


def default_nprobe(nlist: int) -> int:
    """Cells an IVF search visits by default: a quarter of them (docs/SEARCH.md has the recall this buys)."""
    return max(1, nlist // 4)


def empty_faiss(kind: str, d: int, *, train: np.ndarray | None = None, nlist: int | None = None, hnsw_m: int = 32,
                ef_construction: int = 64, seed: int = 0, niter: int = 10):
    """A trained, empty FAISS inner-product index of ``kind``; IVF trains its k-means cells on ``train``."""
    faiss = _faiss()
    if kind == "flat":
        return faiss.IndexFlatIP(d)
    if kind == "ivf":
        if train is None or not len(train):
            raise ValueError("an IVF index needs training vectors")
        nlist = nlist or default_nlist(len(train))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.niter = niter
        index.cp.min_points_per_centroid = 1  # small collections: no warning, the cells are simply coarse
        index.train(np.ascontiguousarray(train, dtype=np.float32))
        return index
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        return index
    raise UserError(f"--backend: unknown FAISS index {kind!r} (choose from {', '.join(KINDS)})")


def build_faiss(vectors: np.ndarray, kind: str, *, nlist: int | None = None, train_size: int | None = None,
                seed: int = 0, add_chunk: int = 65536, **opts):
    """A FAISS inner-product index over ``(n, d)`` float32 ``vectors`` (added in chunks: bounded extra memory).

    IVF: ``nlist`` cells (default ≈ sqrt(n)), trained on a seeded sample of ``train_size`` vectors (default
    ``max(64·nlist, 10000)``, at most n).
    """
    n, d = vectors.shape
    train = None
    if kind == "ivf":
        nlist = nlist or default_nlist(n)
        m = min(n, train_size or default_train_size(n, nlist))
        rows = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False)) if m < n else np.arange(n)
        train = vectors[rows]
    index = empty_faiss(kind, d, train=train, nlist=nlist, seed=seed, **opts)
    for start in range(0, n, add_chunk):
        index.add(np.ascontiguousarray(vectors[start:start + add_chunk], dtype=np.float32))
    return index


def set_search_params(index, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
    faiss = _faiss()
    if nprobe is not None and isinstance(index, faiss.IndexIVF):
        index.nprobe = int(nprobe)
    if ef_search is not None and isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = int(ef_search)


class FaissSearcher:
    """Top-k search of an AudioIndex with one FAISS index per availability pattern."""

    def __init__(self, index: AudioIndex, kind: str = "flat", *, nprobe: int = 0, ef_search: int = DEFAULT_EF_SEARCH,
                 **build):
        """``nprobe`` 0: a quarter of each IVF index's cells (see docs/SEARCH.md for the recall it buys)."""
        if kind not in KINDS:
            raise UserError(f"--backend: unknown FAISS index {kind!r} (choose from {', '.join(KINDS)})")
        self.index = index
        self.kind = kind
        self.parts = []
        x = index.sorted_embeddings
        for pattern, start, stop in index.groups:
            if not pattern.any():
                continue  # clips with no expert cannot be scored (NaN in the model): never returned
            sub = build_faiss(x[start:stop], kind, **build)
            probe = nprobe or default_nprobe(getattr(sub, "nlist", 4))
            set_search_params(sub, nprobe=probe, ef_search=ef_search)
            self.parts.append((pattern, start, stop, sub))

    def search(self, text_emb: Sequence[np.ndarray], moe_weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(cols, scores)`` both ``(Q, k)``: best first; ``cols`` are clip columns, -1 (score -inf) past the end."""
        q = np.asarray(moe_weights).shape[0]
        cols_all, scores_all = [], []
        for pattern, start, stop, sub in self.parts:
            v = query_vectors(self.index.layout, text_emb, moe_weights, pattern)
            scores, rows = sub.search(np.ascontiguousarray(v), min(k, stop - start))
            valid = rows >= 0
            cols = np.where(valid, self.index.group_cols(start, stop)[np.where(valid, rows, 0)], -1)
            cols_all.append(cols)
            scores_all.append(np.where(valid, scores, -np.inf).astype(np.float32))
        if not cols_all:
            return np.full((q, k), -1, np.int64), np.full((q, k), -np.inf, np.float32)
        cols = np.concatenate(cols_all, axis=1)
        scores = np.concatenate(scores_all, axis=1)
        order = np.lexsort((cols, -scores), axis=1)[:, :k] if cols.shape[1] > 1 else np.zeros((q, 1), int)
        cols = np.take_along_axis(cols, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        if cols.shape[1] < k:
            pad = k - cols.shape[1]
            cols = np.pad(cols, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return cols, scores
