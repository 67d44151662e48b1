"""Caption decoders: one interface, used by training (teacher forcing) and by search (step by step).

The interface every decoder implements:

    memory = dec.prepare(feats)                   # per image, once:  dict of (B, ...) tensors
    state  = dec.init_state(memory)               # tuple of (B, ...) tensors
    logits, alpha, state = dec.step(tokens, state, memory)      # one word: (B, V), (B, L)
    logits, alpha, state = dec.step(tokens, state, memory, force=a)  # the same with α forced to a (B, L)
    logits, alphas, sample_logp = dec(feats, inputs)            # teacher forcing: (B, T, V), (B, T, L), (B, T)|None
    logits, alphas, sample_logp = dec(feats, inputs, mask)      # training: logits (N, V) of the N real tokens
                                                                #   in mask.nonzero() order; pads hold α = 0
    extra, stats = dec.regularizer(alphas, sample_logp, token_logp, mask, alpha_c=λ)  # attention terms

Memory and state hold only batch-first tensors, so search can expand and reorder beams with one
`index_select` without knowing which decoder it drives. Recurrent decoders take any attention
kind from `sat.attention`; the Transformer (sat/decoders/transformer.py) has its own cross-attention.

Each decoder is one file in this package that registers its class (`@register_decoder("lstm")`,
sat/decoders/registry.py); `create_decoder(config)` builds the one `config.decoder` names through the
class's `from_config`, and `check_config` adds the kind's own rules to `ModelConfig` validation.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..attention import Attention, attention_from_config
from ..kernels import use_cpu_kernels

if TYPE_CHECKING:
    from ..config import ModelConfig

Memory = dict[str, torch.Tensor]
State = tuple[torch.Tensor, ...]


class Decoder(nn.Module):
    """Base class: subclasses implement prepare / init_state / step (and may speed up forward)."""

    @classmethod
    def from_config(cls, config: "ModelConfig") -> "Decoder":
        """Build this decoder from a validated config (what `create_decoder` calls)."""
        raise NotImplementedError

    @classmethod
    def check_config(cls, config: "ModelConfig") -> None:
        """This kind's own rules on a config (ValueError); called by `ModelConfig.__post_init__`."""

    def prepare(self, feats: torch.Tensor) -> Memory:
        raise NotImplementedError

    def init_state(self, memory: Memory) -> State:
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: State, memory: Memory,
             force: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One word. `force` (B, L): use this attention map for the word instead of the model's own
        (sat/steer.py); the returned α is then `force`."""
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

    @staticmethod
    def make_attention(config: "ModelConfig") -> Attention:
        """The attention kind `config.attention` names, with its options (sat/attention.py)."""
        return attention_from_config(config)

    def prepare(self, feats: torch.Tensor) -> Memory:
        return {"feats": feats, "keys": self.attention.prepare(feats)}  # (B, L, D), (B, L, A)

    def _advance(self, emb: torch.Tensor, state: State, memory: Memory, cell=None, force=None):
        """One recurrence step → (new state, context (B, D), alpha (B, L), sample logp (B,) | None).
        `cell`: what `_forward_cell` returned for this forward pass (None: the module's own cell);
        `force`: an α (B, L) to read the context from instead of the attention's own (`_attend`)."""
        raise NotImplementedError

    def _attend(self, memory: Memory, query: torch.Tensor, force: torch.Tensor | None = None):
        """(context (B, D), α (B, L), sample logp | None) from the attention, or with `force` the
        context the attention kind reads from that α (hard at test time: its argmax cell)."""
        if force is None:
            return self.attention(memory["feats"], memory["keys"], query)
        return self.attention.read(memory["feats"], force), force, None

    def _forward_cell(self):
        """A per-forward-pass stand-in for the recurrent cell in teacher forcing (None: the cell)."""
        return None

    def _logits(self, emb: torch.Tensor, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Output layer; works on (B, ·) or (B, T, ·) alike."""
        raise NotImplementedError

    def step(self, tokens, state, memory, force=None):
        emb = self.embed(tokens)  # (B, m)
        state, context, alpha, _ = self._advance(emb, state, memory, force=force)
        return self._logits(emb, state[0], context), alpha, state

    def forward(self, feats, inputs, mask=None):
        """Teacher forcing: feats (B, L, D), inputs (B, T) → logits, α (B, T, L) zeroed at pads, sample
        log-probs (B, T) | None. Logits are (N, V) over `mask`'s real tokens on the packed path (the
        CPU kernels' switch, sat/kernels.py), (B, T, V) over every position on the plain path."""
        if mask is not None and use_cpu_kernels(feats):
            return self._packed_forward(feats, inputs, mask)
        return self._dense_forward(feats, inputs, mask)

    def _dense_forward(self, feats, inputs, mask=None):
        # NOTE: the plain path (CUDA, torch.compile): every row runs all T steps and the output layer
        # sees every position, so shapes depend on (B, T) only and nothing reads the mask on the host
        # (no sync, no data-dependent shape); padding costs compute, the loss ignores it.
        B, T = inputs.shape
        memory = self.prepare(feats)
        state = self.init_state(memory)
        emb = self.embed(inputs)  # (B, T, m)
        cell = self._forward_cell()
        hs, zs, alphas, logps = [], [], [], []
        for t in range(T):
            state, context, alpha, logp = self._advance(emb[:, t], state, memory, cell)
            hs.append(state[0])
            zs.append(context)
            alphas.append(alpha)
            logps.append(logp)
        h, z = torch.stack(hs, 1), torch.stack(zs, 1)  # (B, T, n), (B, T, D)
        alpha_grid = torch.stack(alphas, 1)  # (B, T, L)
        sample_logp = None if logps[0] is None else torch.stack(logps, 1)  # (B, T)
        if mask is not None:
            keep = mask.to(alpha_grid.dtype)
            alpha_grid = alpha_grid * keep.unsqueeze(-1)
            if sample_logp is not None:
                sample_logp = sample_logp * keep.to(sample_logp.dtype)
        return self._logits(emb, h, z), alpha_grid, sample_logp  # (B, T, V), (B, T, L), (B, T) | None

    def _packed_forward(self, feats, inputs, mask=None):
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
