"""TREC runs and qrels: export for external tools (trec_eval, ir-measures, ranx) and robust reading back.

The ``.npy`` matrix stays the truth for this toolkit's own stages; these files are the interchange format.

Run lines are ``qid Q0 docno rank score tag``: ranks 1-based, scores descending, **ties broken by the lower
column index** (the toolkit's one tie policy for orderings, see docs/FUSION.md). Note that trec_eval and
ir-measures re-sort by score and break ties their own way, so compare with them on tie-free data only.

Ids are written with ``%``, space, tab and newline percent-encoded (CLOTHO clip ids are file names that may
contain spaces, which would break the whitespace-separated format); :func:`decode_id` undoes it.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from retrieval.metrics import _row_block
from utils.errors import UserError
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


def write_trec_qrels(path: str | os.PathLike, qrels: Mapping[str, Sequence[str] | Mapping[str, int]]) -> Path:
    """Write ``qid 0 docno grade`` lines (atomically): ``{qid: [docno, ...]}`` (grade 1) or ``{qid: {docno: grade}}``."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        for qid, docs in qrels.items():
            q = encode_id(str(qid))
            items = docs.items() if isinstance(docs, Mapping) else ((d, 1) for d in docs)
            for doc, grade in items:
                if isinstance(grade, float) and not grade.is_integer():
                    raise ValueError(f"qrels grade must be an integer, got {grade!r} for {qid!r} / {doc!r}")
                fh.write(f"{q} 0 {encode_id(str(doc))} {int(grade)}\n")
    return path


def write_qrels_from_matrix(path: str | os.PathLike, qrels, query_ids: Sequence[str], doc_ids: Sequence[str]) -> Path:
    """Write a :class:`retrieval.qrels.Qrels` (CSR, aligned to ``query_ids`` x ``doc_ids``) as TREC qrels."""
    rows = qrels.rows()
    mapping: dict[str, dict[str, int]] = {}
    for r, c, g in zip(rows.tolist(), qrels.cols.tolist(), qrels.gains.tolist()):
        mapping.setdefault(query_ids[r], {})[doc_ids[c]] = g
    return write_trec_qrels(path, mapping)


@contextlib.contextmanager
def _reading(path: str | os.PathLike) -> Iterator[None]:
    """Unreadable / non-UTF-8 files as a one-line UserError naming the file."""
    try:
        yield
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a TREC file") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None


def _lines(path: str | os.PathLike):
    """``(line_number, fields)`` of the non-blank lines."""
    with _reading(path), open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            fields = line.split()
            if fields:
                yield number, fields


def _read_text(path: str | os.PathLike) -> str:
    """The whole file as text, newlines universal as in :func:`_lines`."""
    with _reading(path), open(path, encoding="utf-8") as fh:
        return fh.read()


def read_trec_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """``{qid: {docno: grade}}`` of a TREC qrels file (``qid iter docno grade``; ids decoded).

    Grades are integers, binary or graded; a negative grade is kept (trec_eval reads it as not relevant).
    Bad lines raise :class:`UserError` naming the file and line.
    """
    qids, docs, grades = read_trec_qrels_arrays(path)
    qrels: dict[str, dict[str, int]] = {}
    for qid, doc, grade in zip(qids, docs, grades):
        qrels.setdefault(qid, {})[doc] = grade
    return qrels


def read_trec_qrels_arrays(path: str | os.PathLike) -> tuple[list[str], list[str], list[int]]:
    """The judgements of a TREC qrels file as parallel lists ``qids``, ``docnos`` (decoded) and ``grades``.

    File order (grouped by query if the file repeats a judgement: a repeat with the same grade is dropped).
    The same validation and errors as :func:`read_trec_qrels`. Fast path: the whole file split at once (a
    CLOTHO test qrels file, 450k lines: ~0.2 s instead of ~0.9 s line by line); any irregular line (field count,
    grade, a judgement given twice) sends the file through the line-by-line reader, which names the line.
    """
    text = _read_text(path)
    if not set(map(len, map(str.split, text.split("\n")))) <= {0, 4}:  # fields per line (0: blank)
        return _read_trec_qrels_by_line(path)
    fields = text.split()
    qids, docs = fields[0::4], fields[2::4]
    try:
        grades = [int(g) for g in fields[3::4]]
    except ValueError:
        return _read_trec_qrels_by_line(path)
    if not qids:
        raise UserError(f"{path}: no judgements (empty qrels file)")
    if "%" in text:
        qids, docs = [decode_id(q) for q in qids], [decode_id(d) for d in docs]
    q_codes, _ = _first_seen_codes(qids)
    d_codes, n_docs = _first_seen_codes(docs)
    pairs = np.sort(q_codes * n_docs + d_codes)  # (np.unique takes ~10x longer here, numpy 2.4)
    if (pairs[1:] == pairs[:-1]).any():
        return _read_trec_qrels_by_line(path)  # repeated judgements: merged, or a conflict named by its line
    return qids, docs, grades


def _first_seen_codes(ids: Sequence[str]) -> tuple[np.ndarray, int]:
    """Integer code of each id (0, 1, ... in order of first appearance) and the number of distinct ids."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(i, len(index)) for i in ids), dtype=np.int64, count=len(ids))
    return codes, len(index)


def _read_trec_qrels_by_line(path: str | os.PathLike) -> tuple[list[str], list[str], list[int]]:
    qrels: dict[str, dict[str, int]] = {}
    for number, fields in _lines(path):
        where = f"{path}:{number}"
        if len(fields) != 4:
            raise UserError(f"{where}: expected 4 fields 'qid 0 docno grade', got {len(fields)}")
        try:
            grade = int(fields[3])
        except ValueError:
            raise UserError(f"{where}: grade {fields[3]!r} is not an integer") from None
        qid, doc = decode_id(fields[0]), decode_id(fields[2])
        docs = qrels.setdefault(qid, {})
        if doc in docs and docs[doc] != grade:
            raise UserError(f"{where}: query {qid!r} judges {doc!r} twice, with grades {docs[doc]} and {grade}")
        docs[doc] = grade
    if not qrels:
        raise UserError(f"{path}: no judgements (empty qrels file)")
    triples = [(q, d, g) for q, docs in qrels.items() for d, g in docs.items()]
    return [t[0] for t in triples], [t[1] for t in triples], [t[2] for t in triples]


def read_trec_run(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """``{qid: {docno: score}}`` of a TREC run file (``qid Q0 docno rank score tag``; ids decoded).

    Bad lines (wrong field count, a non-integer rank, a non-finite score, one document twice for a query)
    raise :class:`UserError` naming the file and line. The rank column is checked but not used: like
    trec_eval, the order comes from the scores.
    """
    run: dict[str, dict[str, float]] = {}
    for number, fields in _lines(path):
        where = f"{path}:{number}"
        if len(fields) != 6:
            raise UserError(f"{where}: expected 6 fields 'qid Q0 docno rank score tag', got {len(fields)}")
        try:
            int(fields[3])
        except ValueError:
            raise UserError(f"{where}: rank {fields[3]!r} is not an integer") from None
        try:
            score = float(fields[4])
        except ValueError:
            raise UserError(f"{where}: score {fields[4]!r} is not a number") from None
        if not np.isfinite(score):
            raise UserError(f"{where}: score {fields[4]!r} is not finite")
        qid, doc = decode_id(fields[0]), decode_id(fields[2])
        docs = run.setdefault(qid, {})
        if doc in docs:
            raise UserError(f"{where}: query {qid!r} lists document {doc!r} twice")
        docs[doc] = score
    if not run:
        raise UserError(f"{path}: no run lines (empty run file)")
    return run


def run_to_matrix(run: Mapping[str, Mapping[str, float]], query_ids: Sequence[str] | None = None,
                  doc_ids: Sequence[str] | None = None, fill: float = -np.inf, where: str = "run"
                  ) -> tuple[np.ndarray, list[str], list[str]]:
    """Dense ``(Q, N)`` float64 scores of a run; documents a query did not retrieve get ``fill``.

    Without ``query_ids`` / ``doc_ids`` the run's own ids are used (queries in file order, documents sorted).
    A run id missing from given id lists is a :class:`UserError` (never silently dropped).
    """
    query_ids = list(run) if query_ids is None else list(query_ids)
    doc_ids = sorted({d for docs in run.values() for d in docs}) if doc_ids is None else list(doc_ids)
    row_of = {q: i for i, q in enumerate(query_ids)}
    col_of = {d: j for j, d in enumerate(doc_ids)}
    sims = np.full((len(query_ids), len(doc_ids)), fill, dtype=np.float64)
    for qid, docs in run.items():
        row = row_of.get(qid)
        if row is None:
            raise UserError(f"{where}: query {qid!r} is not one of the expected queries")
        cols = [col_of.get(d) for d in docs]
        if None in cols:
            raise UserError(f"{where}: query {qid!r} retrieves {list(docs)[cols.index(None)]!r}, which is not a known document")
        sims[row, cols] = list(docs.values())
    return sims, query_ids, doc_ids
