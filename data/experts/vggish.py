"""VGGish (Hershey et al. 2017; the AudioSet release) in PyTorch, loading a user-supplied checkpoint (``--weights``).

Front end (``data.audio_dsp``): 16 kHz mono, 25 ms / 10 ms frames, 64 mel bands 125-7500 Hz, log(mel + 0.01),
non-overlapping patches of 96 frames (0.96 s), as the release's ``vggish_input.py``.

Network: conv3x3 64 - pool - conv 128 - pool - conv 256 - conv 256 - pool - conv 512 - conv 512 - pool (all ReLU,
pools 2x2), then fully connected 4096 - 4096 - 128 (ReLU after each), one 128-d row per patch: the "raw" embedding
the archive's ``vggish-raw.hickle`` holds (no PCA / 8-bit post-processing).

Checkpoint: a state dict in the layout of the public PyTorch port of the release (``features.{0,3,6,8,11,13}``,
``embeddings.{0,2,4}`` ``.weight`` / ``.bias``; extra keys such as ``pproc.*`` are ignored). No package ships these
weights and nothing is downloaded: without ``--weights`` the expert stops with a one-line error.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from data import audio_dsp
from data.experts.base import Expert, file_digest, split_rows
from utils.errors import UserError

LOG_OFFSET = 0.01
PATCH_HOP_FRAMES = 96


class VGGishNet(nn.Module):
    """(B, 1, 96, 64) log-mel patches -> (B, 128) embeddings; parameter names as the public PyTorch port."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for item in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                c_in = int(item)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(512 * 6 * 4, 4096), nn.ReLU(inplace=True),
                                        nn.Linear(4096, 4096), nn.ReLU(inplace=True),
                                        nn.Linear(4096, 128), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)                             # (B, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # flatten in TensorFlow's (H, W, C) order
        return self.embeddings(x)


def load_checkpoint(net: VGGishNet, path: Path) -> None:
    """Load a public-port state dict into ``net``; a wrong file is a one-line error naming the first bad key."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise UserError(f"{path}: cannot be read as a VGGish state dict ({type(err).__name__}: {str(err)[:120]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict, got {type(state).__name__}")
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise UserError(f"{path}: not a VGGish checkpoint in the public PyTorch port's layout (missing '{missing[0]}')")
    for key, value in own.items():
        got = state[key]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(value.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise UserError(f"{path}: '{key}' has shape {shape}, expected {tuple(value.shape)}")
        if not torch.isfinite(got).all():
            raise UserError(f"{path}: '{key}' holds non-finite values")
    net.load_state_dict({k: state[k].float() for k in own}, assign=True)


class VGGish(Expert):
    sample_rate = audio_dsp.SAMPLE_RATE
    min_samples = audio_dsp.MIN_SAMPLES
    frontend_version = "logmel-0.01-hop96-v1"

    def __init__(self, info, weights: str | None = None, threads: int | None = None, batch_size: int = 64):
        super().__init__(info, weights, threads, batch_size)
        if not weights:
            raise UserError("vggish: no weights; pass --weights PATH (or vggish=PATH), a state dict of the public VGGish "
                            "release in its PyTorch port's layout (no package ships it; nothing is downloaded)")
        self.weights_path = Path(weights)
        if not self.weights_path.is_file():
            raise UserError(f"{self.weights_path}: VGGish weights file not found")
        with torch.device("meta"):  # no random initialisation of 72 M parameters that the checkpoint replaces
            self.net = VGGishNet().eval()
        load_checkpoint(self.net, self.weights_path)

    def fingerprint(self) -> str:
        return f"{self.name}-{file_digest(self.weights_path)}-{self.frontend_version}"

    def frontend(self, samples: np.ndarray) -> np.ndarray:
        """(n_patches, 96, 64) float32 log-mel patches, non-overlapping."""
        return audio_dsp.patches(audio_dsp.log_mel(samples, LOG_OFFSET), PATCH_HOP_FRAMES)

    @torch.no_grad()
    def embed(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        counts = [len(x) for x in inputs]
        stacked = np.concatenate(inputs) if inputs else np.zeros((0, 96, 64), np.float32)
        rows = [self.net(torch.from_numpy(stacked[i:i + self.batch_size])[:, None]).numpy()
                for i in range(0, len(stacked), self.batch_size)]
        emb = np.concatenate(rows) if rows else np.zeros((0, 128), np.float32)
        return split_rows(emb, counts)


EXPERT = VGGish
