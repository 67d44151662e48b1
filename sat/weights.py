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
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .atomic import replacing, write_atomic, write_json
from .config import ModelConfig
from .vocab import Vocab

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
"""How a floating tensor may be stored (cast to the model's dtype on load): never float64 or ints."""
_ST_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
              "U8": torch.uint8, "BOOL": torch.bool}
"""safetensors header dtype names → torch dtypes (others, e.g. F8_E4M3, fit no tensor of ours)."""
LEGACY_SCALARS = ("attention.baseline", "attention.baseline_set")
"""Hard-attention buffers that weights written before per-position baselines hold as one scalar."""


class WeightsError(ValueError):
    """A weights folder that cannot be used; the message names the file and the problem."""


def save_weights(folder: str | Path, *, state_dict: dict[str, torch.Tensor], config: ModelConfig,
                 vocab: Vocab, metrics: dict[str, Any] | None = None, card: str | None = None,
                 dtype: torch.dtype = torch.float16) -> Path:
    """Write a weights folder (floating tensors cast to `dtype`); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).cpu().contiguous()
               for k, v in state_dict.items()}
    with replacing(folder / WEIGHTS_FILE) as tmp:  # NOTE: keeps the umask mode (safetensors writes 0o600)
        save_file(tensors, str(tmp), metadata={"format": "pt", "producer": "sat-studio"})
    write_json(folder / CONFIG_FILE, config.to_dict(), indent=2)
    write_json(folder / VOCAB_FILE, vocab.to_dict(), ensure_ascii=False)
    if metrics is not None:
        write_json(folder / METRICS_FILE, metrics, indent=2)
    if card is not None:
        write_atomic(folder / CARD_FILE, card)
    return folder


def read_weights(folder: str | Path) -> tuple[dict[str, torch.Tensor], ModelConfig, Vocab, dict[str, Any]]:
    """Read a weights folder → (tensors, config, vocab, metrics). Refuses pickled checkpoints.

    Validated before anything is allocated: the JSON files (types and ranges, `ModelConfig`), then
    every tensor's name, shape and dtype in the safetensors header against the model config.json
    describes (built on the meta device, no memory). After loading, non-finite values are refused.
    The encoder tail's tensors (finetune_blocks > 0) are checked by `load_into` once it is built.
    """
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
        config = ModelConfig.load(folder / CONFIG_FILE)
        vocab = Vocab.load(folder / VOCAB_FILE)
    except (ValueError, TypeError, KeyError) as e:
        raise WeightsError(f"{folder}: {e}") from None
    if len(vocab) != config.vocab_size:
        raise WeightsError(f"{folder}: vocab.json has {len(vocab)} tokens but config.json says "
                           f"vocab_size={config.vocab_size}")
    metrics: dict[str, Any] = {}
    if (folder / METRICS_FILE).is_file():
        try:
            metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WeightsError(f"{folder / METRICS_FILE}: {e}") from None
        if not isinstance(metrics, dict):
            raise WeightsError(f"{folder / METRICS_FILE}: expected a JSON object, got {type(metrics).__name__}")
    check_header(wfile, config)
    try:
        tensors = load_file(str(wfile))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{wfile} is not a valid safetensors file ({e})") from None
    bad = sorted(k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        raise WeightsError(f"{wfile}: non-finite values (NaN or Inf) in {_names(bad)}")
    return tensors, config, vocab, metrics


def read_header(wfile: str | Path) -> dict[str, tuple[torch.dtype | str, tuple[int, ...]]]:
    """name → (dtype, shape) of every tensor, from the safetensors header alone (nothing loaded)."""
    try:
        with safe_open(str(wfile), framework="pt") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            return {k: (_ST_DTYPES.get(s.get_dtype(), s.get_dtype()), tuple(s.get_shape()))
                    for k, s in slices.items()}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{wfile} is not a valid safetensors file ({e})") from None


def check_header(wfile: str | Path, config: ModelConfig) -> None:
    """The header's tensors are exactly those of the model `config` describes, shapes and dtypes
    included. NOTE: the model is built on the meta device, so even absurd sizes cost no memory."""
    from .model import CaptionModel  # NOTE: here: sat.model imports the decoders, heavy for hub use

    try:
        with torch.device("meta"):
            expected = CaptionModel(config).state_dict()
    except ValueError as e:  # e.g. a vocabulary too small for the four special tokens
        raise WeightsError(f"{Path(wfile).parent / CONFIG_FILE}: {e}") from None
    header = read_header(wfile)
    if config.finetune_blocks:  # NOTE: the tail is the encoder's; load_into checks it once built
        header = {k: v for k, v in header.items() if not k.startswith("tail.")}
    problems = fit_problems(header, {k: (v.dtype, tuple(v.shape)) for k, v in expected.items()})
    if problems:
        raise WeightsError(f"{wfile} does not fit the model its {CONFIG_FILE} describes — " + " | ".join(problems))


def check_encoder_fit(config: ModelConfig, *, grid: tuple[int, int], dim: int, source: str) -> None:
    """HOOK for `Captioner.load`, called once the encoder is built: config.json's grid and
    encoder_dim must be what that encoder gives at config.image_size (names both values)."""
    problems = []
    if tuple(grid) != tuple(config.grid):
        problems.append(f"{CONFIG_FILE} says grid {list(config.grid)} but encoder {config.encoder!r} gives "
                        f"{list(grid)} at image_size {config.image_size}")
    if dim != config.encoder_dim:
        problems.append(f"{CONFIG_FILE} says encoder_dim {config.encoder_dim} but encoder {config.encoder!r} "
                        f"gives {dim}")
    if problems:
        raise WeightsError(f"{source}: " + "; ".join(problems))


def dtype_fits(stored: torch.dtype | str, model: torch.dtype) -> bool:
    """A floating model tensor may be stored in FLOAT_DTYPES; any other only in its own dtype."""
    return stored in FLOAT_DTYPES if model.is_floating_point else stored == model


def fit_problems(stored: dict[str, tuple[torch.dtype | str, tuple[int, ...]]],
                 expected: dict[str, tuple[torch.dtype, tuple[int, ...]]], *,
                 missing_ok: set[str] = frozenset()) -> list[str]:
    """Every missing, unexpected, mis-shaped or mis-typed tensor, as messages (name → (dtype, shape))."""
    missing = sorted(set(expected) - set(stored) - set(missing_ok))
    unexpected = sorted(set(stored) - set(expected))
    shapes, dtypes = [], []
    for k, (dtype, shape) in expected.items():
        if k not in stored:
            continue
        sdtype, sshape = stored[k]
        # NOTE: the legacy scalar baseline of hard attention is expanded to every position on load
        if sshape != shape and not (k.endswith(LEGACY_SCALARS) and sshape == ()):
            shapes.append(f"{k}: file {sshape} vs model {shape}")
        if not dtype_fits(sdtype, dtype):
            want = "float16/bfloat16/float32" if dtype.is_floating_point else str(dtype).replace("torch.", "")
            dtypes.append(f"{k}: {str(sdtype).replace('torch.', '')}, not {want}")
    problems = []
    if missing:
        problems.append(f"missing tensors: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_names(unexpected)}")
    if shapes:
        problems.append("shape mismatches: " + "; ".join(shapes[:10]))
    if dtypes:
        problems.append("wrong dtypes: " + "; ".join(dtypes[:10]))
    return problems


def _names(names: list[str]) -> str:
    return ", ".join(names[:10]) + (" …" if len(names) > 10 else "")


def load_into(model: nn.Module, tensors: dict[str, torch.Tensor], *, source: str = "weights",
              partial: bool = False) -> list[str]:
    """Copy tensors into model, naming every missing, unexpected, mis-shaped or mis-typed tensor on failure.

    partial=True (a warm start from another variant's weights): tensors the file lacks may be
    *buffers* only (e.g. hard attention's REINFORCE baselines when starting from soft attention);
    they keep the model's values. Returns the names so kept.
    """
    expected = model.state_dict()
    kept: list[str] = []
    if partial:
        params = {k for k, _ in model.named_parameters()}
        kept = sorted(k for k in set(expected) - set(tensors) if k not in params)
    problems = fit_problems({k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()},
                            {k: (v.dtype, tuple(v.shape)) for k, v in expected.items()}, missing_ok=set(kept))
    if problems:
        raise WeightsError(f"{source} does not fit the model its config describes — " + " | ".join(problems))
    # NOTE: hard-attention weights written before per-position REINFORCE baselines hold one scalar
    # b; the module's load hook turns it into every b_t (fit_problems lets exactly that through).
    tensors = {k: (v.expand(expected[k].shape) if k.endswith(LEGACY_SCALARS) and v.dim() == 0 else v)
               for k, v in tensors.items()}
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=not partial)
    return kept
