import json
import subprocess
import sys
from pathlib import Path

import pytest

from utils.config import config_hash, load_config, parse_custom_args
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs"


def _write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_clotho_ce_effective_values():
    c = load_config(CFG / "clotho" / "train-vggish-vggsound.json")
    assert "inherit_from" not in c
    assert c["experts"]["modalities"] == ["audio", "vggsound"]
    assert c["experts"]["text_feat"] == "w2v"
    a = c["arch"]["args"]
    assert (a["use_ce"], a["mimic_ce_dims"], a["num_g_layers"], a["num_h_layers"], a["include_self"]) == ("pairwise", 0, 3, 0, 1)
    assert a["vlad_clusters"] == {"text": 20, "audio": 16, "vggsound": 16, "yamnet": 16, "soundnet": 16} and a["ghost_clusters"] == {"text": 1}
    assert a["netvlad_use_mask"] is False and a["ce_sequential_update"] is True and a["ce_shared_dim"] == 768
    d = c["data_loader"]["args"]
    assert d["data_dir"] == "data/CLOTHO" and d["root_feat_folder"] == "structured-symlinks"
    assert d["max_tokens"] == {"text": 21, "audio": 31, "vggsound": 95, "yamnet": 63, "soundnet": 21} and d["batch_size"] == 128
    assert d["synthetic"] == {"enabled": False, "size": "clotho", "seed": 0}
    assert c["optimizer"]["args"] == {"lr": 0.01, "weight_decay": 0.001}
    assert c["loss"]["args"] == {"margin": 0.2, "fix_norm": True}
    assert c["lr_scheduler"]["args"] == {"step_size": 1, "gamma": 0.95}
    assert c["trainer"]["epochs"] == 20 and c["trainer"]["dump_splits"] == ["val", "test"]
    assert c["trainer"]["mini_train"] is False and c["seed"] == 0
    assert c["eval_settings"]["data_loader"]["args"] == {"split_name": "test", "num_test_captions": 5}
    json.dumps(c)  # save-ready


def test_moee_and_audio_only_configs():
    m = load_config(CFG / "clotho" / "train-vggish-vggsound-moee.json")
    assert m["arch"]["args"]["use_ce"] == "" and m["arch"]["args"]["mimic_ce_dims"] == 0
    a = load_config(CFG / "clotho" / "train-full-ce-only-audio.json")
    assert a["experts"]["modalities"] == ["audio"]
    assert a["arch"]["args"]["use_ce"] == "" and a["arch"]["args"]["mimic_ce_dims"] == 1


@pytest.mark.parametrize("name", ["train-vggish-vggsound", "train-vggish-vggsound-moee", "train-full-ce-only-audio"])
def test_synthetic_twins_differ_only_in_data(name):
    real = load_config(CFG / "clotho" / f"{name}.json")
    syn = load_config(CFG / "clotho-synthetic" / f"{name}.json")
    assert syn["data_loader"]["args"]["data_dir"] == "data/CLOTHO-synthetic"
    assert syn["data_loader"]["args"]["synthetic"]["enabled"] is True
    syn["data_loader"]["args"]["data_dir"] = real["data_loader"]["args"]["data_dir"]
    syn["data_loader"]["args"]["synthetic"] = real["data_loader"]["args"]["synthetic"]
    assert syn == real


def test_tiny_config():
    c = load_config(CFG / "clotho-synthetic" / "tiny-ce.json")
    d = c["data_loader"]["args"]
    assert d["synthetic"]["size"] == "tiny" and d["synthetic"]["enabled"] and d["batch_size"] == 32
    assert c["trainer"]["epochs"] <= 3


def test_inheritance_merge_semantics(tmp_path):
    _write(tmp_path / "parent" / "p.json", {"experts": {"modalities": ["audio", "vggsound"], "text_feat": "minilm"},
                                             "arch": {"args": {"vlad_clusters": {"text": 7}}}, "seed": 3})
    child = _write(tmp_path / "child" / "c.json", {"inherit_from": "../parent/p.json",
                                                    "experts": {"modalities": ["audio"]},
                                                    "arch": {"args": {"vlad_clusters": {"audio": 5}}}})
    c = load_config(child)
    assert c["experts"]["modalities"] == ["audio"]          # lists replaced
    assert c["experts"]["text_feat"] == "minilm"            # sibling kept from parent
    assert c["arch"]["args"]["vlad_clusters"] == {"text": 7, "audio": 5, "vggsound": 16, "yamnet": 16, "soundnet": 16}  # nested merge + schema default
    assert c["seed"] == 3 and c["trainer"]["epochs"] == 20  # schema defaults fill the rest


def test_overrides():
    c = load_config(CFG / "clotho" / "train-vggish-vggsound.json",
                    'trainer.epochs=3,optimizer.args.lr=1,data_loader.args.root_feat_folder=1,'
                    'experts.modalities=[audio],arch.args.l2renorm=true,trainer.dump_splits=["train","test"],'
                    'arch.args.use_ce=')
    assert c["trainer"]["epochs"] == 3
    assert c["optimizer"]["args"]["lr"] == 1           # int accepted for float
    assert c["data_loader"]["args"]["root_feat_folder"] == "1"
    assert c["experts"]["modalities"] == ["audio"]
    assert c["arch"]["args"]["l2renorm"] is True
    assert c["trainer"]["dump_splits"] == ["train", "test"]
    assert c["arch"]["args"]["use_ce"] == ""


def test_parse_custom_args():
    assert parse_custom_args("a.b=1,c.d=x") == [("a.b", 1), ("c.d", "x")]
    assert parse_custom_args('x=[1,2],y.z={"k": 1}') == [("x", [1, 2]), ("y.z", {"k": 1})]
    assert parse_custom_args(None) == [] and parse_custom_args("") == []


def test_config_hash():
    a = load_config(CFG / "clotho" / "train-vggish-vggsound.json")
    b = load_config(CFG / "clotho" / "train-vggish-vggsound.json", "seed=1")
    assert config_hash(a) == config_hash(dict(reversed(list(a.items()))))
    assert config_hash(a) != config_hash(b) and len(config_hash(a)) == 12


@pytest.mark.parametrize("content, needle", [
    ({"trainer": {"epochz": 3}}, "trainer.epochz: unknown key"),
    ({"trainer": {"epochs": "3"}}, "trainer.epochs: expected int"),
    ({"trainer": {"epochs": 3.5}}, "trainer.epochs: expected int"),
    ({"experts": {"modalities": "audio"}}, "experts.modalities: expected list"),
    ({"experts": {"modalities": [1]}}, "experts.modalities: expected list of string"),
    ({"arch": {"args": {"l2renorm": 1}}}, "arch.args.l2renorm: expected bool"),
    ({"data_loader": {"args": {"max_tokens": {"audio": "x"}}}}, "data_loader.args.max_tokens.audio"),
    ({"inherit_from": "nope.json"}, "inherit_from: parent file"),
    ({"trainer": {"inherit_from": "x.json"}}, "trainer.inherit_from: inherit_from is only allowed at the top level"),
    ({"optimizer": {"args": {"lr": True}}}, "optimizer.args.lr: expected float, got bool true"),
    ("{not json", "invalid JSON"),
    ("[1, 2]", "top level must be a JSON object"),
])
def test_file_errors_name_file_and_key(tmp_path, content, needle):
    path = _write(tmp_path / "bad.json", content)
    with pytest.raises(UserError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and needle in msg and "\n" not in msg


def test_error_names_the_parent_file(tmp_path):
    parent = _write(tmp_path / "p.json", {"optimizer": {"args": {"lrr": 1}}})
    child = _write(tmp_path / "c.json", {"inherit_from": "p.json"})
    with pytest.raises(UserError, match=r"p\.json: optimizer\.args\.lrr: unknown key"):
        load_config(child)


def test_cycle(tmp_path):
    _write(tmp_path / "a.json", {"inherit_from": "b.json"})
    _write(tmp_path / "b.json", {"inherit_from": "a.json"})
    with pytest.raises(UserError, match="inheritance cycle"):
        load_config(tmp_path / "a.json")
    _write(tmp_path / "self.json", {"inherit_from": "self.json"})
    with pytest.raises(UserError, match="inheritance cycle"):
        load_config(tmp_path / "self.json")


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.json")


@pytest.mark.parametrize("override, needle", [
    ("trainer.nope=1", "--custom_args: trainer.nope: unknown key"),
    ("nope.deeper=1", "--custom_args: nope: unknown key"),
    ("trainer.epochs=abc", "--custom_args: trainer.epochs: expected int"),
    ("trainer.epochs", "expected key.sub=value"),
    ("experts.modalities=3", "experts.modalities: expected list"),
    ("optimizer.args.lr=true", "--custom_args: optimizer.args.lr: expected float, got bool true"),
    ('data_loader.args.max_tokens={"textt": 3}', "--custom_args: data_loader.args.max_tokens.textt: unknown key"),
])
def test_override_errors(override, needle):
    with pytest.raises(UserError) as err:
        load_config(CFG / "clotho" / "train-vggish-vggsound.json", override)
    assert needle in str(err.value)


def test_cli_exit_code_2_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "utils.config", str(CFG / "clotho" / "train-vggish-vggsound.json"),
                           "--custom_args", "trainer.bogus=1"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "trainer.bogus" in lines[0]


def test_duplicated_keys_and_modalities_are_refused(tmp_path):
    """JSON keeps the last of two equal keys silently ("epochs": 1, "epochs": 500 trained 500 epochs)."""
    from utils.config_rules import check_values

    cfg = tmp_path / "c.json"
    cfg.write_text('{"inherit_from": "%s", "trainer": {"epochs": 1, "epochs": 500}}'
                   % (Path(__file__).resolve().parents[1] / "configs" / "clotho-synthetic" / "tiny-ce.json"))
    with pytest.raises(UserError, match=r"c.json: key 'epochs' appears twice in one object"):
        load_config(cfg)
    assert parse_custom_args("trainer.epochs=2,trainer.epochs=3")[-1] == ("trainer.epochs", 3)  # overrides: last wins
    with pytest.raises(UserError, match=r"experts.modalities: .*'audio' is listed twice"):
        check_values({"experts": {"modalities": ["audio", "audio"]}})
    check_values({"experts": {"modalities": ["audio", "vggsound"]}})


@pytest.mark.parametrize("text", ["0,,1", "0,", ",1", ""])
def test_seeds_with_an_empty_item_are_refused(text):
    import train

    with pytest.raises(UserError, match="--seeds"):
        train._parse_seeds(text)


def test_value_rules_bounds_openness_and_defaults():
    """utils.config_rules directly (found by hand mutation testing): an open upper bound excludes it, a key
    without a rule must still be finite, a fixed number accepts 0 for 0.0, and booleans are not range-checked."""
    from utils.config_rules import Range, check_values
    from utils.errors import UserError

    assert Range(0, 1, high_open=True).problem(1) == "must be < 1"
    assert Range(0, 1, high_open=True).problem(0.999) is None and Range(0, 1).problem(1) is None
    with pytest.raises(UserError, match=r"^c.json: some.new_key: nan: must be a finite number$"):
        check_values({"some": {"new_key": float("nan")}}, "c.json")
    check_values({"data_loader": {"args": {"text_dropout": 0, "trn_cat": 0.0}}})  # FIXED 0.0 and 0: same setting
    check_values({"data_loader": {"args": {"batch_size": True}}})  # a type question, not a range one


@pytest.mark.parametrize("raw, value", [("True", True), ("False", False), ("true", True), ("false", False)])
def test_python_style_booleans_in_overrides(raw, value):
    c = load_config(CFG / "clotho" / "train-vggish-vggsound.json", f"data_loader.args.allow_missing_experts={raw}")
    assert c["data_loader"]["args"]["allow_missing_experts"] is value
