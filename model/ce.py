"""CENet: collaborative experts (CE), MoEE and CE-VGGish over NetVLAD-pooled audio experts (docs/TRAINING.md).

Shapes: B clips, T frames, D feature size, Bt text clips with K captions each, L tokens, M experts.

* ``encode_audio(experts, ind) -> {expert: (B, out_dim_m)}`` (unit norm per expert)
* ``encode_text(text, text_lens) -> (emb {expert: (Bt*K, out_dim_m)}, moe_weights (Bt*K, M))``
* ``similarity(text_enc, audio_enc, ind) -> (Bt*K, B)``
* ``forward(experts, ind, text, text_lens) -> (Bt*K, B)`` sims, clip-major rows (row i*K + k = caption k of clip i).

In training mode BatchNorm uses batch statistics, so the encoders must see the same batch as the original
(one call per batch). In eval mode everything is row-independent and can be chunked freely.
"""
from __future__ import annotations

import itertools
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.layers import (
    GatedEmbeddingUnit,
    GatedEmbeddingUnitReasoning,
    MimicCEGatedEmbeddingUnit,
    Mish,
    NetVLAD,
    ReduceDim,
)

Tensors = Mapping[str, torch.Tensor]


class CENet(nn.Module):
    def __init__(
        self,
        modalities: list[str],
        raw_dims: Mapping[str, int],
        text_dim: int,
        vlad_clusters: Mapping[str, int],
        ghost_clusters: Mapping[str, int],
        use_ce: str = "pairwise",
        mimic_ce_dims: bool = False,
        ce_shared_dim: int = 768,
        moee_out_dims: Mapping[str, int] | None = None,
        use_mish: bool = True,
        use_bn_reason: bool = True,
        num_g_layers: int = 3,
        num_h_layers: int = 0,
        include_self: bool = True,
        keep_missing_modalities: bool = False,
        netvlad_use_mask: bool = False,
        ce_sequential_update: bool = True,
    ):
        super().__init__()
        self.modalities = sorted(modalities)  # alphabetical order everywhere, as the original (docs/TRAINING.md)
        mods = self.modalities
        if use_ce and len(mods) < 2:
            raise ValueError("use_ce requires at least 2 modalities")
        if use_ce and mimic_ce_dims:
            raise ValueError("use_ce and mimic_ce_dims cannot be combined")
        if use_ce and use_ce != "pairwise":
            raise ValueError(f"unsupported use_ce {use_ce!r} (only 'pairwise' or '')")
        self.use_ce = use_ce
        self.mimic_ce_dims = bool(mimic_ce_dims)
        self.include_self = bool(include_self)
        self.keep_missing_modalities = bool(keep_missing_modalities)
        self.netvlad_use_mask = bool(netvlad_use_mask)
        self.ce_sequential_update = bool(ce_sequential_update)

        in_dims = {m: raw_dims[m] * vlad_clusters[m] for m in mods}
        if use_ce or mimic_ce_dims:
            out_dims = {m: ce_shared_dim for m in mods}
        else:
            out_dims = dict(moee_out_dims or {m: raw_dims[m] for m in mods})
        self.out_dims = out_dims

        # Construction order follows the original (RNG parity): audio pooling, text pooling, CE module.
        self.pooling = nn.ModuleDict({
            m: NetVLAD(raw_dims[m], vlad_clusters[m], use_mask=netvlad_use_mask) for m in mods
        })
        self.text_pooling = NetVLAD(text_dim, vlad_clusters["text"], ghost_clusters.get("text", 0),
                                    use_mask=netvlad_use_mask)
        text_vlad_dim = self.text_pooling.out_dim
        self.ce = _CEHead(mods, in_dims, out_dims, text_vlad_dim, use_ce, self.mimic_ce_dims, ce_shared_dim,
                          use_mish, use_bn_reason, num_g_layers, num_h_layers,
                          include_self=self.include_self, sequential=self.ce_sequential_update)

    # ------------------------------------------------------------------ encoders
    def encode_audio(self, experts: Tensors, ind: Tensors) -> dict[str, torch.Tensor]:
        pooled = {}
        for m in self.modalities:
            x = experts[m]
            avail = ind[m].bool()
            if not bool(avail.all()):
                # drop_nans: missing clips are NaN rows; zero them (without touching the caller's tensor)
                x = torch.where(avail[:, None, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
            mask = (x != 0).any(dim=2) if self.netvlad_use_mask else None
            pooled[m] = self.pooling[m](x, mask)
        return self.ce.embed_audio(pooled, ind)

    def encode_text(self, text: torch.Tensor, text_lens: torch.Tensor | None = None):
        Bt, K, L, Dt = text.shape
        flat = text.reshape(Bt * K, L, Dt)
        mask = None
        if self.netvlad_use_mask and text_lens is not None:
            lens = text_lens.reshape(Bt * K, 1).to(flat.device)
            mask = torch.arange(L, device=flat.device)[None, :] < lens
        pooled = self.text_pooling(flat, mask)
        return self.ce.embed_text(pooled)

    def similarity(self, text_enc, audio_enc: Tensors, ind: Tensors) -> torch.Tensor:
        """Availability-renormalised MoE similarity (docs/TRAINING.md) -> (Q, B)."""
        text_emb, weights = text_enc
        mods = self.modalities
        Q = weights.shape[0]
        B = audio_enc[mods[0]].shape[0]
        if self.keep_missing_modalities:
            w = weights.new_ones(Q, B, len(mods))  # original: every expert weight 1, moe weights unused
        else:
            avail = torch.stack([ind[m].to(weights.dtype) for m in mods], dim=1)  # (B, M)
            w = weights[:, None, :] * avail[None, :, :]
            w = w / w.sum(dim=2, keepdim=True)
        sims = None
        for i, m in enumerate(mods):
            term = w[:, :, i] * (text_emb[m] @ audio_enc[m].t())
            sims = term if sims is None else sims + term
        return sims

    def forward(self, experts: Tensors, ind: Tensors, text: torch.Tensor,
                text_lens: torch.Tensor | None = None) -> torch.Tensor:
        audio = self.encode_audio(experts, ind)
        return self.similarity(self.encode_text(text, text_lens), audio, ind)


class _CEHead(nn.Module):
    """The original CEModule: MoE weights, dim reduction, CE gating / GEUs, text GEUs."""

    def __init__(self, mods, in_dims, out_dims, text_dim, use_ce, mimic_ce_dims, same_dim,
                 use_mish, use_bn_reason, num_g_layers, num_h_layers, include_self=True, sequential=True):
        super().__init__()
        self.modalities = list(mods)
        self.use_ce = use_ce
        self.mimic_ce_dims = mimic_ce_dims
        non_lin = Mish() if use_mish else nn.ReLU()
        self.moe_fc = nn.Linear(text_dim, len(mods))
        if use_ce or mimic_ce_dims:
            self.video_dim_reduce = nn.ModuleList([ReduceDim(in_dims[m], same_dim) for m in mods])
        if use_ce:
            self.g_reason_1 = nn.Linear(same_dim * 2, same_dim)
            layers: list[nn.Module] = []
            for _ in range(num_g_layers - 1):
                if use_bn_reason:
                    layers.append(nn.BatchNorm1d(same_dim))
                layers += [non_lin, nn.Linear(same_dim, same_dim)]
            self.g_reason_shared = nn.Sequential(*layers)
            h_layers: list[nn.Module] = []
            for _ in range(num_h_layers):
                if use_bn_reason:
                    h_layers.append(nn.BatchNorm1d(same_dim))
                h_layers += [non_lin, nn.Linear(same_dim, same_dim)]
            self.h_reason = nn.Sequential(*h_layers)
            self.video_GU = nn.ModuleList([GatedEmbeddingUnitReasoning(same_dim) for _ in mods])
        elif mimic_ce_dims:
            self.video_GU = nn.ModuleList([MimicCEGatedEmbeddingUnit(same_dim, same_dim) for _ in mods])
        else:
            self.video_GU = nn.ModuleList([GatedEmbeddingUnit(in_dims[m], out_dims[m]) for m in mods])
        self.text_GU = nn.ModuleList([GatedEmbeddingUnit(text_dim, out_dims[m]) for m in mods])
        self.include_self = include_self
        self.sequential = sequential

    def embed_text(self, t: torch.Tensor):
        emb = {m: layer(t) for m, layer in zip(self.modalities, self.text_GU)}
        weights = F.softmax(self.moe_fc(t), dim=1)
        return emb, weights

    def embed_audio(self, pooled: dict[str, torch.Tensor], ind: Tensors) -> dict[str, torch.Tensor]:
        mods = self.modalities
        experts = dict(pooled)
        if hasattr(self, "video_dim_reduce"):
            experts = {m: layer(experts[m]) for m, layer in zip(mods, self.video_dim_reduce)}
        if not self.use_ce:
            return {m: layer(experts[m]) for m, layer in zip(mods, self.video_GU)}

        sequential = self.sequential
        pairs = list(itertools.product(mods, repeat=2) if self.include_self else itertools.permutations(mods, 2))
        reduced = dict(experts)  # un-updated embeddings (clean variant reads these)
        dev = experts[mods[0]].device
        avail = {m: ind[m].to(device=dev, dtype=experts[m].dtype) for m in mods}
        for curr, layer in zip(mods, self.video_GU):
            src = experts if sequential else reduced
            mask, mask_num = 0, 0
            for mod0, mod1 in pairs:
                if mod0 != curr:
                    continue
                g = self.g_reason_shared(self.g_reason_1(torch.cat((src[mod0], src[mod1]), dim=1)))
                a = avail[mod0] * avail[mod1]
                mask = mask + g * a[:, None]
                mask_num = mask_num + a
            mask = mask / (mask_num + 1e-11)[:, None]
            mask = self.h_reason(mask)
            # Sequential quirk: the original overwrites experts[curr] in place, so later experts' pairs see
            # the gated embedding of the earlier ones.
            experts[curr] = layer(src[curr], mask)
        return experts
