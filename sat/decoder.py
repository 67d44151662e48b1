"""Caption decoders: one interface, used by training (teacher forcing) and by search (step by step).

The interface every decoder implements:

    memory = dec.prepare(feats)                   # per image, once:  dict of (B, ...) tensors
    state  = dec.init_state(memory)               # tuple of (B, ...) tensors
    logits, alpha, state = dec.step(tokens, state, memory)      # one word: (B, V), (B, L)
    logits, alphas, sample_logp = dec(feats, inputs)            # teacher forcing: (B, T, V), (B, T, L), (B, T)|None
    logits, alphas, sample_logp = dec(feats, inputs, mask)      # training: logits (N, V) of the N real tokens
                                                                #   in mask.nonzero() order; pads hold α = 0
    extra, stats = dec.regularizer(alphas, sample_logp, token_logp, mask, alpha_c=λ)  # attention terms

Memory and state hold only batch-first tensors, so search can expand and reorder beams with one
`index_select` without knowing which decoder it drives. Recurrent decoders take any attention
kind from `sat.attention`; the Transformer (sat/transformer.py) has its own cross-attention.

LSTM decoder, Xu et al. 2015 §3.1.2 and §4.2.1:
    h_0 = tanh(f_init,h(mean_i a_i)),  c_0 = tanh(f_init,c(mean_i a_i))                 (§3.1.2)
    ẑ_t = β_t · φ({a_i}, {α_ti}),  β_t = σ(f_β(h_{t-1}))                                (§4.2.1)
    i_t, f_t, o_t, g_t = LSTM(E y_{t-1}, h_{t-1}, ẑ_t)                                  (eq. 1–3)
    p(y_t | a, y_<t) ∝ exp(L_o tanh(E y_{t-1} + L_h h_t + L_z ẑ_t))                     (eq. 7, deep output)

GRU decoder, the TensorFlow tutorials' design: ẑ_t from attention on h_{t-1}; x_t = [ẑ_t; E y_{t-1}];
h_t = GRU(x_t, h_{t-1}) from h_0 = 0; p(y_t) ∝ exp(W_2 (W_1 h_t)).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .attention import Attention, create_attention
from .config import ModelConfig
from .steplinear import StepLSTMCell

Memory = dict[str, torch.Tensor]
State = tuple[torch.Tensor, ...]


class Decoder(nn.Module):
    """Base class: subclasses implement prepare / init_state / step (and may speed up forward)."""

    def prepare(self, feats: torch.Tensor) -> Memory:
        raise NotImplementedError

    def init_state(self, memory: Memory) -> State:
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: State,
             memory: Memory) -> tuple[torch.Tensor, torch.Tensor, State]:
        raise NotImplementedError

    def forward(self, feats: torch.Tensor, inputs: torch.Tensor, mask: torch.Tensor | None = None):
        """Teacher forcing by the step loop: feats (B, L, D), inputs (B, T) → (B, T, V), (B, T, L), None
        (with `mask` (B, T): logits (N, V) of the real tokens and α zeroed at pads)."""
        memory = self.prepare(feats)
        state = self.init_state(memory)
        logits, alphas = [], []
        for t in range(inputs.size(1)):
            lg, a, state = self.step(inputs[:, t], state, memory)
            logits.append(lg)
            alphas.append(a)
        logits, alphas = torch.stack(logits, 1), torch.stack(alphas, 1)
        if mask is not None:
            return logits[mask.bool()], alphas * mask.unsqueeze(-1), None
        return logits, alphas, None

    def begin_batch(self) -> None:
        """Hook before each training batch; forwards to the attention kind."""
        if isinstance(getattr(self, "attention", None), Attention):
            self.attention.begin_batch()

    def regularizer(self, alphas, sample_logp, token_logp, mask, *, alpha_c: float):
        """Attention-specific loss terms; the attention kind decides (see sat/attention.py)."""
        return self.attention.regularizer(alphas, sample_logp, token_logp, mask, alpha_c=alpha_c)


class RecurrentDecoder(Decoder):
    """Shared machinery of the LSTM and GRU decoders: attention, embedding, the time loop."""

    attention: Attention

    def prepare(self, feats: torch.Tensor) -> Memory:
        return {"feats": feats, "keys": self.attention.prepare(feats)}  # (B, L, D), (B, L, A)

    def _advance(self, emb: torch.Tensor, state: State, memory: Memory, cell=None):
        """One recurrence step → (new state, context (B, D), alpha (B, L), sample logp (B,) | None).
        `cell`: what `_forward_cell` returned for this forward pass (None: the module's own cell)."""
        raise NotImplementedError

    def _forward_cell(self):
        """A per-forward-pass stand-in for the recurrent cell in teacher forcing (None: the cell)."""
        return None

    def _logits(self, emb: torch.Tensor, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Output layer; works on (B, ·) or (B, T, ·) alike."""
        raise NotImplementedError

    def step(self, tokens, state, memory):
        emb = self.embed(tokens)  # (B, m)
        state, context, alpha, _ = self._advance(emb, state, memory)
        return self._logits(emb, state[0], context), alpha, state

    def forward(self, feats, inputs, mask=None):
        # NOTE: the batch is sorted by caption length and the recurrence runs only on the captions
        # still going at step t (rows [:b_t], as packed sequences do); the output projection, the
        # largest matmul, runs once over the real tokens only. Nothing is computed for padding.
        B, T = inputs.shape
        full = mask is None
        if full:
            mask = inputs.new_ones(B, T, dtype=torch.bool)
        mask = mask.bool()
        lengths = mask.sum(1)  # (B,)
        if not bool((mask == (torch.arange(T, device=mask.device) < lengths[:, None])).all()):
            raise ValueError("mask must mark a prefix of each row (real tokens first, then padding)")
        order = torch.argsort(lengths, descending=True, stable=True)  # (B,) longest first
        runs = lengths[order].tolist()
        memory = self.prepare(feats[order])
        state = self.init_state(memory)
        emb_rows = self.embed(inputs)  # (B, T, m)
        emb = emb_rows[order]  # (B, T, m), sorted; NOTE: one lookup serves both uses: the embedding's
        # backward zero-fills a (V, m) gradient per call, as large as the output layer's weight
        cell = self._forward_cell()
        hs, zs, alphas, logps, sizes = [], [], [], [], []
        for t in range(T):
            b = sum(n > t for n in runs) if runs[-1] <= t else B  # captions still running
            if b == 0:
                break
            if b < state[0].size(0):
                state = tuple(s[:b] for s in state)
                memory = {k: v[:b] for k, v in memory.items()}
            state, context, alpha, logp = self._advance(emb[:b, t], state, memory, cell)
            hs.append(state[0])
            zs.append(context)
            alphas.append(alpha)
            logps.append(logp)
            sizes.append(b)
        # packed rows are time-major (step 0's b_0 rows, step 1's b_1 rows, …) in sorted order;
        # `flat` maps each to its (row, step) in the caller's (B, T) grid
        rows = torch.cat([order[:b] for b in sizes])  # (N,)
        steps = torch.cat([torch.full((b,), t, dtype=torch.long, device=inputs.device) for t, b in enumerate(sizes)])
        flat = rows * T + steps  # (N,) position in the (B·T) grid
        packed = torch.cat(alphas)  # (N, L); NOTE: bf16 under autocast, so the grid takes its dtype
        alpha_grid = packed.new_zeros(B * T, packed.size(1)).index_put((flat,), packed).view(B, T, -1)  # (B, T, L)
        sample_logp = None
        if logps[0] is not None:
            packed = torch.cat(logps)  # (N,)
            sample_logp = packed.new_zeros(B * T).index_put((flat,), packed).view(B, T)
        # the output layer's inputs in mask.nonzero() (row-major) order
        perm = torch.argsort(flat)  # (N,): row-major order of the packed rows
        h = torch.cat(hs)[perm]  # (N, n)
        z = torch.cat(zs)[perm]  # (N, D)
        e = emb_rows[mask]  # (N, m), already row-major
        logits = self._logits(e, h, z)  # (N, V)
        if full:
            logits = logits.view(B, T, -1)
        return logits, alpha_grid, sample_logp


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

    def init_state(self, memory: Memory) -> State:
        mean = memory["feats"].mean(dim=1)  # (B, D)
        if not self.init_from_mean:
            mean = torch.zeros_like(mean)  # NOTE: keeps f_init's bias as a learned start state
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))  # (B, n) each

    def _forward_cell(self):
        # NOTE: same math as self.cell, but ∂L/∂W_ih and ∂L/∂W_hh come from one matmul over all
        # steps instead of one per step plus T-1 adds of the full matrices (sat/steplinear.py).
        return StepLSTMCell(self.cell) if torch.is_grad_enabled() else None

    def _advance(self, emb, state, memory, cell=None):
        h, c = state
        context, alpha, logp = self.attention(memory["feats"], memory["keys"], h)
        if self.gate is not None:
            context = torch.sigmoid(self.gate(h)) * context  # β_t ẑ_t, β_t: (B, 1)
        h, c = (cell or self.cell)(torch.cat([emb, context], dim=-1), (h, c))
        return (h, c), context, alpha, logp

    def _logits(self, emb, h, context):
        x = torch.tanh(emb + self.out_h(self.drop(h)) + self.out_z(context))
        return self.out(self.drop(x))


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

    def init_state(self, memory: Memory) -> State:
        feats = memory["feats"]
        return (feats.new_zeros(feats.size(0), self.decoder_dim),)  # h_0 = 0, as the tutorial

    def _advance(self, emb, state, memory, cell=None):
        (h,) = state
        context, alpha, logp = self.attention(memory["feats"], memory["keys"], h)
        h = self.cell(torch.cat([context, emb], dim=-1), h)
        return (h,), context, alpha, logp

    def _logits(self, emb, h, context):
        return self.fc2(self.drop(self.fc1(self.drop(h))))


def _attention(cfg: ModelConfig) -> Attention:
    opts = {}
    if cfg.attention == "hard":
        opts = dict(entropy_weight=cfg.hard_entropy, reinforce_weight=cfg.hard_reinforce, reward=cfg.hard_reward,
                    test_rule=cfg.hard_test_rule)
    return create_attention(cfg.attention, encoder_dim=cfg.encoder_dim, decoder_dim=cfg.decoder_dim,
                            attention_dim=cfg.attention_dim, **opts)


def _transformer(cfg: ModelConfig) -> Decoder:
    from .transformer import TransformerDecoder
    return TransformerDecoder(vocab_size=cfg.vocab_size, encoder_dim=cfg.encoder_dim, embed_dim=cfg.embed_dim,
                              layers=cfg.layers, heads=cfg.heads, dropout=cfg.dropout,
                              max_len=cfg.max_len + 2, num_locations=cfg.num_locations)


_REGISTRY: dict[str, Callable[[ModelConfig], Decoder]] = {
    "lstm": lambda cfg: LSTMDecoder(
        vocab_size=cfg.vocab_size, encoder_dim=cfg.encoder_dim, embed_dim=cfg.embed_dim,
        decoder_dim=cfg.decoder_dim, attention=_attention(cfg), dropout=cfg.dropout, gate=cfg.gate,
        init_state=cfg.init_state),
    "gru": lambda cfg: GRUDecoder(
        vocab_size=cfg.vocab_size, encoder_dim=cfg.encoder_dim, embed_dim=cfg.embed_dim,
        decoder_dim=cfg.decoder_dim, attention=_attention(cfg), dropout=cfg.dropout),
    "transformer": _transformer,
}


def create_decoder(config: ModelConfig) -> Decoder:
    """Build the decoder a config names."""
    if config.vocab_size < 5:
        raise ValueError(f"vocab_size must be ≥ 5 (4 special tokens + words), got {config.vocab_size}")
    if config.decoder not in _REGISTRY:
        raise ValueError(f"unknown decoder {config.decoder!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[config.decoder](config)
