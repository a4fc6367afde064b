"""Synthetic CLOTHO-format generator: layout, determinism, loader read-back, CLI."""
import pickle
import subprocess
import sys
from pathlib import Path

import hickle
import numpy as np
import pytest

from data.clotho import load_clotho
from data.synthetic import SyntheticSpec, WordVectors, generate, spec_for
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
FILES = ["aggregated_audio/vggish-raw.hickle", "aggregated_vggsound/vggsound-raw.hickle",
         "structured-symlinks/raw-captions.pkl", "text_embeddings/w2v.pkl",
         "train_list.txt", "val_list.txt", "test_list.txt"]


def test_layout(tiny_data_dir):
    root = tiny_data_dir / "structured-symlinks"
    for rel in FILES:
        assert (root / rel).is_file(), rel
    ids = [(root / f"{s}_list.txt").read_text().split() for s in ("train", "val", "test")]
    assert [len(x) for x in ids] == [64, 32, 32]
    assert ids[0][0] == "synthetic_00001.wav"
    assert not [p for p in tiny_data_dir.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_loader_reads_tiny_set(tiny_config):
    data = load_clotho(tiny_config, ["train", "val", "test"])
    for split, n in (("train", 64), ("val", 32), ("test", 32)):
        d = data[split]
        assert len(d) == n and len(d.captions) == n and all(len(c) == 5 for c in d.captions)
        assert d.experts["audio"].shape == (n, 31, 128) and d.experts["vggsound"].shape == (n, 95, 512)
        assert d.text.shape == (n, 5, 21, 300) and d.ind["audio"].all() and d.ind["vggsound"].all()
        assert ((d.text_lens >= 6) & (d.text_lens <= 21)).all()
        assert np.isfinite(d.experts["vggsound"]).all()


def _read(root):
    out = {}
    for rel in FILES:
        p = root / "structured-symlinks" / rel
        if rel.endswith(".hickle"):
            out[rel] = hickle.load(str(p))
        elif rel.endswith(".pkl"):
            out[rel] = pickle.load(open(p, "rb"))
        else:
            out[rel] = p.read_text()
    return out


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and np.array_equal(a, b)
    return a == b


def test_deterministic_by_seed(tmp_path, tiny_data_dir):
    generate(tmp_path / "again", size="tiny", seed=0, quiet=True)
    generate(tmp_path / "other", size="tiny", seed=1, quiet=True)
    a, b, c = _read(tiny_data_dir), _read(tmp_path / "again"), _read(tmp_path / "other")
    assert _same(a, b)
    assert not _same(a["aggregated_vggsound/vggsound-raw.hickle"], c["aggregated_vggsound/vggsound-raw.hickle"])
    assert not _same(a["structured-symlinks/raw-captions.pkl"], c["structured-symlinks/raw-captions.pkl"])


def test_shapes_and_caption_variety(tiny_data_dir):
    d = _read(tiny_data_dir)
    spec = spec_for("tiny")
    vgg = d["aggregated_audio/vggish-raw.hickle"]
    for arr in vgg.values():
        assert arr.dtype == np.float32 and arr.shape[1] == 128
        assert spec.vggish_frames[0] <= arr.shape[0] <= spec.vggish_frames[1]
    caps = d["structured-symlinks/raw-captions.pkl"]
    w2v = d["text_embeddings/w2v.pkl"]
    for cid, five in caps.items():
        assert len(five) == 5 and all(isinstance(t, str) for c in five for t in c)
        assert [len(c) for c in five] == [x.shape[0] for x in w2v[cid]]
        assert all(x.shape[1] == 300 and x.dtype == np.float32 for x in w2v[cid])
    distinct = [len({" ".join(c) for c in five}) for five in caps.values()]
    assert np.mean(distinct) > 2.5  # the 5 captions of a clip differ


def test_word_vectors_synonyms_close():
    wv = WordVectors(SyntheticSpec())
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos(wv["dog"], wv["hound"]) > 0.8
    assert abs(cos(wv["dog"], wv["rain"])) < 0.3
    assert np.array_equal(wv["the"], WordVectors(SyntheticSpec())["the"])


def test_existing_set_needs_force(tmp_path):
    generate(tmp_path, size="tiny", seed=0, quiet=True)
    with pytest.raises(UserError, match="already exists"):
        generate(tmp_path, size="tiny", seed=0, quiet=True)
    generate(tmp_path, size="tiny", seed=1, quiet=True, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["structured-symlinks"]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    import data.synthetic as syn

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(syn.pickle, "dump", boom)
    with pytest.raises(RuntimeError):
        generate(tmp_path, size="tiny", seed=0, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_loader_generates_when_enabled(tmp_path, tiny_config):
    cfg = tiny_config
    cfg["data_loader"]["args"]["data_dir"] = str(tmp_path / "fresh")
    cfg["data_loader"]["args"]["synthetic"] = {"enabled": True, "size": "tiny", "seed": 0}
    data = load_clotho(cfg, ["val"])
    assert len(data["val"]) == 32 and (tmp_path / "fresh" / "structured-symlinks" / "val_list.txt").is_file()


def test_cli_bad_size_exit_2():
    proc = subprocess.run([sys.executable, "-m", "data.synthetic", "--out", "/nonexistent/x", "--size", "nope"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--size" in lines[0] and "nope" in lines[0]


def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "data.synthetic", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "--size" in proc.stdout and "--seed" in proc.stdout


def test_loader_regenerates_a_stale_cached_set(tmp_path, tiny_config):
    """A set cached by older generator defaults (or another seed) is rebuilt, never silently reused."""
    import json

    from data.clotho import ensure_data
    from data.synthetic import is_current

    generate(tmp_path, size="tiny", seed=0, quiet=True)
    root = tmp_path / "structured-symlinks"
    assert is_current(root, "tiny", 0) and not is_current(root, "tiny", 1)
    meta = json.loads((root / "synthetic-meta.json").read_text())
    meta["spec"]["instance_std"] += 0.1  # as if written by an older generator
    (root / "synthetic-meta.json").write_text(json.dumps(meta))
    assert not is_current(root, "tiny", 0)
    tiny_config["data_loader"]["args"]["data_dir"] = str(tmp_path)
    tiny_config["data_loader"]["args"]["synthetic"] = {"enabled": True, "size": "tiny", "seed": 0}
    ensure_data(tiny_config)
    assert is_current(root, "tiny", 0)


def test_folder_without_meta_is_never_overwritten(tmp_path):
    from data.synthetic import is_current

    (tmp_path / "real").mkdir()
    assert is_current(tmp_path / "real", "clotho", 0)  # e.g. the real archive: left alone
