"""Weights folders: safetensors tensors + JSON (config, vocab, metrics) + a model card, nothing pickled.

    weights/
      model.safetensors   decoder (+ fine-tuned encoder tail) tensors, float16 by default
      config.json         sat.config.ModelConfig, saved whole
      vocab.json          sat.vocab.Vocab
      metrics.json        evaluation results (optional)
      README.md           model card: data, split, metrics, the command that produced it
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ModelConfig
from .vocab import Vocab

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


class WeightsError(ValueError):
    """A weights folder that cannot be used; the message names the file and the problem."""


def _write_atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


def save_weights(folder: str | Path, *, state_dict: dict[str, torch.Tensor], config: ModelConfig,
                 vocab: Vocab, metrics: dict[str, Any] | None = None, card: str | None = None,
                 dtype: torch.dtype = torch.float16) -> Path:
    """Write a weights folder (floating tensors cast to `dtype`); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).cpu().contiguous()
               for k, v in state_dict.items()}
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "producer": "sat-studio"})
    os.replace(tmp, folder / WEIGHTS_FILE)
    _write_atomic(folder / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
    _write_atomic(folder / VOCAB_FILE, json.dumps(vocab.to_dict(), ensure_ascii=False) + "\n")
    if metrics is not None:
        _write_atomic(folder / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    if card is not None:
        _write_atomic(folder / CARD_FILE, card)
    return folder


def read_weights(folder: str | Path) -> tuple[dict[str, torch.Tensor], ModelConfig, Vocab, dict[str, Any]]:
    """Read a weights folder → (tensors, config, vocab, metrics). Refuses pickled checkpoints."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"weights folder {folder} does not exist")
    wfile = folder / WEIGHTS_FILE
    if not wfile.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise WeightsError(f"{folder} holds {', '.join(pickles)} but no {WEIGHTS_FILE}: pickled "
                               "checkpoints can run arbitrary code and are never loaded; save as safetensors")
        raise WeightsError(f"{folder} has no {WEIGHTS_FILE}")
    for name in (CONFIG_FILE, VOCAB_FILE):
        if not (folder / name).is_file():
            raise WeightsError(f"{folder} has no {name}")
    try:
        tensors = load_file(str(wfile))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{wfile} is not a valid safetensors file ({e})") from None
    try:
        config = ModelConfig.load(folder / CONFIG_FILE)
        vocab = Vocab.load(folder / VOCAB_FILE)
    except (ValueError, TypeError) as e:
        raise WeightsError(f"{folder}: {e}") from None
    if len(vocab) != config.vocab_size:
        raise WeightsError(f"{folder}: vocab.json has {len(vocab)} tokens but config.json says "
                           f"vocab_size={config.vocab_size}")
    metrics: dict[str, Any] = {}
    if (folder / METRICS_FILE).is_file():
        try:
            metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise WeightsError(f"{folder / METRICS_FILE}: {e}") from None
    return tensors, config, vocab, metrics


def load_into(model: nn.Module, tensors: dict[str, torch.Tensor], *, source: str = "weights",
              partial: bool = False) -> list[str]:
    """Copy tensors into model, naming every missing, unexpected or mis-shaped tensor on failure.

    partial=True (a warm start from another variant's weights): tensors the file lacks may be
    *buffers* only (e.g. hard attention's REINFORCE baselines when starting from soft attention);
    they keep the model's values. Returns the names so kept.
    """
    expected = model.state_dict()
    # NOTE: hard-attention weights written before per-position REINFORCE baselines hold one scalar
    # b; the module's load hook turns it into every b_t, so the shape check lets exactly that through.
    tensors = {k: (v.expand(expected[k].shape) if k.endswith(("attention.baseline", "attention.baseline_set"))
                   and k in expected and v.dim() == 0 else v) for k, v in tensors.items()}
    missing = sorted(set(expected) - set(tensors))
    kept: list[str] = []
    if partial:
        params = {k for k, _ in model.named_parameters()}
        kept = [k for k in missing if k not in params]
        missing = [k for k in missing if k in params]
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:10])}" + (" …" if len(missing) > 10 else ""))
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:10])}" + (" …" if len(unexpected) > 10 else ""))
    if mismatched:
        problems.append("shape mismatches: " + "; ".join(mismatched[:10]))
    if problems:
        raise WeightsError(f"{source} does not fit the model its config describes — " + " | ".join(problems))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=not partial)
    return kept
