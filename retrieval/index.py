"""The audio side of a trained run as a search index: numpy only, no model (docs/SEARCH.md).

CE / MoEE score a caption q against a clip a as (``model.ce.CENet.similarity``)::

    S(q, a) = Σ_m w̃_m(q, a) · <e_m(q), x_m(a)>,   w̃_m(q, a) = w_m(q) · ind_m(a) / Σ_k w_k(q) · ind_k(a)

For every clip with the same expert-availability pattern ``p`` the renormalised weights depend on q only, so
``S(q, a) = <v_p(q), x(a)>`` with ``x(a) = [x_1(a); ...; x_M(a)]`` (the clip's concatenated expert embeddings) and
``v_p(q) = [w_1 p_1 e_1(q); ...; w_M p_M e_M(q)] / Σ_k w_k p_k``. The index keeps the clips grouped by pattern: one
matrix product per pattern, exactly the model's score (to float rounding); one product in all when every clip has
every expert. With ``keep_missing_modalities`` the model uses weight 1 for every expert: ``v(q) = [e_1; ...; e_M]``.
A clip with no expert at all gets NaN, as in the model (0 / 0); searches never return it.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from utils.config import first_difference
from utils.errors import UserError
from utils.io import read_json, save_npy, write_json

FORMAT = "audio-index/1"
MANIFEST = "manifest.json"
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


# ----------------------------------------------------------------------------------------------------------------
# on disk
# ----------------------------------------------------------------------------------------------------------------
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


