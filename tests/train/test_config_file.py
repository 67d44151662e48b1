"""`fit --config FILE` / `--preset` / strict boolean flags: formats, errors, precedence and the presets'
content, all through `--print-config` (no training here; the round trip is in test_fit_settings.py)."""
from __future__ import annotations

import json

import pytest
import yaml

from train.__main__ import main as train_main
from train.config_file import parse_bool, preset_settings, read_config, schema
from train.presets import PAPER_SCORES, PRESETS


def resolved(capsys, *argv) -> dict:
    capsys.readouterr()
    assert train_main(["fit", "--print-config", *argv]) == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("text, value", [("true", True), ("FALSE", False), ("1", True), ("0", False),
                                         ("Yes", True), ("no", False)])
def test_boolean_words(text, value):
    assert parse_bool(text) is value


@pytest.mark.parametrize("typo", ["flase", "ture", "2", "", "on"])
def test_boolean_flag_typos_are_argparse_errors(typo, capsys):
    with pytest.raises(SystemExit) as e:
        train_main(["fit", "--out", "x", "--print-config", "--gate", typo])
    assert e.value.code == 2
    assert "--gate: expected true/false" in capsys.readouterr().err


def test_boolean_flags_alone_and_with_a_value(capsys):
    assert resolved(capsys, "--out", "x", "--bf16")["train"]["bf16"] is True
    assert resolved(capsys, "--out", "x", "--gate", "no")["model"]["gate"] is False
    assert resolved(capsys, "--out", "x", "--with-blind")["run"]["with_blind"] is True


def test_json_toml_and_yaml_give_the_same_settings(tmp_path, capsys):
    settings = {"model": {"embed_dim": 24, "gate": False}, "train": {"lr": 0.002, "epochs": 3},
                "data": {"min_freq": 2}, "run": {"out": "w", "beam_size": 2}}
    (tmp_path / "s.json").write_text(json.dumps(settings))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(settings).replace("0.002", "2e-3"))  # YAML 1.2 float
    (tmp_path / "s.toml").write_text('[model]\nembed_dim = 24\ngate = false\n[train]\nlr = 2e-3\nepochs = 3\n'
                                     '[data]\nmin_freq = 2\n[run]\nout = "w"\nbeam_size = 2\n')
    outs = [resolved(capsys, "--config", str(tmp_path / f"s.{ext}")) for ext in ("json", "yaml", "toml")]
    assert outs[0] == outs[1] == outs[2]
    assert outs[0]["model"]["embed_dim"] == 24 and outs[0]["train"]["lr"] == 0.002
    assert outs[0]["run"]["out"] == "w" and outs[0]["model"]["gate"] is False


def test_precedence_defaults_preset_file_flags(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("model: {embed_dim: 64}\ntrain: {epochs: 7, lr: 0.01}\n")
    base = resolved(capsys, "--out", "x")
    pre = resolved(capsys, "--out", "x", "--preset", "flickr8k")
    both = resolved(capsys, "--out", "x", "--preset", "flickr8k", "--config", str(tmp_path / "c.yaml"))
    flags = resolved(capsys, "--out", "x", "--preset", "flickr8k", "--config", str(tmp_path / "c.yaml"),
                     "--epochs", "2", "--embed-dim", "32")
    assert base["model"]["embed_dim"] == 256 and pre["model"]["embed_dim"] == 512   # preset > default
    assert both["model"]["embed_dim"] == 64 and both["train"]["epochs"] == 7       # file > preset
    assert both["model"]["decoder_dim"] == 512                                     # preset kept where the file is silent
    assert flags["model"]["embed_dim"] == 32 and flags["train"]["epochs"] == 2     # flags > file
    assert flags["train"]["lr"] == 0.01 and flags["data"]["dataset"] == "flickr8k"


def test_a_file_can_name_its_preset_and_the_flag_wins(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("preset: coco\nrun: {out: w}\n")
    assert resolved(capsys, "--config", str(tmp_path / "c.yaml"))["data"]["dataset"] == "coco"
    assert resolved(capsys, "--config", str(tmp_path / "c.yaml"), "--preset", "flickr8k")["data"]["dataset"] == "flickr8k"


@pytest.mark.parametrize("content, ext, expected", [
    ('{"model": {"embed_dm": 3}}', "json", "model.embed_dm (did you mean model.embed_dim?)"),
    ('{"trian": {}}', "json", "unknown keys trian (did you mean train?)"),
    ('{"model": {"grid": [2, 2]}}', "json", "derived fields"),
    ('{"train": {"epochs": "3"}}', "json", "train.epochs must be an integer, got '3'"),
    ('{"train": {"lr": true}}', "json", "train.lr must be a number"),
    ('{"model": {"gate": "yes"}}', "json", "model.gate must be true or false"),
    ("model: [1", "yaml", "not valid YAML"),
    ("[train\n", "toml", "not valid TOML"),
    ("[1, 2]", "json", "expected sections"),
    ('{"preset": "imagenet"}', "json", "unknown preset 'imagenet'"),
    ("epochs: 3", "ini", "expected a .json, .toml, .yaml or .yml file"),
])
def test_bad_files_are_one_line_errors(tmp_path, capsys, content, ext, expected):
    path = tmp_path / f"bad.{ext}"
    path.write_text(content)
    assert train_main(["fit", "--out", "x", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(path) in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_an_invalid_combination_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "c.json").write_text('{"model": {"decoder": "transformer", "attention": "hard"}}')
    assert train_main(["fit", "--out", str(tmp_path / "w"), "--config", str(tmp_path / "c.json")]) == 2
    assert "transformer" in capsys.readouterr().err and not (tmp_path / "w").exists()


def test_out_may_come_from_the_file_but_is_required(capsys):
    with pytest.raises(SystemExit) as e:
        train_main(["fit", "--print-config"])
    assert e.value.code == 2 and "--out is required" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_hold_the_photo_settings(name):
    d = preset_settings(name)  # checked like a file, and each config built from it
    m, t, data = d["model"], d["train"], d["data"]
    assert m["encoder"].startswith("timm:") and m["feature_map"] == "stride16" and m["image_size"] == 224
    assert m["embed_dim"] == m["attention_dim"] == m["decoder_dim"] == 512 and m["dropout"] == 0.5
    assert m["attention"] == "soft" and m["decoder"] == "lstm"
    assert t["captions_per_image"] == 0 and t["early_stop"] > 0 and d["run"]["beam_size"] == 3
    assert data["dataset"] == name and set(PAPER_SCORES[name]) == {"bleu4", "meteor"}
    if name == "coco":  # Karpathy's split file (flickr8k's official splits are Karpathy's)
        assert data["annotations"].endswith("dataset_coco.json")
    for sec, values in d.items():
        assert set(values) <= set(schema()[sec])


@pytest.mark.slow
def test_preset_backbone_is_a_pretrained_timm_model_with_a_14x14_stride16_map():
    import timm
    from sat.encoder import create_encoder
    name = PRESETS["flickr8k"]["model"]["encoder"].removeprefix("timm:")
    assert timm.list_pretrained(name) == [name]
    enc = create_encoder("timm:" + name, feature_map="stride16", pretrained=False)  # no download
    assert (enc.dim, enc.grid(224)) == (384, (14, 14))


def test_a_broken_preset_table_is_refused(monkeypatch):
    from train import presets
    monkeypatch.setitem(presets.PRESETS, "broken", {"model": {"dropout": 1.5}})
    with pytest.raises(ValueError, match="preset broken: dropout"):
        preset_settings("broken")
    monkeypatch.setitem(presets.PRESETS, "typo", {"train": {"epoch": 3}})
    with pytest.raises(ValueError, match=r"train\.epoch \(did you mean train\.epochs\?\)"):
        preset_settings("typo")


def test_read_config_keeps_what_the_file_says(tmp_path):
    (tmp_path / "c.yml").write_text("preset: coco\ntrain: {lr: 1}\n")
    d = read_config(tmp_path / "c.yml")
    assert d == {"preset": "coco", "train": {"lr": 1.0}} and isinstance(d["train"]["lr"], float)


def test_extract_workers_from_flag_and_file_and_a_bad_count_is_one_line(tmp_path, capsys):
    assert resolved(capsys, "--out", "x")["data"]["extract_workers"] == -1
    assert resolved(capsys, "--out", "x", "--extract-workers", "3")["data"]["extract_workers"] == 3
    (tmp_path / "c.yaml").write_text("data: {extract_workers: 0}\n")
    assert resolved(capsys, "--out", "x", "--config", str(tmp_path / "c.yaml"))["data"]["extract_workers"] == 0
    capsys.readouterr()
    assert train_main(["fit", "--out", "x", "--print-config", "--extract-workers", "-2"]) == 2
    err = capsys.readouterr().err
    assert "extract_workers must be" in err and "-2" in err and len(err.strip().splitlines()) == 1, err
