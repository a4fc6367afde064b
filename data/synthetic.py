"""Synthetic CLOTHO-format data set: same files, formats and sizes as the original feature archive.

    python -m data.synthetic --out data/CLOTHO-synthetic [--size clotho|tiny] [--seed 0] [--force]

writes ``<out>/structured-symlinks/`` exactly like the real archive (see docs/DATA.md):
``aggregated_audio/vggish-raw.hickle`` (clip -> (T,128) float32, T in 15..31),
``aggregated_vggsound/vggsound-raw.hickle`` (clip -> (T,512), T in 47..95),
``structured-symlinks/raw-captions.pkl`` (clip -> 5 token lists), ``text_embeddings/w2v.pkl`` (clip -> 5 arrays
(n_tokens,300)), ``train_list.txt`` / ``val_list.txt`` / ``test_list.txt`` (2314 / 579 / 1045 clips), plus
``synthetic-meta.json`` (the spec, the seed and the latent events of every clip, for analysis).

The clips and captions come from :mod:`data.synthetic_generator` (how a clip is made; every knob is a field of
:class:`SyntheticSpec`), the words and word vectors from :mod:`data.synthetic_vocab`; this module writes them.

Generation is deterministic given (size, seed, spec) and atomic: the set is written into a temporary folder that is
renamed into place at the end, so an interrupted run leaves nothing half-written.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pickle
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from data.synthetic_generator import SyntheticSpec, _Generator, spec_for
from data.synthetic_vocab import WordVectors
from utils.errors import UserError, run_cli

SPLITS = ("train", "val", "test")
CAPTIONS_PER_CLIP = 5
EXPERT_FILES = {"audio": "aggregated_audio/vggish-raw.hickle", "vggsound": "aggregated_vggsound/vggsound-raw.hickle"}
QRELS_FILE = "qrels-{split}.trec"  # multi-relevance judgements (TREC qrels, graded), one file per split


def _split_sizes(spec: SyntheticSpec) -> dict[str, int]:
    return {"train": spec.n_train, "val": spec.n_val, "test": spec.n_test}


def generate(out_dir: str | os.PathLike, size: str = "clotho", seed: int = 0, spec: SyntheticSpec | None = None,
             root_feat_folder: str = "structured-symlinks", force: bool = False, quiet: bool = False) -> Path:
    """Write the synthetic set to ``out_dir/root_feat_folder`` atomically; return that folder.

    If the folder exists: with ``force`` it is replaced, otherwise a :class:`UserError` is raised. If another process
    finishes the same folder first, its result is kept and ours discarded.
    """
    spec = spec if spec is not None else spec_for(size)
    out_dir = Path(out_dir)
    final = out_dir / root_feat_folder
    from utils.outputs import recover
    recover(final)  # a killed earlier generation: remove its temporary folder, or finish its swap
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder (--out names the data_dir folder to write into)")
    if final.exists() and not force:
        raise UserError(f"{final}: already exists (use --force to replace it)")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{root_feat_folder}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    try:
        try:
            _write_all(tmp, spec, size, seed, quiet)
            from utils.testhooks import pause
            pause("synthetic-write")  # crash tests: the set is written in its temporary folder, not yet renamed
        except OSError as err:  # a write() on a full disk names no file: name the set being written
            if err.filename is None:
                raise OSError(err.errno, err.strerror, str(final)) from None
            raise
        if final.exists() and force:
            trash = out_dir / f".{root_feat_folder}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                # a concurrent generation won the race; keep its (identical) result
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if created and not final.exists():
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # a folder this call created for nothing
    if not quiet:
        print(f"wrote {final} in {time.time() - t0:.1f}s", file=sys.stderr)
    return final


def is_current(root: str | os.PathLike, size: str, seed: int, spec: SyntheticSpec | None = None) -> bool:
    """Whether ``root`` holds the set that ``generate(size, seed, spec)`` would write now.

    Judged from ``synthetic-meta.json``; a folder without it (e.g. real features) counts as current, so it is
    never overwritten.
    """
    meta_path = Path(root) / "synthetic-meta.json"
    if not meta_path.is_file():
        return True
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return False
    want = json.loads(json.dumps(dataclasses.asdict(spec if spec is not None else spec_for(size))))
    if not all(qrels_path(root, split).is_file() for split in SPLITS):
        return False  # written before the generator wrote qrels: regenerating gives identical arrays plus qrels
    return meta.get("size") == size and meta.get("seed") == seed and meta.get("spec") == want


def _dump_hickle(obj: dict, path: Path) -> None:
    """hickle.dump through an in-memory HDF5 image, then plain file I/O.

    HDF5 writing straight to a full disk fails inside its metadata cache (``RuntimeError: Can't flush cache ...
    errno = 28``) and the half-closed file's ids then crash the interpreter (a segfault) when h5py frees them. In
    memory HDF5 cannot fail that way; the image is written with ordinary I/O, which raises a clean ``OSError``.
    Cost: the peak memory of a CLOTHO-size generation rises from about 1.0 to about 2 GB. ``obj`` is emptied.
    """
    import h5py
    import hickle

    with h5py.File(f"{path.name}-in-memory", "w", driver="core", backing_store=False) as h5:
        hickle.dump(obj, h5)
        obj.clear()  # the arrays now live in the in-memory file: free them before its image is copied out
        h5.flush()
        image = h5.id.get_file_image()
    with open(path, "wb") as fh:
        fh.write(image)


def _check_free_space(folder: Path, feats: dict, w2v: dict) -> None:
    """Fail early, with the folder named, when the set cannot fit (the writes below would fail anyway)."""
    import errno
    import shutil

    need = sum(np.asarray(v).nbytes + 512 for per in feats.values() for v in per.values())
    need += sum(np.asarray(v).nbytes + 256 for caps in w2v.values() for v in caps)
    free = shutil.disk_usage(folder).free
    if free < 1.1 * need:
        raise OSError(errno.ENOSPC, f"No space left on device (the synthetic set needs about {need / 2**20:.0f} "
                                    f"MiB, {free / 2**20:.0f} MiB free)", str(folder))


def _write_all(root: Path, spec: SyntheticSpec, size: str, seed: int, quiet: bool) -> None:
    gen = _Generator(spec, seed)
    words = WordVectors(spec)
    sizes = _split_sizes(spec)
    total = sum(sizes.values())
    ids = [f"synthetic_{i + 1:05d}.wav" for i in range(total)]
    feats: dict[str, dict] = {"audio": {}, "vggsound": {}}
    captions, w2v, meta_clips = {}, {}, {}
    contents, clip_types = [], []
    miss_rng = np.random.default_rng([seed, 3])
    for i, cid in enumerate(ids):
        rng = np.random.default_rng([seed, 2, i])
        clip = gen.clip(rng)
        for expert in feats:
            missing = miss_rng.random() < spec.p_missing.get(expert, 0.0)
            feats[expert][cid] = float("nan") if missing else clip["feats"][expert]
        caps_content = [gen.caption_and_content(clip, rng) for _ in range(CAPTIONS_PER_CLIP)]
        caps = [tokens for tokens, _ in caps_content]
        contents.append([content for _, content in caps_content])
        clip_types.append(clip["types"])
        captions[cid] = caps
        w2v[cid] = [words.embed(c) for c in caps]
        meta_clips[cid] = {"events": [gen.events[int(e)][1][0] for e in clip["types"]],
                           "salience": [round(float(s), 3) for s in clip["salience"]]}
    _check_free_space(root.parent, feats, w2v)
    root.mkdir(parents=True)
    start = 0
    for split in SPLITS:
        n = sizes[split]
        (root / f"{split}_list.txt").write_text("".join(f"{c}\n" for c in ids[start:start + n]))
        _write_split_qrels(root / QRELS_FILE.format(split=split), gen, ids[start:start + n],
                           clip_types[start:start + n], contents[start:start + n])
        start += n
    for expert, rel in EXPERT_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _dump_hickle(feats[expert], root / rel)
        feats[expert] = {}  # free memory early
    (root / "structured-symlinks").mkdir()
    with open(root / "structured-symlinks" / "raw-captions.pkl", "wb") as fh:
        pickle.dump(captions, fh, protocol=4)
    (root / "text_embeddings").mkdir()
    with open(root / "text_embeddings" / "w2v.pkl", "wb") as fh:
        pickle.dump(w2v, fh, protocol=4)
    meta = {"generator": "data.synthetic", "size": size, "seed": seed, "splits": sizes,
            "spec": dataclasses.asdict(spec), "clips": meta_clips}
    (root / "synthetic-meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def _write_split_qrels(path: Path, gen: _Generator, clip_ids: list[str], clip_types: list, contents: list) -> None:
    """Graded TREC qrels of one split: a caption's own clip has grade 2; every other clip of the split whose
    latent events cover what the caption describes (each named event present, each vaguely named category
    present) has grade 1. A generic caption describes nothing checkable: only its own clip."""
    from retrieval.trec import write_trec_qrels

    n_events, categories = gen.n_events, sorted(gen.by_category)
    cat_index = {c: i for i, c in enumerate(categories)}
    event_cat = np.array([cat_index[gen.events[e][0]] for e in range(n_events)])
    has_event = np.zeros((len(clip_ids), n_events), dtype=np.float32)
    for i, types in enumerate(clip_types):
        has_event[i, types] = 1.0
    has_cat = np.zeros((len(clip_ids), len(categories)), dtype=np.float32)
    np.maximum.at(has_cat, (np.repeat(np.arange(len(clip_ids)), [len(t) for t in clip_types]),
                            event_cat[np.concatenate(clip_types)] if clip_types else []), 1.0)
    n_caps = len(clip_ids) * CAPTIONS_PER_CLIP
    need_event = np.zeros((n_caps, n_events), dtype=np.float32)
    need_cat = np.zeros((n_caps, len(categories)), dtype=np.float32)
    specific = np.zeros(n_caps, dtype=bool)
    for row, content in enumerate(c for caps in contents for c in caps):
        if content is None:
            continue
        specific[row] = True
        for kind, what in content:
            if kind == "event":
                need_event[row, what] = 1.0
            else:
                need_cat[row, cat_index[what]] = 1.0
    # missing[r, j] = required events / categories of caption r that clip j lacks
    missing = need_event @ (1.0 - has_event).T + need_cat @ (1.0 - has_cat).T
    covered = (missing == 0) & specific[:, None]
    qrels = {}
    for row in range(n_caps):
        own = row // CAPTIONS_PER_CLIP
        judged = {clip_ids[j]: 1 for j in np.flatnonzero(covered[row])}
        judged[clip_ids[own]] = 2
        qrels[f"{clip_ids[own]}#{row % CAPTIONS_PER_CLIP}"] = judged
    write_trec_qrels(path, qrels)


def qrels_path(root: str | os.PathLike, split: str) -> Path:
    """The multi-relevance qrels file of a split in a synthetic set (it may not exist for other data)."""
    return Path(root) / QRELS_FILE.format(split=split)


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> None:
    from utils.cli import ArgumentParser, seed_int

    parser = ArgumentParser(
        prog="python -m data.synthetic",
        description="Write a synthetic data set in the exact layout and formats of the CLOTHO feature archive "
                    "(hickle VGGish/VGGSound features, raw-captions.pkl, text_embeddings/w2v.pkl, split lists) "
                    "into OUT/structured-symlinks. Deterministic given --size and --seed; written atomically. "
                    "See docs/DATA.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True,
                        help="data_dir to write (the set goes to OUT/structured-symlinks), e.g. data/CLOTHO-synthetic")
    parser.add_argument("--size", default="clotho",
                        help="clotho: 2314/579/1045 clips x 5 captions, like CLOTHO; tiny: 64/32/32 clips, short "
                             "features (tests, smoke runs)")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (same seed = byte-identical features)")
    parser.add_argument("--root_feat_folder", default="structured-symlinks",
                        help="sub-folder of OUT to write (data_loader.args.root_feat_folder)")
    parser.add_argument("--force", action="store_true", help="replace the set if it already exists")
    args = parser.parse_args(argv)
    spec = spec_for(args.size)
    generate(args.out, args.size, args.seed, spec=spec, root_feat_folder=args.root_feat_folder, force=args.force)


if __name__ == "__main__":
    sys.exit(run_cli(main))
