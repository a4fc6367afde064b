"""search.py --audio keeps its saved index in step with the folder: a file whose content changed is re-embedded even
when files were added at the same time (appending alone would keep its old vector), and every appended or rebuilt
index ranks exactly like an index built from scratch on the folder as it now is."""
from __future__ import annotations

import json
import shutil

import numpy as np

import search
from utils.errors import run_cli


def _search(capsys, folder, index_dir, query="a dog barking"):
    capsys.readouterr()
    argv = ["--audio", str(folder), "--index-dir", str(index_dir), "--json", "--k", "10", query]
    assert run_cli(search.main, argv) == 0
    return json.loads(capsys.readouterr().out)


def _ranking(out):
    return [(r["clip_id"], r["score"]) for r in out["results"]]


def _same_as_fresh(capsys, folder, tmp_path, out, name):
    fresh = _search(capsys, folder, tmp_path / name)
    assert fresh["index"]["status"] == "built"
    assert [c for c, _ in _ranking(out)] == [c for c, _ in _ranking(fresh)]
    np.testing.assert_allclose([s for _, s in _ranking(out)], [s for _, s in _ranking(fresh)], rtol=0, atol=1e-6)


def test_changed_plus_added_files_rebuild_and_appends_keep_clip_ids_on_their_vectors(animals, tmp_path, capsys):
    folder = tmp_path / "animals"
    folder.mkdir()
    for name in ("cat.mp3", "cow.mp3", "rooster.mp3"):
        shutil.copy(animals / name, folder / name)
    idx = tmp_path / "idx"
    assert _search(capsys, folder, idx)["index"]["status"] == "built"

    shutil.copy(animals / "sheep.mp3", folder / "sheep.mp3")  # added only: appended
    shutil.copy(animals / "pig.mp3", folder / "pig.mp3")
    out = _search(capsys, folder, idx)
    assert out["index"]["status"] == "appended 2" and out["n_clips"] == 5
    _same_as_fresh(capsys, folder, tmp_path, out, "fresh-1")

    shutil.copy(animals / "dog.mp3", folder / "cat.mp3")  # cat.mp3 now holds a dog, and a file is added
    shutil.copy(animals / "duck.mp3", folder / "duck.mp3")
    out = _search(capsys, folder, idx)
    assert out["index"]["status"] == "built" and out["n_clips"] == 6
    assert out["results"][0]["clip_id"] == "cat.mp3"  # the dog's recording, under its new name
    _same_as_fresh(capsys, folder, tmp_path, out, "fresh-2")

    (folder / "cow.mp3").unlink()  # one removed, one added: same count, not an append
    shutil.copy(animals / "horse.mp3", folder / "horse.mp3")
    out = _search(capsys, folder, idx)
    assert out["index"]["status"] == "built" and out["n_clips"] == 6
    assert "cow.mp3" not in [r["clip_id"] for r in out["results"]]
    _same_as_fresh(capsys, folder, tmp_path, out, "fresh-3")


def test_run_plus_audio_keeps_the_first_frames_and_a_new_checkpoint_rebuilds(animals, tmp_path, capsys):
    """max_tokens below the clips' frame counts: the index embeds the first frames, as the loader keeps them. A new
    checkpoint with files added at the same time rebuilds the whole index with it (an append would mix models)."""
    import torch

    from data.audio_features import compute_features
    from data.experts.registry import load_expert
    from model import build_model
    from model.audio_search import folder_key
    from model.query import QueryEncoder
    from utils.config import load_config
    from utils.io import write_json
    from utils.outputs import write_run_record

    cfg = load_config("configs/real-audio/tiny-yamnet-soundnet.json")
    cfg["data_loader"]["args"]["max_tokens"].update({"yamnet": 3, "soundnet": 2})
    run = tmp_path / "run"
    run.mkdir()
    write_json(run / "config.json", cfg)
    write_json(run / "metrics.json", {})
    folder = tmp_path / "few"
    folder.mkdir()
    q = QueryEncoder(cfg).encode(["a dog barking"])
    experts = [load_expert("soundnet"), load_expert("yamnet")]

    models = {}

    def check(seed, names, status):
        if seed not in models:  # a new checkpoint file
            torch.manual_seed(seed)
            models[seed] = build_model(cfg).eval()
            torch.save({"state_dict": models[seed].state_dict(), "config_hash": "h"}, run / "trained_model.pth")
            write_run_record(run, "tests")
        model = models[seed]
        for name in names:
            shutil.copy(animals / name, folder / name)
        capsys.readouterr()
        assert run_cli(search.main, ["--run", str(run), "--audio", str(folder), "--index-dir", str(tmp_path / "idx"),
                                     "--json", "--k", "5", "a dog barking"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["index"]["status"] == status
        rels = sorted(r["clip_id"] for r in out["results"])
        feats, _, _ = compute_features(folder, rels, experts, tmp_path / "idx" / folder_key(folder) / "features",
                                       pad_short=True, progress=False)
        x, ind = {}, {}
        for e in experts:
            t = cfg["data_loader"]["args"]["max_tokens"][e.name]
            assert all(len(f.features[e.name]) > t for f in feats)  # the test is about cutting: every clip is longer
            x[e.name] = torch.from_numpy(np.stack([f.features[e.name][:t] for f in feats]).astype(np.float32))
            ind[e.name] = torch.ones(len(rels), dtype=torch.bool)
        with torch.no_grad():
            ref = model(x, ind, torch.from_numpy(q.text[:, None]), torch.from_numpy(q.lens[:, None]))[0].numpy()
        got = {r["clip_id"]: r["score"] for r in out["results"]}
        np.testing.assert_allclose([got[r] for r in rels], ref, rtol=0, atol=2e-6)

    check(0, ["dog.mp3", "cow.mp3"], "built")
    check(0, ["owl.mp3"], "appended 1")  # the same checkpoint file, a file added
    check(1, ["pig.mp3"], "built")       # a new checkpoint and a file added
