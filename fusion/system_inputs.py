"""The inputs of a fusion of systems: several runs of one split, loaded and checked to be comparable.

A system is a run folder (``<run>/sims/<split>.npy`` and, for learning weights, ``<run>/sims/val.npy``), a matrix
``.npy`` with its manifest, or a TREC run file (with ``--qrels``, or laid onto the manifest of a matrix system).
Fusing rows of different queries would be silently wrong, so every system must have **the same manifest**: same
split, same clip ids in the same column order, same query ids in the same row order, same qrels, same K, and the
same caption texts where both know them. A shape match is not enough; the first difference is named (exit 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fusion.trec_input import is_trec_file, manifest_from_qrels, sims_from_trec_run
from retrieval.sims_io import SimsManifest, load_sims, same_matrix
from utils.errors import UserError

SAME_HINT = "systems must be runs of the same split with the same queries and clips in the same order"


@dataclass
class SplitData:
    sims: np.ndarray
    manifest: SimsManifest
    where: str  # the file the matrix came from (error messages, provenance)


@dataclass
class System:
    name: str
    source: str
    test: SplitData
    val: SplitData | None


def load_systems(runs: Sequence[str], split: str, *, val_runs: Sequence[str] | None = None, qrels: str | None = None,
                 val_qrels: str | None = None, names: Sequence[str] | None = None) -> list[System]:
    """Load and cross-check every system (test split = ``split``; val from the run folders or ``val_runs``)."""
    if len(runs) < 2:
        raise UserError(f"--runs needs at least 2 systems to fuse, got {len(runs)}")
    if val_runs is not None and len(val_runs) != len(runs):
        raise UserError(f"--val-runs lists {len(val_runs)} files for {len(runs)} --runs (one per system, same order)")
    resolved = [str(Path(r).resolve()) for r in runs]
    dup = next((r for i, r in enumerate(resolved) if r in resolved[:i]), None)
    if dup is not None:
        raise UserError(f"--runs: {dup} is given twice (a system fused with itself only reweights it)")
    names = list(names) if names else _default_names(runs)
    if len(names) != len(runs) or len(set(names)) != len(names):
        raise UserError(f"--names: need {len(runs)} distinct names, got {names}")
    test = _load_split_of_all(runs, split, qrels, "--qrels")
    if val_runs is not None:
        val = _load_split_of_all(val_runs, "val", val_qrels, "--val-qrels")
    elif split == "val":  # the evaluated split cannot also be the one the weights are learned on
        val = [None] * len(runs)
    else:
        val = [_val_of(r) for r in runs]
        if any(v is None for v in val):
            val = [None] * len(runs)
    check_same(test)
    _check_distinct(runs, test)
    if val[0] is not None:
        check_same(val)
        if val[0].manifest.split == test[0].manifest.split:
            raise UserError(f"{val[0].where}: the weights' split is {val[0].manifest.split!r}, the same as the "
                            "evaluated split; learn weights on val, evaluate on test")
    for t, v in zip(test, val):
        if v is not None:
            _check_same_run(t, v)
    return [System(n, str(r), t, v) for n, r, t, v in zip(names, runs, test, val)]


def _check_distinct(runs: Sequence[str], test: Sequence[SplitData]) -> None:
    """Two systems with equal matrices are one system given twice (a copied run folder or file): fusing them only
    reweights it, and their comparison is an empty one. The values are compared, so any copy is caught."""
    for j in range(1, len(test)):
        for i in range(j):
            if same_matrix(test[i].sims, test[j].sims):
                raise UserError(f"--runs: {runs[j]} holds the same similarity matrix as {runs[i]} ({test[j].where} "
                                f"equals {test[i].where}): one system given twice (a copy?); a system fused with "
                                "itself only reweights it")


def _check_same_run(test: SplitData, val: SplitData) -> None:
    """A system's val and test matrices must come from the same trained model (where the manifests say which)."""
    for key in ("run", "config_hash", "seed", "checkpoint"):
        a, b = test.manifest.source.get(key), val.manifest.source.get(key)
        if a is not None and b is not None and a != b:
            raise UserError(f"{val.where}: source {key} {b!r} differs from {test.where}'s {a!r}: a system's val and "
                            "test runs must come from the same model (check the order of --val-runs)")


def _default_names(runs: Sequence[str]) -> list[str]:
    """Experiment name for a run folder (``<experiment>/<run-id>`` when two runs share it), else the file stem."""
    paths = [Path(r) for r in runs]
    short = [p.parent.name if p.is_dir() else p.stem for p in paths]
    return [s if short.count(s) == 1 else (f"{s}/{p.name}" if p.is_dir() else str(p)) for s, p in zip(short, paths)]


def _load_split_of_all(paths: Sequence[str], split: str, qrels: str | None, flag: str) -> list[SplitData]:
    """Matrix systems first; TREC systems are laid onto the qrels' manifest, else onto the first matrix's."""
    data: list[SplitData | None] = [None] * len(paths)
    for i, p in enumerate(paths):
        if not is_trec_file(p):
            data[i] = _load_matrix(p, split)
    trec = [i for i, p in enumerate(paths) if is_trec_file(p)]
    if trec:
        if qrels is not None:
            reference = manifest_from_qrels(qrels, split)
        elif any(d is not None for d in data):
            reference = next(d for d in data if d is not None).manifest
        else:
            raise UserError(f"{paths[trec[0]]}: a TREC run needs {flag} FILE (the queries, their relevant clips and "
                            "the collection)")
        for i in trec:
            data[i] = SplitData(sims_from_trec_run(paths[i], reference), reference, str(paths[i]))
    elif qrels is not None:
        raise UserError(f"{flag} applies to TREC runs only (a matrix's manifest holds its qrels)")
    return data  # type: ignore[return-value]


def _load_matrix(path: str, split: str) -> SplitData:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such run folder or file")
    sims, manifest = load_sims(p, split)
    where = str(p / "sims" / f"{split}.npy") if p.is_dir() else str(p)
    if p.is_dir() and manifest.split != split:
        raise UserError(f"{where}: manifest says split {manifest.split!r}, expected {split!r}")
    return SplitData(sims, manifest, where)


def _val_of(run: str) -> SplitData | None:
    p = Path(run)
    if p.is_dir() and (p / "sims" / "val.npy").is_file():
        return _load_matrix(run, "val")
    return None


def check_same(data: Sequence[SplitData]) -> None:
    """Every manifest equals the first one (see the module docstring); ``UserError`` names the first difference."""
    ref = data[0]
    a = ref.manifest
    for other in data[1:]:
        b = other.manifest
        problem = None
        if a.split != b.split:
            problem = f"split {b.split!r} differs from {a.split!r}"
        elif a.captions_per_clip != b.captions_per_clip:
            problem = f"captions_per_clip {b.captions_per_clip} differs from {a.captions_per_clip}"
        else:
            for what, x, y in (("clip ids (columns)", a.clip_ids, b.clip_ids), ("query ids (rows)", a.query_ids, b.query_ids),
                               ("captions", a.captions if b.captions else [], b.captions if a.captions else [])):
                problem = _first_difference(what, x, y)
                if problem:
                    break
            if problem is None:
                qid = next((q for q in a.query_ids if a.qrels.get(q) != b.qrels.get(q)), None)
                if qid is not None:
                    problem = f"qrels of query {qid!r} are {b.qrels.get(qid)} instead of {a.qrels.get(qid)}"
        if problem:
            raise UserError(f"{other.where}: {problem} in {ref.where}; {SAME_HINT}")


def _first_difference(what: str, x: Sequence[str], y: Sequence[str]) -> str | None:
    if list(x) == list(y):
        return None
    if len(x) != len(y):
        return f"{len(y)} {what} instead of {len(x)}"
    i = next(i for i, (u, v) in enumerate(zip(x, y)) if u != v)
    return f"{what} differ at position {i}: {y[i]!r} instead of {x[i]!r}"
