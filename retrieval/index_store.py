"""A search index (``retrieval.index.AudioIndex``) saved as a folder: atomic writes, shard appends, staleness checks.

On disk (a folder, e.g. ``<run>/index/split-test/``): ``manifest.json`` (layout, fingerprint of what it was built
from, the shard list) and per shard ``<shard>.emb.npy`` float32 (n, D), ``<shard>.avail.npy`` bool (n, M),
``<shard>.json`` (clip ids, captions). A new index is written into a temporary folder renamed into place; an append
writes a new shard and then the manifest (the commit point), so a killed write never leaves a half index.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from retrieval.index import AudioIndex, Layout
from utils.config import first_difference
from utils.errors import UserError
from utils.io import read_json, save_npy, write_json

FORMAT = "audio-index/1"
MANIFEST = "manifest.json"


class IndexStore:
    """An index folder: create it atomically, check it against a fingerprint, load it, append shards."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def manifest(self) -> dict | None:
        if not self.manifest_path.is_file():
            return None
        man = read_json(self.manifest_path)
        if not isinstance(man, dict) or man.get("format") != FORMAT:
            raise UserError(f"{self.manifest_path}: not an {FORMAT} manifest (delete the folder to rebuild it)")
        return man

    def status(self, fingerprint: dict) -> str:
        """``"missing"``, ``"current"`` or ``"stale: <first difference>"`` against ``fingerprint``."""
        man = self.manifest()
        if man is None:
            return "missing"
        old = man.get("fingerprint", {})
        if old == _jsonable(fingerprint):
            return "current"
        key = first_difference(old, _jsonable(fingerprint))[0]
        return f"stale: {key or 'fingerprint'} changed"

    def create(self, index: AudioIndex, fingerprint: dict, info: dict | None = None) -> None:
        """Write ``index`` as the folder's only shard, replacing whatever was there, atomically."""
        parent = self.folder.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{self.folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            shard = _write_shard(tmp, 0, index.clip_ids, index.emb, index.avail, index.captions)
            write_json(tmp / MANIFEST, {"format": FORMAT, "layout": index.layout.to_json(),
                                        "fingerprint": _jsonable(fingerprint), "n": len(index),
                                        "shards": [shard], "info": info or {}})
            trash = None
            if self.folder.exists():
                trash = parent / f".{self.folder.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(self.folder, trash)
            os.rename(tmp, self.folder)
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def append(self, clip_ids: Sequence[str], emb: np.ndarray, avail: np.ndarray,
               captions: Sequence[Sequence[str]] | None, fingerprint: dict) -> int:
        """Add clips as a new shard and record the new fingerprint; returns the new clip count."""
        man = self.manifest()
        if man is None:
            raise UserError(f"{self.folder}: no index to append to")
        layout = Layout.from_json(man["layout"])
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != layout.dim or len(clip_ids) != emb.shape[0]:
            raise UserError(f"{self.folder}: appended embeddings have shape {emb.shape}, expected "
                            f"({len(clip_ids)}, {layout.dim})")
        have = set()
        for sh in man["shards"]:
            have.update(_read_shard_meta(self.folder, sh)["clip_ids"])
        dup = [c for c in clip_ids if c in have]
        if dup:
            raise UserError(f"{self.folder}: clip {dup[0]!r} is already in the index")
        number = 1 + max(int(sh["name"].split("-")[1]) for sh in man["shards"])
        shard = _write_shard(self.folder, number, list(clip_ids), emb, np.asarray(avail, bool), captions)
        man["shards"].append(shard)
        man["n"] = int(man["n"]) + len(clip_ids)
        man["fingerprint"] = _jsonable(fingerprint)
        write_json(self.manifest_path, man)  # the commit point
        return man["n"]

    def load(self) -> AudioIndex:
        man = self.manifest()
        if man is None:
            raise UserError(f"{self.folder}: no index here")
        layout = Layout.from_json(man["layout"])
        ids, embs, avails, caps = [], [], [], []
        has_caps = True
        for sh in man["shards"]:
            meta = _read_shard_meta(self.folder, sh)
            emb = _load_array(self.folder / f"{sh['name']}.emb.npy", (sh["n"], layout.dim))
            avail = _load_array(self.folder / f"{sh['name']}.avail.npy", (sh["n"], len(layout.experts)))
            ids += meta["clip_ids"]
            embs.append(emb)
            avails.append(avail)
            if meta.get("captions") is None:
                has_caps = False
            else:
                caps += meta["captions"]
        emb = embs[0] if len(embs) == 1 else np.concatenate(embs)
        avail = avails[0] if len(avails) == 1 else np.concatenate(avails)
        try:
            return AudioIndex(layout, ids, emb, avail, caps if has_caps else None)
        except ValueError as err:
            raise UserError(f"{self.folder}: {err} (delete the folder to rebuild it)") from None


def _write_shard(folder: Path, number: int, clip_ids, emb, avail, captions) -> dict:
    name = f"shard-{number:05d}"
    save_npy(folder / f"{name}.emb.npy", np.ascontiguousarray(emb, dtype=np.float32))
    save_npy(folder / f"{name}.avail.npy", np.ascontiguousarray(avail, dtype=bool))
    write_json(folder / f"{name}.json", {"clip_ids": list(clip_ids),
                                         "captions": [list(c) for c in captions] if captions is not None else None})
    return {"name": name, "n": len(clip_ids)}


def _read_shard_meta(folder: Path, shard: dict) -> dict:
    meta = read_json(folder / f"{shard['name']}.json")
    if len(meta.get("clip_ids", [])) != shard["n"]:
        raise UserError(f"{folder / shard['name']}.json: {len(meta.get('clip_ids', []))} clip ids, the manifest "
                        f"says {shard['n']} (delete the folder to rebuild it)")
    return meta


def _load_array(path: Path, shape: tuple) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path}: file not found (delete the index folder to rebuild it)")
    arr = np.load(path, allow_pickle=False)
    if arr.shape != tuple(shape):
        raise UserError(f"{path}: shape {arr.shape}, expected {tuple(shape)} (delete the index folder to rebuild it)")
    return arr


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


