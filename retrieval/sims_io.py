"""Similarity matrices on disk: ``<name>.npy`` + ``<name>.json`` manifest (docs/FORMATS.md).

The manifest says what the rows and columns are, so no stage ever infers ground truth from a shape:

``{"split", "captions_per_clip", "clip_ids": [column order], "query_ids": [row order],
   "qrels": {query_id: [clip_id]}, "captions": [row-order texts], "source": {...}}``
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from retrieval.metrics import _row_block
from utils.errors import UserError
from utils.io import read_json, save_npy, write_json
from utils.outputs import RECORD


@dataclass
class SimsManifest:
    split: str
    captions_per_clip: int
    clip_ids: list[str]
    query_ids: list[str]
    qrels: dict[str, list[str]]
    captions: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)

    def gt_cols(self) -> np.ndarray:
        """Column of the relevant clip of every query row (exactly one per query)."""
        col_of = {clip: j for j, clip in enumerate(self.clip_ids)}
        cols = np.empty(len(self.query_ids), dtype=np.int64)
        for row, qid in enumerate(self.query_ids):
            cols[row] = col_of[self.qrels[qid][0]]
        return cols

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def query_id(clip_id: str, caption_index: int) -> str:
    return f"{clip_id}#{caption_index}"


def build_manifest(
    split: str,
    clip_ids: Sequence[str],
    captions: Sequence[Sequence[str]] | None = None,
    source: dict[str, Any] | None = None,
    captions_per_clip: int = 5,
) -> SimsManifest:
    """Manifest of a clip-major ``(K·N, N)`` matrix: row ``i·K + k`` is caption ``k`` of clip ``i``."""
    clip_ids = [str(c) for c in clip_ids]
    qids = [query_id(c, k) for c in clip_ids for k in range(captions_per_clip)]
    flat_captions = [str(t) for caps in captions for t in caps[:captions_per_clip]] if captions is not None else []
    return SimsManifest(
        split=split,
        captions_per_clip=captions_per_clip,
        clip_ids=clip_ids,
        query_ids=qids,
        qrels={q: [c] for q, c in zip(qids, np.repeat(clip_ids, captions_per_clip).tolist())},
        captions=flat_captions,
        source=dict(source or {}),
    )


def fused_manifest(base: SimsManifest, method: str, extra_source: dict[str, Any] | None = None) -> SimsManifest:
    """Manifest of an ``(N, N)`` fused matrix: query ``i`` is the information need of clip ``i``."""
    source = {**base.source, "fused_from": base.split, "method": method, **(extra_source or {})}
    return SimsManifest(
        split=base.split,
        captions_per_clip=1,
        clip_ids=list(base.clip_ids),
        query_ids=list(base.clip_ids),
        qrels={c: [c] for c in base.clip_ids},
        captions=[],
        source=source,
    )


def save_sims(directory: str | os.PathLike, name: str, sims: np.ndarray, manifest: SimsManifest) -> Path:
    """Write ``<directory>/<name>.npy`` (float32) and its manifest; returns the ``.npy`` path."""
    directory = Path(directory)
    if sims.shape != (len(manifest.query_ids), len(manifest.clip_ids)):
        raise ValueError(f"sims shape {sims.shape} does not match manifest "
                         f"({len(manifest.query_ids)} queries x {len(manifest.clip_ids)} clips)")
    npy = directory / f"{name}.npy"
    save_npy(npy, np.ascontiguousarray(sims, dtype=np.float32))
    write_json(directory / f"{name}.json", manifest.to_json())
    return npy


def resolve_sims_path(path: str | os.PathLike, split: str = "test") -> Path:
    """A run folder means ``<run>/sims/<split>.npy``; a file path is taken as is."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "sims" / f"{split}.npy"
        if not candidate.is_file():
            raise UserError(f"{path}: run folder has no sims/{split}.npy (was the split dumped? see trainer.dump_splits)")
        return candidate
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    return path


def load_sims(path: str | os.PathLike, split: str = "test", mmap: bool = True) -> tuple[np.ndarray, SimsManifest]:
    """Load a matrix and its manifest and check that they agree; ``UserError`` names what is wrong."""
    from utils.outputs import recover, require_complete_run, verify_recorded_file
    if not Path(path).exists():
        recover(Path(path).parent)  # its output set's writer was killed mid-swap: the complete old set comes back
    if Path(path).is_dir():  # a run folder: finished and recorded, then this split's files hashed once
        require_complete_run(path)
        npy = resolve_sims_path(path, split)
        require_complete_run(path, [f"sims/{split}.npy", f"sims/{split}.json"])
    else:
        npy = resolve_sims_path(path, split)
        run = enclosing_run(npy)
        if run is not None:  # RUN/sims/<split>.npy named directly: the same checks as the run folder itself
            require_complete_run(run, [f"sims/{npy.name}", f"sims/{npy.with_suffix('.json').name}"])
            return _read_checked(run, npy, npy.stem, mmap)
        for f in (npy, npy.with_suffix(".json")):  # a file of a completed output set must still be the recorded one
            verify_recorded_file(f, rerun="the stage that wrote it")
    return _read_checked(Path(path), npy, split, mmap)


RUN_FOLDER_FILES = ("config.json", "run.json", RECORD)  # train.py writes the first two when it starts


def enclosing_run(npy: Path) -> Path | None:
    """``RUN`` when ``npy`` is ``RUN/sims/<name>.npy`` of a training run folder, else None.

    Such a file gets its run's completion checks: without them the matrix of a killed or hand-edited run, which
    ``--run RUN`` refuses, was read as a file of the user's own."""
    sims_dir = npy.parent
    if sims_dir.name == "sims" and any((sims_dir.parent / f).is_file() for f in RUN_FOLDER_FILES):
        return sims_dir.parent
    return None


def same_matrix(a: np.ndarray, b: np.ndarray, block_bytes: int = 64 * 2**20) -> bool:
    """Equal values (any dtypes), compared in row blocks that stop at the first difference: memory stays flat for
    memmapped matrices, and two different matrices usually cost one block."""
    if a.shape != b.shape:
        return False
    rows = max(1, block_bytes // max(1, a.shape[-1] * 8)) if a.ndim > 1 else len(a)
    return all(np.array_equal(a[i:i + rows], b[i:i + rows]) for i in range(0, len(a), rows))


def load_unrecorded_run_sims(run_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, SimsManifest]:
    """``<run>/sims/<split>`` with every check of :func:`load_sims` except the run's completion record: only for
    ``scripts/record_run.py``, which records a run made before ``complete.json`` existed."""
    return _read_checked(Path(run_dir), resolve_sims_path(run_dir, split), split, mmap=True)


def _read_checked(path: Path, npy: Path, split: str, mmap: bool) -> tuple[np.ndarray, SimsManifest]:
    manifest_path = npy.with_suffix(".json")
    if not manifest_path.is_file():
        raise UserError(f"{manifest_path}: manifest missing beside {npy.name} (use --sims with --captions_per_clip for a bare matrix)")
    raw = read_json(manifest_path)
    try:
        manifest = SimsManifest(**raw)
    except TypeError as err:
        raise UserError(f"{manifest_path}: not a sims manifest ({err})") from None
    sims = _load_npy(npy, mmap)
    validate(sims, manifest, str(npy), str(manifest_path))
    if path.is_dir():
        check_run_split(path, split, manifest, manifest_path)
    return sims, manifest


def check_run_split(run_dir: Path, split: str, manifest: SimsManifest, manifest_path: Path) -> None:
    """The manifest of ``<run>/sims/<split>.json`` must describe that split of that run: its ``split`` field, its
    source's config hash, and (when the run's data is at hand) its clip ids against ``<split>_list.txt``."""
    if manifest.split != split:
        raise UserError(f"{manifest_path}: manifest is for split {manifest.split!r}, not {split!r} "
                        "(a copy of another split's matrix?)")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        return
    config = read_json(cfg_path)
    want = manifest.source.get("config_hash") if isinstance(manifest.source, dict) else None
    if want is not None:
        from utils.config import config_hash
        if config_hash(config) != want:
            raise UserError(f"{manifest_path}: written by a run with config {want}, but {cfg_path} hashes to "
                            f"{config_hash(config)} (a matrix copied from another run?)")
    try:
        args = config["data_loader"]["args"]
        list_path = Path(args["data_dir"]) / args["root_feat_folder"] / f"{split}_list.txt"
    except (KeyError, TypeError):
        return
    if list_path.is_file():
        ids = [line.strip() for line in list_path.read_text(encoding="utf-8", errors="replace").splitlines()
               if line.strip()]
        if ids != list(manifest.clip_ids):
            diff = next((f"position {i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(manifest.clip_ids, ids))
                         if a != b), f"{len(manifest.clip_ids)} vs {len(ids)} clips")
            raise UserError(f"{manifest_path}: clip ids differ from the run's {list_path} ({diff})")


def read_bare_sims(path: str | os.PathLike, captions_per_clip: int = 5) -> tuple[np.ndarray, SimsManifest]:
    """A matrix without a manifest: ``.npy``, or the fork's CSV (header row of column indices, K·N x N).

    Rows are taken as clip-major (row ``r`` = caption ``r mod K`` of clip ``r div K``) and clips are
    named by their column index.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    if captions_per_clip < 1:
        raise UserError(f"--captions_per_clip must be >= 1, got {captions_per_clip}")
    if path.suffix == ".npy":
        sims = _load_npy(path, mmap=True)
    elif path.suffix == ".csv":
        sims = _read_fork_csv(path)
    else:
        raise UserError(f"{path}: unsupported matrix format {path.suffix!r} (expected .npy or .csv)")
    if sims.ndim != 2:
        raise UserError(f"{path}: expected a 2-D matrix, got shape {sims.shape}")
    if 0 in sims.shape:
        raise UserError(f"{path}: empty matrix of shape {sims.shape} (no queries or no clips)")
    n_rows, n_cols = sims.shape
    if n_rows != captions_per_clip * n_cols:
        raise UserError(f"{path}: {n_rows} rows is not captions_per_clip ({captions_per_clip}) x {n_cols} columns")
    manifest = build_manifest("unknown", [str(j) for j in range(n_cols)], None,
                              {"file": str(path)}, captions_per_clip)
    validate(sims, manifest, str(path))
    return sims, manifest


MIN_CLIPS = 2  # with one candidate every query ranks it first: every metric is 100 and no paired test can run


def validate_manifest(manifest: SimsManifest, where: str) -> None:
    """Types and values of every manifest key, and what they must agree on: ``captions_per_clip`` a positive
    integer, ids lists of strings without duplicates, every query with exactly one relevant clip (a list of one clip
    id), K queries per clip (K·N rows), one caption per row or none, and at least :data:`MIN_CLIPS` clips."""
    m = manifest
    if not isinstance(m.split, str):
        raise UserError(f"{where}: 'split' must be a string, got {m.split!r}")
    k = m.captions_per_clip
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"{where}: 'captions_per_clip' must be a positive integer, got {k!r}")
    for key in ("clip_ids", "query_ids", "captions"):
        value = getattr(m, key)
        if not isinstance(value, list):
            raise UserError(f"{where}: {key!r} must be a list of strings, got {type(value).__name__}")
        bad = next((v for v in value if not isinstance(v, str)), None)
        if bad is not None:
            raise UserError(f"{where}: {key!r} must be a list of strings, holds {bad!r}")
    if not isinstance(m.qrels, dict):
        raise UserError(f"{where}: 'qrels' must be an object {{query_id: [clip_id]}}, got {type(m.qrels).__name__}")
    if not isinstance(m.source, dict):
        raise UserError(f"{where}: 'source' must be an object, got {type(m.source).__name__}")
    n = len(m.clip_ids)
    if n < MIN_CLIPS:
        raise UserError(f"{where}: {n} clip{'' if n == 1 else 's'} in clip_ids: retrieval needs at least "
                        f"{MIN_CLIPS} (with one candidate every query ranks it first, every metric is 100 and no "
                        "significance test can run)")
    if len(set(m.clip_ids)) != n:
        dup = next(c for i, c in enumerate(m.clip_ids) if c in m.clip_ids[:i])
        raise UserError(f"{where}: manifest lists clip id {dup!r} twice")
    if len(set(m.query_ids)) != len(m.query_ids):
        seen: set[str] = set()
        dup = next(q for q in m.query_ids if q in seen or seen.add(q))
        raise UserError(f"{where}: manifest lists query id {dup!r} twice")
    if len(m.query_ids) != k * n:
        raise UserError(f"{where}: {len(m.query_ids)} query_ids for {n} clips with captions_per_clip {k} "
                        f"(expected {k * n}: K queries per clip)")
    if m.captions and len(m.captions) != len(m.query_ids):
        raise UserError(f"{where}: {len(m.captions)} captions for {len(m.query_ids)} query rows (one per row, "
                        "or an empty list)")
    col_of = {c: j for j, c in enumerate(m.clip_ids)}
    per_clip = np.zeros(n, dtype=np.int64)
    for qid in m.query_ids:
        rel = m.qrels.get(qid)
        if not rel:
            raise UserError(f"{where}: query {qid!r} has no relevant clip in the manifest's qrels")
        if not isinstance(rel, list) or not all(isinstance(c, str) for c in rel):
            raise UserError(f"{where}: qrels of query {qid!r} must be a list of clip ids, got {str(rel)[:80]!r}")
        if len(rel) != 1:
            raise UserError(f"{where}: query {qid!r} has {len(rel)} relevant clips; one per query is supported")
        if rel[0] not in col_of:
            raise UserError(f"{where}: query {qid!r} is relevant to clip {rel[0]!r}, which is not a column")
        per_clip[col_of[rel[0]]] += 1
    odd = np.flatnonzero(per_clip != k)
    if odd.size:
        j = int(odd[0])
        raise UserError(f"{where}: clip {m.clip_ids[j]!r} is the relevant clip of {per_clip[j]} queries in qrels, "
                        f"but captions_per_clip is {k}")


def validate(sims: np.ndarray, manifest: SimsManifest, where: str, manifest_where: str | None = None) -> None:
    """The matrix and its manifest agree and mean something (docs/FORMATS.md); ``UserError`` names the file (the
    manifest's for its keys: ``manifest_where``, default ``where``), the key, and the query or clip at fault."""
    validate_manifest(manifest, manifest_where or where)
    if sims.ndim != 2 or sims.shape != (len(manifest.query_ids), len(manifest.clip_ids)):
        raise UserError(f"{where}: shape {sims.shape} disagrees with its manifest "
                        f"({len(manifest.query_ids)} queries x {len(manifest.clip_ids)} clips)")
    step = _row_block(sims.shape[1], per_cell=sims.itemsize)
    for start in range(0, sims.shape[0], step):
        block = np.asarray(sims[start:start + step])
        bad = ~np.isfinite(block)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise UserError(f"{where}: non-finite similarity {block[r, c]} at row {start + r} "
                            f"(query {manifest.query_ids[start + r]!r}), column {c} (clip {manifest.clip_ids[c]!r})")


NPY_MAGIC = b"\x93NUMPY"


def read_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """A ``.npy`` array (never pickled objects); ``UserError`` naming the file when it is not one."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        what = "empty" if not head else ("text" if all(32 <= b < 127 or b in b"\t\r\n" for b in head) else "binary")
        raise UserError(f"{path}: not a NumPy .npy file ({what} content without the .npy header; save arrays with "
                        "numpy.save)")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise UserError(f"{path}: not a readable .npy array ({err})") from None


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    sims = read_npy(path, mmap)
    if not np.issubdtype(sims.dtype, np.floating):
        raise UserError(f"{path}: expected a float matrix, got dtype {sims.dtype}")
    return sims


def _read_fork_csv(path: Path) -> np.ndarray:
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=np.float32, engine="c")
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"{path}: not a numeric matrix CSV ({str(err).splitlines()[0]})") from None
    return frame.to_numpy(dtype=np.float32)
