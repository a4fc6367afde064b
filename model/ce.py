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

    def set_fast_paths(self, enabled: bool) -> "CENet":
        """Exact algebraic rewrites that change float rounding only (off by default: float32 keeps its bits).

        Same parameters and state-dict layout either way (trainer/precision.py turns them on for bf16).
        """
        self.ce.fast_paths = bool(enabled)
        for module in self.modules():
            if isinstance(module, Mish):
                module.fused = bool(enabled)
            elif isinstance(module, NetVLAD):
                module.fused_norm = bool(enabled)
        return self

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
        if torch.is_autocast_enabled(weights.device.type):
            # reduced-precision modes: the scores themselves stay float32 (bf16 scores would tie in the ranking)
            with torch.autocast(weights.device.type, enabled=False):
                return self.similarity(({m: e.float() for m, e in text_emb.items()}, weights.float()),
                                       {m: e.float() for m, e in audio_enc.items()}, ind)
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
        self.fast_paths = False  # CENet.set_fast_paths

    def embed_text(self, t: torch.Tensor):
        if self.fast_paths and len(self.text_GU) > 1:
            emb = self._embed_text_one_product(t)
        else:
            emb = {m: layer(t) for m, layer in zip(self.modalities, self.text_GU)}
        weights = F.softmax(self.moe_fc(t), dim=1)
        return emb, weights

    def _embed_text_one_product(self, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """The text GEUs' input projections (text_dim -> out_m each) as one product (text_dim -> sum out_m).

        Exact rewrite of ``GatedEmbeddingUnit.forward`` per expert: the same weights, stacked per call.
        """
        fcs = [layer.fc for layer in self.text_GU]
        weight = torch.cat([_compute_dtype(fc.weight) for fc in fcs])
        bias = torch.cat([_compute_dtype(fc.bias) for fc in fcs])
        h = F.linear(t, weight, bias).split([fc.out_features for fc in fcs], dim=1)
        return {m: F.normalize(layer.cg(x), dim=1) for m, layer, x in zip(self.modalities, self.text_GU, h)}

    def _pair_first_layer(self, d: int):
        """g_reason_1 on ``[x_m; x_j]`` as ``A·x_m + B·x_j + b`` (W = [A | B]), each input projected once.

        Returns ``first(x_m, x_j)``; the projections ``x·[A; B]ᵀ`` are cached per input tensor for this call.
        """
        w = _compute_dtype(self.g_reason_1.weight)
        stacked = torch.cat((w[:, :d], w[:, d:]))  # (2d_out, d_in): rows [A; B]
        bias = self.g_reason_1.bias
        cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def project(x: torch.Tensor) -> torch.Tensor:
            hit = cache.get(id(x))
            if hit is None or hit[0] is not x:
                hit = (x, F.linear(x, stacked))
                cache[id(x)] = hit
            return hit[1]

        def first(x_m: torch.Tensor, x_j: torch.Tensor) -> torch.Tensor:
            out = self.g_reason_1.out_features
            return project(x_m)[:, :out] + project(x_j)[:, out:] + bias

        return first

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
        if self.fast_paths:
            first = self._pair_first_layer(self.g_reason_1.in_features // 2)
        else:
            first = lambda x_m, x_j: self.g_reason_1(torch.cat((x_m, x_j), dim=1))  # noqa: E731
        for curr, layer in zip(mods, self.video_GU):
            src = experts if sequential else reduced
            mask, mask_num = 0, 0
            for mod0, mod1 in pairs:
                if mod0 != curr:
                    continue
                g = self.g_reason_shared(first(src[mod0], src[mod1]))
                a = avail[mod0] * avail[mod1]
                mask = mask + g * a[:, None]
                mask_num = mask_num + a
            mask = mask / (mask_num + 1e-11)[:, None]
            mask = self.h_reason(mask)
            # Sequential quirk: the original overwrites experts[curr] in place, so later experts' pairs see
            # the gated embedding of the earlier ones.
            experts[curr] = layer(src[curr], mask)
        return experts


def _compute_dtype(w: torch.Tensor) -> torch.Tensor:
    """``w`` in the autocast dtype when autocast is on (cast once, before stacking), else ``w`` itself."""
    kind = w.device.type
    if torch.is_autocast_enabled(kind):
        return w.to(torch.get_autocast_dtype(kind))
    return w
