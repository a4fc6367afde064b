"""Model: exact parameter counts, NetVLAD maths, CE quirk flags, similarity renormalisation, chunked encoding."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from model.build import build_model, count_parameters
from model.layers import NetVLAD
from utils.config import load_config


def _cfg(repo_root, name: str) -> dict:
    return load_config(repo_root / "configs" / "clotho" / name)


@pytest.mark.parametrize("name, expected", [
    ("train-vggish-vggsound.json", 21_864_536),        # CE
    ("train-vggish-vggsound-moee.json", 8_903_512),    # MoEE
    ("train-full-ce-only-audio.json", 7_389_127),      # CE-VGGish (mimic_ce_dims=1)
])
def test_parameter_counts_match_the_paper(repo_root, name, expected):
    torch.manual_seed(0)
    assert count_parameters(build_model(_cfg(repo_root, name))) == expected


def _reference_vlad(x, W, C, bn_eps=1e-5):
    """Straight-line NetVLAD (train-mode BN without affine change at init), loops over clusters."""
    B, N, D = x.shape
    K = C.shape[1]
    logits = x.reshape(B * N, D) @ W
    mu, var = logits.mean(0), logits.var(0, unbiased=False)
    a = torch.softmax((logits - mu) / torch.sqrt(var + bn_eps), dim=1)[:, :K].reshape(B, N, K)
    out = torch.empty(B, D, K)
    for k in range(K):
        v = (a[:, :, k:k + 1] * x).sum(1) - a[:, :, k].sum(1, keepdim=True) * C[:, k]
        out[:, :, k] = F.normalize(v, dim=1)
    return F.normalize(out.reshape(B, D * K), dim=1)  # D-major: index d*K + k


def test_netvlad_matches_reference_shape_and_norms():
    torch.manual_seed(0)
    vlad = NetVLAD(feature_size=12, cluster_size=5, ghost_clusters=1)
    assert vlad.clusters.shape == (12, 6) and vlad.clusters2.shape == (1, 12, 5)
    x = torch.randn(4, 7, 12)
    out = vlad(x)
    assert out.shape == (4, 60)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    per_cluster = out.reshape(4, 12, 5).norm(dim=1)  # equal intra norms -> each 1/sqrt(K)
    torch.testing.assert_close(per_cluster, torch.full((4, 5), 5 ** -0.5))
    ref = _reference_vlad(x, vlad.clusters.detach(), vlad.clusters2.detach()[0])
    torch.testing.assert_close(out.detach(), ref, rtol=1e-4, atol=1e-5)


def test_netvlad_mask_flag():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    x = x * mask[..., None]  # zero-padded like the loader
    torch.manual_seed(1)
    ignore = NetVLAD(8, 4, use_mask=False)
    torch.manual_seed(1)
    clean = NetVLAD(8, 4, use_mask=True)
    # Original behaviour: the mask is accepted and ignored.
    torch.testing.assert_close(ignore(x, mask), ignore(x))
    # Clean behaviour: padded frames change nothing -> same as pooling the real frames only (eval-mode BN).
    clean.eval()
    full = clean(x, mask)
    for b in range(3):
        n = int(mask[b].sum())
        alone = clean(x[b:b + 1, :n], torch.ones(1, n, dtype=torch.bool))
        torch.testing.assert_close(full[b:b + 1], alone)
    ignore.eval()
    assert not torch.allclose(ignore(x)[2], full[2])


def _batch(B=6, Bt=None, K=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    Bt = B if Bt is None else Bt
    experts = {"audio": torch.randn(B, 31, 128, generator=g), "vggsound": torch.randn(B, 95, 512, generator=g)}
    ind = {m: torch.ones(B, dtype=torch.bool) for m in experts}
    text = torch.randn(Bt, K, 21, 300, generator=g)
    lens = torch.randint(1, 22, (Bt, K), generator=g)
    return experts, ind, text, lens


def _model(repo_root, name="train-vggish-vggsound.json", **arch):
    cfg = _cfg(repo_root, name)
    cfg["arch"]["args"].update(arch)
    torch.manual_seed(0)
    return build_model(cfg)


def test_forward_shape_and_clip_major_rows(repo_root):
    model = _model(repo_root).eval()
    experts, ind, text, lens = _batch(B=4, Bt=3, K=5)
    sims = model(experts, ind, text, lens)
    assert sims.shape == (15, 4)
    assert sims.abs().max() <= 1 + 1e-5
    # row i*K + k is caption k of clip i
    single = model(experts, ind, text[1:2, 3:4], lens[1:2, 3:4])
    torch.testing.assert_close(sims[1 * 5 + 3], single[0], rtol=1e-5, atol=1e-6)


def test_sequential_quirk_flag_changes_only_the_second_expert(repo_root):
    experts, ind, text, lens = _batch(B=8)
    quirk = _model(repo_root, ce_sequential_update=True)
    clean = _model(repo_root, ce_sequential_update=False)
    clean.load_state_dict(quirk.state_dict())
    a_q, a_c = quirk.encode_audio(experts, ind), clean.encode_audio(experts, ind)
    torch.testing.assert_close(a_q["audio"], a_c["audio"])  # first expert sees raw reduced embeddings in both
    assert not torch.allclose(a_q["vggsound"], a_c["vggsound"], atol=1e-4)
    assert not torch.allclose(quirk(experts, ind, text, lens), clean(experts, ind, text, lens), atol=1e-5)


def test_similarity_renormalises_over_available_experts(repo_root):
    model = _model(repo_root).eval()
    experts, ind, text, lens = _batch(B=5)
    ind = {m: v.clone() for m, v in ind.items()}
    ind["vggsound"][2] = False
    experts = {m: v.clone() for m, v in experts.items()}
    experts["vggsound"][2] = float("nan")  # missing rows are NaN in SplitData
    audio = model.encode_audio(experts, ind)
    t_emb, w = model.encode_text(text, lens)
    sims = model.similarity((t_emb, w), audio, ind)
    assert torch.isfinite(sims).all()
    # clip 2 lacks vggsound: its score is the audio cosine alone (weight renormalised to 1)
    torch.testing.assert_close(sims[:, 2], t_emb["audio"] @ audio["audio"][2])
    j = 0
    expected = w[:, 0] * (t_emb["audio"] @ audio["audio"][j]) + w[:, 1] * (t_emb["vggsound"] @ audio["vggsound"][j])
    torch.testing.assert_close(sims[:, j], expected)


def test_moe_weight_is_one_for_a_single_expert(repo_root):
    model = _model(repo_root, "train-full-ce-only-audio.json").eval()
    experts, ind, text, lens = _batch(B=3)
    _, w = model.encode_text(text, lens)
    torch.testing.assert_close(w, torch.ones(3, 1))


def test_chunked_eval_equals_one_pass(repo_root):
    from trainer.export import TensorSplit, compute_sims

    model = _model(repo_root, "train-vggish-vggsound-moee.json")
    experts, ind, text, lens = _batch(B=7, K=5)
    ts = TensorSplit("test", [f"c{i}" for i in range(7)], [["x"] * 5] * 7, experts, ind, text, lens)
    full = compute_sims(model, ts, "cpu", text_chunk=10_000)
    chunked = compute_sims(model, ts, "cpu", text_chunk=10)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        direct = model(experts, ind, text, lens).numpy()
    assert full.shape == (35, 7)
    torch.testing.assert_close(torch.from_numpy(chunked), torch.from_numpy(full), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(full), torch.from_numpy(direct), rtol=1e-5, atol=1e-6)


def test_bad_arch_is_a_user_error(repo_root):
    from utils.errors import UserError

    cfg = _cfg(repo_root, "train-full-ce-only-audio.json")
    bad = copy.deepcopy(cfg)
    bad["arch"]["args"]["use_ce"] = "pairwise"
    with pytest.raises(UserError, match="use_ce"):
        build_model(bad)
    bad = copy.deepcopy(cfg)
    bad["experts"]["modalities"] = ["pann"]
    with pytest.raises(UserError, match="pann"):
        build_model(bad)


def test_netvlad_mask_excludes_padding_from_the_training_batch_norm_statistics():
    """use_mask=True in train mode: the padded frames' values change nothing, the BN batch statistics included
    (eval mode alone, above, cannot see the statistics)."""
    import copy

    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    x = torch.randn(3, 6, 8) * mask[..., None]
    garbage = x + 5.0 * torch.randn(3, 6, 8) * ~mask[..., None]  # the same real frames, other padding
    torch.manual_seed(1)
    a = NetVLAD(8, 4, ghost_clusters=1, use_mask=True).train()
    b = copy.deepcopy(a)
    torch.testing.assert_close(a(x, mask), b(garbage, mask))
    torch.testing.assert_close(a.batch_norm.running_mean, b.batch_norm.running_mean)
