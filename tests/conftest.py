"""Shared fixtures: a tiny weights folder (test-tiny encoder, random decoder) built in milliseconds, the app's
`Studio` on two of them (soft and hard), and a good JPEG to caption."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from sat.config import ModelConfig
from sat.encoder import create_encoder
from sat.model import CaptionModel
from sat.vocab import Vocab
from sat.weights import save_weights
from studio.inference import load_slot
from studio.ui import Studio

WORDS = ["a", "red", "blue", "circle", "square", "left", "of", "the"]


def make_tiny_weights(folder, *, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    vocab = Vocab.build([WORDS], min_freq=1, max_len=6)
    cfg = ModelConfig(encoder="test-tiny", encoder_dim=16, grid=(2, 2), image_size=64, vocab_size=len(vocab),
                      max_len=6, embed_dim=8, attention_dim=8, decoder_dim=16, dropout=0.0, **overrides)
    enc = create_encoder("test-tiny", finetune_blocks=cfg.finetune_blocks)
    model = CaptionModel(cfg, tail=enc.tail)
    save_weights(folder, state_dict=model.state_dict(), config=cfg, vocab=vocab,
                 metrics={"bleu4": 0.1}, card="# tiny test weights\n")
    return folder


@pytest.fixture
def tiny_weights(tmp_path):
    return make_tiny_weights(tmp_path / "weights")


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> Studio:
    root = tmp_path_factory.mktemp("weights")
    soft = load_slot("soft", make_tiny_weights(root / "soft", seed=5))
    hard = load_slot("hard", make_tiny_weights(root / "hard", seed=5, attention="hard"))
    assert soft.ready and hard.ready, (soft.error, hard.error)
    return Studio([soft, hard])


@pytest.fixture(scope="module")
def good_jpeg(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "shapes.jpg"
    img = Image.new("RGB", (96, 80), (30, 120, 200))
    img.paste((250, 40, 40), (10, 10, 50, 50))
    img.save(path, quality=90)
    return path
