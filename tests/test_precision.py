"""trainer.precision: float32 keeps the numbers of the code before the flag bit for bit; bf16 is deterministic,
close to float32, and its exact rewrites keep the parameters and the state-dict layout."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train
from model.build import build_model, count_parameters
from trainer.optim import Ranger
from trainer.export import TensorSplit
from trainer.precision import autocast, describe, precision_of, prepare_model, store_features
from trainer.trainer import fit, load_splits
from utils.errors import UserError, run_cli

# Produced by the code before the precision flag existed (commit 3b839fe, torch 2.13.0+cpu, AVX512 kernels,
# 1 thread): tiny-ce.json, seed 0, 2 epochs, batch 32 (the conftest's tiny config). The file hashes depend on the
# CPU kernels, so they are only compared on the same kind of machine.
GOLDEN = {
    "torch": "2.13.0+cpu",
    "cpu_capability": "AVX512",
    "train_loss": [0.20103491842746735, 0.20095035433769226],
    "val_loss": [0.20043721795082092, 0.200429305434227],
    "test_t2a_R10": 28.749999999999996,
    "test_a2t_R1": 6.25,
    "sims_sha256": "8dfdbf10abe5a3b234c82d0a92ffd3930fbd7e1beff7a469123a4f64532794e7",
    "state_sha256": "0cf9a1d7e4167bf4fd7109bd4800dabb4344e6abe0aaebb13bac955f81ba038b",
}
SAME_KERNELS = (torch.__version__ == GOLDEN["torch"]
                and torch.backends.cpu.get_cpu_capability() == GOLDEN["cpu_capability"])


@pytest.fixture(scope="module")
def tiny_splits(_tiny_config_resolved):
    return load_splits(_tiny_config_resolved, ["train", "val", "test"])


def _run(cfg, path, tmp_path, splits, precision, epochs=2):
    cfg = copy.deepcopy(cfg)
    cfg["trainer"].update(save_dir=str(tmp_path / precision), epochs=epochs, precision=precision)
    return fit(cfg, path, "cpu", quiet=True, data=splits, threads=1)


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _state_sha(run: Path) -> str:
    sd = torch.load(run / "trained_model.pth", weights_only=True)["state_dict"]
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(sd[k].numpy().tobytes())
    return h.hexdigest()


def test_float32_is_bit_identical_to_the_code_before_the_flag(tiny_config, tiny_config_path, tmp_path, tiny_splits):
    run = _run(tiny_config, tiny_config_path, tmp_path, tiny_splits, "float32")
    m = json.loads((run / "metrics.json").read_text())
    assert m["numerics"]["precision"] == "float32" and m["numerics"]["fast_paths"] is False
    assert m["numerics"]["torch_threads"] == 1 and m["numerics"]["device"] == "cpu"
    if not SAME_KERNELS:
        pytest.skip(f"golden numbers made with torch {GOLDEN['torch']} on {GOLDEN['cpu_capability']} kernels")
    assert [h["train_loss"] for h in m["history"]] == GOLDEN["train_loss"]
    assert [h["val_loss"] for h in m["history"]] == GOLDEN["val_loss"]
    assert m["test"]["t2a"]["R10"] == GOLDEN["test_t2a_R10"] and m["test"]["a2t"]["R1"] == GOLDEN["test_a2t_R1"]
    assert _sha(np.load(run / "sims" / "test.npy")) == GOLDEN["sims_sha256"]
    assert _state_sha(run) == GOLDEN["state_sha256"]


def test_bf16_same_seed_same_numbers_and_close_to_float32(tiny_config, tiny_config_path, tmp_path, tiny_splits):
    a = _run(tiny_config, tiny_config_path, tmp_path / "a", tiny_splits, "bf16", epochs=1)
    b = _run(tiny_config, tiny_config_path, tmp_path / "b", tiny_splits, "bf16", epochs=1)
    sa, sb = np.load(a / "sims" / "test.npy"), np.load(b / "sims" / "test.npy")
    assert sa.dtype == np.float32 and np.array_equal(sa, sb)
    assert _state_sha(a) == _state_sha(b)
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert ma["test"] == mb["test"] and ma["history"][0]["train_loss"] == mb["history"][0]["train_loss"]
    assert ma["numerics"]["precision"] == "bf16" and ma["numerics"]["autocast_dtype"] == "bfloat16"
    # bf16 scores: not tied into a few values, and the first epoch's loss close to float32's (0.2010)
    assert len(np.unique(sa)) > 0.95 * sa.size  # (98 % unique here; the tiny set repeats some captions)
    assert ma["history"][0]["train_loss"] == pytest.approx(GOLDEN["train_loss"][0], abs=2e-3)


@pytest.mark.parametrize("precision, test_reads", [("float32", 2), ("bf16", 1)])
def test_bf16_reads_the_test_split_once(tiny_config, tiny_config_path, tmp_path, tiny_splits, precision, test_reads):
    """bf16 keeps the up-front read of the test split (holds_eval_splits); float32 checks it, frees it and reads it
    again after training. Either way the run equals one given all splits preloaded."""
    reads = []

    def loader(cfg, splits):
        reads.extend(splits)
        return load_splits(cfg, splits)

    cfg = copy.deepcopy(tiny_config)
    cfg["trainer"].update(save_dir=str(tmp_path / "counted"), epochs=1, precision=precision)
    counted = fit(cfg, tiny_config_path, "cpu", quiet=True, splits_loader=loader, threads=1)
    assert reads.count("test") == test_reads and reads.count("train") == 1 and reads.count("val") == 1
    preloaded = _run(tiny_config, tiny_config_path, tmp_path / "preloaded", tiny_splits, precision, epochs=1)
    assert np.array_equal(np.load(counted / "sims" / "test.npy"), np.load(preloaded / "sims" / "test.npy"))


def _ce_batch(B=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    experts = {"audio": torch.randn(B, 31, 128, generator=g), "vggsound": torch.randn(B, 95, 512, generator=g)}
    ind = {m: torch.ones(B, dtype=torch.bool) for m in experts}
    ind["vggsound"][3] = False  # a clip without one expert: the masked pair average
    return experts, ind, torch.randn(B, 1, 21, 300, generator=g), torch.full((B, 1), 21)


@pytest.mark.parametrize("sequential", [True, False])
def test_fast_paths_are_the_same_function_with_the_same_parameters(tiny_config, sequential):
    cfg = copy.deepcopy(tiny_config)
    cfg["arch"]["args"]["ce_sequential_update"] = sequential
    torch.manual_seed(0)
    model = build_model(cfg)
    keys, n = list(model.state_dict()), count_parameters(model)
    state = copy.deepcopy(model.state_dict())
    batch = _ce_batch()
    ref = model(*batch)
    ref.sum().backward()
    ref_grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    ref_buffers = {k: b.clone() for k, b in model.named_buffers()}  # BatchNorm running statistics after one step
    model.zero_grad()
    model.load_state_dict(state)  # the buffers as before the reference step
    model.set_fast_paths(True)
    assert list(model.state_dict()) == keys and count_parameters(model) == n == 21_864_536
    fast = model(*batch)
    fast.sum().backward()
    for k, b in model.named_buffers():  # per-pair statistics, updated in pair order (model.ce._batch_norm_per_pair)
        assert torch.allclose(b.float(), ref_buffers[k].float(), rtol=1e-5, atol=1e-6), k
    assert not torch.equal(fast, ref)  # the rewrites are active (other rounding) ...
    assert torch.allclose(fast, ref, rtol=0, atol=1e-6)  # ... of the same function
    for k, p in model.named_parameters():
        scale = ref_grads[k].abs().max()
        if scale > 1e-4:  # biases in front of a BatchNorm have ~0 gradients: pure rounding noise
            assert (p.grad - ref_grads[k]).abs().max() <= 1e-4 * scale, k
    model.set_fast_paths(False)
    model.load_state_dict(state)
    assert torch.equal(model(*batch), ref)  # off again: the original arithmetic, bit for bit
    model.eval()  # running statistics: the grouped BatchNorm in eval mode is the same function too
    slow_eval = model(*batch)
    model.set_fast_paths(True)
    assert torch.allclose(model(*batch), slow_eval, rtol=0, atol=1e-6)


@pytest.mark.parametrize("use_mask", [False, True])
def test_bf16_training_copy_of_the_features_changes_no_bit(tiny_config, use_mask):
    """store_features: bf16 training reads bfloat16 features; sims and gradients equal autocast's own rounding."""
    cfg = copy.deepcopy(tiny_config)
    cfg["arch"]["args"]["netvlad_use_mask"] = use_mask
    torch.manual_seed(0)
    model = build_model(cfg).train()
    prepare_model(model, "bf16")
    experts, ind, text, lens = _ce_batch()
    experts["vggsound"][3] = float("nan")  # a missing clip is a NaN row in the archive
    experts["audio"][5, 20:] = 0.0  # zero padding (the mask mode excludes it)
    text[2, 0, 15:] = 0.0
    lens[2, 0] = 15

    def step(e, t):
        model.zero_grad()
        with autocast("bf16", torch.device("cpu")):
            sims = model(e, ind, t, lens)
        sims.sum().backward()
        return sims.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    ts = TensorSplit("train", [str(i) for i in range(12)], [], experts, ind, text, lens)
    low = store_features(ts, "bf16")
    assert low.text.dtype == torch.bfloat16 and all(t.dtype == torch.bfloat16 for t in low.experts.values())
    assert store_features(ts, "float32") is ts
    ref_sims, ref_grads = step(experts, text)
    sims, grads = step(low.experts, low.text)
    assert torch.equal(sims, ref_sims)
    assert grads.keys() == ref_grads.keys() and all(torch.equal(grads[k], ref_grads[k]) for k in grads)


def test_bf16_autocast_keeps_float32_scores_close_to_float32(tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config).eval()
    batch = _ce_batch()
    ref = model(*batch)
    model.set_fast_paths(True)
    with autocast("bf16", torch.device("cpu")):
        low = model(*batch)
    assert low.dtype == torch.float32
    assert (low - ref).abs().max() < 0.05 * ref.abs().max()


def test_one_kernel_ranger_matches_the_in_place_update():
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(64, 48)), torch.nn.Parameter(torch.randn(48))]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    a = Ranger(ps, lr=0.01, weight_decay=1e-3)
    b = Ranger(qs, lr=0.01, weight_decay=1e-3).set_one_kernel(True)
    for _ in range(20):  # crosses the rectification switch (step 6) and three Lookahead syncs
        for p, q in zip(ps, qs):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
    assert not torch.equal(ps[0], qs[0])  # the fused kernel ran (other rounding) ...
    for p, q in zip(ps, qs):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)  # ... of the same update
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    assert sa.keys() == sb.keys() and all(sa[i].keys() == sb[i].keys() for i in sa)
    assert float(sb[0]["step"]) == 20


def test_precision_key_is_validated_and_recorded():
    assert precision_of({"trainer": {}}) == "float32"  # runs made before the key existed
    assert precision_of({"trainer": {"precision": "bf16"}}) == "bf16"
    with pytest.raises(UserError, match="trainer.precision"):
        precision_of({"trainer": {"precision": "fp16"}})
    info = describe("bf16", torch.device("cpu"))
    assert info["precision"] == "bf16" and info["torch_threads"] == torch.get_num_threads()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_train_cli_rejects_a_bad_precision(capsys):
    assert run_cli(train.main, ["--config", "configs/clotho-synthetic/tiny-ce.json", "--precision", "fp8"]) == 2
    err = capsys.readouterr().err
    assert "--precision" in err and len(err.strip().splitlines()) == 1  # one line (utils.cli), no usage block


@pytest.mark.parametrize("case", ["normal", "zero cluster", "clusters below eps", "all-zero clip",
                                  "clip below eps squared"])
def test_fused_double_normalisation_is_netvlads_two_normalize_calls(case):
    """NetVLAD's fast path (_DoubleNormalize): values and gradients of the two F.normalize calls, also where a
    cluster's norm is zero or below their eps (the clamp is active) - to float64 rounding."""
    from model.layers import _DoubleNormalize

    g = torch.Generator().manual_seed(3)
    v = torch.randn(4, 6, 5, dtype=torch.float64, generator=g)
    if case == "zero cluster":
        v[1, :, 2] = 0
    elif case == "clusters below eps":
        v[1, :, 2] *= 1e-14
        v[2, :, 0] *= 1e-13
    elif case == "all-zero clip":
        v[0] = 0
    elif case == "clip below eps squared":  # every cluster clamped and the global norm clamped too: no n2 term
        v[3] *= 1e-30
    v.requires_grad_(True)
    upstream = torch.randn(4, 30, dtype=torch.float64, generator=g)

    def reference(x):
        return F.normalize(F.normalize(x, dim=1).reshape(x.shape[0], -1), dim=1)

    fused, ref = _DoubleNormalize.apply(v), reference(v)
    assert torch.allclose(fused, ref, rtol=1e-12, atol=0)
    (got,) = torch.autograd.grad(fused, v, upstream)
    (want,) = torch.autograd.grad(ref, v, upstream)
    scale = want.abs().amax(dim=(1, 2), keepdim=True)  # per clip: a clamped cluster's gradient is ~1e12 larger
    assert ((got - want).abs() / scale).max() < 1e-12


def test_fused_double_normalisation_of_no_clip():
    """A rank's shard of a small last batch can hold no clip (docs/DISTRIBUTED.md): the bf16 fast path crashed on it
    (reshape(0, -1)), so 3 processes with a batch of 2 clips failed in the default precision."""
    from model.layers import _DoubleNormalize

    v = torch.randn(0, 6, 5, dtype=torch.float64, requires_grad=True)
    out = _DoubleNormalize.apply(v)
    assert out.shape == (0, 30)
    (grad,) = torch.autograd.grad(out, v, torch.ones(0, 30, dtype=torch.float64))
    assert grad.shape == v.shape
