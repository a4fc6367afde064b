"""Relevance judgements as a sparse matrix (CSR): several relevant clips per query, binary or graded.

A :class:`Qrels` is aligned to a similarity matrix: row ``q`` of the qrels is row ``q`` of ``sims`` and the
column indices are ``sims`` columns. Only positive grades are stored (a grade <= 0 means "judged not relevant",
as in trec_eval). Build one from

* a manifest's one-clip-per-query qrels (:func:`manifest_qrels`; what every stage uses today),
* a TREC qrels file (:func:`load_qrels`: ``qid 0 docno grade``, binary or graded), ids matched to the
  manifest's ``query_ids`` / ``clip_ids``,
* ``gt_cols`` (:meth:`Qrels.from_gt_cols`) or ``{qid: {docno: grade}}`` (:meth:`Qrels.from_mapping`).

The metrics live in :mod:`retrieval.qrels_metrics`; see docs/METRICS.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from utils.errors import UserError


@dataclass(frozen=True)
class Qrels:
    """CSR relevance matrix: row ``q``'s relevant columns are ``cols[indptr[q]:indptr[q + 1]]`` (ascending)."""

    indptr: np.ndarray   # (Q + 1,) int64
    cols: np.ndarray     # (nnz,) int64, ascending within a row, no duplicates
    gains: np.ndarray    # (nnz,) float64 > 0: the relevance grade (1 for binary judgements)
    n_docs: int

    def __post_init__(self):
        if self.indptr.ndim != 1 or self.indptr[0] != 0 or self.indptr[-1] != self.cols.size:
            raise ValueError("Qrels: indptr must start at 0 and end at len(cols)")
        if self.cols.shape != self.gains.shape:
            raise ValueError("Qrels: cols and gains differ in length")
        if self.cols.size and (self.cols.min() < 0 or self.cols.max() >= self.n_docs):
            raise ValueError(f"Qrels: column index out of range [0, {self.n_docs})")
        if self.gains.size and not (self.gains > 0).all():
            raise ValueError("Qrels: stored gains must be positive")

    @property
    def n_queries(self) -> int:
        return self.indptr.size - 1

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_queries, self.n_docs

    def n_relevant(self) -> np.ndarray:
        """Relevant clips per query, ``(Q,)`` int64."""
        return np.diff(self.indptr)

    def rows(self) -> np.ndarray:
        """Row index of every stored entry, ``(nnz,)``."""
        return np.repeat(np.arange(self.n_queries, dtype=np.int64), self.n_relevant())

    def single_relevant_cols(self) -> np.ndarray | None:
        """``gt_cols`` when every query has exactly one relevant clip of grade 1 (the classic protocol), else None."""
        if self.cols.size == self.n_queries and (self.n_relevant() == 1).all() and (self.gains == 1).all():
            return self.cols.copy()
        return None

    def is_binary(self) -> bool:
        return bool((self.gains == 1).all())

    def slice_rows(self, start: int, stop: int) -> "Qrels":
        """Rows ``start:stop`` as their own Qrels (shares the column space)."""
        lo, hi = self.indptr[start], self.indptr[stop]
        return Qrels(self.indptr[start:stop + 1] - lo, self.cols[lo:hi], self.gains[lo:hi], self.n_docs)

    def transpose(self) -> "Qrels":
        """Docs become queries: the relation read the other way (audio->text from text->audio judgements)."""
        rows = self.rows()
        order = np.lexsort((rows, self.cols))
        counts = np.bincount(self.cols, minlength=self.n_docs)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Qrels(indptr, rows[order], self.gains[order], self.n_queries)

    def to_dense(self) -> np.ndarray:
        """``(Q, N)`` float64 gain matrix (small matrices / tests only)."""
        dense = np.zeros(self.shape)
        dense[self.rows(), self.cols] = self.gains
        return dense

    # ------------------------------------------------------------------------------------------------ builders
    @classmethod
    def from_triples(cls, rows: np.ndarray, cols: np.ndarray, gains: np.ndarray | None, n_queries: int,
                     n_docs: int) -> "Qrels":
        """From parallel arrays (any order); entries with gain <= 0 are dropped; duplicates are an error."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        gains = np.ones(rows.size) if gains is None else np.asarray(gains, dtype=np.float64)
        if not (rows.shape == cols.shape == gains.shape):
            raise ValueError("Qrels.from_triples: rows, cols and gains differ in length")
        if rows.size and (rows.min() < 0 or rows.max() >= n_queries):
            raise ValueError(f"Qrels.from_triples: row index out of range [0, {n_queries})")
        if not np.isfinite(gains).all():
            raise ValueError("Qrels.from_triples: non-finite gain")
        keep = gains > 0
        rows, cols, gains = rows[keep], cols[keep], gains[keep]
        order = np.lexsort((cols, rows))
        rows, cols, gains = rows[order], cols[order], gains[order]
        dup = (np.diff(rows) == 0) & (np.diff(cols) == 0)
        if dup.any():
            i = int(np.argmax(dup))
            raise ValueError(f"Qrels.from_triples: query row {rows[i]} judges column {cols[i]} twice")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_queries))]).astype(np.int64)
        return cls(indptr, cols, gains, int(n_docs))

    @classmethod
    def from_gt_cols(cls, gt_cols: np.ndarray, n_docs: int) -> "Qrels":
        """One relevant clip (grade 1) per query row: the classic protocol."""
        gt_cols = np.asarray(gt_cols, dtype=np.int64)
        return cls(np.arange(gt_cols.size + 1, dtype=np.int64), gt_cols.copy(), np.ones(gt_cols.size), int(n_docs))

    @classmethod
    def from_mapping(cls, judgements: Mapping[str, Mapping[str, float] | Sequence[str]], query_ids: Sequence[str],
                     doc_ids: Sequence[str], where: str = "qrels", unknown_queries: str = "error") -> "Qrels":
        """Align ``{qid: {docno: grade}}`` (or ``{qid: [docno, ...]}``, grade 1) to rows / columns.

        A docno that is not a column is always an error (a silent wrong result otherwise). A qid that is not a
        row is an error with ``unknown_queries="error"`` and skipped with ``"ignore"`` (a qrels file that
        covers several splits). Rows the judgements do not mention get no relevant clip.
        """
        qids, docs, grades = [], [], []
        for qid, judged in judgements.items():
            items = judged.items() if isinstance(judged, Mapping) else ((d, 1) for d in judged)
            for doc, grade in items:
                qids.append(qid)
                docs.append(doc)
                grades.append(float(grade))
        return cls.from_id_lists(qids, docs, grades, query_ids, doc_ids, where, unknown_queries)

    @classmethod
    def from_id_lists(cls, qids: Sequence[str], docs: Sequence[str], grades: Sequence[float],
                      query_ids: Sequence[str], doc_ids: Sequence[str], where: str = "qrels",
                      unknown_queries: str = "error") -> "Qrels":
        """Align parallel judgement lists ``(qid, docno, grade)`` to rows / columns (rules of :meth:`from_mapping`;
        each (qid, docno) at most once). One dictionary lookup per judgement, no Python loop per query."""
        if unknown_queries not in ("error", "ignore"):
            raise ValueError(f"unknown_queries must be 'error' or 'ignore', got {unknown_queries!r}")
        row_of = {q: i for i, q in enumerate(query_ids)}
        col_of = {d: j for j, d in enumerate(doc_ids)}
        if len(row_of) != len(query_ids):
            raise UserError(f"{where}: the query ids to align to contain duplicates")
        rows = np.fromiter((row_of.get(q, -1) for q in qids), dtype=np.int64, count=len(qids))
        cols = np.fromiter((col_of.get(d, -1) for d in docs), dtype=np.int64, count=len(docs))
        known = rows >= 0
        if unknown_queries == "error" and not known.all():
            raise UserError(f"{where}: query {qids[int(np.argmin(known))]!r} is not a row of the matrix being "
                            "evaluated")
        bad_col = known & (cols < 0)
        if bad_col.any():
            i = int(np.argmax(bad_col))
            raise UserError(f"{where}: query {qids[i]!r} judges clip {docs[i]!r}, which is not a column")
        gains = np.asarray(grades, dtype=np.float64)
        try:
            return cls.from_triples(rows[known], cols[known], gains[known], len(query_ids), len(doc_ids))
        except ValueError as err:
            raise UserError(f"{where}: {err}") from None


def manifest_qrels(manifest) -> Qrels:
    """The manifest's own qrels (one relevant clip per query today) as a :class:`Qrels`."""
    return Qrels.from_mapping(manifest.qrels, manifest.query_ids, manifest.clip_ids, where="manifest qrels")


def load_qrels(path: str | os.PathLike, manifest=None, query_ids: Sequence[str] | None = None,
               doc_ids: Sequence[str] | None = None, unknown_queries: str = "error") -> Qrels:
    """A TREC qrels file aligned to a manifest's rows and columns (or to explicit id lists)."""
    from retrieval.trec import read_trec_qrels_arrays

    if manifest is not None:
        query_ids, doc_ids = manifest.query_ids, manifest.clip_ids
    if query_ids is None or doc_ids is None:
        raise ValueError("load_qrels needs a manifest or both query_ids and doc_ids")
    return Qrels.from_id_lists(*read_trec_qrels_arrays(path), query_ids, doc_ids, where=str(path),
                               unknown_queries=unknown_queries)
