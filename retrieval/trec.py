"""TREC run / qrels export for external tools (trec_eval, ir-measures, ranx). The ``.npy`` stays the truth.

Run lines are ``qid Q0 docno rank score tag``: ranks 1-based, scores descending, **ties broken by the lower
column index** (the toolkit's one tie policy for orderings, see docs/FUSION.md). Note that trec_eval and
ir-measures re-sort by score and break ties their own way, so compare with them on tie-free data only.

Ids are written with ``%``, space, tab and newline percent-encoded (CLOTHO clip ids are file names that may
contain spaces, which would break the whitespace-separated format); :func:`decode_id` undoes it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from retrieval.metrics import _row_block
from utils.io import atomic_path

_ESCAPES = (("%", "%25"), (" ", "%20"), ("\t", "%09"), ("\n", "%0A"), ("\r", "%0D"))


def encode_id(identifier: str) -> str:
    for raw, escaped in _ESCAPES:
        identifier = identifier.replace(raw, escaped)
    return identifier


def decode_id(identifier: str) -> str:
    for raw, escaped in reversed(_ESCAPES):
        identifier = identifier.replace(escaped, raw)
    return identifier


def top_k_mask(block: np.ndarray, k: int) -> np.ndarray:
    """Boolean ``(R, N)`` mask of the ``k`` highest scores of each row, exactly ``min(k, N)`` per row.

    Ties at the cut-off go to the lower column indices (stable policy). O(N) per row: one partition, no sort.
    """
    block = np.asarray(block)
    n = block.shape[1]
    if k >= n:
        return np.ones(block.shape, dtype=bool)
    if k <= 0:
        return np.zeros(block.shape, dtype=bool)
    kth = -np.partition(-block, k - 1, axis=1)[:, k - 1:k]  # k-th largest value per row
    above = block > kth
    at = block == kth
    room = k - np.count_nonzero(above, axis=1, keepdims=True)
    return above | (at & (np.cumsum(at, axis=1) <= room))


def top_k(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns ``(R, k)`` and scores of each row's top ``k``, in rank order (score desc, then column asc)."""
    block = np.asarray(block)
    k = min(k, block.shape[1])
    cols = np.nonzero(top_k_mask(block, k))[1].reshape(block.shape[0], k)  # ascending column order
    scores = np.take_along_axis(block, cols, axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")  # stable: equal scores keep column order
    return np.take_along_axis(cols, order, axis=1), np.take_along_axis(scores, order, axis=1)


def write_trec_run(path: str | os.PathLike, sims: np.ndarray, query_ids: Sequence[str],
                   doc_ids: Sequence[str], tag: str, depth: int = 100) -> Path:
    """Write the top ``depth`` documents of every query row of ``sims`` as a TREC run (atomically)."""
    if sims.shape != (len(query_ids), len(doc_ids)):
        raise ValueError(f"sims shape {sims.shape} does not match {len(query_ids)} queries x {len(doc_ids)} docs")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    qids = [encode_id(str(q)) for q in query_ids]
    docs = np.array([encode_id(str(d)) for d in doc_ids], dtype=object)
    tag = encode_id(tag)
    path = Path(path)
    step = _row_block(sims.shape[1], per_cell=16)
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        for start in range(0, sims.shape[0], step):
            cols, scores = top_k(np.asarray(sims[start:start + step], dtype=np.float64), depth)
            k = cols.shape[1]
            names = docs[cols]
            ranks = range(1, k + 1)
            for row in range(cols.shape[0]):
                q = qids[start + row]
                fh.writelines(f"{q} Q0 {d} {r} {s:.9g} {tag}\n"
                              for d, r, s in zip(names[row], ranks, scores[row].tolist()))
    return path


def write_trec_qrels(path: str | os.PathLike, qrels: Mapping[str, Sequence[str]]) -> Path:
    """Write ``qid 0 docno 1`` for every relevant document of every query (atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        for qid, docs in qrels.items():
            q = encode_id(str(qid))
            fh.writelines(f"{q} 0 {encode_id(str(d))} 1\n" for d in docs)
    return path


def read_trec_run(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """``{qid: {docno: score}}`` of a TREC run file (ids decoded)."""
    run: dict[str, dict[str, float]] = {}
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) != 6:
                continue
            run.setdefault(decode_id(parts[0]), {})[decode_id(parts[2])] = float(parts[4])
    return run
