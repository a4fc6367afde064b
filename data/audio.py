"""Decode and check audio files for feature extraction (soundfile + soxr; no torchaudio).

Every file is decoded once at its own rate, mixed down to mono (mean of the channels), and checked before any
expert sees it. A file that would give a wrong feature raises :class:`BadAudio` naming the file:

* from the header alone (``soundfile.info``, before any sample is decoded): unreadable (not a decodable
  wav/flac/ogg/mp3), a sample rate outside ``MIN_RATE``..``MAX_RATE`` (a 1 Hz header would turn 2 s of samples into
  13 hours of audio at 16 kHz), longer than ``max_seconds`` (memory grows with the clip's length), a WAV whose header
  announces more audio data than the file holds (truncated copy), empty (no samples);
* from the samples (read in blocks as float64, so a float64 file's values that overflow float32 are seen as they
  are): non-finite samples (NaN / inf), samples beyond full scale (peak above ``FULL_SCALE_LIMIT`` = +12 dBFS:
  PCM formats cannot exceed 1.0, lossy decoders overshoot a little, up to ~1.6 on a full-scale square wave; float
  files far beyond it hold garbage that would give garbage features), silent (the peak after removing the DC
  offset at or below ``silence_dbfs``: every feature of silence is the same vector, so it can only mislead);
* shorter than one patch of an expert (``fit_length``), unless the caller pads it explicitly.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.errors import UserError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
SILENCE_DBFS = -80.0  # peak amplitude below this (re. full scale 1.0) counts as silence
MIN_RATE = 1000       # Hz; lower header rates are implausible (telephone speech is 8000)
MAX_RATE = 384000     # Hz; the highest rate of common studio formats (DXD)
MAX_SECONDS = 300.0   # default longest clip (--max-seconds): peak RSS ~0.7 GB at 30 s, 1.5 GB at 300 s, 2 GB at 600 s
FULL_SCALE_LIMIT = 4.0  # +12 dBFS: the largest |sample| accepted (lossy decoders overshoot 1.0 a little)
# formats whose header states the exact length (mp3 / ogg give estimates): fewer frames read means a truncated file
EXACT_LENGTH_FORMATS = ("WAV", "WAVEX", "RF64", "W64", "FLAC", "AIFF")
# the accept / refuse rules above, as a cache key part: a cached feature made under other rules is not reused
CHECKS_VERSION = 2


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
    """Audio files under ``folder`` (recursive), as sorted POSIX paths relative to it.

    Symbolically linked folders are followed (once each: a link back up the tree is not entered again); hidden
    files and folders (names starting with '.', e.g. ``.trash``) are skipped.
    """
    if not folder.is_dir():
        raise UserError(f"{folder}: {'is a file, not an audio folder' if folder.exists() else 'audio folder not found'}")
    out = []
    seen = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop or a second link to the same folder
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(root)
        for name in files:
            if name.startswith(".") or Path(name).suffix.lower().rstrip() not in AUDIO_EXTENSIONS:
                continue
            if (base / name).is_file():
                out.append((base / name).relative_to(folder).as_posix())
    return sorted(out)


def near_names(listed: list[str]) -> dict[str, dict[str, str]]:
    """The listed names under each near-miss key (Unicode NFC, stripped spaces, lower case), built once per folder
    so that explaining every missing CSV row costs a lookup, not a pass over the folder."""
    keys = {"nfc": lambda n: unicodedata.normalize("NFC", n),
            "spaces": lambda n: "/".join(p.strip() for p in n.split("/")),
            "case": str.lower}
    out: dict[str, dict[str, str]] = {kind: {} for kind in keys}
    for name in listed:
        for kind, key in keys.items():
            out[kind].setdefault(key(name), name)
    return out


def why_not_listed(folder: Path, rel: str, near: dict[str, dict[str, str]]) -> str:
    """Why ``rel`` (a clip id of the CSV) is not among the listed files (``near``: :func:`near_names` of what
    :func:`list_audio` found): a message tail."""
    path = folder / rel
    parts = Path(rel).parts
    if path.is_symlink() and not path.exists():
        return f"is a broken symbolic link (to {os.readlink(path)})"
    if path.is_dir():
        return "is a folder, not an audio file"
    if path.exists():
        if Path(rel).suffix.lower() not in AUDIO_EXTENSIONS:
            return f"not a supported audio format (supported: {', '.join(AUDIO_EXTENSIONS)})"
        if any(part.startswith(".") for part in parts):
            return "is a hidden file or under a hidden folder (names starting with '.' are skipped)"
        if not path.is_file():
            return "is not a regular file"
    other = near["nfc"].get(unicodedata.normalize("NFC", rel))
    if other is not None and other != rel:
        return (f"not found; the folder has {other!r}, which differs only in Unicode normalisation "
                "(composed vs decomposed accents): rename the file or fix the CSV")
    other = near["spaces"].get(rel)
    if other is not None:
        return (f"not found; the folder has {other!r}, which differs only in surrounding spaces (the CSV's "
                "file_name is stripped): rename the file")
    other = near["case"].get(rel.lower())
    if other is not None:
        return f"not found; the folder has {other!r}, which differs only in letter case"
    return "named in the CSV but not found in the audio folder"


@contextlib.contextmanager
def _quiet_stderr(active: bool):
    """Silence file descriptor 2 (libmpg123 prints warnings such as "ID3v2: unrealistic small tag length" there for
    valid MP3s, in the middle of our output); errors still arrive as soundfile exceptions."""
    if not active:
        yield
        return
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _libsndfile_reason(err: Exception) -> str:
    """libsndfile's reason without the path it repeats; its "File does not exist or is not a regular file (possibly a
    pipe?)" for an existing file whose bytes it does not recognise (e.g. random bytes named .mp3) is misleading."""
    text = str(err).strip()
    text = re.sub(r"^Error opening '.*?': ", "", text, flags=re.DOTALL)
    if "does not exist or is not a regular file" in text:
        text = "format not recognised"
    return f"{type(err).__name__}: {text[:120]}"


_DATA_TOO_LONG = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def decode(path: Path, silence_dbfs: float = SILENCE_DBFS, max_seconds: float = MAX_SECONDS) -> Decoded:
    """Read ``path`` as mono float32 at its own rate and check it (see the module docstring)."""
    import soundfile as sf

    if not path.is_file():
        raise BadAudio(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise BadAudio(f"{path}: empty (a 0-byte file)")
    quiet = path.suffix.lower() == ".mp3"
    try:
        with _quiet_stderr(quiet):
            info = sf.info(str(path))
    except Exception as err:  # noqa: BLE001 - libsndfile raises several types for undecodable input
        raise BadAudio(f"{path}: cannot be decoded as audio ({_libsndfile_reason(err)})") from None
    rate, frames, channels = int(info.samplerate), int(info.frames), int(info.channels)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise BadAudio(f"{path}: implausible sample rate {rate} Hz in the header (accepted: {MIN_RATE}-{MAX_RATE} Hz)")
    if frames / rate > max_seconds:
        raise BadAudio(f"{path}: {frames / rate:.1f} s long, over the {max_seconds:g} s limit (--max-seconds; memory "
                       "grows with the clip's length: cut the file, or raise the limit)")
    too_long = _DATA_TOO_LONG.search(info.extra_info or "")
    if too_long and int(too_long.group(1)) > int(too_long.group(2)):
        raise BadAudio(f"{path}: truncated: the header announces {int(too_long.group(1))} bytes of audio data, the "
                       f"file holds {int(too_long.group(2))} (an interrupted copy or download?)")
    if frames == 0:
        raise BadAudio(f"{path}: empty (no samples)")
    # float64 only for float64 files (their values may overflow float32); float32 otherwise, as libsndfile decodes.
    # One read call: libmpg123's output depends (in the last bit) on the size of the reads.
    try:
        with _quiet_stderr(quiet):
            data, _ = sf.read(str(path), dtype="float64" if info.subtype == "DOUBLE" else "float32", always_2d=True)
    except Exception as err:  # noqa: BLE001
        raise BadAudio(f"{path}: cannot be decoded as audio ({_libsndfile_reason(err)})") from None
    n = data.shape[0]
    if n < frames and info.format in EXACT_LENGTH_FORMATS:
        raise BadAudio(f"{path}: truncated: the header announces {frames} frames, only {n} could be read")
    if n == 0:
        raise BadAudio(f"{path}: empty (no samples)")
    finite = np.isfinite(data)
    if not finite.all():
        raise BadAudio(f"{path}: {int((~finite).any(axis=1).sum())} of {n} samples are NaN or infinite")
    peak = float(np.abs(data).max())
    if peak > FULL_SCALE_LIMIT:
        beyond = " (beyond the float32 range)" if peak > float(np.finfo(np.float32).max) else ""
        raise BadAudio(f"{path}: samples exceed full scale: peak {peak:.3g}{beyond}, more than {FULL_SCALE_LIMIT:g} "
                       f"(+{20 * np.log10(FULL_SCALE_LIMIT):.0f} dBFS); audio must be scaled to +-1.0")
    samples = (data.mean(axis=1, dtype=data.dtype) if channels > 1 else data[:, 0]).astype(np.float32, copy=False)
    del data, finite
    level = float(np.abs(samples - samples.mean(dtype=np.float64)).max())  # a constant offset (DC) is no signal
    if level <= 10.0 ** (silence_dbfs / 20.0):
        if peak == 0.0:
            what = "digital silence"
        elif level == 0.0:
            what = f"a constant value {samples[0]:.3g}"
        else:
            what = f"peak {20 * np.log10(level):.0f} dBFS" + (" around a constant offset" if level < peak / 2 else "")
        raise BadAudio(f"{path}: silent ({what}, below the {silence_dbfs:g} dBFS threshold)")
    return Decoded(path=path, rate=rate, samples=np.ascontiguousarray(samples))


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
