"""The log-mel front end shared by VGGish and YAMNet (numpy only), as their public releases define it.

Both models were trained on the same spectrogram (VGGish's ``mel_features.py`` / YAMNet's ``features.py``):
16 kHz mono -> frames of 25 ms (400 samples) every 10 ms (160), no padding -> periodic Hann window -> |rFFT| with
512 bins (the next power of two) -> 64 mel bands 125-7500 Hz (HTK mel scale, triangles built in the mel domain,
the DC bin zeroed) -> log(mel + offset) -> patches of 96 frames (0.96 s). They differ only in the log offset
(VGGish 0.01, YAMNet 0.001) and in the patch hop (VGGish 96 frames, YAMNet 48).
"""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
WINDOW = 400          # 25 ms
HOP = 160             # 10 ms
N_FFT = 512           # 2 ** ceil(log2(WINDOW))
N_MELS = 64
F_MIN, F_MAX = 125.0, 7500.0
PATCH_FRAMES = 96     # 0.96 s
MIN_SAMPLES = WINDOW + (PATCH_FRAMES - 1) * HOP  # shortest waveform that gives one patch: 15,600 samples

_MEL_CACHE: dict = {}


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_matrix(n_fft: int = N_FFT, rate: int = SAMPLE_RATE, n_mels: int = N_MELS,
               f_min: float = F_MIN, f_max: float = F_MAX) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) weights; triangles linear in mel, edges equally spaced in mel, DC bin zero."""
    key = (n_fft, rate, n_mels, f_min, f_max)
    if key not in _MEL_CACHE:
        bins_mel = hz_to_mel(np.linspace(0.0, rate / 2.0, n_fft // 2 + 1))
        edges = np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
        lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
        up = (bins_mel[:, None] - lower) / (centre - lower)
        down = (upper - bins_mel[:, None]) / (upper - centre)
        weights = np.maximum(0.0, np.minimum(up, down))
        weights[0, :] = 0.0
        _MEL_CACHE[key] = weights
    return _MEL_CACHE[key]


def frame(samples: np.ndarray, window: int = WINDOW, hop: int = HOP) -> np.ndarray:
    """(n_frames, window) strided view; n_frames = 1 + (len - window) // hop (no padding; 0 if too short)."""
    n = 1 + (len(samples) - window) // hop if len(samples) >= window else 0
    return np.lib.stride_tricks.as_strided(samples, shape=(n, window),
                                           strides=(samples.strides[0] * hop, samples.strides[0]), writeable=False)


def log_mel(samples: np.ndarray, log_offset: float) -> np.ndarray:
    """float32 (n_frames, 64) log-mel spectrogram of 16 kHz mono ``samples``."""
    samples = np.asarray(samples, dtype=np.float64)
    frames = frame(samples)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WINDOW) / WINDOW)  # periodic Hann
    spectrum = np.abs(np.fft.rfft(frames * hann, n=N_FFT, axis=1))
    return np.log(spectrum @ mel_matrix() + log_offset).astype(np.float32)


def patches(features: np.ndarray, hop_frames: int) -> np.ndarray:
    """(n_patches, 96, 64) patches of a log-mel spectrogram every ``hop_frames`` frames (incomplete tail dropped)."""
    n = 1 + (len(features) - PATCH_FRAMES) // hop_frames if len(features) >= PATCH_FRAMES else 0
    if n == 0:
        return np.zeros((0, PATCH_FRAMES, features.shape[1]), dtype=np.float32)
    idx = np.arange(n)[:, None] * hop_frames + np.arange(PATCH_FRAMES)[None, :]
    return np.ascontiguousarray(features[idx])
