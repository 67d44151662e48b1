"""Resume and checkpoint hardening: truncated or foreign last.pt, changed settings, atomic writes."""
from __future__ import annotations

import pytest
import torch

from sat.config import ModelConfig
from sat.model import CaptionModel
from train import checkpoint as C
from train.loop import TrainConfig, fit

from .test_loop import model, run, toy_data


@pytest.mark.slow
def test_truncated_last_pt_is_one_line_naming_the_file(tmp_path):
    run(tmp_path, 1)
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(ValueError) as e:
        run(tmp_path, 2, resume=True)
    msg = str(e.value)
    assert "\n" not in msg and str(last) in msg and "delete it or run without --resume" in msg, msg


@pytest.mark.slow
def test_other_model_dims_are_one_line_naming_the_setting_and_tensor(tmp_path):
    run(tmp_path, 1)
    torch.manual_seed(0)
    wider = CaptionModel(ModelConfig(encoder="test-tiny", encoder_dim=8, grid=(2, 2), vocab_size=9, embed_dim=8,
                                     attention_dim=8, decoder_dim=32, dropout=0.1))
    with pytest.raises(ValueError) as e:
        run(tmp_path, 2, resume=True, m=wider)
    assert "\n" not in str(e.value) and "decoder_dim 16 → 32" in str(e.value), e.value
    # a checkpoint without the model's settings (older runs): the first tensor whose shape differs is named
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    del ck["model_config"]
    torch.save(ck, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"tensor decoder\.\S+ is \(\d+(, \d+)*\) there, \(\d+(, \d+)*\) here"):
        run(tmp_path, 2, resume=True, m=wider)


@pytest.mark.slow
def test_changed_settings_are_named_in_one_warning_and_lr_takes_effect(tmp_path, capsys):
    run(tmp_path, 2, seed=0)
    capsys.readouterr()
    m = model(seed=9)
    tc = TrainConfig(epochs=3, batch_size=4, lr=5e-3, seed=7)
    hist = fit(m, data=toy_data(), validate=lambda _: 1.0, out_dir=tmp_path, config=tc, resume=True, progress=False)
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, warnings
    w = warnings[0]
    assert "lr 0.01 → 0.005" in w and "batch_size 8 → 4" in w and "seed 0 → 7 (ignored" in w, w
    assert "epochs 2 → 3" in w and "encoder_lr" not in w
    assert hist[-1]["lr"] == pytest.approx(5e-3)  # the new learning rate is the one used
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["train_config"]
    assert saved["seed"] == 0 and saved["lr"] == 5e-3  # what the run really used


@pytest.mark.slow
def test_unchanged_resume_says_nothing(tmp_path, capsys):
    run(tmp_path, 2, max_steps=3)  # stops inside epoch 1
    capsys.readouterr()
    _, hist = run(tmp_path, 2, resume=True, max_steps=3)
    out = capsys.readouterr()
    assert "resuming after epoch 1" in out.out and "warning" not in out.err
    assert len(hist) == 1


def test_a_failed_save_leaves_the_previous_best_pt_intact(tmp_path, monkeypatch):
    run(tmp_path, 1)
    best = tmp_path / "best.pt"
    before = best.read_bytes()

    def disk_full(obj, f):  # writes part of the file, then the disk is full
        with open(f, "wb") as fh:
            fh.write(before[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(C.torch, "save", disk_full)
    with pytest.raises(OSError) as e:
        run(tmp_path, 2, resume=True, scores=[0.9])  # a better score: best.pt is rewritten first
    msg = str(e.value)
    assert "\n" not in msg and str(best) in msg and "needs about" in msg and "No space left" in msg, msg
    assert best.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))
    monkeypatch.undo()
    assert torch.load(best, weights_only=True).keys() == model().state_dict().keys()
