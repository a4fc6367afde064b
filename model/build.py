"""Build a CENet from the resolved config (docs/TRAINING.md)."""
from __future__ import annotations

from typing import Any

from data.clotho import EXPERT_DIMS as EXPERT_RAW_DIMS  # VGGish 128, VGGSound 512
from data.clotho import TEXT_DIMS  # w2v 300, minilm 384
from model.ce import CENet
from utils.config import get_key as _get
from utils.errors import UserError


def model_kwargs(config: dict) -> dict[str, Any]:
    """Keyword arguments of :class:`CENet` for a resolved config."""
    mods = sorted(_get(config, "experts.modalities"))
    if not mods:
        raise UserError("config: experts.modalities is empty")
    for m in mods:
        if m not in EXPERT_RAW_DIMS:
            raise UserError(f"config: experts.modalities: unknown expert {m!r} (known: {sorted(EXPERT_RAW_DIMS)})")
    text_feat = _get(config, "experts.text_feat")
    if text_feat not in TEXT_DIMS:
        raise UserError(f"config: experts.text_feat: unknown {text_feat!r} (known: {sorted(TEXT_DIMS)})")
    arch = _get(config, "arch.args")
    use_ce = arch.get("use_ce", "")
    mimic = int(arch.get("mimic_ce_dims", 0))
    if use_ce and use_ce != "pairwise":
        raise UserError(f"config: arch.args.use_ce: only 'pairwise' or '' are supported, got {use_ce!r}")
    if use_ce and len(mods) < 2:
        raise UserError("config: arch.args.use_ce needs at least 2 experts.modalities")
    if use_ce and mimic:
        raise UserError("config: arch.args.use_ce and arch.args.mimic_ce_dims cannot both be set")
    if arch.get("l2renorm", False):
        raise UserError("config: arch.args.l2renorm=true is not implemented (the original raises too)")
    vlad = dict(arch["vlad_clusters"])
    for key in mods + ["text"]:
        if key not in vlad:
            raise UserError(f"config: arch.args.vlad_clusters.{key} missing")
    return dict(
        modalities=mods,
        raw_dims={m: EXPERT_RAW_DIMS[m] for m in mods},
        text_dim=TEXT_DIMS[text_feat],
        vlad_clusters=vlad,
        ghost_clusters=dict(arch.get("ghost_clusters", {"text": 1})),
        use_ce=use_ce,
        mimic_ce_dims=bool(mimic),
        ce_shared_dim=int(arch.get("ce_shared_dim", _get(config, "experts").get("ce_shared_dim", 768))),
        use_mish=bool(arch.get("use_mish", 1)),
        use_bn_reason=bool(arch.get("use_bn_reason", 1)),
        num_g_layers=int(arch.get("num_g_layers", 3)),
        num_h_layers=int(arch.get("num_h_layers", 0)),
        include_self=bool(arch.get("include_self", 1)),
        keep_missing_modalities=bool(arch.get("keep_missing_modalities", False)),
        netvlad_use_mask=bool(arch.get("netvlad_use_mask", False)),
        ce_sequential_update=bool(arch.get("ce_sequential_update", True)),
    )


def build_model(config: dict) -> CENet:
    return CENet(**model_kwargs(config))


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
