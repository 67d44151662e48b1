"""Model configuration: one frozen dataclass, saved whole as `config.json` beside the weights."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .atomic import write_json
from .attention import list_attentions
from .decoders.registry import decoder_class, list_decoders
from .image import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS, RESIZE_MODES

INT_LIMITS: dict[str, tuple[int, int]] = {
    "image_size": (0, 2048), "finetune_blocks": (0, 64), "encoder_dim": (1, 16384),
    "vocab_size": (0, 1_000_000), "max_len": (1, 100), "embed_dim": (1, 16384),
    "attention_dim": (1, 16384), "decoder_dim": (1, 16384), "layers": (0, 64), "heads": (0, 256)}
"""Inclusive bounds of the integer fields. NOTE: a config.json is checked before anything is
allocated, so a typo (or a hostile file) saying decoder_dim=10**9 is refused, not allocated."""
MAX_GRID_SIDE = 256
UNCHECKED_TYPES = ("encoder", "feature_map")
"""Fields whose values the encoder registry validates (their kinds may vary by encoder)."""


def __getattr__(name: str) -> Any:
    # NOTE: ATTENTIONS / DECODERS are read from the registries when asked for, so a kind registered
    # later (a plug-in decoder file) is listed too
    if name == "ATTENTIONS":
        return tuple(list_attentions())
    if name == "DECODERS":
        return tuple(list_decoders())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ModelConfig:
    encoder: str = "efficientnet-lite0"
    """Encoder: a registered name (`sat.encoder.list_encoders()`) or 'timm:NAME' for any timm model
    (e.g. 'timm:resnet101.a1h_in1k'; pretrained weights from the Hugging Face Hub cache)."""
    feature_map: str = "last"
    """Which feature map gives the annotation vectors: 'last' = the backbone's final map (timm's
    forward_features; efficientnet-lite0: 7×7×1280 at 224 px), 'stride8' / 'stride16' / 'stride32' =
    the last feature map of that reduction (efficientnet-lite0 stride16: 14×14×112, the paper's grid
    size), or an integer = that index of the backbone's feature maps (timm features_only; -1 = the
    last). A ViT gives its final patch tokens ('last' or its patch stride)."""
    image_size: int = 224
    """Square input resolution fed to the encoder; 0 = the backbone's pretrained input size (filled in
    when a model is trained)."""
    resize: str = "crop"
    """'crop' (short side to image_size / crop_pct, centre crop) or 'pad' (long side, pad)."""
    crop_pct: float = 1.0
    """Crop: the centre crop's share of the resized short side (timm's crop_pct; 1 = no margin).
    This and the next three come from the backbone's pretrained config when a model is trained; the
    defaults are the embedded efficientnet-lite0's, which config.json files from before these fields
    existed used."""
    interpolation: str = "bicubic"
    """Resize filter (timm's names: 'bicubic', 'bilinear', …)."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    """Per-channel mean subtracted from the [0, 1] pixels (also the padding colour)."""
    std: tuple[float, float, float] = IMAGENET_STD
    """Per-channel standard deviation the pixels are divided by."""
    finetune_blocks: int = 0
    """Number of final encoder blocks (plus head) trained with the decoder; 0 = frozen encoder."""
    encoder_dim: int = 1280
    """D, the size of one annotation vector (fixed by encoder + feature_map)."""
    grid: tuple[int, int] = (7, 7)
    """(h, w) of the annotation grid; L = h·w."""
    vocab_size: int = 0
    """Output vocabulary size including the four special tokens (0 until the vocabulary is built)."""
    max_len: int = 20
    """Longest caption in words (without <start>/<end>)."""
    attention: str = "soft"
    """Attention kind: 'soft' (additive, §4.2), 'hard' (stochastic, §4.1), 'dot' or 'uniform'."""
    decoder: str = "lstm"
    """Decoder kind: 'lstm' (Xu et al. §3.1.2), 'gru' (the TensorFlow tutorials') or 'transformer'."""
    embed_dim: int = 256
    """m, the word-embedding size (also the deep-output layer's width)."""
    attention_dim: int = 256
    """Hidden size of the attention MLP f_att."""
    decoder_dim: int = 512
    """n, the LSTM hidden size."""
    dropout: float = 0.5
    """Dropout on the hidden state before the deep output layer."""
    init_state: str = "mean"
    """LSTM h_0/c_0: 'mean' (f_init of the mean annotation vector, §3.1.2) or 'zeros' (the image
    then reaches the decoder only through attention)."""
    gate: bool = True
    """Use the gating scalar β_t = σ(f_β(h_{t-1})) on the context (§4.2.1)."""
    hard_test_rule: str = "argmax"
    """Hard attention at test time: 'argmax' location (default) or 'expectation' (Σ α a)."""
    hard_entropy: float = 0.01
    """Hard attention: λ_e, weight of the entropy bonus H[s]."""
    hard_reinforce: float = 1.0
    """Hard attention: λ_r, weight of the REINFORCE term (normalised per token, like the cross-entropy)."""
    hard_reward: str = "to_go"
    """Hard attention: credit of a sampled location s_t: 'to_go' = log p(y_t … y_T) (the words from t
    on, which s_t can influence) or 'sequence' = log p(y) of the whole caption (eq. 12 as written)."""
    layers: int = 2
    """Transformer decoder: number of layers."""
    heads: int = 4
    """Transformer decoder: attention heads (embed_dim must divide by it)."""
    blind: bool = False
    """Replace the image by zeros: the caption-only language-model baseline."""

    def __post_init__(self) -> None:
        self._check_types()
        if self.attention not in list_attentions():
            raise ValueError(f"attention must be one of {tuple(list_attentions())}, got {self.attention!r}")
        if self.decoder not in list_decoders():
            raise ValueError(f"decoder must be one of {tuple(list_decoders())}, got {self.decoder!r}")
        decoder_class(self.decoder).check_config(self)  # the kind's own rules (transformer: soft, heads)
        if self.init_state not in ("mean", "zeros"):
            raise ValueError(f"init_state must be 'mean' or 'zeros', got {self.init_state!r}")
        if self.hard_test_rule not in ("argmax", "expectation"):
            raise ValueError(f"hard_test_rule must be 'argmax' or 'expectation', got {self.hard_test_rule!r}")
        if self.hard_reward not in ("to_go", "sequence"):
            raise ValueError(f"hard_reward must be 'to_go' or 'sequence', got {self.hard_reward!r}")
        fm = self.feature_map
        if not isinstance(fm, str) or not (fm == "last" or fm.startswith("stride") and fm[6:].isdigit() and int(fm[6:]) > 0
                or fm.lstrip("-").isdigit()):
            raise ValueError(f"feature_map must be 'last', 'stride<N>' (e.g. 'stride16') or a feature "
                             f"index, got {fm!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be 'crop' or 'pad', got {self.resize!r}")
        if not 0.0 < self.crop_pct <= 2.0:
            raise ValueError(f"crop_pct must be in (0, 2], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")
        if (not all(isinstance(v, (tuple, list)) and len(v) == 3 for v in (self.mean, self.std))
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x)
                       for x in (*self.mean, *self.std)) or min(self.std) <= 0):
            raise ValueError(f"mean and std must have 3 values (std > 0), got {self.mean} and {self.std}")
        if self.vocab_size < 0:
            raise ValueError(f"vocab_size must be ≥ 0 (0 = filled from the vocabulary), got {self.vocab_size}")
        for name in ("encoder_dim", "max_len", "embed_dim",
                     "attention_dim", "decoder_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.finetune_blocks < 0:
            raise ValueError(f"finetune_blocks must be ≥ 0, got {self.finetune_blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ValueError(f"grid must be (h, w) with h, w ≥ 1, got {self.grid}")

    def _check_types(self) -> None:
        """Every field has its declared type (ints are real ints, not bool or 1.0) and every int its
        INT_LIMITS range: config.json is data from anywhere, checked before any allocation."""
        for f in fields(self):
            value, kind = getattr(self, f.name), f.type
            if f.name in UNCHECKED_TYPES:
                continue
            if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{f.name} must be an integer, got {value!r}")
            if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                    or not math.isfinite(value)):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
            if kind == "bool" and not isinstance(value, bool):
                raise ValueError(f"{f.name} must be true or false, got {value!r}")
            if kind == "str" and not isinstance(value, str):
                raise ValueError(f"{f.name} must be a string, got {value!r}")
            if f.name in INT_LIMITS:
                lo, hi = INT_LIMITS[f.name]
                if not lo <= value <= hi:
                    raise ValueError(f"{f.name} must be in [{lo}, {hi}], got {value}")
        grid = self.grid
        if (not isinstance(grid, (tuple, list)) or len(grid) != 2
                or any(isinstance(g, bool) or not isinstance(g, int) or not 1 <= g <= MAX_GRID_SIDE for g in grid)):
            raise ValueError(f"grid must be [h, w] with integers in [1, {MAX_GRID_SIDE}], got {grid!r}")
        object.__setattr__(self, "grid", tuple(grid))  # NOTE: frozen; a list from Python code becomes a tuple

    @property
    def num_locations(self) -> int:
        """L, the number of annotation vectors."""
        return self.grid[0] * self.grid[1]

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The keyword arguments of `sat.image.preprocess` that this model was trained with."""
        return {"image_size": self.image_size, "resize": self.resize, "crop_pct": self.crop_pct,
                "interpolation": self.interpolation, "mean": self.mean, "std": self.std}

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("grid", "mean", "std"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config.json has unknown keys {unknown}: written by a newer version?")
        d = dict(d)
        for k in ("grid", "mean", "std"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        return cls(**d)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict(), indent=2)

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read model config {path}: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls.from_dict(d)
