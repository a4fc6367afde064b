"""The batches of an epoch: a seeded plan of clips and captions, and one vectorised gather per batch.

Epoch e draws its clip order and one caption per clip from ``numpy.random.default_rng([seed, e])``, so the
batches of an epoch do not depend on what happened before it (a resumed run gets identical batches).
"""
from __future__ import annotations

import numpy as np
import torch

from trainer.export import TensorSplit

MINI_TRAIN_BATCHES = 5  # trainer.mini_train / --mini_train: batches per epoch


def epoch_plan(seed: int, epoch: int, n_clips: int, n_captions: int, batch_size: int,
               mini_train: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Batches of (clip indices, caption indices) for one epoch, from a per-epoch seeded generator.

    The last partial batch is kept (drop_last=False), except a final batch of a single clip, which BatchNorm
    cannot train on; it is dropped (only possible when n_clips % batch_size == 1).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n_clips)
    caps = rng.integers(0, n_captions, size=n_clips)
    batches = []
    for start in range(0, n_clips, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 2 and batches:
            break
        batches.append((idx, caps[idx]))
        if mini_train and len(batches) == MINI_TRAIN_BATCHES:
            break
    return batches


def make_batch(ts: TensorSplit, idx: np.ndarray, caps: np.ndarray, device: torch.device):
    i = torch.from_numpy(idx).to(ts.text.device)
    c = torch.from_numpy(caps).to(ts.text.device)
    experts = {m: t.index_select(0, i).to(device, non_blocking=True) for m, t in ts.experts.items()}
    ind = {m: t.index_select(0, i).to(device, non_blocking=True) for m, t in ts.ind.items()}
    text = ts.text[i, c].unsqueeze(1).to(device, non_blocking=True)          # (B, 1, L, Dt)
    lens = ts.text_lens[i, c].unsqueeze(1).to(device, non_blocking=True)     # (B, 1)
    return experts, ind, text, lens

