"""A small Transformer caption decoder behind the same `Decoder` interface as the LSTM.

Pre-norm blocks (Vaswani et al. 2017): masked self-attention over the words, cross-attention over
the annotation grid (projected to the model width, plus a learned embedding per grid location),
and an MLP. Its per-word attention map — what the app shows and grounding scores — is the
cross-attention averaged over heads and layers, so it is a distribution over the L locations like
α_t of the recurrent decoders.

Search decodes incrementally: `state` is a key/value cache of the self-attention, one
(B, layers, heads, t, d_head) tensor each, and the cross-attention keys/values of the grid are
computed once per image in `prepare`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from typing import TYPE_CHECKING

from .base import Decoder, Memory, State
from .registry import register_decoder

if TYPE_CHECKING:
    from ..config import ModelConfig


class Block(nn.Module):
    def __init__(self, *, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.self_out = nn.Linear(dim, dim)
        self.cross_q = nn.Linear(dim, dim)
        self.cross_kv = nn.Linear(dim, 2 * dim)
        self.cross_out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, H, T, dh)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        B, H, T, dh = x.shape
        return x.transpose(1, 2).reshape(B, T, H * dh)  # (B, T, C)

    def cross_keys(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.cross_kv(mem).chunk(2, dim=-1)  # (B, L, C) each
        return self.split(k), self.split(v)          # (B, H, L, dh) each

    def forward(self, x, ck, cv, past_k=None, past_v=None, force=None):
        """x (B, T, C); ck/cv (B, H, L, dh); past_k/v (B, H, t, dh) or None (then causal over x);
        force (B, L) or None: every head's cross-attention weights replaced by this map.

        Returns x, the cross-attention weights (B, H, T, L) and the self-attention keys/values.
        """
        q, k, v = (self.split(t) for t in self.qkv(self.ln1(x)).chunk(3, dim=-1))  # (B, H, T, dh)
        if past_k is not None:
            k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)  # (B, H, t+T, dh)
        # NOTE: with a cache, the new token may see every cached position: no mask needed.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=past_k is None and x.size(1) > 1)
        x = x + self.drop(self.self_out(self.merge(y)))
        cq = self.split(self.cross_q(self.ln2(x)))                                # (B, H, T, dh)
        w = torch.softmax(cq @ ck.transpose(-1, -2) / cq.size(-1) ** 0.5, dim=-1)  # (B, H, T, L)
        if force is not None:
            w = force[:, None, None, :].to(w.dtype).expand_as(w)  # (B, L) → (B, H, T, L)
        x = x + self.drop(self.cross_out(self.merge(w @ cv)))
        x = x + self.drop(self.mlp(self.ln3(x)))
        return x, w, k, v


@register_decoder("transformer")
class TransformerDecoder(Decoder):
    def __init__(self, *, vocab_size: int, encoder_dim: int, embed_dim: int, layers: int, heads: int,
                 dropout: float, max_len: int, num_locations: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.pos = nn.Embedding(max_len, embed_dim)
        self.mem_proj = nn.Linear(encoder_dim, embed_dim)
        self.mem_pos = nn.Parameter(torch.zeros(num_locations, embed_dim))
        self.blocks = nn.ModuleList(Block(dim=embed_dim, heads=heads, dropout=dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(embed_dim)
        self.out = nn.Linear(embed_dim, vocab_size)
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.mem_pos, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    @classmethod
    def check_config(cls, config: "ModelConfig") -> None:
        if config.attention != "soft":
            raise ValueError("the transformer decoder has its own (soft, multi-head) cross-attention: "
                             "use attention='soft'")
        if config.layers < 1 or config.heads < 1 or config.embed_dim % config.heads:
            raise ValueError(f"transformer needs layers ≥ 1 and embed_dim ({config.embed_dim}) divisible by "
                             f"heads ({config.heads})")

    @classmethod
    def from_config(cls, config: "ModelConfig") -> "TransformerDecoder":
        return cls(vocab_size=config.vocab_size, encoder_dim=config.encoder_dim, embed_dim=config.embed_dim,
                   layers=config.layers, heads=config.heads, dropout=config.dropout,
                   max_len=config.max_len + 2, num_locations=config.num_locations)

    def prepare(self, feats: torch.Tensor) -> Memory:
        mem = self.mem_proj(feats) + self.mem_pos  # (B, L, C)
        keys = [blk.cross_keys(mem) for blk in self.blocks]
        return {"ck": torch.stack([k for k, _ in keys], 1),   # (B, layers, H, L, dh)
                "cv": torch.stack([v for _, v in keys], 1)}

    def init_state(self, memory: Memory) -> State:
        B, n, H, _, dh = memory["ck"].shape
        empty = memory["ck"].new_zeros(B, n, H, 0, dh)
        return empty, empty  # self-attention key / value caches (B, layers, H, t, dh)

    def _run(self, x, memory, cache: State | None, force=None):
        ks, vs, ws = [], [], []
        for i, blk in enumerate(self.blocks):
            past = (cache[0][:, i], cache[1][:, i]) if cache is not None else (None, None)
            x, w, k, v = blk(x, memory["ck"][:, i], memory["cv"][:, i], *past, force=force)
            ks.append(k)
            vs.append(v)
            ws.append(w)
        alphas = torch.stack(ws, 1).mean(dim=(1, 2))  # (B, layers, H, T, L) → (B, T, L)
        return self.drop(self.norm(x)), alphas, (torch.stack(ks, 1), torch.stack(vs, 1))

    def step(self, tokens, state, memory, force=None):
        # NOTE: forcing replaces the cross-attention weights of every head in every layer for this
        # word, so the reported map (their mean) is exactly `force`
        t = state[0].size(3)
        x = self.drop(self.embed(tokens) + self.pos.weight[t]).unsqueeze(1)  # (B, 1, C)
        y, alphas, state = self._run(x, memory, state, force)
        return self.out(y[:, 0]), alphas[:, 0], state

    def forward(self, feats, inputs, mask=None):
        T = inputs.size(1)
        x = self.drop(self.embed(inputs) + self.pos.weight[:T])  # (B, T, C)
        y, alphas, _ = self._run(x, self.prepare(feats), None)
        if mask is not None:
            y = y[mask.bool()]  # (N, C): the output layer only for real tokens
            alphas = alphas * mask.unsqueeze(-1)
        return self.out(y), alphas, None

    def regularizer(self, alphas, sample_logp, token_logp, mask, *, alpha_c: float):
        return alphas.new_zeros(()), {}  # NOTE: no doubly stochastic term for the Transformer
