"""Atomic checkpoints: the per-epoch "last" checkpoint (for --resume) and the final trained_model.pth."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.serialization import get_crc32_options, set_crc32_options

from utils.errors import UserError
from utils.io import atomic_path
from utils.outputs import RUN_MODEL

LAST_NAME = "checkpoint-last.pth"
FINAL_NAME = RUN_MODEL  # named once, in utils.outputs (the run record lists it)


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary name, then rename: a kill never leaves a half-written checkpoint.

    Without zip CRC32s: computing them took ~70 % of the time of writing a CE checkpoint (~350 MB, each epoch)
    on the 2-core CPU. The atomic rename already guarantees a complete file; ``torch.load`` reads either kind.
    """
    from utils.testhooks import pause

    previous = get_crc32_options()
    set_crc32_options(False)
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
            pause("checkpoint-write")  # crash tests: killed with the temporary written, before the rename
    finally:
        set_crc32_options(previous)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt / foreign file
        raise UserError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from None


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a state dict (never aliases the live parameters)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
