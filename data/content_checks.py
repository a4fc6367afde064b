"""Content checks of a loaded data set: values that load fine but would silently skew training or evaluation.

* duplicate clips: two clips whose features are identical in every expert (as loaded: truncated to max_tokens and
  zero padded; missing in the same experts). Across splits this is leakage (a test clip the model was trained on
  inflates the test metrics); within a split, two copies of one recording.
* all-zero clips: an expert's features present (not the NaN marker of a missing clip) but all zeros, which is what
  a failed extraction writes; a missing clip should be stored as NaN so that the model ignores that expert.

``python -m data.clotho CONFIG`` prints them as warnings and ``python -m data.extract`` notes the duplicates among the
clips it extracted (:func:`same_features`); nothing is refused (real collections may hold genuine
silence or genuine duplicates). Cost: one pass over the features (an exact integer fingerprint per clip), then an
exact comparison of the clips whose fingerprints collide.
"""
from __future__ import annotations

from typing import Mapping
import hashlib
from typing import Iterable, Sequence

import numpy as np

MAX_SHOWN = 3


def clip_fingerprints(data: Mapping[str, object]) -> dict[str, np.ndarray]:
    """``{split: (N, n_experts) uint64}``: per clip and expert, the wrapping sum of its feature bits (0 if missing)."""
    out = {}
    for split, d in data.items():
        cols = []
        for expert in sorted(d.experts):
            flat = np.ascontiguousarray(d.experts[expert]).reshape(len(d.clip_ids), -1).view(np.uint32)
            fp = flat.sum(axis=1, dtype=np.uint64)
            cols.append(np.where(d.ind[expert], fp + np.uint64(1), np.uint64(0)))  # +1: present all-zero != missing
        out[split] = np.stack(cols, axis=1) if cols else np.zeros((len(d.clip_ids), 0), np.uint64)
    return out


def duplicate_clips(data: Mapping[str, object]) -> list[tuple[str, str, str, str]]:
    """``(split, clip, earlier split, earlier clip)`` for each clip identical to an earlier one (train, val, test
    order), in every expert. Clips missing every expert are never reported (the loader refuses them)."""
    fps = clip_fingerprints(data)
    first_seen: dict[bytes, list[tuple[str, int]]] = {}
    found = []
    for split, d in data.items():
        for i, row in enumerate(fps[split]):
            if not row.any():
                continue
            bucket = first_seen.setdefault(row.tobytes(), [])
            twin = next(((s, j) for s, j in bucket if _same_clip(data[s], j, d, i)), None)
            if twin is None:
                bucket.append((split, i))
            else:
                found.append((split, d.clip_ids[i], twin[0], data[twin[0]].clip_ids[twin[1]]))
    return found


def all_zero_clips(data: Mapping[str, object]) -> list[tuple[str, str, list[str]]]:
    """``(split, expert, clip ids)`` of present clips whose features in that expert are all zeros."""
    found = []
    for split, d in data.items():
        for expert in sorted(d.experts):
            flat = d.experts[expert].reshape(len(d.clip_ids), -1)
            zero = d.ind[expert] & ~flat.any(axis=1)
            if zero.any():
                found.append((split, expert, [d.clip_ids[i] for i in np.flatnonzero(zero)]))
    return found


def content_warnings(data: Mapping[str, object]) -> list[str]:
    """One line per finding, worded for the user; empty when the data set is clean."""
    lines = []
    dups = duplicate_clips(data)
    pairs: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for split, cid, other_split, other in dups:
        pairs.setdefault((other_split, split), []).append((cid, other))
    for (a, b), items in pairs.items():
        shown = ", ".join(f"{b} {cid!r} = {a} {other!r}" for cid, other in items[:MAX_SHOWN])
        more = ", ..." if len(items) > MAX_SHOWN else ""
        why = ("the same recording in two splits: its scores on the later split are not held-out (leakage)"
               if a != b else "two copies of one recording in the split")
        lines.append(f"{_clips(len(items), b)} the same features as a {a} clip in every expert ({shown}{more}): {why}")
    for split, expert, ids in all_zero_clips(data):
        shown = ", ".join(repr(c) for c in ids[:MAX_SHOWN]) + (", ..." if len(ids) > MAX_SHOWN else "")
        lines.append(f"{_clips(len(ids), split)} all-zero '{expert}' features although marked present ({shown}): "
                     "a failed extraction? a clip without this expert should be stored as NaN")
    return lines


def _clips(n: int, split: str) -> str:
    return f"1 {split} clip has" if n == 1 else f"{n} {split} clips have"


def _same_clip(a, i: int, b, j: int) -> bool:
    return all(bool(a.ind[e][i]) == bool(b.ind[e][j]) and
               (not a.ind[e][i] or np.array_equal(a.experts[e][i], b.experts[e][j])) for e in a.experts)


def same_features(clips: Iterable[tuple[str, Sequence[np.ndarray]]]) -> list[tuple[str, str]]:
    """``(clip, earlier clip)`` for each clip whose feature arrays (one per expert) equal an earlier clip's exactly.

    For freshly extracted clips of any length (data.extract): a digest of each clip's bytes, shapes and dtypes."""
    seen: dict[bytes, str] = {}
    found = []
    for cid, arrays in clips:
        h = hashlib.blake2b(digest_size=16)
        for a in arrays:
            a = np.ascontiguousarray(a)
            h.update(repr((a.shape, a.dtype.str)).encode())
            h.update(a.data)
        key = h.digest()
        if key in seen:
            found.append((cid, seen[key]))
        else:
            seen[key] = cid
    return found
