"""CLOTHO loader on hand-made archives (hickle + pickles in the original layout)."""
import copy
import pickle
from pathlib import Path

import hickle
import numpy as np
import pytest

from data.clotho import load_clotho, read_hickle_subset
from utils.config import load_config
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _config(data_dir, **args):
    overrides = f"data_loader.args.data_dir={data_dir}"
    c = load_config(ROOT / "configs" / "clotho" / "train-vggish-vggsound.json", overrides)
    c["data_loader"]["args"].update(args)
    return c


def _rand(rng, t, d):
    return rng.standard_normal((t, d)).astype(np.float32)


def make_archive(data_dir: Path, splits=None, audio=None, vggsound=None, captions=None, w2v=None):
    """Write a small archive; returns the dicts written so that tests can tamper with them first."""
    rng = np.random.default_rng(0)
    splits = splits or {"train": ["tr_1.wav", "tr_2.wav"], "val": ["va_1.wav", "va_2.wav"], "test": ["te_1.wav", "te_2.wav", "te_3.wav"]}
    ids = [c for v in splits.values() for c in v]
    audio = audio if audio is not None else {c: _rand(rng, 20, 128) for c in ids}
    vggsound = vggsound if vggsound is not None else {c: _rand(rng, 60, 512) for c in ids}
    captions = captions if captions is not None else {
        c: [[f"word{k}", "dog", "barks"] for k in range(5)] for c in ids}
    w2v = w2v if w2v is not None else {c: [_rand(rng, 3 + k, 300) for k in range(5)] for c in ids}
    root = data_dir / "structured-symlinks"
    for sub in ("aggregated_audio", "aggregated_vggsound", "structured-symlinks", "text_embeddings"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    hickle.dump(audio, str(root / "aggregated_audio" / "vggish-raw.hickle"), mode="w")
    hickle.dump(vggsound, str(root / "aggregated_vggsound" / "vggsound-raw.hickle"), mode="w")
    with open(root / "structured-symlinks" / "raw-captions.pkl", "wb") as fh:
        pickle.dump(captions, fh)
    with open(root / "text_embeddings" / "w2v.pkl", "wb") as fh:
        pickle.dump(w2v, fh)
    for split, lst in splits.items():
        (root / f"{split}_list.txt").write_text("".join(f"{c}\n" for c in lst))
    return {"splits": splits, "audio": audio, "vggsound": vggsound, "captions": captions, "w2v": w2v}


def test_truncation_padding_masks_and_nan(tmp_path):
    rng = np.random.default_rng(1)
    splits = {"train": ["a.wav"], "val": ["v.wav"], "test": ["long.wav", "short.wav", "gone.wav"]}
    audio = {"a.wav": _rand(rng, 31, 128), "v.wav": _rand(rng, 3, 128),
             "long.wav": _rand(rng, 40, 128), "short.wav": _rand(rng, 5, 128), "gone.wav": float("nan")}
    vgg = {"a.wav": _rand(rng, 95, 512), "v.wav": _rand(rng, 3, 512), "long.wav": np.float64("nan"),
           "short.wav": _rand(rng, 100, 512).astype(np.float64), "gone.wav": _rand(rng, 1, 512)}
    w2v = {c: [_rand(rng, n, 300) for n in (1, 21, 30, 2, 5)] for c in splits["train"] + splits["val"] + splits["test"]}
    caps = {c: [["a", "dog", str(k)] for k in range(5)] for c in w2v}
    make_archive(tmp_path, splits, audio, vgg, caps, w2v)
    data = load_clotho(_config(tmp_path), ["test"])
    assert list(data) == ["test"]
    t = data["test"]
    assert t.clip_ids == ["long.wav", "short.wav", "gone.wav"]
    assert t.captions[0] == ["a dog 0", "a dog 1", "a dog 2", "a dog 3", "a dog 4"]
    a, v = t.experts["audio"], t.experts["vggsound"]
    assert a.shape == (3, 31, 128) and v.shape == (3, 95, 512) and a.dtype == np.float32 and v.dtype == np.float32
    np.testing.assert_array_equal(a[0], audio["long.wav"][:31])          # first frames kept
    np.testing.assert_array_equal(a[1, :5], audio["short.wav"])          # copied ...
    assert not a[1, 5:].any()                                             # ... and zero padded
    assert np.isnan(a[2]).all() and np.isnan(v[0]).all()                  # NaN rows for missing
    np.testing.assert_allclose(v[1], vgg["short.wav"][:95].astype(np.float32))
    np.testing.assert_array_equal(v[2, :1], vgg["gone.wav"]) and not v[2, 1:].any()
    assert t.ind["audio"].tolist() == [True, True, False] and t.ind["vggsound"].tolist() == [False, True, True]
    assert t.ind["audio"].dtype == bool
    assert t.text.shape == (3, 5, 21, 300) and t.text.dtype == np.float32
    assert t.text_lens.dtype == np.int64 and t.text_lens[0].tolist() == [1, 21, 21, 2, 5]
    np.testing.assert_array_equal(t.text[0, 2], w2v["long.wav"][2][:21])
    assert not t.text[0, 0, 1:].any() and not t.text[0, 3, 2:].any()


def test_all_splits_and_order(tmp_path):
    made = make_archive(tmp_path)
    data = load_clotho(_config(tmp_path), ["train", "val", "test"])
    for split, ids in made["splits"].items():
        assert data[split].clip_ids == ids and len(data[split]) == len(ids)
        assert data[split].text_lens.min() >= 1 and all(data[split].ind["audio"])


def test_only_configured_experts(tmp_path):
    make_archive(tmp_path)
    c = _config(tmp_path)
    c["experts"]["modalities"] = ["audio"]
    data = load_clotho(c, ["val"])
    assert set(data["val"].experts) == {"audio"} and set(data["val"].ind) == {"audio"}


def test_hickle_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    d = {"x 1.wav": _rand(rng, 7, 128), "y,2.wav": rng.standard_normal((3, 128)), "z.wav": float("nan"),
         "é.wav": _rand(rng, 1, 128)}
    path = tmp_path / "f.hickle"
    hickle.dump(d, str(path), mode="w")
    fast = read_hickle_subset(path, list(d) + ["absent.wav"])
    ref = hickle.load(str(path))
    assert set(fast) == set(d)
    for k, v in d.items():
        if isinstance(v, float):
            assert np.isnan(fast[k]) and np.isnan(ref[k])
        else:
            np.testing.assert_array_equal(fast[k], v)
            np.testing.assert_array_equal(ref[k], v)
            assert fast[k].dtype == v.dtype


@pytest.mark.parametrize("what, file_part", [
    ("audio", "vggish-raw.hickle"), ("vggsound", "vggsound-raw.hickle"),
    ("captions", "raw-captions.pkl"), ("w2v", "w2v.pkl"),
])
def test_missing_ids_named(tmp_path, what, file_part):
    made = make_archive(tmp_path)
    bad = dict(made[what])
    for cid in ("te_2.wav", "te_3.wav"):
        del bad[cid]
    make_archive(tmp_path, **{**made, what: bad})
    with pytest.raises(UserError) as err:
        load_clotho(_config(tmp_path), ["train", "test"])
    msg = str(err.value)
    assert file_part in msg and "2 clips of test_list.txt missing" in msg and "'te_2.wav'" in msg and "\n" not in msg


def test_allow_missing_experts(tmp_path):
    made = make_archive(tmp_path)
    audio = dict(made["audio"])
    del audio["te_1.wav"]
    make_archive(tmp_path, **{**made, "audio": audio})
    data = load_clotho(_config(tmp_path, allow_missing_experts=True), ["test"])
    assert data["test"].ind["audio"].tolist() == [False, True, True]
    assert np.isnan(data["test"].experts["audio"][0]).all()


def test_missing_expert_is_refused_when_the_config_omits_allow_missing_experts(tmp_path):
    """The flag's default (a config built without base_config.json) is to refuse, naming the file and clip."""
    made = make_archive(tmp_path)
    audio = dict(made["audio"])
    del audio["te_1.wav"]
    make_archive(tmp_path, **{**made, "audio": audio})
    c = _config(tmp_path)
    del c["data_loader"]["args"]["allow_missing_experts"]
    with pytest.raises(UserError, match=r"vggish-raw.hickle: 1 clips of test_list.txt missing \(first: 'te_1.wav'\)"):
        load_clotho(c, ["test"])


def test_string_captions_are_stripped(tmp_path):
    _tamper(tmp_path, "captions", "va_1.wav", ["  a dog\n", "b", "c", "d", "e"])
    assert load_clotho(_config(tmp_path), ["val"])["val"].captions[0] == ["a dog", "b", "c", "d", "e"]


def test_expert_without_max_tokens_is_a_config_error(tmp_path):
    make_archive(tmp_path)
    c = _config(tmp_path)
    del c["data_loader"]["args"]["max_tokens"]["vggsound"]
    with pytest.raises(UserError, match=r"^config: data_loader.args.max_tokens.vggsound: missing$"):
        load_clotho(c, ["val"])


def _tamper(tmp_path, what, cid, value):
    made = make_archive(tmp_path)
    d = copy.deepcopy(made[what])
    d[cid] = value
    make_archive(tmp_path, **{**made, what: d})


@pytest.mark.parametrize("what, value, needle", [
    ("audio", np.zeros((10, 127), np.float32), "vggish-raw.hickle: clip 'va_1.wav': shape (10, 127)"),
    ("audio", np.zeros((0, 128), np.float32), "vggish-raw.hickle: clip 'va_1.wav': no frames"),
    ("vggsound", np.zeros((512,), np.float32), "vggsound-raw.hickle: clip 'va_1.wav': shape (512,)"),
    ("w2v", [np.zeros((2, 300), np.float32)] * 4, "w2v.pkl: clip 'va_1.wav' has 4 caption arrays"),
    ("w2v", [np.zeros((2, 300), np.float32)] * 6, "w2v.pkl: clip 'va_1.wav' has 6 caption arrays"),
    ("w2v", [np.zeros((2, 384), np.float32)] * 5, "w2v.pkl: clip 'va_1.wav' caption 0: shape (2, 384)"),
    ("w2v", [np.zeros((0, 300), np.float32)] * 5, "w2v.pkl: clip 'va_1.wav' caption 0: empty token array"),
    ("captions", [["a"]] * 6, "raw-captions.pkl: clip 'va_1.wav' has 6 captions"),
    ("captions", [["a"], [], ["b"], ["c"], ["d"]], "raw-captions.pkl: clip 'va_1.wav' caption 1: empty"),
    ("captions", ["a", "b", "  \t ", "c", "d"], "raw-captions.pkl: clip 'va_1.wav' caption 2: empty"),
])
def test_bad_values_named(tmp_path, what, value, needle):
    _tamper(tmp_path, what, "va_1.wav", value)
    with pytest.raises(UserError) as err:
        load_clotho(_config(tmp_path), ["val"])
    assert needle in str(err.value)


def test_split_list_errors(tmp_path):
    make_archive(tmp_path, splits={"train": ["a.wav", "b.wav"], "val": ["b.wav", "d.wav"], "test": ["c.wav", "e.wav"]})
    with pytest.raises(UserError, match=r"val_list.txt: clip 'b.wav' is also in train_list.txt"):
        load_clotho(_config(tmp_path), ["train", "val"])
    load_clotho(_config(tmp_path), ["val", "test"])  # no overlap among the loaded splits: fine
    root = tmp_path / "structured-symlinks"
    (root / "test_list.txt").write_text("c.wav\n")  # one clip: every query would rank it first (R@1 = 100)
    with pytest.raises(UserError, match=r"test_list.txt: 1 clip: a split needs at least 2"):
        load_clotho(_config(tmp_path), ["test"])
    (root / "test_list.txt").write_text("c.wav\nc.wav\n")
    with pytest.raises(UserError, match=r"test_list.txt: 1 duplicated clip ids \(first: 'c.wav'\)"):
        load_clotho(_config(tmp_path), ["test"])
    (root / "test_list.txt").unlink()
    with pytest.raises(UserError, match=r"test_list.txt: split list not found"):
        load_clotho(_config(tmp_path), ["test"])
    with pytest.raises(UserError, match="unknown split 'dev'"):
        load_clotho(_config(tmp_path), ["dev"])


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(UserError, match="feature folder not found"):
        load_clotho(_config(tmp_path / "nothing"), ["test"])
    make_archive(tmp_path)
    (tmp_path / "structured-symlinks" / "text_embeddings" / "w2v.pkl").unlink()
    with pytest.raises(UserError, match=r"w2v.pkl: file not found"):
        load_clotho(_config(tmp_path), ["test"])
    (tmp_path / "structured-symlinks" / "text_embeddings" / "w2v.pkl").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"w2v.pkl: cannot be read as a pickle"):
        load_clotho(_config(tmp_path), ["test"])


def test_minilm_dims_checked(tmp_path):
    make_archive(tmp_path)
    c = _config(tmp_path)
    c["experts"]["text_feat"] = "minilm"
    with pytest.raises(UserError, match=r"minilm.pkl: file not found"):
        load_clotho(c, ["test"])


def test_a_clip_without_any_expert_is_refused_at_load_naming_it(tmp_path):
    """Legal NaN markers in every expert file left the clip without an audio embedding: NaN similarities, and a
    'non-finite similarities' error only after training."""
    rng = np.random.default_rng(3)
    splits = {"train": ["tr_1.wav", "tr_2.wav"], "val": ["va_1.wav", "va_2.wav"], "test": ["te_1.wav", "te_2.wav"]}
    ids = [c for v in splits.values() for c in v]
    audio = {c: (float("nan") if c == "te_2.wav" else _rand(rng, 20, 128)) for c in ids}
    vggsound = {c: (float("nan") if c == "te_2.wav" else _rand(rng, 60, 512)) for c in ids}
    make_archive(tmp_path, splits=splits, audio=audio, vggsound=vggsound)
    with pytest.raises(UserError, match=r"test_list.txt: clip 'te_2.wav' has no expert at all .*1 such clips"):
        load_clotho(_config(tmp_path), ["test"])
    vggsound["te_2.wav"] = _rand(rng, 60, 512)  # one expert is enough (the other is a legal gap)
    make_archive(tmp_path, splits=splits, audio=audio, vggsound=vggsound)
    assert list(load_clotho(_config(tmp_path), ["test"])["test"].ind["audio"]) == [True, False]
