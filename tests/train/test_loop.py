"""Training loop: the loss falls, checkpoints resume exactly, early stopping, per-image caption draw."""
from __future__ import annotations

import json

import pytest
import torch

from sat.config import ModelConfig
from sat.model import CaptionModel
from train.loop import CaptionData, TrainConfig, fit


def toy_data(n_images=24, seed=0):
    """Image i carries feature pattern i % 3; its captions name that pattern: learnable from pixels."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(n_images, 8, 2, 2, generator=g) * 0.1
    cls = torch.arange(n_images) % 3
    maps[torch.arange(n_images), cls, 0, 0] += 3.0
    rows, caps = [], []
    for i in range(n_images):
        for k in range(2):
            rows.append(i)
            caps.append([1, 4 + int(cls[i]), 7 + k, 2])
    return CaptionData(maps=maps.half(), rows=torch.tensor(rows), captions=torch.tensor(caps))


def model(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(encoder="test-tiny", encoder_dim=8, grid=(2, 2), vocab_size=9, embed_dim=8,
                      attention_dim=8, decoder_dim=16, dropout=0.1)
    return CaptionModel(cfg)


def run(tmp, epochs, *, resume=False, m=None, **kw):
    m = m or model()
    scores = iter(kw.pop("scores", [0.1 * i for i in range(1, 100)]))
    tc = TrainConfig(epochs=epochs, batch_size=8, lr=1e-2, **kw)
    hist = fit(m, data=toy_data(), validate=lambda _: next(scores), out_dir=tmp, config=tc, resume=resume,
               progress=False)
    return m, hist


@pytest.mark.slow
def test_loss_falls_and_files_are_written(tmp_path):
    _, hist = run(tmp_path, 6)
    assert hist[-1]["train_xent"] < 0.6 * hist[0]["train_xent"]
    for name in ("last.pt", "best.pt", "history.json", "history.csv", "loss.png"):
        assert (tmp_path / name).is_file(), name
    assert len(json.loads((tmp_path / "history.json").read_text())) == 6


@pytest.mark.slow
def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    full, h_full = run(tmp_path / "full", 4)
    run(tmp_path / "cut", 2)
    resumed, h_res = run(tmp_path / "cut", 4, resume=True, m=model(seed=123), scores=[0.3, 0.4])
    assert [h["epoch"] for h in h_res] == [1, 2, 3, 4]
    assert h_res[-1]["train_loss"] == pytest.approx(h_full[-1]["train_loss"], rel=1e-5)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


@pytest.mark.slow
def test_early_stopping_and_best_weights_restored(tmp_path):
    m, hist = run(tmp_path, 10, early_stop=2, scores=[0.5, 0.9, 0.3, 0.2, 0.1, 0.8, 0.8, 0.8])
    assert len(hist) == 4  # epoch 2 was best, then two worse epochs
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert all(torch.equal(v, best[k]) for k, v in m.state_dict().items())
    assert hist[-1]["lr"] < hist[0]["lr"]  # reduced on plateau


def test_captions_per_image_draws_that_many_per_image():
    d = toy_data()
    order = d.epoch_order(torch.Generator().manual_seed(0), per_image=1)
    assert len(order) == 24 and sorted(d.rows[order].tolist()) == list(range(24))
    assert len(d.epoch_order(torch.Generator().manual_seed(0))) == 48


def test_config_validation():
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError):
        TrainConfig(lr_factor=1.5)
    with pytest.raises(ValueError):
        TrainConfig(captions_per_image=-1)


@pytest.mark.slow
def test_on_epoch_sees_each_row_in_eval_mode_and_cannot_change_the_training(tmp_path):
    seen = []

    def logger(m, row):  # a logger that draws random numbers must not shift dropout or the shuffling
        seen.append((m.training, row))
        torch.rand(1000)

    _, plain = run(tmp_path / "plain", 3)
    m = model()
    scores = iter([0.1 * i for i in range(1, 100)])  # as run() validates
    hist = fit(m, data=toy_data(), validate=lambda _: next(scores), out_dir=tmp_path / "logged", progress=False,
               config=TrainConfig(epochs=3, batch_size=8, lr=1e-2), on_epoch=logger)
    assert [r for _, r in seen] == hist and not any(training for training, _ in seen)
    assert [h["train_loss"] for h in hist] == [h["train_loss"] for h in plain]


@pytest.mark.slow
def test_fit_compiled_trains_as_eager(tmp_path):
    def plain():
        m = model()
        m.decoder.drop.p = 0.0  # NOTE: compiled dropout draws other random numbers than eager
        return m
    eager, h_eager = run(tmp_path / "eager", 1, m=plain(), max_steps=3, cpu_kernels="off")
    compiled, h_comp = run(tmp_path / "compiled", 1, m=plain(), max_steps=3, compile=True)
    assert h_comp[0]["steps"] == 3
    assert h_comp[0]["train_loss"] == pytest.approx(h_eager[0]["train_loss"], rel=1e-4)
    # NOTE: Adam normalises each gradient: the attention score's bias (gradient ≈ 0, softmax is shift-
    # invariant) moves by lr × rounding noise / |noise|; 3 steps at lr 1e-2 move weights by ~3e-2
    for (k, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        if k != "decoder.attention.score.bias":  # NOTE: its gradient is pure rounding noise (see above)
            assert torch.allclose(a, b, atol=1e-3), k


def test_cpu_kernels_setting_is_checked():
    with pytest.raises(ValueError, match="cpu_kernels must be one of"):
        TrainConfig(cpu_kernels="yes")


@pytest.mark.parametrize("mode, asked", [("auto", True), ("off", False)])
def test_cpu_training_keeps_freed_memory_in_the_heap(tmp_path, monkeypatch, mode, asked):
    from train import loop
    calls = []
    monkeypatch.setattr(loop, "keep_freed_memory", lambda: calls.append(True))
    run(tmp_path, 1, cpu_kernels=mode)
    assert calls == ([True] if asked else [])
