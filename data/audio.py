"""Decode and check audio files for feature extraction (soundfile + soxr; no torchaudio).

Every file is decoded once at its own rate, mixed down to mono (mean of the channels), and checked before any
expert sees it. A file that would give a wrong feature raises :class:`BadAudio` naming the file:

* unreadable (not a decodable wav/flac/ogg/mp3), empty (no samples), non-finite samples (NaN / inf),
* silent (peak below ``SILENCE_DBFS``: every feature of silence is the same vector, so it can only mislead),
* shorter than one patch of an expert (``check_length``), unless the caller pads it explicitly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.errors import UserError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
SILENCE_DBFS = -80.0  # peak amplitude below this (re. full scale 1.0) counts as silence


class BadAudio(UserError):
    """An audio file that cannot give a correct feature; the message names the file and the reason."""


@dataclass
class Decoded:
    """One decoded clip: mono float32 samples at ``rate`` and resampled copies, made on demand and kept."""

    path: Path
    rate: int
    samples: np.ndarray
    _resampled: dict = field(default_factory=dict, repr=False)

    @property
    def seconds(self) -> float:
        return len(self.samples) / float(self.rate)

    def at(self, rate: int) -> np.ndarray:
        """The clip at ``rate`` Hz (soxr 'HQ' resampling; the original samples when the rate matches)."""
        if rate == self.rate:
            return self.samples
        if rate not in self._resampled:
            import soxr

            out = soxr.resample(self.samples, self.rate, rate, quality="HQ").astype(np.float32, copy=False)
            self._resampled[rate] = out
        return self._resampled[rate]


def list_audio(folder: Path) -> list[str]:
    """Audio files under ``folder`` (recursive), as sorted POSIX paths relative to it."""
    if not folder.is_dir():
        raise UserError(f"{folder}: audio folder not found")
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith("."))


def decode(path: Path, silence_dbfs: float = SILENCE_DBFS) -> Decoded:
    """Read ``path`` as mono float32 at its own rate and check it (see the module docstring)."""
    import soundfile as sf

    if not path.is_file():
        raise BadAudio(f"{path}: audio file not found")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001 - libsndfile raises several types for undecodable input
        raise BadAudio(f"{path}: cannot be decoded as audio ({type(err).__name__}: {str(err).strip()[:120]})") from None
    if data.shape[0] == 0:
        raise BadAudio(f"{path}: empty (no samples)")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).any(axis=1).sum())
        raise BadAudio(f"{path}: {bad} of {data.shape[0]} samples are NaN or infinite")
    samples = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    peak = float(np.abs(samples).max())
    if peak <= 10.0 ** (silence_dbfs / 20.0):
        level = "digital silence" if peak == 0.0 else f"peak {20 * np.log10(peak):.0f} dBFS"
        raise BadAudio(f"{path}: silent ({level}, below the {silence_dbfs:g} dBFS threshold)")
    return Decoded(path=path, rate=int(rate), samples=np.ascontiguousarray(samples))


def fit_length(clip: Decoded, samples: np.ndarray, min_samples: int, expert: str, pad_short: bool) -> tuple[np.ndarray, bool]:
    """``samples`` (the clip at an expert's rate) if it fills one patch; else zero-padded (``pad_short``) or BadAudio.

    Returns the samples and whether they were padded (the extractor reports padded clips).
    """
    if len(samples) >= min_samples:
        return samples, False
    if not pad_short:
        raise BadAudio(f"{clip.path}: {clip.seconds:.3f} s is shorter than one {expert} patch "
                       f"({min_samples} samples); use --pad-short to zero-pad such clips, or --skip-bad to leave them out")
    return np.concatenate([samples, np.zeros(min_samples - len(samples), dtype=samples.dtype)]), True
