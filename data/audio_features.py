"""Expert features for a list of audio files, batched over files, with a per-file cache that makes runs resumable.

:func:`compute_features` decodes each file once (``data.audio``), runs every expert's front end, and calls each
expert's model once per chunk of ``chunk_files`` files. Each (file, expert) result is written atomically to
``cache_dir/<expert fingerprint>/<key>.npz`` as soon as its chunk is done, so a killed run (SIGKILL included)
continues where it stopped; a cached result is reused only when the fingerprint (weights + front end), the file's
stamp (size, mtime, ctime, inode) and every option that changes the result or the accept / refuse decision
(``cache_options``: --pad-short, --silence-dbfs, --max-seconds, the version of data.audio's checks) match.
``search.py --audio`` can call the same function on a bare folder.

Every front-end output and every expert output is checked finite: a non-finite one is :class:`BadAudio` for its
file (skipped with ``skip_bad``, like a file that cannot be decoded). The models run once ``chunk_files`` files or
``FLUSH_SECONDS`` of audio are waiting, whichever comes first, so long clips do not pile up in memory.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.audio import CHECKS_VERSION, MAX_SECONDS, SILENCE_DBFS, BadAudio, decode, fit_length
from utils.io import atomic_path, file_stamp


@dataclass
class FileFeatures:
    rel: str                                   # path relative to the audio folder (POSIX)
    features: dict[str, np.ndarray]            # expert -> float32 (T, D)
    class_scores: np.ndarray | None = None     # yamnet only: (521,) clip-level class scores
    padded: list[str] = field(default_factory=list)  # experts for which the clip was zero-padded (--pad-short)
    seconds: float = 0.0


@dataclass
class Timing:
    audio_seconds: float = 0.0     # audio actually decoded (cached files excluded)
    decode: float = 0.0            # CPU seconds, summed over workers
    expert: dict[str, float] = field(default_factory=dict)  # front end + model CPU seconds, per expert
    cached_files: int = 0
    cpu: float = 0.0               # all CPU seconds of the feature work, summed over workers

    def add(self, other: "Timing") -> None:
        self.audio_seconds += other.audio_seconds
        self.decode += other.decode
        self.cached_files += other.cached_files
        self.cpu += other.cpu
        for name, value in other.expert.items():
            self.expert[name] = self.expert.get(name, 0.0) + value

    def x_real_time(self, wall: float) -> float:
        return self.audio_seconds / wall if wall > 0 else float("inf")


FLUSH_SECONDS = 600.0  # run the models once this much decoded audio is waiting (bounds memory with long clips)


def cache_options(pad_short: bool = False, silence_dbfs: float = SILENCE_DBFS,
                  max_seconds: float = MAX_SECONDS) -> dict:
    """The options a cached feature depends on: its value (--pad-short pads) or whether the file is accepted at all
    (--silence-dbfs, --max-seconds, the rules of data.audio). A run under other options never reuses the entry."""
    return {"checks": CHECKS_VERSION, "pad_short": bool(pad_short), "silence_dbfs": float(silence_dbfs),
            "max_seconds": float(max_seconds)}


def cache_file(cache_dir: Path, fingerprint: str, rel: str, options: dict | None = None) -> Path:
    text = rel if options is None else json.dumps([rel, options], sort_keys=True)
    key = hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]
    return cache_dir / fingerprint / f"{key}.npz"


def _read_cache(path: Path, rel: str, stamp: list[int], options: dict | None = None) -> dict | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if meta.get("rel") != rel or meta.get("stamp") != stamp or meta.get("options") != options:
                return None
            out = {"features": npz["features"], "padded": bool(meta.get("padded")), "seconds": meta["seconds"]}
            if "class_scores" in npz.files:
                out["class_scores"] = npz["class_scores"]
            if not np.isfinite(out["features"]).all():
                return None
            return out
    except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed, never trusted
        return None


def _write_cache(path: Path, rel: str, stamp: list[int], features: np.ndarray, padded: bool, seconds: float,
                 class_scores: np.ndarray | None, options: dict | None = None) -> None:
    arrays = {"features": features, "meta": np.array(json.dumps({"rel": rel, "stamp": stamp, "padded": padded,
                                                                "seconds": seconds, "options": options}))}
    if class_scores is not None:
        arrays["class_scores"] = class_scores
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _check_finite(path: Path, what: str, value: np.ndarray, expect_2d: bool = False) -> None:
    """BadAudio naming the file when a front end's or an expert's output is empty or not finite."""
    value = np.asarray(value)
    if expect_2d and (value.ndim != 2 or value.shape[0] == 0):
        raise BadAudio(f"{path}: {what} gave an empty or malformed output {value.shape}")
    if not np.isfinite(value).all():
        n = int((~np.isfinite(value)).sum())
        raise BadAudio(f"{path}: {what} gave {n} non-finite values (NaN / inf) of {value.size}")


def compute_features(folder: Path, rels: list[str], experts: list, cache_dir: Path | None, *, pad_short: bool = False,
                     skip_bad: bool = False, chunk_files: int = 16, progress: bool = True,
                     silence_dbfs: float = SILENCE_DBFS,
                     max_seconds: float = MAX_SECONDS) -> tuple[list[FileFeatures], list[tuple[str, str]], Timing]:
    """Features of ``folder/rel`` for every rel and expert: (results in ``rels`` order without the bad files,
    [(rel, reason)] of the bad files skipped with ``skip_bad`` (else the first bad file raises BadAudio), timing)."""
    from tqdm import tqdm

    from data.experts.yamnet import YAMNet, clip_class_scores

    cpu0 = time.process_time()
    fingerprints = {e.name: e.fingerprint() for e in experts}
    options = cache_options(pad_short, silence_dbfs, max_seconds)
    timing = Timing(expert={e.name: 0.0 for e in experts})
    results: dict[str, FileFeatures] = {}
    bad: list[tuple[str, str]] = []
    bar = tqdm(total=len(rels), desc="extract", unit="file", disable=not progress)
    todo: dict[str, list[tuple[str, np.ndarray, bool]]] = {e.name: [] for e in experts}
    waiting = {"files": 0, "seconds": 0.0}

    def reject(rel: str, err: BadAudio) -> None:
        if not skip_bad:
            bar.close()
            raise err
        bad.append((rel, str(err)))
        results.pop(rel, None)
        for items in todo.values():
            items[:] = [item for item in items if item[0] != rel]

    def run_models() -> None:
        for e in experts:
            items = [item for item in todo[e.name] if item[0] in results]
            todo[e.name] = []
            if not items:
                continue
            t0 = time.process_time()
            if isinstance(e, YAMNet):
                outs = e.embed_with_logits([x for _, x, _ in items])
                feats = [emb for emb, _ in outs]
                scores = [logits for _, logits in outs]
            else:
                feats, scores = e.embed([x for _, x, _ in items]), [None] * len(items)
            timing.expert[e.name] += time.process_time() - t0
            for (rel, _, padded), feat, score in zip(items, feats, scores):
                if rel not in results:  # found bad by an earlier expert of this chunk
                    continue
                feat = np.asarray(feat, dtype=np.float32)
                try:
                    _check_finite(folder / rel, f"expert {e.name}", feat, expect_2d=True)
                    if score is not None:
                        _check_finite(folder / rel, f"expert {e.name} (class logits)", score, expect_2d=True)
                        score = clip_class_scores(score)
                except BadAudio as err:
                    reject(rel, err)
                    continue
                entry = results[rel]
                entry.features[e.name] = feat
                if padded:
                    entry.padded.append(e.name)
                if score is not None:
                    entry.class_scores = score
                if cache_dir:
                    _write_cache(cache_file(cache_dir, fingerprints[e.name], rel, options), rel,
                                 file_stamp(folder / rel), feat, padded, entry.seconds, score, options)
        bar.update(waiting["files"])
        waiting["files"], waiting["seconds"] = 0, 0.0

    for rel in rels:
        path = folder / rel
        stamp = file_stamp(path) if path.is_file() else []
        entry = FileFeatures(rel=rel, features={})
        missing = []
        for e in experts:
            hit = (_read_cache(cache_file(cache_dir, fingerprints[e.name], rel, options), rel, stamp, options)
                   if cache_dir else None)
            if hit is None:
                missing.append(e)
                continue
            entry.features[e.name] = hit["features"]
            entry.seconds = hit["seconds"]
            if hit["padded"]:
                entry.padded.append(e.name)
            if "class_scores" in hit:
                entry.class_scores = hit["class_scores"]
        results[rel] = entry
        waiting["files"] += 1
        if not missing:
            timing.cached_files += 1
        else:
            try:
                t0 = time.process_time()
                clip = decode(path, silence_dbfs, max_seconds)
                timing.decode += time.process_time() - t0
                entry.seconds = clip.seconds
                timing.audio_seconds += clip.seconds
                waiting["seconds"] += clip.seconds
                for e in missing:
                    t0 = time.process_time()
                    samples, padded = fit_length(clip, clip.at(e.sample_rate), e.min_samples, e.name, pad_short)
                    x = e.frontend(samples)
                    _check_finite(path, f"the {e.name} front end", x)
                    todo[e.name].append((rel, x, padded))
                    timing.expert[e.name] += time.process_time() - t0
            except BadAudio as err:
                reject(rel, err)
        if waiting["files"] >= chunk_files or waiting["seconds"] >= FLUSH_SECONDS:
            run_models()
    run_models()
    bar.close()
    timing.cpu = time.process_time() - cpu0
    return [results[r] for r in rels if r in results], bad, timing


# ----------------------------------------------------------------------------------------------------------------
# several worker processes (one model thread each): the 2-core speed-up that threads inside one model do not give
# ----------------------------------------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(specs: list[tuple[str, str | None]], options: dict) -> None:
    import torch

    from data.experts.registry import load_expert

    torch.set_num_threads(1)
    _WORKER["experts"] = [load_expert(name, weights=weights, threads=1) for name, weights in specs]
    _WORKER["options"] = options


def _run_chunk(args: tuple[Path, list[str], Path | None]):
    folder, rels, cache_dir = args
    return compute_features(folder, rels, _WORKER["experts"], cache_dir, progress=False, **_WORKER["options"])


def compute_features_parallel(folder: Path, rels: list[str], specs: list[tuple[str, str | None]],
                              cache_dir: Path | None, workers: int, *, pad_short: bool = False, skip_bad: bool = False,
                              chunk_files: int = 16, progress: bool = True, silence_dbfs: float = SILENCE_DBFS,
                              max_seconds: float = MAX_SECONDS):
    """:func:`compute_features` over ``workers`` spawned processes, each loading the experts ``specs``
    ([(name, weights path)]) once and taking chunks of ``chunk_files`` files; same results and order."""
    import multiprocessing as mp

    from tqdm import tqdm

    options = dict(pad_short=pad_short, skip_bad=skip_bad, chunk_files=chunk_files, silence_dbfs=silence_dbfs,
                   max_seconds=max_seconds)
    chunks = [rels[i:i + chunk_files] for i in range(0, len(rels), chunk_files)]
    results: list[FileFeatures] = []
    bad: list[tuple[str, str]] = []
    timing = Timing()
    bar = tqdm(total=len(rels), desc=f"extract ({workers} workers)", unit="file", disable=not progress)
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(specs, options)) as pool:
        for (part, part_bad, part_timing), chunk in zip(pool.imap(_run_chunk, [(folder, c, cache_dir) for c in chunks]),
                                                        chunks):
            results += part
            bad += part_bad
            timing.add(part_timing)
            bar.update(len(chunk))
        pool.close()
        pool.join()
    bar.close()
    return results, bad, timing
