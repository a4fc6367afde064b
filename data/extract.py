"""``python -m data.extract``: a folder of audio + a CLOTHO caption CSV -> a CLOTHO-format archive train.py reads.

Writes under ``--out`` (a ROOT_FEAT folder, e.g. ``data/real/structured-symlinks``)::

    aggregated_<expert>/<expert>-raw.hickle   clip id -> float32 (T, D) per expert (vggish: aggregated_audio/...)
    aggregated_yamnet/yamnet-classes.hickle   clip id -> float32 (521,) YAMNet clip class scores (zero-shot search)
    structured-symlinks/raw-captions.pkl      clip id -> 5 token lists
    text_embeddings/minilm.pkl                clip id -> 5 float32 (n_tokens, 384) MiniLM token features
    train_list.txt val_list.txt test_list.txt
    extract.json                              what was made and how (written last: the archive is complete)
    extract-in-progress.json                  exists only while the archive is being rewritten (or after a
                                              failed / killed rewrite): data.clotho refuses such an archive

Clip ids are the CSV's ``file_name`` values, paths relative to ``--audio``. See docs/EXTRACT.md.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from data.audio import MAX_SECONDS, SILENCE_DBFS, list_audio, near_names, why_not_listed
from data.audio_features import compute_features, compute_features_parallel
from data.clotho import IN_PROGRESS
from data.experts.registry import EXPERTS, expert_info, load_expert
from utils.cli import ArgumentParser, float_in, positive_int, seed_int
from utils.errors import UserError, run_cli
from utils.io import atomic_path, sweep_stale_temps, write_json, write_text

CLASSES_PATH = "aggregated_yamnet/yamnet-classes.hickle"
SPLITS = ("train", "val", "test")
# --silence-dbfs: at 0 dBFS (full scale) or above every unclipped clip would be "silent"; nan would silently
# switch the check off
DBFS = float_in(high=0.0, high_open=True)
SECONDS = float_in(low=1.0, high=24 * 3600.0)


def parse_weights(values: list[str], experts: list[str]) -> dict[str, str]:
    """``--weights PATH`` (for vggish) or ``--weights NAME=PATH`` (repeatable) -> {expert: path}."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = "vggish", value
        expert_info(name)
        if name not in experts:
            raise UserError(f"--weights {value}: expert '{name}' is not in --experts {','.join(experts)}")
        out[name] = path
    return out


def parse_ratios(text: str) -> tuple[float, float, float]:
    try:
        ratios = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--split-ratios {text}: expected three numbers train,val,test") from None
    if len(ratios) != 3 or min(ratios) < 0 or not np.isfinite(ratios).all() or ratios[1] <= 0 or ratios[2] <= 0:
        raise UserError(f"--split-ratios {text}: expected three ratios train,val,test >= 0 with val and test > 0")
    total = sum(ratios)
    if not np.isfinite(total):
        raise UserError(f"--split-ratios {text}: the ratios are too large to add up")
    return tuple(r / total for r in ratios)  # type: ignore[return-value]


MIN_PER_SPLIT = 2  # a ranking needs two candidates (val, test); BatchNorm a batch of two (train)


def assign_splits(ids: list[str], ratios: tuple[float, float, float], seed: int) -> dict[str, list[str]]:
    """Seeded random split of ``ids`` by ``ratios``; val and test get >= 2 clips, train the rest (>= 2)."""
    if len(ids) < 3 * MIN_PER_SPLIT:
        raise UserError(f"{len(ids)} clips: need at least {3 * MIN_PER_SPLIT} ({MIN_PER_SPLIT} per split: train.py "
                        "refuses a val or test split of one clip, and BatchNorm needs two to train)")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n_val = max(MIN_PER_SPLIT, int(round(ratios[1] * len(ids))))
    n_test = max(MIN_PER_SPLIT, int(round(ratios[2] * len(ids))))
    n_train = len(ids) - n_val - n_test
    if n_train < MIN_PER_SPLIT:
        raise UserError(f"--split-ratios: fewer than {MIN_PER_SPLIT} clips left for train out of {len(ids)}")
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}


def read_split_lists(folder: Path, ids: list[str]) -> dict[str, list[str]]:
    """Split lists given by the user (``--split-lists DIR``): every listed id must be a clip of the CSV, and no clip
    may be in two lists. Clips of the CSV in no list are allowed (:func:`unlisted` names them in a note)."""
    from data.clotho import read_split_list

    known = set(ids)
    out: dict[str, list[str]] = {}
    seen: dict[str, Path] = {}
    for split in SPLITS:
        path = folder / f"{split}_list.txt"
        listed = read_split_list(path)
        for cid in listed:
            if cid not in known:
                raise UserError(f"{path}: clip '{cid}' is not in the caption CSV")
            if cid in seen:
                raise UserError(f"{path}: clip '{cid}' is also in {seen[cid]} (a clip belongs to one split)")
            seen[cid] = path
        out[split] = listed
    return out


def keep_extracted(splits: dict[str, list[str]], kept: list[str], folder: Path) -> dict[str, list[str]]:
    """The user's split lists without the clips skipped (--skip-bad); a list left empty is an error."""
    have = set(kept)
    out = {}
    for split, listed in splits.items():
        out[split] = [cid for cid in listed if cid in have]
        dropped = len(listed) - len(out[split])
        if not out[split]:
            raise UserError(f"{folder / f'{split}_list.txt'}: all {len(listed)} clips were skipped as bad audio "
                            "(extract.json is not written; see the messages above)")
        if dropped:
            print(f"note: {dropped} clips of {folder / f'{split}_list.txt'} were skipped as bad audio and are left "
                  f"out of {split}_list.txt", file=sys.stderr)
    return out


def match_csv_and_folder(csv_ids: list[str], folder_files: list[str], folder: Path, csv_path: Path,
                         skip_bad: bool) -> tuple[list[str], list[tuple[str, str]]]:
    """The clip ids to extract, and the mismatches skipped with --skip-bad (else the first one is an error)."""
    from data.text_features import unsafe_clip_id

    if not folder_files:
        raise UserError(f"{folder}: no audio files (wav/flac/ogg/mp3, searched recursively; hidden files and folders "
                        "are skipped)")
    on_disk = set(folder_files)
    in_csv = set(csv_ids)
    problems = [(rel, f"{folder}: file name {rel!r} {unsafe_clip_id(rel)}; rename the file")
                for rel in folder_files if unsafe_clip_id(rel)]
    unsafe = {rel for rel, _ in problems}
    missing = [cid for cid in csv_ids if cid not in on_disk]
    near = near_names(folder_files) if missing else {}
    problems += [(cid, f"{folder / cid}: {why_not_listed(folder, cid, near)} (row of {csv_path})") for cid in missing]
    problems += [(rel, f"{folder / rel}: audio file has no row in {csv_path}") for rel in folder_files
                 if rel not in in_csv and rel not in unsafe]
    if problems and not skip_bad:
        raise UserError(problems[0][1] + (f" (and {len(problems) - 1} more mismatches)" if len(problems) > 1 else ""))
    return [cid for cid in csv_ids if cid in on_disk], problems


def archive_files(names: list[str]) -> list[str]:
    """Every path under --out that an extraction with experts ``names`` writes (relative)."""
    from data.experts.registry import EXPERTS

    files = [EXPERTS[n].archive_path for n in names] + ([CLASSES_PATH] if "yamnet" in names else [])
    return files + ["structured-symlinks/raw-captions.pkl", "text_embeddings/minilm.pkl",
                    *(f"{s}_list.txt" for s in SPLITS), "extract.json", IN_PROGRESS]


def _archive_incomplete(err: OSError, out: Path) -> UserError:
    """A write of the archive failed after the in-progress marker was written: say so (not "nothing partial")."""
    reason = err.strerror or os.strerror(err.errno or errno.EIO)
    where = os.fsdecode(err.filename) if err.filename is not None else str(out)
    return UserError(f"{where}: {reason}; the archive {out} is now incomplete, and {IN_PROGRESS} marks it so "
                     "(train.py refuses it): fix the cause and re-run the extraction")


def previous_experts(out: Path) -> set[str]:
    """The experts an earlier extraction into ``out`` wrote (its extract.json, or the marker of a killed one).

    Only files this tool wrote are ever removed: an archive it did not make (no extract.json) is left alone."""
    found: set[str] = set()
    for name in ("extract.json", IN_PROGRESS):
        try:
            listed = json.loads((out / name).read_text(encoding="utf-8")).get("experts", [])
        except (OSError, ValueError, AttributeError):
            continue
        found |= {n for n in listed if n in EXPERTS}
    return found


def check_out(out: Path, files: list[str]) -> None:
    """Fail early (before minutes of extraction) when --out or a folder the archive needs is a file, or when a file
    of the archive is a folder."""
    for parent in [out, *out.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise UserError(f"--out {out}: {parent} is {'a broken link' if parent.is_symlink() else 'a file'}, "
                                "not a folder")
            break
    for rel in files:
        target = out / rel
        for folder in list(reversed(target.relative_to(out).parents))[1:]:
            if (out / folder).exists() and not (out / folder).is_dir():
                raise UserError(f"{out / folder}: is a file, but the archive needs a folder there (--out {out})")
        if target.is_dir():
            raise UserError(f"{target}: is a folder, but the archive writes a file there (--out {out})")


def write_hickle(path: Path, data: dict) -> None:
    import hickle

    with atomic_path(path) as tmp:
        hickle.dump(data, str(tmp), mode="w")


def write_pickle(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(data, fh, protocol=4)


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m data.extract",
        description="Extract expert features from a folder of audio (wav/flac/ogg/mp3, any rate, mono or stereo) and "
                    "write a CLOTHO-format archive (expert hickles, raw-captions.pkl, MiniLM text features, split "
                    "lists) that train.py reads with a config pointing at it (configs/real-audio/). Resumable: "
                    "features are cached per file, so a killed run continues where it stopped. Bad audio "
                    "(unreadable, empty, silent, NaN, beyond +12 dBFS, implausible sample rate, too long, truncated, "
                    "too short, not matching the CSV) stops with one line naming the file (exit 2) unless --skip-bad. "
                    "Runs offline. See docs/EXTRACT.md.")
    parser.add_argument("--audio", required=True, help="folder of audio files (searched recursively)")
    parser.add_argument("--captions", required=True,
                        help="caption CSV in CLOTHO's release format: file_name,caption_1,...,caption_5; file_name is "
                             "the path relative to --audio and becomes the clip id")
    parser.add_argument("--out", required=True, help="archive folder (ROOT_FEAT), e.g. data/real/structured-symlinks")
    parser.add_argument("--experts", default="yamnet,soundnet",
                        help=f"comma-separated experts (known: {', '.join(EXPERTS)}); default yamnet,soundnet")
    parser.add_argument("--weights", action="append", default=[], metavar="[NAME=]PATH",
                        help="weights file for an expert; a bare PATH is for vggish (a state dict of the public "
                             "VGGish release in its PyTorch port's layout). Repeatable")
    parser.add_argument("--split-ratios", default="0.6,0.2,0.2",
                        help="train,val,test proportions, rescaled to sum to 1 (0.6,0.2,0.2 and 3,1,1 are the same; "
                             "default 0.6,0.2,0.2)")
    parser.add_argument("--split-seed", type=seed_int, default=0, help="seed of the random split (default 0)")
    parser.add_argument("--split-lists", default=None, metavar="DIR",
                        help="use DIR/{train,val,test}_list.txt instead of a random split")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave bad files (and CSV/folder mismatches) out and list them in extract.json instead "
                             "of stopping")
    parser.add_argument("--pad-short", action="store_true",
                        help="zero-pad clips shorter than one patch of an expert to one patch (listed in "
                             "extract.json) instead of treating them as bad")
    parser.add_argument("--silence-dbfs", type=DBFS, default=SILENCE_DBFS,
                        help=f"a clip whose peak is at or below this level (a finite number < 0) is silent, i.e. bad "
                             f"(default {SILENCE_DBFS:g})")
    parser.add_argument("--max-seconds", type=SECONDS, default=MAX_SECONDS,
                        help=f"a clip longer than this (from its header) is bad audio: memory grows with a clip's "
                             f"length (default {MAX_SECONDS:g}; train.py keeps ~30 s per clip anyway)")
    parser.add_argument("--workers", type=positive_int, default=2,
                        help="worker processes, one model thread each (default 2; 1 = in this process)")
    parser.add_argument("--chunk-files", type=positive_int, default=16,
                        help="files per batched model call (default 16)")
    parser.add_argument("--cache", default=None,
                        help="per-file feature cache (default OUT/.extract-cache); kept, so adding audio is cheap")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    run(args)


def run(args: argparse.Namespace) -> dict:
    from data.text_features import read_caption_csv, token_embeddings, tokenize

    folder, out, csv_path = Path(args.audio), Path(args.out), Path(args.captions)
    names = [n.strip() for n in args.experts.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise UserError(f"--experts {args.experts}: give one or more distinct experts")
    for name in names:
        expert_info(name)
    weights = parse_weights(args.weights, names)
    ratios = parse_ratios(args.split_ratios)
    captions = read_caption_csv(csv_path)
    ids, mismatches = match_csv_and_folder(list(captions), list_audio(folder), folder, csv_path, args.skip_bad)
    user_splits = read_split_lists(Path(args.split_lists), list(captions)) if args.split_lists else None
    cache = Path(args.cache) if args.cache else out / ".extract-cache"
    check_out(out, archive_files(names))

    import torch

    torch.set_num_threads(1)
    experts = [load_expert(n, weights=weights.get(n), threads=1) for n in names]  # fails early on bad weights
    sweep_stale_temps(cache, depth=2)  # cache entries a killed extraction was writing
    options = dict(pad_short=args.pad_short, skip_bad=args.skip_bad, chunk_files=args.chunk_files,
                   progress=not args.no_progress, silence_dbfs=args.silence_dbfs, max_seconds=args.max_seconds)
    t0 = time.perf_counter()
    workers = min(args.workers, max(1, len(ids) // args.chunk_files))
    if workers > 1:
        results, bad, timing = compute_features_parallel(folder, ids, [(n, weights.get(n)) for n in names], cache,
                                                         workers, **options)
    else:
        results, bad, timing = compute_features(folder, ids, experts, cache, **options)
    wall_audio = time.perf_counter() - t0
    kept = [r.rel for r in results]
    if user_splits is not None:
        splits = keep_extracted(user_splits, kept, Path(args.split_lists))
        listed = {cid for members in splits.values() for cid in members}
        unlisted = [cid for cid in kept if cid not in listed]
        if unlisted:
            print(f"note: {len(unlisted)} of {len(kept)} clips are in no list of --split-lists {args.split_lists} "
                  f"(first: {unlisted[0]}); they are extracted but train.py will not use them", file=sys.stderr)
    else:
        skipped = mismatches + bad
        if len(kept) < 3 * MIN_PER_SPLIT and skipped:  # say which files --skip-bad left out, not only that too few are left
            raise UserError(f"{len(kept)} clips left after --skip-bad left out {len(skipped)}: need at least 6 (two "
                            f"per split); first left out: {skipped[0][0]} ({skipped[0][1]})")
        splits, unlisted = assign_splits(kept, ratios, args.split_seed), []

    duplicates = _note_duplicates(results, names, splits)
    t1 = time.perf_counter()
    tokens = {cid: [tokenize(c) for c in captions[cid]] for cid in kept}
    flat = [" ".join(t) for cid in kept for t in tokens[cid]]
    embs = token_embeddings(flat, progress=not args.no_progress)
    minilm = {cid: embs[5 * i:5 * i + 5] for i, cid in enumerate(kept)}
    wall_text = time.perf_counter() - t1

    # The archive is rewritten file by file; the marker says so until extract.json is written. A failure or a kill
    # in between leaves the marker, and data.clotho refuses the archive (it would mix this run's files with the last).
    marker = out / IN_PROGRESS
    stale = sorted(set(archive_files(sorted(previous_experts(out) - set(names)))) - set(archive_files(names)))
    write_json(marker, {"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "audio": str(folder),
                        "captions": str(csv_path), "experts": names})
    try:
        (out / "extract.json").unlink(missing_ok=True)
        for e in experts:
            write_hickle(out / e.info.archive_path, {r.rel: r.features[e.name] for r in results})
        if "yamnet" in names:
            write_hickle(out / CLASSES_PATH, {r.rel: r.class_scores for r in results})
        removed = [rel for rel in stale if (out / rel).is_file()]
        for rel in removed:  # an earlier extraction's expert that this one does not redo: its clips are stale
            (out / rel).unlink()
        if removed:
            print(f"note: removed {', '.join(removed)} (written by an earlier extraction into {out} with other "
                  "experts; its clips would not match this archive)", file=sys.stderr)
        write_pickle(out / "structured-symlinks" / "raw-captions.pkl", tokens)
        write_pickle(out / "text_embeddings" / "minilm.pkl", minilm)
        for split, members in splits.items():
            write_text(out / f"{split}_list.txt", "".join(f"{cid}\n" for cid in members))
    except OSError as err:
        raise _archive_incomplete(err, out) from None
    audio_seconds = sum(r.seconds for r in results)
    report = {
        "audio": str(folder), "captions": str(csv_path), "clips": len(kept),
        "splits": {s: len(v) for s, v in splits.items()},
        "experts": {e.name: {"archive_key": e.info.archive_key, "path": e.info.archive_path, "dim": e.dim,
                             "fingerprint": e.fingerprint(), "licence": e.info.licence,
                             "cpu_seconds": round(timing.expert[e.name], 3),
                             "x_real_time_per_core": _ratio(timing.audio_seconds, timing.expert[e.name])}
                    for e in experts},
        "audio_seconds": round(audio_seconds, 3),
        "extracted_audio_seconds": round(timing.audio_seconds, 3), "cached_files": timing.cached_files,
        "workers": workers,
        "wall_seconds": {"audio": round(wall_audio, 3), "text": round(wall_text, 3)},
        "cpu_seconds": {"audio": round(timing.cpu, 3), "decode": round(timing.decode, 3)},
        "x_real_time": _ratio(timing.audio_seconds, wall_audio),
        "x_real_time_per_core": _ratio(timing.audio_seconds, timing.cpu),
        "padded": {r.rel: r.padded for r in results if r.padded},
        "skipped": [{"file": rel, "reason": why} for rel, why in mismatches + bad],
        "not_in_split_lists": unlisted,
        "same_features": [{"file": rel, "same_as": other} for rel, other in duplicates],
        "options": {"pad_short": args.pad_short, "silence_dbfs": args.silence_dbfs, "max_seconds": args.max_seconds},
    }
    try:
        write_json(out / "extract.json", report)
        marker.unlink()
    except OSError as err:
        raise _archive_incomplete(err, out) from None
    speed = (f"{report['x_real_time']}x real time, {report['x_real_time_per_core']}x per CPU core"
             if report["x_real_time"] else "all from cache")
    print(f"{out}: {len(kept)} clips ({audio_seconds / 60:.1f} min of audio; train/val/test "
          f"{len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])}), experts {', '.join(names)}: "
          f"audio {wall_audio:.1f}s ({speed}), text {wall_text:.1f}s; {len(report['padded'])} padded, "
          f"{len(report['skipped'])} skipped (extract.json)", file=sys.stderr)
    return report


def _note_duplicates(results, names: list[str], splits: dict[str, list[str]]) -> list[tuple[str, str]]:
    """Clips whose features equal an earlier clip's in every expert (the same recording under two names?): a note,
    saying when the two landed in different splits (leakage: a test clip the model was trained on)."""
    from data.content_checks import same_features

    found = same_features((r.rel, [r.features[n] for n in names]) for r in results)
    if found:
        split_of = {cid: s for s, members in splits.items() for cid in members}
        across = [(a, b) for a, b in found if split_of.get(a) != split_of.get(b)]
        rel, other = (across or found)[0]
        where = (f"; {len(across)} in another split than its twin, e.g. {rel} ({split_of.get(rel, 'no split')}) and "
                 f"{other} ({split_of.get(other, 'no split')}): leakage" if across else "; each in its twin's split")
        many = len(found) != 1
        print(f"note: {len(found)} clip{'s' * many} ha{'ve' if many else 's'} the same features as another clip in "
              f"every expert (the same recording twice? first: {found[0][0]} = {found[0][1]}){where} (extract.json: "
              "same_features)", file=sys.stderr)
    return found


def _ratio(audio_seconds: float, seconds: float) -> float | None:
    """x real time (audio seconds per second), None when no audio was processed."""
    return round(audio_seconds / seconds, 1) if audio_seconds and seconds > 0 else None


if __name__ == "__main__":
    sys.exit(run_cli(main))
