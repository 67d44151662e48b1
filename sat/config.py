"""Model configuration: one frozen dataclass, saved whole as `config.json` beside the weights."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ATTENTIONS = ("soft", "hard", "dot", "uniform")
DECODERS = ("lstm", "gru", "transformer")


@dataclass(frozen=True)
class ModelConfig:
    encoder: str = "efficientnet-lite0"
    """Registered encoder name (`sat.encoder.list_encoders()`)."""
    feature_map: str = "last"
    """'last' (7×7×1280 at 224 px) or 'stride16' (14×14×112, the paper's grid size)."""
    image_size: int = 224
    """Square input resolution fed to the encoder."""
    resize: str = "crop"
    """'crop' (short side to image_size, centre crop) or 'pad' (long side, pad)."""
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
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.decoder == "transformer" and self.attention != "soft":
            raise ValueError("the transformer decoder has its own (soft, multi-head) cross-attention: "
                             "use attention='soft'")
        if self.decoder == "transformer" and (self.layers < 1 or self.heads < 1 or self.embed_dim % self.heads):
            raise ValueError(f"transformer needs layers ≥ 1 and embed_dim ({self.embed_dim}) divisible by "
                             f"heads ({self.heads})")
        if self.init_state not in ("mean", "zeros"):
            raise ValueError(f"init_state must be 'mean' or 'zeros', got {self.init_state!r}")
        if self.hard_test_rule not in ("argmax", "expectation"):
            raise ValueError(f"hard_test_rule must be 'argmax' or 'expectation', got {self.hard_test_rule!r}")
        if self.hard_reward not in ("to_go", "sequence"):
            raise ValueError(f"hard_reward must be 'to_go' or 'sequence', got {self.hard_reward!r}")
        if self.feature_map not in ("last", "stride16"):
            raise ValueError(f"feature_map must be 'last' or 'stride16', got {self.feature_map!r}")
        if self.resize not in ("crop", "pad"):
            raise ValueError(f"resize must be 'crop' or 'pad', got {self.resize!r}")
        if self.vocab_size < 0:
            raise ValueError(f"vocab_size must be ≥ 0 (0 = filled from the vocabulary), got {self.vocab_size}")
        for name in ("image_size", "encoder_dim", "max_len", "embed_dim",
                     "attention_dim", "decoder_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.finetune_blocks < 0:
            raise ValueError(f"finetune_blocks must be ≥ 0, got {self.finetune_blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ValueError(f"grid must be (h, w) with h, w ≥ 1, got {self.grid}")

    @property
    def num_locations(self) -> int:
        """L, the number of annotation vectors."""
        return self.grid[0] * self.grid[1]

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["grid"] = list(self.grid)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config.json has unknown keys {unknown}: written by a newer version?")
        d = dict(d)
        if "grid" in d:
            d["grid"] = tuple(d["grid"])
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read model config {path}: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls.from_dict(d)
