"""The interface of an audio expert: a front end per clip, then one batched model call for many clips."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from data.experts.registry import ExpertInfo


class Expert:
    """Subclasses set ``sample_rate``, ``min_samples`` and ``frontend_version`` and implement the two steps.

    * :meth:`frontend`: mono float32 samples at ``sample_rate`` (>= ``min_samples``) -> this clip's model input;
    * :meth:`embed`: model inputs of several clips -> one float32 ``(T, dim)`` array per clip, in one batched call.
    """

    sample_rate: int = 16000
    min_samples: int = 1
    frontend_version: str = "1"

    def __init__(self, info: ExpertInfo, weights: str | None = None, threads: int | None = None, batch_size: int = 64):
        self.info = info
        self.threads = threads
        self.batch_size = int(batch_size)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def dim(self) -> int:
        return self.info.dim

    def fingerprint(self) -> str:
        """Identifies weights + front end: a cached feature is reused only under the same fingerprint."""
        return f"{self.name}-{self.frontend_version}"

    def frontend(self, samples: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def embed(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """Short sha256 of a weights file (part of an expert's fingerprint)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()[:12]


def split_rows(stacked: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Undo a concatenation of per-clip rows: ``counts[i]`` consecutive rows per clip."""
    bounds = np.cumsum([0] + list(counts))
    return [np.ascontiguousarray(stacked[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
