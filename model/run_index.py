"""The saved search index of a run's split: built once from the run's data, reloaded until it is stale.

``RUN/index/split-<split>/`` (``retrieval.index_store.IndexStore``). Its fingerprint is the checkpoint
(``utils.io.file_stamp``, config hash) and the data files the split is read from (split list, captions, expert
files: the same stamp).
"""
from __future__ import annotations

import time
from pathlib import Path

from utils.io import file_stamp
from utils.outputs import RUN_MODEL


# ----------------------------------------------------------------------------------------------------------------
def _stamp(path: Path) -> list[int] | None:
    try:
        return file_stamp(path)
    except FileNotFoundError:
        return None


def run_split_fingerprint(rm, split: str) -> dict:
    """What a run's split index depends on: the checkpoint and the data files (size, mtime, ctime, inode)."""
    from data.clotho import EXPERT_PATHS, RAW_CAPTIONS_PATH, root_feat_dir

    root = root_feat_dir(rm.config)
    files = [f"{split}_list.txt", RAW_CAPTIONS_PATH] + [EXPERT_PATHS[m] for m in sorted(rm.model.modalities)]
    return {"model": {"checkpoint": _stamp(rm.run_dir / RUN_MODEL), "config_hash": rm.config_hash},
            "source": {"kind": "split", "split": split, "root_feat": str(root.resolve()),
                       "files": {f: _stamp(root / f) for f in files}}}


def open_run_index(rm, split: str, *, rebuild: bool = False, log=print):
    """Load the run's saved index of ``split``; build (or rebuild, when stale or damaged) it first.

    -> (AudioIndex, info). ``rebuild`` rebuilds without reading the old folder at all (it may be unreadable)."""
    from retrieval.index_store import IndexStore

    store = IndexStore(rm.run_dir / "index" / f"split-{split}")
    fp = run_split_fingerprint(rm, split)
    if not rebuild:
        t0 = time.perf_counter()
        status, index = store.open(fp)
        if index is not None:
            return index, {"folder": str(store.folder), "status": "loaded",
                           "seconds": round(time.perf_counter() - t0, 4)}
        if store.rebuild_note(status):
            log(store.rebuild_note(status))
    index, seconds = build_run_index(rm, split)
    store.create(index, fp, info={"run": str(rm.run_dir), "split": split, "build_s": round(seconds, 3)})
    log(f"{store.folder}: index of {len(index)} clips built in {seconds:.1f}s")
    return index, {"folder": str(store.folder), "status": "built", "seconds": round(seconds, 4)}


def build_run_index(rm, split: str):
    from data.clotho import load_clotho
    from model.query import encode_audio, layout_of
    from retrieval.index import AudioIndex, Layout

    t0 = time.perf_counter()
    data = load_clotho(rm.config, [split])[split]
    emb, avail = encode_audio(rm.model, data.experts, data.ind, progress=True)
    experts, dims, renorm = layout_of(rm.model)
    index = AudioIndex(Layout(tuple(experts), tuple(dims), renorm), data.clip_ids, emb, avail, data.captions)
    return index, time.perf_counter() - t0
