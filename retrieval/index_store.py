"""A search index (``retrieval.index.AudioIndex``) saved as a folder: atomic writes, shard appends, staleness and
damage checks.

On disk (a folder, e.g. ``<run>/index/split-test/``): ``manifest.json`` (layout, fingerprint of what it was built
from, the shard list with a checksum of each shard's arrays) and per shard ``<shard>.emb.npy`` float32 (n, D),
``<shard>.avail.npy`` bool (n, M), ``<shard>.json`` (clip ids, captions). A new index is written into a temporary
folder renamed into place; an append writes a new shard and then the manifest (the commit point), so a killed write
never leaves a half index.

Every file read from the folder is validated (:class:`DamagedIndex` names the file and what is wrong): the manifest's
structure, each array's shape, dtype, finiteness and checksum (float64 sum and sum of squares of the embeddings,
count of available experts: a zeroed or replaced array with the right shape is caught too), each shard's clip ids
and captions. :meth:`IndexStore.open` reports a damaged index like a stale one (``"damaged: <reason>"``), so that
callers rebuild it; :meth:`IndexStore.load` alone raises the one-line error.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from retrieval.index import AudioIndex, Layout
from utils.config import first_difference
from utils.errors import UserError
from utils.io import read_json, save_npy, write_json

FORMAT = "audio-index/2"  # /2: shards carry checksums of their arrays
OLDER_FORMATS = ("audio-index/1",)  # rebuilt as stale, not reported as damaged
STALE_FORMAT = "stale: index format changed"
MANIFEST = "manifest.json"
_SHARD_NAME = re.compile(r"shard-\d{5}")
_SUM_RTOL = 1e-9


class DamagedIndex(UserError):
    """A file of an index (or cache) folder that cannot be used: unreadable, wrong shape / dtype, non-finite, not
    what was written. ``reason`` names the file; the message adds how to get rid of it."""

    def __init__(self, folder: Path, reason: str):
        self.folder, self.reason = Path(folder), " ".join(str(reason).split())
        super().__init__(f"{self.reason} (damaged index: delete {self.folder} to rebuild it, or pass --rebuild-index)")


def load_checked_npy(path: Path, shape: tuple, dtype, *, folder: Path | None = None) -> np.ndarray:
    """A ``.npy`` file of exactly ``shape`` and ``dtype`` with finite values (float), or :class:`DamagedIndex`."""
    folder = Path(folder) if folder is not None else Path(path).parent
    if not Path(path).is_file():
        raise DamagedIndex(folder, f"{path}: file not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:  # truncated, not a .npy, pickled object array, unreadable
        raise DamagedIndex(folder, f"{path}: cannot read ({type(err).__name__}: {err})") from None
    if not isinstance(arr, np.ndarray):
        raise DamagedIndex(folder, f"{path}: not a single array")
    if arr.shape != tuple(shape):
        raise DamagedIndex(folder, f"{path}: shape {arr.shape}, expected {tuple(shape)}")
    if arr.dtype != np.dtype(dtype):
        raise DamagedIndex(folder, f"{path}: dtype {arr.dtype}, expected {np.dtype(dtype)}")
    # a float64 sum (buffered, no copy of the array) is finite iff every value is: the count only when it is not
    if arr.dtype.kind == "f" and not np.isfinite(arr.sum(dtype=np.float64)):
        raise DamagedIndex(folder, f"{path}: {int((~np.isfinite(arr)).sum())} non-finite values")
    return arr


def _checksums(emb: np.ndarray, avail: np.ndarray) -> dict:
    """Cheap order-sensitive sums of a shard's arrays (one pass each), recorded in the manifest and compared on
    load: a zeroed, scaled, reordered or swapped array of the right shape and dtype does not match them."""
    total = sumsq = weighted = 0.0
    for start in range(0, len(emb), _CHECK_ROWS):  # float64 per row block: memory stays flat at a million clips
        block = np.asarray(emb[start:start + _CHECK_ROWS], dtype=np.float64)
        row_sums = block.sum(axis=1)
        total += float(row_sums.sum())
        sumsq += float(np.einsum("ij,ij->", block, block))
        weighted += float(np.arange(start + 1, start + len(block) + 1, dtype=np.float64) @ row_sums)
    return {"emb_sum": total, "emb_sumsq": sumsq, "emb_rows": weighted,
            "avail_true": int(np.count_nonzero(avail)),
            "avail_where": int((np.flatnonzero(np.asarray(avail).ravel()) + 1).sum())}


_FLOAT_SUMS = ("emb_sum", "emb_sumsq", "emb_rows")
_CHECK_ROWS = 16384
_INT_SUMS = ("avail_true", "avail_where")


class IndexStore:
    """An index folder: create it atomically, check it against a fingerprint, load it, append shards."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    # ------------------------------------------------------------------------------------------------ reading
    def manifest(self) -> dict | None:
        """The validated manifest, None when there is none; :class:`DamagedIndex` when it cannot be used."""
        path = self.manifest_path
        if not path.exists() and not path.is_symlink():
            return None
        try:
            man = read_json(path)
        except UserError as err:  # not a file, invalid JSON, not UTF-8
            raise DamagedIndex(self.folder, str(err)) from None
        problem = _manifest_problem(man)
        if problem:
            raise DamagedIndex(self.folder, f"{path}: {problem}")
        return man

    def status(self, fingerprint: dict) -> str:
        """``"missing"``, ``"current"``, ``"stale: <first difference> changed"`` or ``"damaged: <reason>"``
        (the manifest only; :meth:`open` also checks the shards)."""
        try:
            man = self.manifest()
        except DamagedIndex as err:
            if _is_older_format(self.manifest_path):
                return STALE_FORMAT
            return f"damaged: {err.reason}"
        if man is None:
            return "missing"
        old = man["fingerprint"]
        if old == _jsonable(fingerprint):
            return "current"
        key, was, now = first_difference(old, _jsonable(fingerprint))
        what = "removed" if now is None and was is not None else "added" if was is None else "changed"
        return f"stale: {key or 'fingerprint'} {what}"

    def open(self, fingerprint: dict, *, load_stale: bool = False) -> tuple[str, AudioIndex | None]:
        """(status, the validated index or None): the index when ``"current"`` (also when stale, with
        ``load_stale``); a damaged shard turns the status into ``"damaged: <reason>"``, to be rebuilt."""
        status = self.status(fingerprint)
        if status == "current" or (load_stale and status.startswith("stale") and status != STALE_FORMAT):
            try:
                return status, self.load()
            except DamagedIndex as err:
                return f"damaged: {err.reason}", None
        return status, None

    def rebuild_note(self, status: str) -> str | None:
        """The one line to print before rebuilding an index of this ``status`` (None: nothing to say)."""
        if status.startswith("stale"):
            return f"{self.folder}: index is stale ({status[len('stale: '):]}); rebuilding"
        if status.startswith("damaged"):
            return f"{self.folder}: index is damaged ({status[len('damaged: '):]}); rebuilding"
        return None

    def load(self) -> AudioIndex:
        """The whole index, every file validated (:class:`DamagedIndex` otherwise)."""
        man = self.manifest()
        if man is None:
            raise UserError(f"{self.folder}: no index here")
        layout = Layout.from_json(man["layout"])
        ids, embs, avails, caps = [], [], [], []
        seen: set[str] = set()
        has_caps = True
        for sh in man["shards"]:
            meta = self._shard_meta(sh)
            emb = load_checked_npy(self.folder / f"{sh['name']}.emb.npy", (sh["n"], layout.dim), np.float32,
                                   folder=self.folder)
            avail = load_checked_npy(self.folder / f"{sh['name']}.avail.npy", (sh["n"], len(layout.experts)), bool,
                                     folder=self.folder)
            got = _checksums(emb, avail)
            for key in _FLOAT_SUMS:
                if not np.isclose(got[key], sh[key], rtol=_SUM_RTOL, atol=1e-6):
                    raise DamagedIndex(self.folder, f"{self.folder / sh['name']}.emb.npy: values differ from what "
                                                    f"was written ({key} {got[key]:.9g}, manifest {sh[key]:.9g})")
            for key in _INT_SUMS:
                if got[key] != sh[key]:
                    raise DamagedIndex(self.folder, f"{self.folder / sh['name']}.avail.npy: values differ from what "
                                                    f"was written ({key} {got[key]}, manifest {sh[key]})")
            if len(seen.union(meta["clip_ids"])) != len(seen) + len(meta["clip_ids"]):
                dup = next(c for i, c in enumerate(meta["clip_ids"]) if c in seen or c in meta["clip_ids"][:i])
                raise DamagedIndex(self.folder, f"{self.folder / sh['name']}.json: clip id {dup!r} is in the index twice")
            seen.update(meta["clip_ids"])
            ids += meta["clip_ids"]
            embs.append(emb)
            avails.append(avail)
            if meta["captions"] is None:
                has_caps = False
            else:
                caps += meta["captions"]
        emb = embs[0] if len(embs) == 1 else np.concatenate(embs)
        avail = avails[0] if len(avails) == 1 else np.concatenate(avails)
        try:
            return AudioIndex(layout, ids, emb, avail, caps if has_caps else None)
        except ValueError as err:
            raise DamagedIndex(self.folder, f"{self.folder}: {err}") from None

    def _shard_meta(self, shard: dict) -> dict:
        path = self.folder / f"{shard['name']}.json"
        try:
            meta = read_json(path)
        except UserError as err:
            raise DamagedIndex(self.folder, str(err)) from None
        ids = meta.get("clip_ids") if isinstance(meta, dict) else None
        if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
            raise DamagedIndex(self.folder, f"{path}: no list of clip ids")
        if len(ids) != shard["n"]:
            raise DamagedIndex(self.folder, f"{path}: {len(ids)} clip ids, the manifest says {shard['n']}")
        caps = meta.get("captions")
        if caps is not None and not (isinstance(caps, list) and len(caps) == len(ids) and all(
                isinstance(c, list) and all(isinstance(s, str) for s in c) for c in caps)):
            raise DamagedIndex(self.folder, f"{path}: captions are not {len(ids)} lists of strings")
        return {"clip_ids": ids, "captions": caps}

    # ------------------------------------------------------------------------------------------------ writing
    def create(self, index: AudioIndex, fingerprint: dict, info: dict | None = None) -> None:
        """Write ``index`` as the folder's only shard, replacing whatever was there (readable or not), atomically."""
        parent = self.folder.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{self.folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            shard = _write_shard(tmp, 0, index.clip_ids, index.emb, index.avail, index.captions)
            write_json(tmp / MANIFEST, {"format": FORMAT, "layout": index.layout.to_json(),
                                        "fingerprint": _jsonable(fingerprint), "n": len(index),
                                        "shards": [shard], "info": _jsonable(info or {})})
            trash = None
            if self.folder.exists() or self.folder.is_symlink():
                trash = parent / f".{self.folder.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(self.folder, trash)
            os.rename(tmp, self.folder)
            if trash is not None:
                if trash.is_dir() and not trash.is_symlink():
                    shutil.rmtree(trash, ignore_errors=True)
                else:
                    trash.unlink()
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def append(self, clip_ids: Sequence[str], emb: np.ndarray, avail: np.ndarray,
               captions: Sequence[Sequence[str]] | None, fingerprint: dict, info: dict | None = None) -> int:
        """Add clips as a new shard (none: only the record changes) and record the new fingerprint (and ``info``,
        when given); returns the new clip count."""
        man = self.manifest()
        if man is None:
            raise UserError(f"{self.folder}: no index to append to")
        layout = Layout.from_json(man["layout"])
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != layout.dim or len(clip_ids) != emb.shape[0]:
            raise UserError(f"{self.folder}: appended embeddings have shape {emb.shape}, expected "
                            f"({len(clip_ids)}, {layout.dim})")
        if len(clip_ids):
            have = set()
            for sh in man["shards"]:
                have.update(self._shard_meta(sh)["clip_ids"])
            dup = [c for c in clip_ids if c in have]
            if dup:
                raise UserError(f"{self.folder}: clip {dup[0]!r} is already in the index")
            number = 1 + max(int(sh["name"].split("-")[1]) for sh in man["shards"])
            shard = _write_shard(self.folder, number, list(clip_ids), emb, np.asarray(avail, bool), captions)
            man["shards"].append(shard)
            man["n"] = int(man["n"]) + len(clip_ids)
        man["fingerprint"] = _jsonable(fingerprint)
        if info is not None:
            man["info"] = _jsonable(info)
        write_json(self.manifest_path, man)  # the commit point
        return man["n"]


def _write_shard(folder: Path, number: int, clip_ids, emb, avail, captions) -> dict:
    name = f"shard-{number:05d}"
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    avail = np.ascontiguousarray(avail, dtype=bool)
    save_npy(folder / f"{name}.emb.npy", emb)
    save_npy(folder / f"{name}.avail.npy", avail)
    write_json(folder / f"{name}.json", {"clip_ids": list(clip_ids),
                                         "captions": [list(c) for c in captions] if captions is not None else None})
    return {"name": name, "n": len(clip_ids), **_checksums(emb, avail)}


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and bool(np.isfinite(x))


def _manifest_problem(man: Any) -> str | None:
    """What is wrong with a parsed manifest (None: usable)."""
    if not isinstance(man, dict):
        return "not a JSON object"
    if man.get("format") != FORMAT:
        return f"format {man.get('format')!r}, expected {FORMAT!r}"
    lay = man.get("layout")
    if not (isinstance(lay, dict) and isinstance(lay.get("experts"), list) and isinstance(lay.get("dims"), list)
            and all(isinstance(e, str) and e for e in lay["experts"]) and len(lay["experts"]) == len(lay["dims"])
            and lay["experts"] and all(_is_int(d) and d > 0 for d in lay["dims"])
            and isinstance(lay.get("renormalise"), bool)):
        return "layout is not {experts: [names], dims: [sizes > 0, one per expert], renormalise: true|false}"
    if not isinstance(man.get("fingerprint"), dict):
        return "no fingerprint"
    shards = man.get("shards")
    if not isinstance(shards, list) or not shards:
        return "no shard list"
    names = set()
    for sh in shards:
        if not (isinstance(sh, dict) and isinstance(sh.get("name"), str) and _SHARD_NAME.fullmatch(sh["name"])
                and _is_int(sh.get("n")) and sh["n"] >= 0 and all(_is_num(sh.get(k)) for k in _FLOAT_SUMS)
                and all(_is_int(sh.get(k)) and sh[k] >= 0 for k in _INT_SUMS)):
            return (f"shard entry {str(sh)[:80]} is not {{name: shard-NNNNN, n, "
                    f"{', '.join(_FLOAT_SUMS + _INT_SUMS)}}}")
        if sh["name"] in names:
            return f"shard {sh['name']} listed twice"
        names.add(sh["name"])
    if not _is_int(man.get("n")) or man["n"] != sum(sh["n"] for sh in shards):
        return f"n {man.get('n')!r} is not the sum of the shards' counts ({sum(sh['n'] for sh in shards)})"
    info = man.get("info", {})
    if not isinstance(info, dict):
        return "info is not a JSON object"
    skipped = info.get("skipped", [])
    if not (isinstance(skipped, list) and all(isinstance(s, list) and len(s) == 2 and all(isinstance(x, str) for x in s)
                                              for s in skipped)):
        return "info.skipped is not a list of [file, reason] pairs"
    return None


def _is_older_format(path: Path) -> bool:
    """A readable manifest of an earlier format of this module (rebuilt as stale, not reported as damaged)."""
    try:
        fmt = json.loads(path.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return False
    return fmt in OLDER_FORMATS


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
