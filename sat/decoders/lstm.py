"""LSTM decoder, Xu et al. 2015 §3.1.2 and §4.2.1:
    h_0 = tanh(f_init,h(mean_i a_i)),  c_0 = tanh(f_init,c(mean_i a_i))                 (§3.1.2)
    ẑ_t = β_t · φ({a_i}, {α_ti}),  β_t = σ(f_β(h_{t-1}))                                (§4.2.1)
    i_t, f_t, o_t, g_t = LSTM(E y_{t-1}, h_{t-1}, ẑ_t)                                  (eq. 1–3)
    p(y_t | a, y_<t) ∝ exp(L_o tanh(E y_{t-1} + L_h h_t + L_z ẑ_t))                     (eq. 7, deep output)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..attention import Attention
from ..kernels import use_cpu_kernels
from ..steplinear import StepLSTMCell
from .base import Memory, RecurrentDecoder, State
from .registry import register_decoder

if TYPE_CHECKING:
    from ..config import ModelConfig


@register_decoder("lstm")
class LSTMDecoder(RecurrentDecoder):
    """The paper's LSTM with attention, gating scalar and deep output layer."""

    def __init__(self, *, vocab_size: int, encoder_dim: int, embed_dim: int, decoder_dim: int,
                 attention: Attention, dropout: float, gate: bool, init_state: str = "mean"):
        super().__init__()
        self.init_from_mean = init_state == "mean"
        self.embed = nn.Embedding(vocab_size, embed_dim)                            # E
        self.attention = attention
        self.init_h = nn.Linear(encoder_dim, decoder_dim)
        self.init_c = nn.Linear(encoder_dim, decoder_dim)
        self.gate = nn.Linear(decoder_dim, 1) if gate else None                    # f_β
        self.cell = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim)
        self.out_h = nn.Linear(decoder_dim, embed_dim)                             # L_h
        self.out_z = nn.Linear(encoder_dim, embed_dim, bias=False)                 # L_z
        self.out = nn.Linear(embed_dim, vocab_size)                                 # L_o
        self.drop = nn.Dropout(dropout)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    @classmethod
    def from_config(cls, config: "ModelConfig") -> "LSTMDecoder":
        return cls(vocab_size=config.vocab_size, encoder_dim=config.encoder_dim, embed_dim=config.embed_dim,
                   decoder_dim=config.decoder_dim, attention=cls.make_attention(config), dropout=config.dropout,
                   gate=config.gate, init_state=config.init_state)

    def init_state(self, memory: Memory) -> State:
        mean = memory["feats"].mean(dim=1)  # (B, D)
        if not self.init_from_mean:
            mean = torch.zeros_like(mean)  # NOTE: keeps f_init's bias as a learned start state
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))  # (B, n) each

    def _forward_cell(self):
        # NOTE: same math as self.cell, but ∂L/∂W_ih and ∂L/∂W_hh come from one matmul over all
        # steps instead of one per step plus T-1 adds of the full matrices (sat/steplinear.py).
        # Only with the CPU kernels on (sat/kernels.py); else nn.LSTMCell itself.
        return StepLSTMCell(self.cell) if torch.is_grad_enabled() and use_cpu_kernels(self.cell.weight_ih) else None

    def _advance(self, emb, state, memory, cell=None, force=None):
        h, c = state
        context, alpha, logp = self._attend(memory, h, force)
        if self.gate is not None:
            context = torch.sigmoid(self.gate(h)) * context  # β_t ẑ_t, β_t: (B, 1)
        h, c = (cell or self.cell)(torch.cat([emb, context], dim=-1), (h, c))
        return (h, c), context, alpha, logp

    def _logits(self, emb, h, context):
        x = torch.tanh(emb + self.out_h(self.drop(h)) + self.out_z(context))
        return self.out(self.drop(x))
