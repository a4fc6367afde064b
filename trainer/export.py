"""Encode a split once and score it in chunks: ``(K·N, N)`` clip-major similarity matrices (docs/FORMATS.md)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

AUDIO_CHUNK = 256   # clips per audio-encoder call (eval mode: BN uses running stats, chunking is exact)
TEXT_CHUNK = 1024   # captions per text-encoder call


@dataclass
class TensorSplit:
    """A split as torch tensors (zero-copy views of :class:`data.clotho.SplitData` arrays on CPU)."""
    split: str
    clip_ids: list[str]
    captions: list[list[str]]
    experts: dict[str, torch.Tensor]   # (N, T, D) float32 (bfloat16: bf16 training copy)
    ind: dict[str, torch.Tensor]       # (N,) bool
    text: torch.Tensor                 # (N, C, L, Dt) float32 (idem)
    text_lens: torch.Tensor            # (N, C) int64
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.clip_ids)

    @property
    def captions_per_clip(self) -> int:
        return int(self.text.shape[1])

    def with_feature_dtype(self, dtype: torch.dtype) -> "TensorSplit":
        """The same split with expert and text features in ``dtype`` (masks, lengths and ids shared)."""
        return TensorSplit(self.split, self.clip_ids, self.captions, {m: t.to(dtype) for m, t in self.experts.items()},
                           dict(self.ind), self.text.to(dtype), self.text_lens, dict(self.extra))

    def to(self, device: torch.device) -> "TensorSplit":
        if all(t.device == device for t in self.experts.values()) and self.text.device == device:
            return self
        return TensorSplit(self.split, self.clip_ids, self.captions,
                           {m: t.to(device) for m, t in self.experts.items()},
                           {m: t.to(device) for m, t in self.ind.items()},
                           self.text.to(device), self.text_lens.to(device), dict(self.extra))


def as_tensor_split(split_data) -> TensorSplit:
    """SplitData (numpy) -> TensorSplit; a TensorSplit is returned unchanged."""
    if isinstance(split_data, TensorSplit):
        return split_data
    return TensorSplit(
        split=split_data.split,
        clip_ids=list(split_data.clip_ids),
        captions=[list(c) for c in split_data.captions],
        experts={m: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for m, a in split_data.experts.items()},
        ind={m: torch.from_numpy(np.asarray(a, dtype=bool)) for m, a in split_data.ind.items()},
        text=torch.from_numpy(np.ascontiguousarray(split_data.text, dtype=np.float32)),
        text_lens=torch.from_numpy(np.asarray(split_data.text_lens, dtype=np.int64)),
    )


@torch.no_grad()
def encode_audio_split(model, ts: TensorSplit, device: torch.device, chunk: int = AUDIO_CHUNK) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities}
    for start in range(0, ts.n, chunk):
        sl = slice(start, start + chunk)
        enc = model.encode_audio({m: ts.experts[m][sl].to(device) for m in model.modalities},
                                 {m: ts.ind[m][sl].to(device) for m in model.modalities})
        for m in model.modalities:
            parts[m].append(enc[m])
    return {m: torch.cat(v) for m, v in parts.items()}


@torch.no_grad()
def compute_sims(model, split_data, device: torch.device | str = "cpu",
                 caption_indices: Sequence[int] | None = None,
                 text_chunk: int = TEXT_CHUNK) -> np.ndarray:
    """Float32 ``(K·N, N)`` sims in eval mode; row ``i·K + k`` is caption ``caption_indices[k]`` of clip ``i``.

    ``caption_indices`` defaults to all captions. Audio is encoded once; text in chunks of ``text_chunk`` captions.
    The model's train/eval mode is restored afterwards.
    """
    device = torch.device(device)
    ts = as_tensor_split(split_data)
    was_training = model.training
    model.eval()
    try:
        audio = encode_audio_split(model, ts, device)
        ind = {m: ts.ind[m].to(device) for m in model.modalities}
        caps = list(range(ts.captions_per_clip)) if caption_indices is None else list(caption_indices)
        K = len(caps)
        cap_idx = torch.as_tensor(caps, dtype=torch.long, device=ts.text.device)
        out = np.empty((ts.n * K, ts.n), dtype=np.float32)
        clips_per_chunk = max(1, text_chunk // K)
        for start in range(0, ts.n, clips_per_chunk):
            sl = slice(start, start + clips_per_chunk)
            text = ts.text[sl].index_select(1, cap_idx).to(device)
            lens = ts.text_lens[sl].index_select(1, cap_idx).to(device)
            sims = model.similarity(model.encode_text(text, lens), audio, ind)
            out[start * K:(start + text.shape[0]) * K] = sims.float().cpu().numpy()
        return out
    finally:
        model.train(was_training)
