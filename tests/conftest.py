"""Shared fixtures: a tiny weights folder (test-tiny encoder, random decoder) built in milliseconds."""
from __future__ import annotations

import pytest
import torch

from sat.config import ModelConfig
from sat.encoder import create_encoder
from sat.model import CaptionModel
from sat.vocab import Vocab
from sat.weights import save_weights

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
