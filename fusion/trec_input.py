"""TREC run + qrels files as a similarity matrix with a manifest, so fusion.py and qpp.py can read other tools' runs.

* The **qrels** (``qid iter docno rel``; ``rel > 0`` = relevant) define the queries and the collection: every query
  needs exactly one relevant clip (the toolkit's one-relevant metrics), the clips are the relevant clips in order of
  first appearance, and each clip must have the same number K of queries (its captions). Queries are ordered
  clip-major (a clip's queries in file order), which is the toolkit's own order when the files came from it.
* A **run** (``qid Q0 docno rank score tag``) becomes a dense ``(Q, N)`` float32 matrix in that order. A clip the
  run did not retrieve for a query gets a score just below the query's lowest retrieved score (all unretrieved
  clips tie there), so a relevant clip outside a depth-d list ranks, tie-averaged, in the middle of the
  unretrieved ones. With a full-depth run (every clip scored) the matrix is exact (``%.9g`` holds a float32).
* Every query of the qrels must be in the run, and the run may not name a query or clip the qrels do not know.

The readers here are deliberately small; ``retrieval.trec`` owns the formats (``read_trec_run`` is used as is).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from retrieval.sims_io import SimsManifest, validate
from retrieval.trec import read_trec_qrels, read_trec_run
from utils.errors import UserError


def manifest_from_qrels(path: str | os.PathLike, split: str) -> SimsManifest:
    """The manifest of a TREC qrels file (see the module docstring for the rules)."""
    qrels = read_trec_qrels(path)  # the one TREC qrels reader (bad lines: one error naming file and line)
    clip_of: dict[str, str] = {}
    for qid, docs in qrels.items():
        relevant = [d for d, rel in docs.items() if rel > 0]
        if len(relevant) != 1:
            raise UserError(f"{path}: query {qid!r} has {len(relevant)} relevant clips; exactly one per query is "
                            "supported here")
        clip_of[qid] = relevant[0]
    clips = list(dict.fromkeys(clip_of.values()))
    by_clip: dict[str, list[str]] = {c: [] for c in clips}
    for qid, clip in clip_of.items():
        by_clip[clip].append(qid)
    counts = {c: len(q) for c, q in by_clip.items()}
    k = counts[clips[0]]
    odd = next((c for c in clips if counts[c] != k), None)
    if odd is not None:
        raise UserError(f"{path}: clip {odd!r} has {counts[odd]} queries, clip {clips[0]!r} has {k}; every clip "
                        "needs the same number of caption queries")
    query_ids = [q for c in clips for q in by_clip[c]]
    return SimsManifest(split=split, captions_per_clip=k, clip_ids=clips, query_ids=query_ids,
                        qrels={q: [clip_of[q]] for q in query_ids}, captions=[],
                        source={"qrels": str(path)})


def sims_from_trec_run(path: str | os.PathLike, manifest: SimsManifest) -> np.ndarray:
    """Dense ``(Q, N)`` float32 matrix of a TREC run in the manifest's row and column order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: run file not found")
    try:
        run = read_trec_run(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a TREC run ({err})") from None
    if not run:
        raise UserError(f"{path}: no run lines ('qid Q0 docno rank score tag')")
    row_of = {q: i for i, q in enumerate(manifest.query_ids)}
    col_of = {c: j for j, c in enumerate(manifest.clip_ids)}
    extra = next((q for q in run if q not in row_of), None)
    if extra is not None:
        raise UserError(f"{path}: query {extra!r} is not in the qrels / manifest ({len(row_of)} queries)")
    missing = next((q for q in manifest.query_ids if q not in run), None)
    if missing is not None:
        raise UserError(f"{path}: no line for query {missing!r} (every query of the qrels needs a ranked list)")
    rows, cols, scores = [], [], []
    for qid, docs in run.items():
        for doc, score in docs.items():
            j = col_of.get(doc)
            if j is None:
                raise UserError(f"{path}: query {qid!r} retrieves {doc!r}, which is not a clip of the qrels / manifest")
            rows.append(row_of[qid])
            cols.append(j)
            scores.append(score)
    rows_a, cols_a = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    vals = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(vals)):
        bad = int(np.flatnonzero(~np.isfinite(vals))[0])
        raise UserError(f"{path}: non-finite score for query {manifest.query_ids[rows_a[bad]]!r}")
    n_q, n_c = len(manifest.query_ids), len(manifest.clip_ids)
    low = np.full(n_q, np.inf)
    high = np.full(n_q, -np.inf)
    np.minimum.at(low, rows_a, vals)
    np.maximum.at(high, rows_a, vals)
    depth = np.bincount(rows_a, minlength=n_q)
    # below the lowest retrieved score by one mean gap (or a tiny step for a constant list); float32-distinct
    step = np.where(high > low, (high - low) / np.maximum(depth - 1, 1), np.maximum(np.abs(low), 1.0) * 1e-3)
    fill = np.minimum((low - step).astype(np.float32), np.nextafter(low.astype(np.float32), np.float32(-np.inf)))
    sims = np.repeat(fill[:, None], n_c, axis=1)
    sims[rows_a, cols_a] = vals.astype(np.float32)
    validate(sims, manifest, str(path))  # the checks every matrix gets (e.g. at least 2 clips)
    return sims


TREC_SUFFIXES = (".trec", ".run", ".txt", ".tsv")


def load_trec_pair(run: str | os.PathLike, qrels: str | os.PathLike | None, split: str
                   ) -> tuple[np.ndarray, SimsManifest]:
    """``(sims, manifest)`` of a TREC run and its qrels (``fusion.py --sims RUN.trec --qrels QRELS``)."""
    if qrels is None:
        raise UserError(f"{run}: a TREC run needs --qrels FILE (the queries, their relevant clips, the collection)")
    manifest = manifest_from_qrels(qrels, split)
    manifest.source = {"trec_run": str(run), "qrels": str(qrels)}
    return sims_from_trec_run(run, manifest), manifest


def is_trec_file(path: str | os.PathLike) -> bool:
    """A path names a TREC run when it is a file that is not a ``.npy`` matrix (e.g. ``.trec``, ``.run``, ``.txt``)."""
    p = Path(path)
    return p.is_file() and p.suffix != ".npy"
