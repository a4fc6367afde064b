"""A run folder's inputs as QPP needs them: a split's sims checked to be clip-major with several captions per clip,
its captions present when text features need them, and comma-separated option lists validated.

Shared by the pipeline (qpp/run.py), the fork's recipe (qpp/fork.py) and the CLI (qpp.py), so every entry refuses a
bad input with the same message.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from qpp.features import NEEDS_CAPTIONS
from retrieval.metrics import clip_major_gt_cols
from retrieval.sims_io import SimsManifest, load_sims
from utils.errors import UserError
from utils.outputs import require_complete_run


def load_split(run_dir: Path, split: str) -> tuple[np.ndarray, SimsManifest]:
    npy = run_dir / "sims" / f"{split}.npy"
    if not npy.is_file() and not (run_dir / "sims").is_dir():
        require_complete_run(run_dir)  # names what the folder is not (a run folder, a finished run)
    if not npy.is_file():
        hint = ("" if split == "test" else
                f" (dump it by training with trainer.dump_splits including \"{split}\", or use --cv K to "
                "cross-fit on test)")
        raise UserError(f"{npy}: missing{hint}")
    sims, man = load_sims(run_dir, split)
    k = man.captions_per_clip
    if k < 2:
        raise UserError(f"{npy}: captions_per_clip is {k}; QPP needs several captions per clip")
    if not np.array_equal(man.gt_cols(), clip_major_gt_cols(len(man.clip_ids), k)):
        raise UserError(f"{npy}: rows are not clip-major (row r must be caption r mod {k} of clip r div {k})")
    return np.asarray(sims, dtype=np.float32), man


def check_captions(man: SimsManifest, split: str, blocks: Sequence[str], run_dir: Path) -> None:
    if any(b in NEEDS_CAPTIONS for b in blocks) and len(man.captions) != len(man.query_ids):
        raise UserError(f"{run_dir / 'sims' / (split + '.json')}: manifest has no captions "
                        f"({len(man.captions)} for {len(man.query_ids)} queries); text features need them "
                        "(use --features score,variation)")


def parse_list(value: str | Sequence[str], valid: Sequence[str], what: str) -> list[str]:
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    bad = [v for v in items if v not in valid]
    if bad or not items:
        raise UserError(f"unknown {what} {', '.join(bad) or '(empty)'}; valid: {', '.join(valid)}")
    return list(dict.fromkeys(items))
