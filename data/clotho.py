"""Loader for the CLOTHO feature archive in its ORIGINAL layout (docs/DATA.md).

``root_feat = data_dir/root_feat_folder`` holds::

    aggregated_audio/vggish-raw.hickle          clip_id -> float (T, 128)    expert "audio"
    aggregated_vggsound/vggsound-raw.hickle     clip_id -> float (T, 512)    expert "vggsound"
    structured-symlinks/raw-captions.pkl        clip_id -> 5 captions, each a list of str tokens
    text_embeddings/<text_feat>.pkl             clip_id -> 5 float arrays (n_tokens, 300 w2v | 384 minilm)
    train_list.txt  val_list.txt  test_list.txt one clip_id per line

A clip without an expert is stored as a scalar float NaN (the original convention): its row is NaN and ``ind`` is
False. A clip absent from an expert file is an error (it is almost always an id mismatch) unless
``data_loader.args.allow_missing_experts`` is true, in which case it is treated like the NaN convention.
Expert frames are truncated to ``max_tokens[expert]`` keeping the first frames and zero padded; caption tokens to
``max_tokens["text"]``. Pickles are read with latin1 encoding, as the original did.

Nothing is accepted silently (docs/DATA.md): hickle 4 and hickle 5 files are read by data.hickle_io (an unreadable
file, or one holding none of the listed clips, is a one-line error naming it); NaN / +-inf inside features or word
vectors are refused naming the file and clip (data.finite); split lists must be UTF-8 (a BOM is dropped). An archive
holding ``extract-in-progress.json`` (a ``python -m data.extract`` rewrite that failed or was killed part-way, so
its files may mix two extractions) is refused.
"""
from __future__ import annotations

import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from data.finite import check_expert_rows, check_tail, check_text_rows
from data.hickle_io import iter_hickle_dict
from data.textfile import read_utf8
from utils.errors import UserError

SPLITS = ("train", "val", "test")
CAPTIONS_PER_CLIP = 5
EXPERT_PATHS = {
    "audio": "aggregated_audio/vggish-raw.hickle",
    "vggsound": "aggregated_vggsound/vggsound-raw.hickle",
}
EXPERT_DIMS = {"audio": 128, "vggsound": 512}
# experts that ``python -m data.extract`` writes from raw audio (docs/EXTRACT.md; vggish is "audio" above)
from data.experts.registry import ARCHIVE_DIMS, ARCHIVE_PATHS  # noqa: E402 - light module, no model loaded

EXPERT_PATHS.update(ARCHIVE_PATHS)
EXPERT_DIMS.update(ARCHIVE_DIMS)
TEXT_DIMS = {"w2v": 300, "minilm": 384}
# written by data.extract before it rewrites an archive, removed after its extract.json: while it exists the archive
# may mix files of two extractions
IN_PROGRESS = "extract-in-progress.json"
RAW_CAPTIONS_PATH = "structured-symlinks/raw-captions.pkl"


@dataclass
class SplitData:
    split: str                       # "train" | "val" | "test"
    clip_ids: list[str]              # split-list order
    captions: list[list[str]]        # (N, 5) caption strings (tokens joined by spaces)
    experts: dict[str, np.ndarray]   # expert -> float32 (N, max_tokens[expert], D); rows of missing clips are NaN
    ind: dict[str, np.ndarray]       # expert -> bool (N,), False where the clip lacks that expert
    text: np.ndarray                 # float32 (N, 5, max_tokens["text"], D_text), zero padded
    text_lens: np.ndarray            # int64 (N, 5), kept token counts (>= 1)

    def __len__(self) -> int:
        return len(self.clip_ids)


# ----------------------------------------------------------------------------------------------------------------
def root_feat_dir(config: dict) -> Path:
    args = config["data_loader"]["args"]
    return Path(args["data_dir"]) / args["root_feat_folder"]


def archive_stamp(config: dict) -> dict[str, list[int] | None]:
    """Size and mtime of every archive file a training run reads (split lists, captions, text features, the
    configured experts), keyed by path under root_feat: what ``train.py --resume`` compares to refuse continuing on
    other data. Size + mtime (not ctime): a resume must survive a copy or a chmod of the archive."""
    root = root_feat_dir(config)
    rels = [f"{s}_list.txt" for s in SPLITS] + [RAW_CAPTIONS_PATH,
                                                 f"text_embeddings/{config['experts']['text_feat']}.pkl"]
    rels += [EXPERT_PATHS[e] for e in sorted(config["experts"]["modalities"]) if e in EXPERT_PATHS]
    out: dict[str, list[int] | None] = {}
    for rel in rels:
        try:
            st = (root / rel).stat()
        except OSError:
            out[rel] = None
            continue
        out[rel] = [int(st.st_size), int(st.st_mtime_ns)]
    return out


def ensure_data(config: dict) -> Path:
    """Return root_feat; generate the synthetic set there first when enabled in the config and missing."""
    args = config["data_loader"]["args"]
    root = root_feat_dir(config)
    syn = args.get("synthetic", {})
    if syn.get("enabled"):
        from data.synthetic import generate, is_current

        size, seed = syn.get("size", "clotho"), int(syn.get("seed", 0))
        if not root.exists():
            print(f"{root}: not found; generating the synthetic '{size}' set (seed {seed}) there first", flush=True)
            generate(root.parent, size=size, seed=seed, root_feat_folder=root.name)
        elif not is_current(root, size, seed):
            # a set cached by an older generator (or another seed/size) would silently give other numbers
            print(f"{root}: synthetic set differs from the current generator defaults (size '{size}', seed {seed}); "
                  "regenerating it", flush=True)
            generate(root.parent, size=size, seed=seed, root_feat_folder=root.name, force=True)
    if not root.is_dir():
        hint = (" (set data_loader.args.synthetic.enabled=true to generate a synthetic set, or see docs/DATA.md "
                "for the real archive)")
        raise UserError(f"{root}: feature folder not found{hint}")
    return root


def load_clotho(config: dict, splits: Sequence[str]) -> dict[str, SplitData]:
    """Load the requested splits (any of train/val/test) of the archive named by ``config``; validate everything."""
    splits = list(dict.fromkeys(splits))
    for split in splits:
        if split not in SPLITS:
            raise UserError(f"load_clotho: unknown split '{split}' (choose from {', '.join(SPLITS)})")
    args = config["data_loader"]["args"]
    experts = sorted(config["experts"]["modalities"])
    text_feat = config["experts"]["text_feat"]
    max_tokens = args["max_tokens"]
    allow_missing = bool(args.get("allow_missing_experts", False))
    for expert in experts:
        if expert not in EXPERT_PATHS:
            raise UserError(f"config: experts.modalities: unknown expert '{expert}' "
                            f"(known: {', '.join(sorted(EXPERT_PATHS))})")
        if expert not in max_tokens:
            raise UserError(f"config: data_loader.args.max_tokens.{expert}: missing")
    if text_feat not in TEXT_DIMS:
        raise UserError(f"config: experts.text_feat: unknown text feature '{text_feat}' "
                        f"(known: {', '.join(sorted(TEXT_DIMS))})")
    root = ensure_data(config)
    if (root / IN_PROGRESS).exists():
        raise UserError(f"{root / IN_PROGRESS}: an extraction into this archive did not finish (it failed or was "
                        "killed part-way, so its files may mix two extractions); re-run python -m data.extract to "
                        "complete it")

    # split lists: read, check duplicates and overlaps
    lists: dict[str, list[str]] = {s: read_split_list(root / f"{s}_list.txt") for s in splits}
    seen: dict[str, str] = {}
    for split, ids in lists.items():
        for cid in ids:
            if cid in seen:
                raise UserError(f"{root / f'{split}_list.txt'}: clip '{cid}' is also in {seen[cid]}_list.txt "
                                "(splits must not overlap)")
            seen[cid] = split
    for split, ids in lists.items():
        if len(ids) < 2:  # evaluated against each other (val, test) or BatchNorm's batch (train)
            raise UserError(f"{root / f'{split}_list.txt'}: 1 clip: a split needs at least 2 (with one candidate every "
                            "query ranks it first, so R@1 = 100 would mean nothing)")
    wanted = [cid for ids in lists.values() for cid in ids]

    out = {s: _empty_split(s, lists[s], experts, max_tokens, TEXT_DIMS[text_feat]) for s in splits}

    # captions
    cap_path = root / RAW_CAPTIONS_PATH
    raw_caps = read_pickle(cap_path)
    _check_ids(raw_caps, lists, cap_path)
    for split, data in out.items():
        for i, cid in enumerate(data.clip_ids):
            data.captions.append(_caption_strings(raw_caps[cid], cap_path, cid))
    del raw_caps

    # text features
    text_path = root / "text_embeddings" / f"{text_feat}.pkl"
    text = read_pickle(text_path)
    _check_ids(text, lists, text_path)
    for split, data in out.items():
        for i, cid in enumerate(data.clip_ids):
            caps = text[cid]
            if not isinstance(caps, (list, tuple)) or len(caps) != CAPTIONS_PER_CLIP:
                n = len(caps) if isinstance(caps, (list, tuple)) else type(caps).__name__
                raise UserError(f"{text_path}: clip '{cid}' has {n} caption arrays, expected {CAPTIONS_PER_CLIP}")
            for k, arr in enumerate(caps):
                data.text_lens[i, k] = _copy_truncated(
                    data.text[i, k], arr, f"{text_path}: clip '{cid}' caption {k}", f"text_feat '{text_feat}'",
                    "empty token array (need >= 1 token)")
        check_text_rows(text_path, split, data.clip_ids, data.text)
    del text

    # experts: streamed clip by clip into the padded arrays (the file's values never sit in memory all at once)
    where = {cid: (split, i) for split, data in out.items() for i, cid in enumerate(data.clip_ids)}
    for expert in experts:
        path = root / EXPERT_PATHS[expert]
        present: set[str] = set()
        for cid, value in iter_hickle_subset(path, wanted):
            present.add(cid)
            split, i = where[cid]
            data = out[split]
            if _is_nan_scalar(value):
                data.experts[expert][i] = np.nan
                continue  # ind stays False: the clip lacks this expert
            _copy_truncated(data.experts[expert][i], value, f"{path}: clip '{cid}'", f"expert '{expert}'",
                            "no frames (T = 0); store NaN for a missing clip")
            data.ind[expert][i] = True
        absent = {s: [cid for cid in ids if cid not in present] for s, ids in lists.items()}
        for split, miss in absent.items():
            if miss and not allow_missing:
                raise UserError(
                    f"{path}: {len(miss)} clips of {split}_list.txt missing (first: {_first(miss)}); a clip "
                    "without this expert must be stored as a NaN scalar, or set "
                    "data_loader.args.allow_missing_experts=true")
            if miss:  # allowed, but never silent
                print(f"{path}: {len(miss)} clips of {split}_list.txt absent, treated as missing this expert "
                      f"(allow_missing_experts; first: {_first(miss)})", file=sys.stderr, flush=True)
                buf = out[split].experts[expert]
                for cid in miss:
                    buf[where[cid][1]] = np.nan
        for split, data in out.items():
            check_expert_rows(path, split, data.clip_ids, data.experts[expert], data.ind[expert],
                              f"expert '{expert}' features")
    for split, data in out.items():  # a clip without any expert has no audio embedding: its scores would be NaN
        if data.clip_ids and experts:
            none = ~np.logical_or.reduce([data.ind[e] for e in experts])
            if none.any():
                first = data.clip_ids[int(np.flatnonzero(none)[0])]
                raise UserError(f"{root / f'{split}_list.txt'}: clip '{first}' has no expert at all (missing in "
                                f"{', '.join(EXPERT_PATHS[e] for e in experts)}; {int(none.sum())} such clips): "
                                "nothing to embed it with; drop it from the split list")
    return out


# ----------------------------------------------------------------------------------------------------------------
# readers
# ----------------------------------------------------------------------------------------------------------------
def read_split_list(path: Path) -> list[str]:
    ids = [line.strip() for line in read_utf8(path, "split list").splitlines()]
    ids = [cid for cid in ids if cid]
    if not ids:
        raise UserError(f"{path}: empty split list")
    dup = _duplicates(ids)
    if dup:
        raise UserError(f"{path}: {len(dup)} duplicated clip ids (first: {_first(dup)})")
    return ids


def read_pickle(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh, encoding="latin1")
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise UserError(f"{path}: cannot be read as a pickle ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a pickled dict clip_id -> value, got {type(data).__name__}")
    return data


def read_hickle_subset(path: Path, ids: Iterable[str]) -> dict[str, Any]:
    """Values of ``ids`` in a hickle dict file (hickle 4 or 5; absent ids are left out; see data/hickle_io.py)."""
    return dict(iter_hickle_subset(path, ids))


def iter_hickle_subset(path: Path, ids: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """``(clip id, value)`` of the ``ids`` the file holds, one clip at a time (data/hickle_io.iter_hickle_dict).

    Never silently empty: a file that holds none of the wanted clips is an error naming the file.
    """
    ids = list(ids)
    found = False
    for item in iter_hickle_dict(path, ids):
        found = True
        yield item
    if ids and not found:
        raise UserError(f"{path}: holds none of the {len(ids)} clips of the split lists (first wanted: "
                        f"{_first(ids)}); wrong file, or clip ids that differ from the lists")


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def _empty_split(split: str, ids: list[str], experts: list[str], max_tokens: dict, d_text: int) -> SplitData:
    n = len(ids)
    return SplitData(
        split=split,
        clip_ids=list(ids),
        captions=[],
        experts={e: np.zeros((n, int(max_tokens[e]), EXPERT_DIMS[e]), dtype=np.float32) for e in experts},
        ind={e: np.zeros(n, dtype=bool) for e in experts},
        text=np.zeros((n, CAPTIONS_PER_CLIP, int(max_tokens["text"]), d_text), dtype=np.float32),
        text_lens=np.zeros((n, CAPTIONS_PER_CLIP), dtype=np.int64),
    )


def _check_ids(data: dict, lists: dict[str, list[str]], path: Path) -> None:
    for split, ids in lists.items():
        miss = [cid for cid in ids if cid not in data]
        if miss:
            raise UserError(f"{path}: {len(miss)} clips of {split}_list.txt missing (first: {_first(miss)})")


def _caption_strings(caps: Any, path: Path, cid: str) -> list[str]:
    if not isinstance(caps, (list, tuple)) or len(caps) != CAPTIONS_PER_CLIP:
        n = len(caps) if isinstance(caps, (list, tuple)) else type(caps).__name__
        raise UserError(f"{path}: clip '{cid}' has {n} captions, expected {CAPTIONS_PER_CLIP}")
    out = []
    for k, cap in enumerate(caps):
        if isinstance(cap, str):
            text = cap.strip()
        elif isinstance(cap, (list, tuple)) and all(isinstance(t, str) for t in cap):
            text = " ".join(cap)
        else:
            raise UserError(f"{path}: clip '{cid}' caption {k}: expected a list of str tokens")
        if not text:
            raise UserError(f"{path}: clip '{cid}' caption {k}: empty caption")
        out.append(text)
    return out


def _copy_truncated(dest: np.ndarray, value: Any, where: str, what: str, empty: str) -> int:
    """Copy the first ``len(dest)`` rows of a ``(T, D)`` array into zero-padded ``dest``; returns rows kept.

    Truncation keeps the first frames / tokens, as the original loader does (docs/DATA.md).
    """
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise UserError(f"{where}: values of dtype {arr.dtype}, expected numbers for {what}")
    if arr.ndim != 2 or arr.shape[1] != dest.shape[1]:
        raise UserError(f"{where}: shape {arr.shape}, expected (T, {dest.shape[1]}) for {what}")
    if arr.shape[0] == 0:
        raise UserError(f"{where}: {empty}")
    n = min(arr.shape[0], dest.shape[0])
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused by data.finite after
        dest[:n] = arr[:n]
    if arr.shape[0] > n:
        check_tail(where, arr, n)
    return n


def _is_nan_scalar(value: Any) -> bool:
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return bool(np.isnan(value))
    return False


def _duplicates(ids: list[str]) -> list[str]:
    seen, dup = set(), []
    for cid in ids:
        if cid in seen:
            dup.append(cid)
        seen.add(cid)
    return dup


def _first(ids: list[str], n: int = 3) -> str:
    shown = ", ".join(repr(c) for c in ids[:n])
    return shown + (", ..." if len(ids) > n else "")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m data.clotho CFG [--splits train,val,test]``: load, print counts, shapes, the load time and the
    content warnings of data/content_checks.py (duplicate clips across or within splits, all-zero features)."""
    import argparse

    from utils.config import load_config

    from utils.cli import ArgumentParser  # one-line usage errors, exit 2

    parser = ArgumentParser(prog="python -m data.clotho",
                            description="Load (and validate) the data set named by a config; print a summary, and warn "
                                        "about duplicate clips (within or across splits: leakage) and all-zero "
                                        "features.")
    parser.add_argument("config", help="training config, e.g. configs/clotho/train-vggish-vggsound.json")
    parser.add_argument("--splits", default="train,val,test", help="comma-separated splits to load (default: all)")
    parser.add_argument("--custom_args", default=None, help="config overrides \"key.sub=value,...\", as in train.py")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.custom_args)
    t0 = time.time()
    data = load_clotho(config, [s for s in args.splits.split(",") if s])
    for split, d in data.items():
        shapes = ", ".join(f"{e} {tuple(a.shape)} ({int(d.ind[e].sum())} present)" for e, a in d.experts.items())
        print(f"{split}: {len(d)} clips x {d.text.shape[1]} captions; text {tuple(d.text.shape)}; {shapes}")
    print(f"loaded in {time.time() - t0:.1f}s")
    from data.content_checks import content_warnings
    warnings = content_warnings(data)
    for line in warnings:
        print(f"warning: {line}")
    if not warnings:
        print("content: no duplicate clips, no all-zero features")


if __name__ == "__main__":
    from utils.errors import run_cli

    sys.exit(run_cli(main))
