"""Numeric precision of training and evaluation: ``trainer.precision`` / ``train.py --precision``.

* ``float32``: today's arithmetic exactly (bit-identical to the code before this flag existed, for the same
  seed, device and thread count). A config without the key (runs made before it existed) means ``float32``.
* ``bf16``: ``torch.autocast`` with bfloat16 on the run's device (CPU with AVX-512 BF16 / AMX, or CUDA). The
  master weights, the optimiser state, the loss and the final similarity product stay float32; matrix products
  run in bfloat16. It also switches on the model's exact algebraic rewrites (``CENet.set_fast_paths``: the text
  GEUs' projections as one product, the relation module's first layer as ``A·x_m + B·x_j`` computed once per
  input), which change float rounding only and so are kept out of ``float32``.

Same seed -> same numbers holds in each mode (on the same device and thread count). What changes the bits is
recorded in ``metrics.json["numerics"]`` (:func:`describe`).
"""
from __future__ import annotations

import contextlib
import platform
from typing import Iterator

import torch

from utils.errors import UserError

PRECISIONS = ("float32", "bf16")
LEGACY_PRECISION = "float32"  # a config without trainer.precision was trained before the key existed
AUTOCAST_DTYPES = {"bf16": torch.bfloat16}


def precision_of(config: dict) -> str:
    """The validated ``trainer.precision`` of a resolved config (``float32`` when the key is absent)."""
    value = config.get("trainer", {}).get("precision", LEGACY_PRECISION)
    if value not in PRECISIONS:
        raise UserError(f"config: trainer.precision: {value!r} is not one of {', '.join(PRECISIONS)}")
    return value


def check_supported(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run (rather than silently running something else)."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"trainer.precision: bf16 is not supported on {torch.cuda.get_device_name(device)} "
                        "(use --precision float32)")


def prepare_model(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """Switch the model's exact rewrites on for the reduced-precision modes (off, i.e. untouched, for float32)."""
    if hasattr(model, "set_fast_paths"):
        model.set_fast_paths(precision != "float32")
    return model


def prepare_optimizer(optimizer: torch.optim.Optimizer, precision: str) -> torch.optim.Optimizer:
    """Ranger's one-pass fused update in the reduced-precision modes (float32 keeps the in-place update)."""
    if hasattr(optimizer, "set_one_kernel"):
        optimizer.set_one_kernel(precision != "float32")
    return optimizer


def store_features(split, precision: str):
    """The training-time copy of a split's input features: bfloat16 under bf16 autocast, else unchanged.

    Exact: in CENet the expert frames and caption tokens only enter matrix products (NetVLAD's assignment and
    aggregation), which autocast computes from the same bfloat16 rounding of them; the other uses (missing-clip
    zeroing, the optional padding mask) give the same result on the rounded values. Stored rounded, the batch
    gather moves half the bytes and no step re-casts them; train + val of CLOTHO take ~0.57 GB instead of ~1.1.
    Test evaluation keeps float32 features (compute_sims runs it without autocast).
    """
    dtype = AUTOCAST_DTYPES.get(precision)
    return split if dtype is None else split.with_feature_dtype(dtype)


def holds_eval_splits(precision: str, dump_splits) -> bool:
    """Whether a run reads its evaluation-only splits (test) once, before training, and keeps them.

    Only when training reads a compact copy of the train features (bf16) and the float32 train split is not
    evaluated at the end: loaded after that copy replaced the float32 one, the held splits cost little peak memory
    (CLOTHO, measured: 1.57 -> 1.69 GiB, i.e. 1.82 GB) and save the second read (~1.1 s). Otherwise they are
    checked up front, freed and read again after training.
    """
    return precision in AUTOCAST_DTYPES and "train" not in dump_splits


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """The forward-pass context of ``precision`` on ``device`` (nothing at all for float32)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def describe(precision: str, device: torch.device) -> dict:
    """What decides the bits of a run: precision, device, threads, CPU kernels, torch version."""
    info = {
        "precision": precision,
        "autocast_dtype": str(AUTOCAST_DTYPES[precision]).replace("torch.", "") if precision in AUTOCAST_DTYPES
        else None,
        "fast_paths": precision != "float32",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    if device.type == "cpu":
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    else:
        info["cuda_device"] = torch.cuda.get_device_name(device)
    return info
