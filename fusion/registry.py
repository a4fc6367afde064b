"""Names -> functions, as plain dicts; an unknown name is a ``UserError`` that lists the valid ones."""
from __future__ import annotations

import inspect
from typing import Callable

import numpy as np

from fusion import methods
from fusion.normalize import NORMALIZERS, get_normalizer  # noqa: F401  (re-exported)
from utils.errors import UserError

FUSERS: dict[str, Callable[..., np.ndarray]] = {
    "combsum": methods.combsum,
    "combmnz": methods.combmnz,
    "combmax": methods.combmax,
    "combmin": methods.combmin,
    "combmed": methods.combmed,
    "rrf": methods.rrf,
    "borda": methods.borda,
    "isr": methods.isr,
    "weighted_combsum": methods.weighted_combsum,
}

SCORE_BASED = ("combsum", "combmnz", "combmax", "combmin", "combmed", "weighted_combsum")  # --norm applies


def get_fuser(name: str) -> Callable[..., np.ndarray]:
    try:
        return FUSERS[name]
    except KeyError:
        raise UserError(f"--methods {name!r}: unknown fusion method; valid: {', '.join(FUSERS)}") from None


def fuse(name: str, sims: np.ndarray, captions_per_clip: int, *, params: dict | None = None, **opts) -> np.ndarray:
    """Run method ``name``, passing it only the ``params`` it takes (norm, depth, k, weights) plus ``opts``
    (rows, device, dtype, chunk_clips, progress)."""
    fn = get_fuser(name)
    accepted = inspect.signature(fn).parameters
    own = {key: value for key, value in (params or {}).items() if key in accepted}
    return fn(sims, captions_per_clip, **own, **opts)
