"""Weights folders: round trip, float16 storage, pickles refused, mismatches named."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from sat.captioner import Captioner
from sat.weights import WeightsError, read_weights

from tests.conftest import make_tiny_weights  # noqa: E402  (importlib mode: tests is a namespace)


def test_round_trip_is_float16_and_exact(tmp_path):
    folder = make_tiny_weights(tmp_path / "w", finetune_blocks=1)
    tensors, cfg, vocab, metrics = read_weights(folder)
    assert all(t.dtype == torch.float16 for t in tensors.values() if t.is_floating_point())
    assert any(k.startswith("tail.") for k in tensors)  # the fine-tuned encoder block is saved
    assert metrics == {"bleu4": 0.1} and len(vocab) == cfg.vocab_size
    cap = Captioner.load(folder, device="cpu")
    for k, v in cap.model.state_dict().items():
        assert torch.equal(v.half(), tensors[k]), k
    assert cap.card.startswith("# tiny")


def test_pickles_are_refused(tmp_path):
    folder = make_tiny_weights(tmp_path / "w")
    (folder / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="pickled"):
        read_weights(folder)
    # a pickle renamed to .safetensors is not parsed as one
    (folder / "pytorch_model.bin").rename(folder / "model.safetensors")
    with pytest.raises(WeightsError, match="not a valid safetensors"):
        read_weights(folder)


def test_missing_and_mismatched_tensors_are_named(tmp_path):
    folder = make_tiny_weights(tmp_path / "w")
    t = load_file(str(folder / "model.safetensors"))
    t.pop("decoder.out.bias")
    t["decoder.embed.weight"] = torch.zeros(3, 3, dtype=torch.float16)
    t["decoder.extra"] = torch.zeros(1)
    save_file(t, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError) as e:
        Captioner.load(folder, device="cpu")
    msg = str(e.value)
    assert "decoder.out.bias" in msg and "decoder.embed.weight" in msg and "decoder.extra" in msg


def test_missing_files_and_bad_json(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        read_weights(tmp_path / "nope")
    folder = make_tiny_weights(tmp_path / "w")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "vocab_size": 99}))
    with pytest.raises(WeightsError, match="vocab_size"):
        read_weights(folder)
    (folder / "vocab.json").unlink()
    with pytest.raises(WeightsError, match="vocab.json"):
        read_weights(folder)
