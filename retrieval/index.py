"""The audio side of a trained run as a search index: numpy only, no model (docs/SEARCH.md).

CE / MoEE score a caption q against a clip a as (``model.ce.CENet.similarity``)::

    S(q, a) = Σ_m w̃_m(q, a) · <e_m(q), x_m(a)>,   w̃_m(q, a) = w_m(q) · ind_m(a) / Σ_k w_k(q) · ind_k(a)

For every clip with the same expert-availability pattern ``p`` the renormalised weights depend on q only, so
``S(q, a) = <v_p(q), x(a)>`` with ``x(a) = [x_1(a); ...; x_M(a)]`` (the clip's concatenated expert embeddings) and
``v_p(q) = [w_1 p_1 e_1(q); ...; w_M p_M e_M(q)] / Σ_k w_k p_k``. The index keeps the clips grouped by pattern: one
matrix product per pattern, exactly the model's score (to float rounding); one product in all when every clip has
every expert. With ``keep_missing_modalities`` the model uses weight 1 for every expert: ``v(q) = [e_1; ...; e_M]``.
A clip with no expert at all gets NaN, as in the model (0 / 0); searches never return it.

Saving and loading an index folder is ``retrieval.index_store``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

_BLOCK_BYTES = 64 * 2**20  # scores computed in clip blocks of about this many bytes


@dataclass(frozen=True)
class Layout:
    """Expert order (the model's, alphabetical), embedding size per expert, and the weighting rule."""
    experts: tuple[str, ...]
    dims: tuple[int, ...]
    renormalise: bool = True  # False: keep_missing_modalities (every expert weight 1)

    @property
    def dim(self) -> int:
        return int(sum(self.dims))

    @property
    def offsets(self) -> list[int]:
        return [0, *np.cumsum(self.dims).tolist()]

    def to_json(self) -> dict:
        return {"experts": list(self.experts), "dims": list(self.dims), "renormalise": self.renormalise}

    @classmethod
    def from_json(cls, d: dict) -> "Layout":
        return cls(tuple(d["experts"]), tuple(int(x) for x in d["dims"]), bool(d["renormalise"]))


def query_vectors(layout: Layout, text_emb: Sequence[np.ndarray], moe_weights: np.ndarray,
                  pattern: np.ndarray) -> np.ndarray:
    """``(Q, D)`` float32 query vectors ``v_p(q)`` for clips with availability ``pattern`` (M bools).

    ``text_emb[m]`` is ``(Q, dims[m])`` (expert order of ``layout``), ``moe_weights`` ``(Q, M)``. A pattern with no
    expert gives NaN vectors (the model's 0 / 0).
    """
    w = np.asarray(moe_weights, dtype=np.float32)
    q = w.shape[0]
    if layout.renormalise:
        w = w * np.asarray(pattern, dtype=np.float32)[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            w = w / w.sum(axis=1, keepdims=True)
    else:
        w = np.ones_like(w)
    out = np.empty((q, layout.dim), dtype=np.float32)
    off = layout.offsets
    for m, emb in enumerate(text_emb):
        emb = np.asarray(emb, dtype=np.float32)
        if emb.shape != (q, layout.dims[m]):
            raise ValueError(f"text embedding {m} has shape {emb.shape}, expected ({q}, {layout.dims[m]})")
        out[:, off[m]:off[m + 1]] = w[:, m:m + 1] * emb
    return out


class AudioIndex:
    """Clips' concatenated expert embeddings, grouped by availability pattern for exact scoring."""

    def __init__(self, layout: Layout, clip_ids: Sequence[str], emb: np.ndarray, avail: np.ndarray,
                 captions: Sequence[Sequence[str]] | None = None):
        emb = np.asarray(emb, dtype=np.float32)
        avail = np.asarray(avail, dtype=bool)
        n = len(clip_ids)
        if emb.shape != (n, layout.dim):
            raise ValueError(f"embeddings have shape {emb.shape}, expected ({n}, {layout.dim})")
        if avail.shape != (n, len(layout.experts)):
            raise ValueError(f"availability has shape {avail.shape}, expected ({n}, {len(layout.experts)})")
        if captions is not None and len(captions) != n:
            raise ValueError(f"{len(captions)} caption lists for {n} clips")
        if len(set(clip_ids)) != n:
            raise ValueError("duplicate clip ids in the index")
        # a missing expert's embedding never counts (weight 0); zero it so that NaN/garbage cannot leak in
        if layout.renormalise and not avail.all():
            emb = emb.copy()  # never modify the caller's array
            off = layout.offsets
            for m in range(len(layout.experts)):
                emb[~avail[:, m], off[m]:off[m + 1]] = 0.0
        if not np.isfinite(emb).all():
            bad = int(np.flatnonzero(~np.isfinite(emb).all(axis=1))[0])
            raise ValueError(f"clip {clip_ids[bad]!r}: non-finite embedding")
        self.layout = layout
        self.clip_ids = [str(c) for c in clip_ids]
        self.captions = [list(c) for c in captions] if captions is not None else None
        self.avail = avail
        self.emb = emb
        if not layout.renormalise:
            codes = np.zeros(n, dtype=np.int64)  # one group: weights never depend on availability
        else:
            codes = (avail.astype(np.int64) << np.arange(avail.shape[1])).sum(axis=1)
        order = np.argsort(codes, kind="stable")
        self._order = None if np.array_equal(order, np.arange(n)) else order
        self._sorted = emb if self._order is None else emb[order]
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]) if n else np.zeros(0, int)
        ends = np.r_[starts[1:], n].astype(int)
        self.groups = [(avail[order[s]].copy() if layout.renormalise else np.ones(avail.shape[1], bool), int(s), int(e))
                       for s, e in zip(starts, ends)]

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def sorted_embeddings(self) -> np.ndarray:
        """``(N, D)`` embeddings in group order (``groups`` index into it); ``group_cols`` maps back to clips."""
        return self._sorted

    def group_cols(self, start: int, stop: int) -> np.ndarray:
        """Clip columns (insertion order) of sorted rows ``start:stop``."""
        return np.arange(start, stop) if self._order is None else self._order[start:stop]

    def scores(self, text_emb: Sequence[np.ndarray], moe_weights: np.ndarray) -> np.ndarray:
        """``(Q, N)`` float32: the model's similarity of every query to every clip (NaN for expert-less clips)."""
        q = np.asarray(moe_weights).shape[0]
        out = np.empty((q, len(self)), dtype=np.float32)
        step = max(1, _BLOCK_BYTES // max(1, 4 * max(q, self.layout.dim)))
        for pattern, start, stop in self.groups:
            v = query_vectors(self.layout, text_emb, moe_weights, pattern)
            for lo in range(start, stop, step):
                hi = min(lo + step, stop)
                block = v @ self._sorted[lo:hi].T
                if self._order is None:
                    out[:, lo:hi] = block
                else:
                    out[:, self._order[lo:hi]] = block
        return out

    def scores_at(self, text_emb: Sequence[np.ndarray], moe_weights: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``(Q, len(cols))`` exact scores of the given clip columns (re-scoring a candidate set)."""
        cols = np.asarray(cols, dtype=np.int64)
        q = np.asarray(moe_weights).shape[0]
        out = np.full((q, cols.size), np.nan, dtype=np.float32)
        if not cols.size:
            return out
        sub = self.avail[cols]
        codes = (sub.astype(np.int64) << np.arange(sub.shape[1])).sum(axis=1) if self.layout.renormalise \
            else np.zeros(cols.size, np.int64)
        for code in np.unique(codes):
            where = np.flatnonzero(codes == code)
            pattern = sub[where[0]] if self.layout.renormalise else np.ones(sub.shape[1], bool)
            v = query_vectors(self.layout, text_emb, moe_weights, pattern)
            out[:, where] = v @ self.emb[cols[where]].T
        return out
