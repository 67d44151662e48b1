"""Attention over the annotation grid: f_att and φ of Xu et al. 2015, §4.

Every attention kind implements the same two calls, so any decoder can use any kind:

    keys = attn.prepare(feats)                       # once per image:  (B, L, D) → (B, L, A)
    context, alpha = attn(feats, keys, query)        # every step:      (B, D), (B, L)

`prepare` is where the per-image projection of the annotation vectors happens (W_a a_i for
additive attention), so a step only projects the query — the projection of all L vectors is not
recomputed T times.

Soft (deterministic) attention, eq. (4)–(5) and §4.2:
    e_ti = f_att(a_i, h_{t-1}) = wᵀ tanh(W_a a_i + W_h h_{t-1} + b)
    α_ti = exp(e_ti) / Σ_k exp(e_tk)
    ẑ_t  = φ({a_i}, {α_i}) = Σ_i α_ti a_i
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class Attention(nn.Module):
    """Interface: `prepare` once per image, then `forward` at every decoding step."""

    def prepare(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, L, D) annotation vectors → (B, L, A) per-image keys."""
        raise NotImplementedError

    def forward(self, feats: torch.Tensor, keys: torch.Tensor,
                query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, L, D), keys (B, L, A), query (B, H) → context (B, D), alpha (B, L)."""
        raise NotImplementedError


class SoftAttention(Attention):
    """Additive (Bahdanau) attention, the paper's deterministic 'soft' attention."""

    def __init__(self, *, encoder_dim: int, decoder_dim: int, attention_dim: int):
        super().__init__()
        self.key = nn.Linear(encoder_dim, attention_dim)              # W_a
        self.query = nn.Linear(decoder_dim, attention_dim, bias=False)  # W_h
        self.score = nn.Linear(attention_dim, 1)                        # w

    def prepare(self, feats: torch.Tensor) -> torch.Tensor:
        return self.key(feats)  # (B, L, A)

    def forward(self, feats, keys, query):
        q = self.query(query).unsqueeze(1)                     # (B, 1, A)
        e = self.score(torch.tanh(keys + q)).squeeze(-1)       # (B, L)
        alpha = torch.softmax(e, dim=-1)                       # (B, L)
        context = torch.bmm(alpha.unsqueeze(1), feats).squeeze(1)  # (B, D)
        return context, alpha


_REGISTRY: dict[str, Callable[..., Attention]] = {
    "soft": SoftAttention,
}


def create_attention(name: str, *, encoder_dim: int, decoder_dim: int, attention_dim: int) -> Attention:
    """Build a registered attention kind by name."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown attention {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](encoder_dim=encoder_dim, decoder_dim=decoder_dim, attention_dim=attention_dim)
