"""GRU decoder, the TensorFlow tutorials' design: ẑ_t from attention on h_{t-1}; x_t = [ẑ_t; E y_{t-1}];
h_t = GRU(x_t, h_{t-1}) from h_0 = 0; p(y_t) ∝ exp(W_2 (W_1 h_t)).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..attention import Attention
from .base import Memory, RecurrentDecoder, State
from .registry import register_decoder

if TYPE_CHECKING:
    from ..config import ModelConfig


@register_decoder("gru")
class GRUDecoder(RecurrentDecoder):
    """The TensorFlow tutorials' decoder: [context; embedding] → GRU → two dense layers."""

    def __init__(self, *, vocab_size: int, encoder_dim: int, embed_dim: int, decoder_dim: int,
                 attention: Attention, dropout: float):
        super().__init__()
        self.decoder_dim = decoder_dim
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.attention = attention
        self.cell = nn.GRUCell(encoder_dim + embed_dim, decoder_dim)
        self.fc1 = nn.Linear(decoder_dim, decoder_dim)
        self.fc2 = nn.Linear(decoder_dim, vocab_size)
        self.drop = nn.Dropout(dropout)

    @classmethod
    def from_config(cls, config: "ModelConfig") -> "GRUDecoder":
        return cls(vocab_size=config.vocab_size, encoder_dim=config.encoder_dim, embed_dim=config.embed_dim,
                   decoder_dim=config.decoder_dim, attention=cls.make_attention(config), dropout=config.dropout)

    def init_state(self, memory: Memory) -> State:
        feats = memory["feats"]
        return (feats.new_zeros(feats.size(0), self.decoder_dim),)  # h_0 = 0, as the tutorial

    def _advance(self, emb, state, memory, cell=None, force=None):
        (h,) = state
        context, alpha, logp = self._attend(memory, h, force)
        h = self.cell(torch.cat([context, emb], dim=-1), h)
        return (h,), context, alpha, logp

    def _logits(self, emb, h, context):
        return self.fc2(self.drop(self.fc1(self.drop(h))))
