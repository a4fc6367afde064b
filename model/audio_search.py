"""Search a bare folder of audio: zero-shot (YAMNet classes), or with a run whose experts can be extracted.

* **Zero-shot** (no training): a clip's YAMNet clip class scores ``s(a)`` (521,) against a query's distribution over
  the AudioSet class names ``u(q) = softmax(cos(MiniLM(q), MiniLM(class)) / T)`` (``data.experts.yamnet``):
  ``S(q, a) = <u(q), s(a)>``, one inner product, so the index is the ``(N, 521)`` class-score matrix.
* **With a run** (``--run RUN --audio DIR``): the run's experts are extracted from the audio (``data.experts``),
  truncated / zero-padded to the config's ``max_tokens`` like the loader, encoded by the run's audio side, indexed
  exactly like a split (``retrieval.index``, saved by ``retrieval.index_store``). Experts without an extractor (the
  archive's VGGSound) are an error.

Features are cached per file (``data.audio_features``, keyed by the expert's fingerprint and the file's stamp: size, mtime, ctime, inode);
the index is saved per folder and model. When files are only added, the new ones are extracted and appended as a
shard; any other change (a file changed or removed, another model) rebuilds the index from the cached features.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

from retrieval.index import AudioIndex, Layout
from retrieval.index_store import STALE_FORMAT, IndexStore
from utils.errors import UserError
from utils.io import file_stamp
from utils.outputs import RUN_MODEL

ZERO_SHOT_TEMPERATURE = 0.05
DEFAULT_ROOT = Path("data/saved/audio-index")


def folder_key(folder: Path) -> str:
    folder = folder.resolve()
    return f"{folder.name or 'root'}-{hashlib.sha1(str(folder).encode('utf-8')).hexdigest()[:10]}"


def zero_shot_query_vectors(query_embeddings: np.ndarray, class_embeddings: np.ndarray,
                            temperature: float = ZERO_SHOT_TEMPERATURE) -> np.ndarray:
    """``(Q, C)`` float32 ``u(q)``: each query as a distribution over the class names (see the module docstring)."""
    q = np.asarray(query_embeddings, np.float64)
    c = np.asarray(class_embeddings, np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    logits = (q @ c.T) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    u = np.exp(logits)
    return (u / u.sum(axis=1, keepdims=True)).astype(np.float32)


def class_name_embeddings_cached(root: Path, log: Callable[[str], None] = print) -> np.ndarray:
    """MiniLM embeddings of the 521 AudioSet class names, cached in ``root`` (keyed by the names).

    The cache file is validated like an index file (shape, dtype, finite; every row L2-normalised, so an all-zero
    or replaced matrix is caught); a damaged one is recomputed with a note."""
    from data.experts.yamnet import class_name_embeddings, class_names
    from data.text_features import MINILM_DIM
    from retrieval.index_store import DamagedIndex, load_checked_npy
    from utils.io import save_npy

    names = class_names()
    key = hashlib.sha1("\n".join(names).encode("utf-8")).hexdigest()[:12]
    path = Path(root) / f"class-names-minilm-{key}.npy"
    if path.exists() or path.is_symlink():
        try:
            return _unit_rows(load_checked_npy(path, (len(names), MINILM_DIM), np.float32), path)
        except DamagedIndex as err:
            log(f"{err.reason}: damaged cache, recomputing")
    emb = _unit_rows(np.asarray(class_name_embeddings(), np.float32), "MiniLM class-name embeddings", fresh=True)
    save_npy(path, emb)
    return emb


def _unit_rows(emb: np.ndarray, where, fresh: bool = False) -> np.ndarray:
    """``emb`` when every row has norm 1 (1e-3); a cached file otherwise is damaged, a fresh result a bug."""
    from retrieval.index_store import DamagedIndex

    norms = np.linalg.norm(emb.astype(np.float64), axis=1)
    bad = np.flatnonzero(~(np.abs(norms - 1) <= 1e-3))
    if bad.size:
        what = f"{bad.size} of {len(emb)} rows are not unit vectors (row {bad[0]}: norm {norms[bad[0]]:.4g})"
        if fresh:
            raise RuntimeError(f"{where}: {what}")
        raise DamagedIndex(Path(where).parent, f"{where}: {what}")
    return emb


def check_audio_folder(folder: str | Path) -> Path:
    """``folder`` as a Path when it is a folder; one line naming it otherwise (a file, or nothing there)."""
    folder = Path(folder)
    if folder.is_file():
        raise UserError(f"{folder}: is a file, not a folder: --audio needs a folder of audio files (put the file in "
                        "a folder of its own to search it)")
    if not folder.is_dir():
        raise UserError(f"{folder}: audio folder not found")
    return folder


class FolderSearch:
    """An audio folder's index (built, appended or loaded) and the query side that matches it."""

    def __init__(self, folder: str | Path, run=None, *, index_root: str | Path | None = None,
                 vggish_weights: str | None = None, log: Callable[[str], None] = print, rebuild: bool = False):
        from data.audio import list_audio

        self.folder = check_audio_folder(folder)
        self.run = run
        self.log = log
        self.rels = list_audio(self.folder)
        if not self.rels:
            raise UserError(f"{self.folder}: no audio files (wav/flac/ogg/mp3)")
        root = self.root = Path(index_root) if index_root else DEFAULT_ROOT
        self.cache_dir = root / folder_key(self.folder) / "features"
        self.experts, self.keys = self._experts(vggish_weights)
        where = (run.run_dir / "index" / f"audio-{folder_key(self.folder)}") if run is not None \
            else root / folder_key(self.folder) / "zero-shot"
        self.store = IndexStore(where)
        self.skipped: list[tuple[str, str]] = []
        self.index, self.info = self._open(rebuild)

    # -------------------------------------------------------------------------------------------- experts
    def _experts(self, vggish_weights):
        from data.experts.registry import EXPERTS, load_expert

        if self.run is None:
            return [load_expert("yamnet")], ["yamnet_classes"]
        by_key = {info.archive_key: info.name for info in EXPERTS.values()}
        names = []
        for key in self.run.model.modalities:
            if key not in by_key:
                known = ", ".join(f"{i.name} (expert '{i.archive_key}')" for i in EXPERTS.values())
                raise UserError(f"--audio: the run's expert '{key}' cannot be extracted from audio (extractable: "
                                f"{known}); search its data split instead, or train on extracted features")
            names.append(by_key[key])
        experts = [load_expert(n, **({"weights": vggish_weights} if n == "vggish" else {})) for n in names]
        return experts, list(self.run.model.modalities)

    def fingerprint(self, rels) -> dict:
        fp = {"kind": "audio-folder", "folder": str(self.folder.resolve()),
              "experts": [e.fingerprint() for e in self.experts],
              "files": {r: file_stamp(self.folder / r) for r in rels}}
        if self.run is not None:
            fp["model"] = {"run": str(self.run.run_dir.resolve()), "config_hash": self.run.config_hash,
                           "checkpoint": file_stamp(self.run.run_dir / RUN_MODEL)}
        else:
            fp["zero_shot"] = {"temperature": ZERO_SHOT_TEMPERATURE}
        return fp

    # -------------------------------------------------------------------------------------------- index
    def _open(self, rebuild: bool):
        """Load the saved index when current; append the new files when files were only added; otherwise (missing,
        stale, damaged, ``rebuild``: the old folder is then not read at all) build it from the cached features."""
        import time

        t0 = time.perf_counter()
        fp = self.fingerprint(self.rels)
        if not rebuild:
            # the old shards are read only when they are used: as they are (current) or extended (files only added);
            # an index of an earlier format is rebuilt whole (its manifest does not validate as the current format)
            first = self.store.status(fp)
            man = self.store.manifest() if first.startswith("stale") and first != STALE_FORMAT else None
            extend = man is not None and self._only_added(man["fingerprint"], fp)
            status, index = self.store.open(fp, load_stale=extend)
            if status == "current":
                self.skipped = [tuple(s) for s in self.store.manifest().get("info", {}).get("skipped", [])]
                return index, {"folder": str(self.store.folder), "status": "loaded"}
            if index is not None:
                return self._append(man, fp, t0, index)
            if self.store.rebuild_note(status):
                self.log(self.store.rebuild_note(status))
        ids, emb, avail = self._embed(self.rels)
        if not ids:
            raise UserError(f"{self.folder}: no usable audio (all {len(self.rels)} files skipped: "
                            f"{self.skipped[0][1]})")
        index = AudioIndex(self._layout(), ids, emb, avail, None)
        self.store.create(index, fp, info=self._info())
        self.log(f"{self.store.folder}: index of {len(ids)} clips built in {time.perf_counter() - t0:.1f}s")
        return index, {"folder": str(self.store.folder), "status": "built",
                       "seconds": round(time.perf_counter() - t0, 3)}

    def _append(self, man: dict, fp: dict, t0: float, old: AudioIndex):
        """Embed the added files, save them as a new shard, and extend the loaded index in memory (no re-read)."""
        import time

        self.skipped = [tuple(s) for s in man.get("info", {}).get("skipped", [])]
        new = [r for r in self.rels if r not in man["fingerprint"]["files"]]
        ids, emb, avail = self._embed(new)
        self.store.append(ids, emb, avail, None, fp, info=self._info())
        self.log(f"{self.store.folder}: {len(new)} new audio files appended")
        index = AudioIndex(old.layout, old.clip_ids + list(ids), np.concatenate([old.emb, emb]),
                           np.concatenate([old.avail, avail]), None)
        return index, {"folder": str(self.store.folder), "status": f"appended {len(ids)}",
                       "seconds": round(time.perf_counter() - t0, 3)}

    def _info(self) -> dict:
        return {"folder": str(self.folder), "skipped": [list(s) for s in self.skipped]}

    def skipped_note(self) -> str | None:
        """``N files skipped as bad audio (...)``: the same note whether the index was just built or loaded."""
        if not self.skipped:
            return None
        return (f"{len(self.skipped)} files skipped as bad audio (first: {self.skipped[0][1]}; all are listed under "
                f"info.skipped in {self.store.manifest_path})")

    @staticmethod
    def _only_added(old: dict, new: dict) -> bool:
        if {k: v for k, v in old.items() if k != "files"} != {k: v for k, v in new.items() if k != "files"}:
            return False
        return all(new["files"].get(r) == s for r, s in old["files"].items()) and len(new["files"]) > len(old["files"])

    def _layout(self) -> Layout:
        if self.run is None:
            from data.experts.yamnet import N_CLASSES
            return Layout(("yamnet_classes",), (N_CLASSES,), True)
        from model.query import layout_of
        experts, dims, renorm = layout_of(self.run.model)
        return Layout(tuple(experts), tuple(dims), renorm)

    def _embed(self, rels):
        """(clip ids, (n, D) index vectors, (n, M) availability) of the usable files among ``rels``."""
        from data.audio_features import compute_features

        results, bad, _ = compute_features(self.folder, rels, self.experts, self.cache_dir, skip_bad=True,
                                           pad_short=True, progress=len(rels) > 8)
        self.skipped += bad
        for rel, why in bad:
            self.log(f"skipped: {why}")
        ids = [r.rel for r in results]
        if not results:
            return [], np.zeros((0, self._layout().dim), np.float32), np.zeros((0, len(self.keys)), bool)
        if self.run is None:
            scores = np.stack([r.class_scores for r in results]).astype(np.float32)
            return ids, scores, np.ones((len(ids), 1), bool)
        from model.query import encode_audio

        max_tokens = self.run.config["data_loader"]["args"]["max_tokens"]
        experts, ind = {}, {}
        for key, e in zip(self.keys, self.experts):
            t = int(max_tokens[key])
            buf = np.zeros((len(results), t, e.dim), np.float32)
            for i, r in enumerate(results):
                feat = r.features[e.name][:t]  # the first frames, as the loader keeps them
                buf[i, :len(feat)] = feat
            experts[key], ind[key] = buf, np.ones(len(results), bool)
        emb, avail = encode_audio(self.run.model, experts, ind)
        return ids, emb, avail

    def _class_embeddings(self) -> np.ndarray:
        return class_name_embeddings_cached(self.root, self.log)

    # -------------------------------------------------------------------------------------------- queries
    def query_side(self, queries, word2vec=None):
        """(per-expert text embeddings, (P, M) weights, text source, dropped words, notes) for the index's layout."""
        from model.query import check_queries

        check_queries(queries)
        if self.run is None:
            from data.text_features import sentence_embeddings
            from model.query import minilm_limit, minilm_truncation_note

            u = zero_shot_query_vectors(sentence_embeddings(list(queries), progress=False), self._class_embeddings())
            cap = minilm_limit()
            notes = [minilm_truncation_note(i, q, cap, "MiniLM (the zero-shot text encoder)")
                     for i, q in enumerate(queries, start=1)]
            return ([u], np.ones((len(queries), 1), np.float32), "minilm sentence -> AudioSet classes", [],
                    [n for n in notes if n])
        from model.query import QueryEncoder, encode_text

        enc = QueryEncoder(self.run.config, word2vec)
        q = enc.encode(queries)
        emb, w = encode_text(self.run.model, q.text, q.lens)
        return emb, w, enc.source, q.dropped, q.notes
