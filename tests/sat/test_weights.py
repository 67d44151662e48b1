"""Weights folders: round trip, float16 storage, pickles refused, mismatches named."""
from __future__ import annotations

import json
import os
import stat
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from sat.captioner import Captioner
from sat.config import ModelConfig
from sat.model import CaptionModel
from sat.vocab import Vocab
from sat.weights import WeightsError, read_weights, save_weights

from tests.conftest import WORDS, make_tiny_weights  # noqa: E402  (importlib mode: tests is a namespace)


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


# ----------------------------------------------------------------------------- hardening (issue 16)

def _edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **changes}))


def _edit_tensors(folder, fn):
    t = load_file(str(folder / "model.safetensors"))
    fn(t)
    save_file(t, str(folder / "model.safetensors"))


@pytest.mark.parametrize("changes, needle", [
    ({"decoder_dim": True}, "decoder_dim must be an integer"),
    ({"decoder_dim": 16.0}, "decoder_dim must be an integer"),
    ({"decoder_dim": "16"}, "decoder_dim must be an integer"),
    ({"decoder_dim": 10**9}, "decoder_dim must be in"),
    ({"encoder_dim": 10**9}, "encoder_dim must be in"),
    ({"image_size": 10**9}, "image_size must be in"),
    ({"max_len": 101}, "max_len must be in"),
    ({"grid": [7]}, "grid must be"),
    ({"grid": [2, True]}, "grid must be"),
    ({"grid": 7}, "grid must be"),
    ({"dropout": "half"}, "dropout must be a finite number"),
    ({"gate": 1}, "gate must be true or false"),
    ({"attention": ["soft"]}, "attention must be a string"),
])
def test_config_types_and_ranges_are_checked(tmp_path, changes, needle):
    folder = make_tiny_weights(tmp_path / "w")
    _edit_config(folder, **changes)
    with pytest.raises(WeightsError, match=needle):
        read_weights(folder)


def test_metrics_must_be_an_object(tmp_path):
    folder = make_tiny_weights(tmp_path / "w")
    (folder / "metrics.json").write_text("[1, 2]")
    with pytest.raises(WeightsError, match="metrics.json: expected a JSON object"):
        read_weights(folder)


@pytest.mark.parametrize("decoder, attention", [("lstm", "soft"), ("lstm", "hard"), ("gru", "dot"),
                                                ("gru", "uniform"), ("transformer", "soft")])
def test_sizes_are_checked_against_the_header_before_allocating(tmp_path, decoder, attention):
    """Dims that fit config's ranges but not the file: refused by read_weights itself (the model is
    only built on the meta device), fast, and every decoder kind builds there."""
    folder = make_tiny_weights(tmp_path / "w", decoder=decoder, attention=attention)
    _edit_config(folder, decoder_dim=8192, embed_dim=8192, attention_dim=8192, heads=4)
    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match="shape mismatches"):
        read_weights(folder)
    assert time.perf_counter() - t0 < 5.0


def test_grid_and_encoder_dim_must_match_the_encoder(tmp_path):
    folder = make_tiny_weights(tmp_path / "w")
    _edit_config(folder, grid=[3, 3])  # the LSTM's tensors do not depend on the grid
    with pytest.raises(WeightsError, match=r"grid \[3, 3\].*gives \[2, 2\]"):
        Captioner.load(folder, device="cpu")
    # tensors consistent with encoder_dim 8, but test-tiny gives 16
    vocab = Vocab.build([WORDS], min_freq=1, max_len=6)
    cfg = ModelConfig(encoder="test-tiny", encoder_dim=8, grid=(2, 2), image_size=64, vocab_size=len(vocab),
                      max_len=6, embed_dim=8, attention_dim=8, decoder_dim=16, dropout=0.0)
    other = save_weights(tmp_path / "dim8", state_dict=CaptionModel(cfg).state_dict(), config=cfg, vocab=vocab)
    with pytest.raises(WeightsError, match="encoder_dim 8 but encoder 'test-tiny' gives 16"):
        Captioner.load(other, device="cpu")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_tensors_are_refused_by_name(tmp_path, value):
    folder = make_tiny_weights(tmp_path / "w")
    _edit_tensors(folder, lambda t: t["decoder.out.weight"].__setitem__((0, 0), value))
    with pytest.raises(WeightsError, match=r"non-finite values .* in decoder\.out\.weight$"):
        read_weights(folder)


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.float64, torch.int64])
def test_wrong_dtypes_are_refused(tmp_path, dtype):
    folder = make_tiny_weights(tmp_path / "w")
    _edit_tensors(folder, lambda t: t.__setitem__("decoder.out.weight", t["decoder.out.weight"].to(dtype)))
    name = str(dtype).replace("torch.", "")
    with pytest.raises(WeightsError, match=f"wrong dtypes: decoder.out.weight: {name}, not float16"):
        read_weights(folder)


def test_bfloat16_and_float32_storage_load(tmp_path):
    for dtype in (torch.bfloat16, torch.float32):
        folder = make_tiny_weights(tmp_path / str(dtype))
        _edit_tensors(folder, lambda t: t.update({k: v.to(dtype) for k, v in t.items() if v.is_floating_point()}))
        assert Captioner.load(folder, device="cpu").caption_batch([]) == []


def test_a_bool_buffer_must_stay_bool(tmp_path):
    folder = make_tiny_weights(tmp_path / "w", attention="hard")
    _edit_tensors(folder, lambda t: t.__setitem__("decoder.attention.baseline_set",
                                                  t["decoder.attention.baseline_set"].half()))
    with pytest.raises(WeightsError, match="baseline_set: float16, not bool"):
        read_weights(folder)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_every_file_gets_the_same_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        folder = make_tiny_weights(tmp_path / "w")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert set(modes) >= {"model.safetensors", "config.json", "vocab.json"}
    assert set(modes.values()) == {mode}, modes
