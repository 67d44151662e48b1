"""A tiny `fit --preset flickr8k` (overridden to run on the CPU in seconds) with `--tensorboard`: the
resolved settings it writes run again through `--config` to the same settings and the same training,
and the TensorBoard event files hold the scalars and the attention grids."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from train.__main__ import main as train_main
from train.config_file import RESOLVED_FILE

EPOCHS = 2


def tiny(tmp):
    """The flickr8k preset, overridden: the scenes, the test encoder and a small decoder."""
    return ["--preset", "flickr8k", "--encoder", "test-tiny", "--feature-map", "last", "--image-size", "128",
            "--dataset", "scenes", "--data-root", str(tmp / "scenes"), "--cache-dir", str(tmp / "cache"),
            "--n-train", "48", "--n-val", "8", "--n-test", "8", "--scene-size", "128", "--min-freq", "1",
            "--val-images", "8", "--embed-dim", "16", "--attention-dim", "16", "--decoder-dim", "32",
            "--batch-size", "32", "--lr", "0.01", "--epochs", str(EPOCHS), "--early-stop", "0",
            "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("settings")
    code = train_main(["fit", "--out", str(tmp / "w"), "--run-dir", str(tmp / "run"), "--tensorboard",
                       str(tmp / "tb"), *tiny(tmp)])
    assert code == 0
    return tmp


def read(path):
    return yaml.safe_load(path.read_text())


@pytest.mark.slow
def test_every_fit_writes_its_resolved_settings(first):
    settings = read(first / "w" / RESOLVED_FILE)
    assert read(first / "run" / RESOLVED_FILE) == settings
    m, t, d, r = settings["model"], settings["train"], settings["data"], settings["run"]
    assert m["encoder"] == "test-tiny" and m["embed_dim"] == 16        # flags over the preset
    assert m["dropout"] == 0.5 and t["captions_per_image"] == 0        # the preset where no flag spoke
    assert d["dataset"] == "scenes" and r["beam_size"] == 3 and r["tensorboard"] == str(first / "tb")
    assert "python -m train fit --out" in (first / "w" / RESOLVED_FILE).read_text().splitlines()[0]
    # NOTE: `train compare` reuses folders by train_config.json: still written, the TrainConfig alone
    assert json.loads((first / "w" / "train_config.json").read_text()) == t


@pytest.mark.slow
def test_tensorboard_event_files_hold_scalars_and_attention_grids(first):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(first / "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/xent", "val/bleu4", "lr"} <= set(tags["scalars"])
    assert sorted(tags["images"]) == [f"attention/{i}" for i in range(4)]
    hist = json.loads((first / "run" / "history.json").read_text())
    for tag, key in (("val/bleu4", "val_score"), ("train/xent", "train_xent"), ("lr", "lr")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [h["epoch"] for h in hist] == list(range(1, EPOCHS + 1))
        assert [e.value for e in events] == pytest.approx([h[key] for h in hist], rel=1e-6)
    grid = acc.Images("attention/0")
    assert [e.step for e in grid] == list(range(1, EPOCHS + 1))
    pixels = np.asarray(Image.open(io.BytesIO(grid[-1].encoded_image_string)).convert("RGB"))
    assert pixels.shape[1] > pixels.shape[0] > 50 and pixels.std() > 10  # panels side by side, not blank


@pytest.mark.slow
def test_the_resolved_settings_run_again_to_the_same_settings_and_training(first):
    written = first / "w" / RESOLVED_FILE
    settings, hist = read(written), json.loads((first / "run" / "history.json").read_text())
    again = first / "again.yaml"
    again.write_text(written.read_text())
    # NOTE: the file names the same out/run/tensorboard folders: this run replaces the first one's
    assert train_main(["fit", "--config", str(again), "--no-progress"]) == 0
    assert read(written) == settings
    rerun = json.loads((first / "run" / "history.json").read_text())
    assert [h["train_loss"] for h in rerun] == [h["train_loss"] for h in hist]
    assert [h["val_score"] for h in rerun] == [h["val_score"] for h in hist]


def test_tensorboard_without_the_package_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # NOTE: makes the import fail
    assert train_main(["fit", "--out", str(tmp_path / "w"), "--tensorboard", str(tmp_path / "tb"),
                       "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "pip install tensorboard" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()
