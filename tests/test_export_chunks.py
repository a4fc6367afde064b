"""trainer/export.py and model/query.py encode in chunks: chunk boundaries, caption subsets and missing experts give
exactly the one-pass numbers (eval mode: batch norm uses its running statistics, so chunking cannot change a score)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.build import build_model
from utils.config import load_config


def _model(repo_root, name="train-vggish-vggsound.json"):
    torch.manual_seed(0)
    model = build_model(load_config(repo_root / "configs" / "clotho" / name))
    with torch.no_grad():  # non-trivial running statistics: a train-mode (batch statistics) pass would differ
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return model


def _split(n=11, K=5, seed=0):
    from trainer.export import TensorSplit

    g = torch.Generator().manual_seed(seed)
    experts = {"audio": torch.randn(n, 31, 128, generator=g), "vggsound": torch.randn(n, 95, 512, generator=g)}
    ind = {m: torch.ones(n, dtype=torch.bool) for m in experts}
    ind["audio"][[2, 7]] = False
    ind["vggsound"][[4]] = False
    text = torch.randn(n, K, 21, 300, generator=g)
    lens = torch.randint(1, 22, (n, K), generator=g)
    return TensorSplit("test", [f"c{i}" for i in range(n)], [["x"] * K] * n, experts, ind, text, lens)


@pytest.mark.parametrize("name", ["train-vggish-vggsound.json", "train-vggish-vggsound-moee.json"])
def test_audio_chunks_and_caption_subsets_give_the_one_pass_rows(repo_root, name):
    from trainer.export import compute_sims, encode_audio_split

    model = _model(repo_root, name).train()
    ts = _split()
    model.eval()
    with torch.no_grad():
        direct = model(ts.experts, ts.ind, ts.text, ts.text_lens).numpy()
        one = encode_audio_split(model, ts, torch.device("cpu"), chunk=1000)
        for chunk in (1, 3, 4, 10):
            got = encode_audio_split(model, ts, torch.device("cpu"), chunk=chunk)
            for m in one:
                torch.testing.assert_close(got[m], one[m], rtol=1e-5, atol=1e-6, msg=f"{m}, chunk {chunk}")
    model.train()
    full = compute_sims(model, ts, "cpu", text_chunk=7)  # 7 // 5 = 1 clip (5 captions) per text chunk
    assert model.training  # mode restored
    np.testing.assert_allclose(full, direct, rtol=1e-5, atol=1e-6)
    for caps in ([3, 1], [4], [0, 4, 2]):  # unsorted subsets: row i*K + j is caption caps[j] of clip i
        sub = compute_sims(model, ts, "cpu", caption_indices=caps, text_chunk=5)
        want = direct.reshape(ts.n, 5, ts.n)[:, caps].reshape(-1, ts.n)
        np.testing.assert_allclose(sub, want, rtol=1e-5, atol=1e-6, err_msg=str(caps))
    model.eval()
    compute_sims(model, ts, "cpu", caption_indices=[0])
    assert not model.training  # eval mode restored as eval, not switched to training


def test_search_side_audio_encoding_is_chunk_independent(repo_root):
    from model.query import encode_audio

    model = _model(repo_root).eval()
    ts = _split(n=9)
    experts = {m: t.numpy() for m, t in ts.experts.items()}
    ind = {m: t.numpy() for m, t in ts.ind.items()}
    one, avail = encode_audio(model, experts, ind, chunk=1000)
    np.testing.assert_array_equal(avail, np.stack([ind["audio"], ind["vggsound"]], axis=1))
    for chunk in (1, 2, 4, 8):
        got, _ = encode_audio(model, experts, ind, chunk=chunk)
        np.testing.assert_allclose(got, one, rtol=1e-5, atol=1e-6, err_msg=f"chunk {chunk}")
    with torch.no_grad():
        enc = model.encode_audio(ts.experts, ts.ind)
    np.testing.assert_allclose(one, np.concatenate([enc[m].numpy() for m in model.modalities], axis=1),
                               rtol=1e-5, atol=1e-6)
