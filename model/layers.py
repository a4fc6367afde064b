"""Building blocks of the CE / MoEE model (docs/TRAINING.md "What is faithful to the original").

Parameter and sub-module names mirror the original code (model/model.py, model/net_vlad.py of
oncescuandreea/audio-retrieval) so that the state-dict keys line up with the original checkpoints.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Mish(nn.Module):
    """mish(x) = x * tanh(softplus(x)).

    ``fused=True`` (the reduced-precision modes' fast paths) uses torch's one-kernel ``F.mish``: the same
    function, other float rounding; the default keeps the three-op formula of the original and its bits.
    """

    def __init__(self, fused: bool = False):
        super().__init__()
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.mish(x)
        return x * torch.tanh(F.softplus(x))


class NetVLAD(nn.Module):
    """NetVLAD pooling of ``(B, N, D)`` frames/tokens into a unit-norm ``(B, D*K)`` vector.

    * ``clusters`` (D, K+G): assignment weights, no bias, N(0,1)/sqrt(D); BatchNorm1d over the K+G logits;
      softmax; the G ghost columns are dropped.
    * ``clusters2`` (1, D, K): centroids, N(0,1)/sqrt(D).
    * V[:, k] = sum_n a_nk x_n - (sum_n a_nk) c_k; intra L2 norm per cluster; flatten D-major
      (index d*K + k); global L2 norm.

    ``mask`` (B, N) bool marks the real frames. The original accepts and **ignores** it (zero padding takes
    part in the soft assignment, the BN statistics and the centroid mass); that is the behaviour unless
    ``use_mask=True``, which excludes masked frames from the BN statistics, the assignment and both sums.
    """

    def __init__(self, feature_size: int, cluster_size: int, ghost_clusters: int = 0, use_mask: bool = False):
        super().__init__()
        self.feature_size = feature_size
        self.cluster_size = cluster_size
        self.ghost_clusters = ghost_clusters
        self.use_mask = use_mask
        init_sc = 1 / math.sqrt(feature_size)
        clusters = cluster_size + ghost_clusters
        # Same RNG order as the original: assignment weights, then centroids.
        self.clusters = nn.Parameter(init_sc * torch.randn(feature_size, clusters))
        self.batch_norm = nn.BatchNorm1d(clusters)
        self.clusters2 = nn.Parameter(init_sc * torch.randn(1, feature_size, cluster_size))
        self.out_dim = cluster_size * feature_size
        self.fused_norm = False  # CENet.set_fast_paths: the two normalisations as _DoubleNormalize

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, D = x.shape
        K = self.cluster_size
        flat = x.reshape(B * N, D)
        logits = flat @ self.clusters  # (BN, K+G)
        if self.use_mask and mask is not None:
            keep = mask.reshape(B * N)
            idx = keep.nonzero().squeeze(1)
            a_valid = F.softmax(self.batch_norm(logits.index_select(0, idx)), dim=1)[:, :K]
            assignment = logits.new_zeros(B * N, K).index_copy(0, idx, a_valid)
        else:
            assignment = F.softmax(self.batch_norm(logits), dim=1)[:, :K]
        assignment = assignment.reshape(B, N, K)
        a_sum = assignment.sum(dim=1, keepdim=True)  # (B, 1, K)
        # (B, D, N) @ (B, N, K) -> (B, D, K): computed directly in D-major layout (no transposes).
        vlad = torch.bmm(x.transpose(1, 2), assignment) - a_sum * self.clusters2
        if self.fused_norm:
            return _DoubleNormalize.apply(vlad)
        vlad = F.normalize(vlad, dim=1)  # intra-normalisation: each cluster's D-vector
        vlad = F.normalize(vlad.reshape(B, D * K), dim=1)
        return vlad


class _DoubleNormalize(torch.autograd.Function):
    """``normalize(normalize(v, dim=1).reshape(B, -1), dim=1)`` for ``v`` (B, D, K), as one scaling of ``v``.

    The same function as NetVLAD's two ``F.normalize`` calls (eps 1e-12 each), other rounding. The global norm
    needs no second pass: ``||u||² = Σ_k (n_k / max(n_k, eps))²`` from the cluster norms ``n_k`` alone, so the
    forward is one norm and one multiply over ``v``, and the hand-written backward four passes instead of the
    ten or so of the autograd chain. (With every ``n_k > eps`` the global norm is √K and carries no gradient.)
    """

    EPS = 1e-12

    @staticmethod
    def forward(ctx, v: torch.Tensor) -> torch.Tensor:
        B, D, K = v.shape
        n1 = torch.linalg.vector_norm(v, dim=1, keepdim=True)          # (B, 1, K)
        d1 = n1.clamp_min(_DoubleNormalize.EPS)
        n2 = torch.linalg.vector_norm(n1 / d1, dim=2, keepdim=True)     # (B, 1, 1): ||u|| from the cluster norms
        d2 = n2.clamp_min(_DoubleNormalize.EPS)
        r = (d1 * d2).reciprocal()
        ctx.save_for_backward(v, n1, d1, n2, d2, r)
        return (v * r).reshape(B, D * K)  # not (B, -1): a rank's shard may hold no clip (B = 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        v, n1, d1, n2, d2, r = ctx.saved_tensors
        eps = _DoubleNormalize.EPS
        g = grad.reshape(v.shape)
        dot = (g * v).sum(dim=1, keepdim=True)                           # (B, 1, K): Σ_d g·v per cluster
        kept = n1 > eps                                                  # clusters normalised by their own norm
        safe_n1 = torch.where(n1 > 0, n1, torch.ones_like(n1))
        # through d1 = n1 (kept clusters): -dot / (d1² d2) · v / n1
        coef = torch.where(kept, -dot * r / (d1 * safe_n1), torch.zeros_like(dot))
        # through d2 = n2 (only clusters below eps make n2 depend on v): dL/dd2 · (q / n2) · v / (n1 eps)
        dd2 = -(dot * r).sum(dim=2, keepdim=True) / d2                   # (B, 1, 1)
        q = n1 / d1
        coef2 = torch.where((~kept) & (n1 > 0) & (n2 > eps), dd2 * q / (n2 * safe_n1 * eps), torch.zeros_like(dot))
        return torch.addcmul(g * r, v, coef + coef2)


class ContextGating(nn.Module):
    """x * sigmoid(BN(Linear(x))) (a GLU over [x; g])."""

    def __init__(self, dimension: int, add_batch_norm: bool = True):
        super().__init__()
        self.fc = nn.Linear(dimension, dimension)
        self.add_batch_norm = add_batch_norm
        self.batch_norm = nn.BatchNorm1d(dimension)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.fc(x)
        if self.add_batch_norm:
            g = self.batch_norm(g)
        return x * torch.sigmoid(g)


class GatedEmbeddingUnit(nn.Module):
    """GEU(in, out): Linear(in->out), ContextGating(out, BN), L2 norm."""

    def __init__(self, input_dimension: int, output_dimension: int, use_bn: bool = True):
        super().__init__()
        self.fc = nn.Linear(input_dimension, output_dimension)
        self.cg = ContextGating(output_dimension, add_batch_norm=use_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.cg(self.fc(x)), dim=1)


class MimicCEGatedEmbeddingUnit(nn.Module):
    """ContextGating(d, BN) applied directly to x, then L2 norm (no projection)."""

    def __init__(self, input_dimension: int, output_dimension: int | None = None, use_bn: bool = True):
        super().__init__()
        self.cg = ContextGating(input_dimension, add_batch_norm=use_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.cg(x), dim=1)


class ReduceDim(nn.Module):
    """Linear(in -> out), L2 norm."""

    def __init__(self, input_dimension: int, output_dimension: int):
        super().__init__()
        self.fc = nn.Linear(input_dimension, output_dimension)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc(x), dim=1)


class ContextGatingReasoning(nn.Module):
    """x * sigmoid(BN_a(mask) + BN_b(Linear(x)))."""

    def __init__(self, dimension: int, add_batch_norm: bool = True):
        super().__init__()
        self.fc = nn.Linear(dimension, dimension)
        self.add_batch_norm = add_batch_norm
        self.batch_norm = nn.BatchNorm1d(dimension)
        self.batch_norm2 = nn.BatchNorm1d(dimension)

    def forward(self, x: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        x2 = self.fc(x)
        if self.add_batch_norm:
            x1 = self.batch_norm(x1)
            x2 = self.batch_norm2(x2)
        return x * torch.sigmoid(x1 + x2)


class GatedEmbeddingUnitReasoning(nn.Module):
    """GEU-Reasoning(d): ContextGatingReasoning then L2 norm."""

    def __init__(self, output_dimension: int):
        super().__init__()
        self.cg = ContextGatingReasoning(output_dimension)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.cg(x, mask), dim=1)


# Short aliases used in the docs.
GEU = GatedEmbeddingUnit
GEUReasoning = GatedEmbeddingUnitReasoning
MimicCEGEU = MimicCEGatedEmbeddingUnit
