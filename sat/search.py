"""Caption search over any `sat.decoder.Decoder`: greedy, temperature sampling and batched beam search.

Every mode returns, per image, a `Hypothesis`: the generated token ids (ending with <end> when the
model produced it), one attention map per generated token (T, L), the per-token log-probabilities
and their sum.

Conventions shared by all modes (and by the brute-force reference in the tests):
- log-probabilities are the model's own (log-softmax over the full vocabulary); <pad> and
  <start> are never generated;
- a caption has at most `max_len` words: step `max_len` may only emit <end>;
- beam search keeps, for every image, the `beam_size` best partial captions by summed
  log-probability; all beams of all images advance in one (B·K, …) tensor per step. A finished
  beam is carried along with score unchanged. The final choice among the K beams divides the
  score by length**length_alpha (0 = plain log-probability, 1 = per-token average).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .decoder import Decoder, Memory, State


@dataclass
class Hypothesis:
    tokens: list[int]
    """Generated ids, the final <end> included when produced."""
    alphas: torch.Tensor
    """(T, L) attention weights, one row per generated token."""
    token_logprobs: list[float]
    """log p(y_t | y_<t, image) for each generated token."""
    logprob: float
    """Sum of token_logprobs."""
    score: float
    """The ranking score: logprob / len**length_alpha (== logprob unless length-normalised)."""


def _select(xs: Memory | State, index: torch.Tensor):
    """Pick rows (batch dim 0) of every tensor in a decoder memory dict or state tuple."""
    if isinstance(xs, dict):
        return {k: v.index_select(0, index) for k, v in xs.items()}
    return tuple(v.index_select(0, index) for v in xs)


def _log_probs(logits: torch.Tensor, t: int, *, max_len: int, pad_id: int, start_id: int,
               end_id: int) -> torch.Tensor:
    """(N, V) logits → (N, V) log-probabilities with the forbidden tokens at -inf."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    logp[:, pad_id] = float("-inf")
    logp[:, start_id] = float("-inf")
    if t >= max_len:  # the caption is full: only <end> may follow
        end = logp[:, end_id].clone()
        logp.fill_(float("-inf"))
        logp[:, end_id] = end
    return logp


def _trim(tokens: list[int], end_id: int) -> int:
    """Length up to and including the first <end>."""
    return tokens.index(end_id) + 1 if end_id in tokens else len(tokens)


def _sequential(decoder: Decoder, feats: torch.Tensor, *, max_len: int, pad_id: int, start_id: int,
                end_id: int, temperature: float | None, generator: torch.Generator | None) -> list[Hypothesis]:
    """Greedy (temperature None) or sampling, one token per image per step."""
    B = feats.size(0)
    memory = decoder.prepare(feats)
    state = decoder.init_state(memory)
    tokens = torch.full((B,), start_id, dtype=torch.long, device=feats.device)
    done = torch.zeros(B, dtype=torch.bool, device=feats.device)
    out_tok, out_lp, out_alpha = [], [], []
    for t in range(max_len + 1):
        logits, alpha, state = decoder.step(tokens, state, memory)  # (B, V), (B, L)
        logp = _log_probs(logits, t, max_len=max_len, pad_id=pad_id, start_id=start_id, end_id=end_id)
        if temperature is None:
            tokens = logp.argmax(dim=-1)
        else:
            probs = torch.softmax(logp / temperature, dim=-1)
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        out_tok.append(tokens)
        out_lp.append(logp.gather(1, tokens[:, None]).squeeze(1))
        out_alpha.append(alpha.float())
        done |= tokens == end_id
        if bool(done.all()):
            break
    toks = torch.stack(out_tok, 1).tolist()        # (B, T)
    lps = torch.stack(out_lp, 1).cpu()             # (B, T)
    alphas = torch.stack(out_alpha, 1).cpu()       # (B, T, L)
    hyps = []
    for b in range(B):
        n = _trim(toks[b], end_id)
        lp = lps[b, :n].tolist()
        hyps.append(Hypothesis(toks[b][:n], alphas[b, :n], lp, sum(lp), sum(lp)))
    return hyps


@torch.no_grad()
def greedy(decoder: Decoder, feats: torch.Tensor, *, max_len: int, pad_id: int = 0, start_id: int = 1,
           end_id: int = 2) -> list[Hypothesis]:
    """The most probable word at every step. feats: (B, L, D) annotation vectors."""
    return _sequential(decoder, feats, max_len=max_len, pad_id=pad_id, start_id=start_id,
                       end_id=end_id, temperature=None, generator=None)


@torch.no_grad()
def sample(decoder: Decoder, feats: torch.Tensor, *, max_len: int, temperature: float = 1.0,
           generator: torch.Generator | None = None, pad_id: int = 0, start_id: int = 1,
           end_id: int = 2) -> list[Hypothesis]:
    """Draw each word from softmax(log p / temperature); log-probabilities reported at temperature 1."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return _sequential(decoder, feats, max_len=max_len, pad_id=pad_id, start_id=start_id,
                       end_id=end_id, temperature=temperature, generator=generator)


@torch.no_grad()
def beam_search(decoder: Decoder, feats: torch.Tensor, *, beam_size: int, max_len: int,
                length_alpha: float = 0.0, pad_id: int = 0, start_id: int = 1,
                end_id: int = 2) -> list[Hypothesis]:
    """Beam search batched across images: all B·K beams advance in one tensor per step."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be ≥ 1, got {beam_size}")
    B, K, dev = feats.size(0), beam_size, feats.device
    memory = decoder.prepare(feats)
    state = decoder.init_state(memory)
    rows = torch.arange(B, device=dev).repeat_interleave(K)  # (B·K,) image of each beam
    memory, state = _select(memory, rows), _select(state, rows)
    tokens = torch.full((B * K,), start_id, dtype=torch.long, device=dev)
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # NOTE: one live beam per image at first, else K copies of the same words
    finished = torch.zeros(B * K, dtype=torch.bool, device=dev)
    hist_tok = torch.empty(B * K, 0, dtype=torch.long, device=dev)
    hist_lp = torch.empty(B * K, 0, device=dev)
    hist_alpha = torch.empty(B * K, 0, feats.size(1), device=dev)
    base = (torch.arange(B, device=dev) * K)[:, None]  # (B, 1)
    for t in range(max_len + 1):
        logits, alpha, state = decoder.step(tokens, state, memory)  # (B·K, V), (B·K, L)
        logp = _log_probs(logits, t, max_len=max_len, pad_id=pad_id, start_id=start_id, end_id=end_id)
        V = logp.size(1)
        # a finished beam may only continue with <pad>, at no cost
        logp = torch.where(finished[:, None], torch.full_like(logp, float("-inf")), logp)
        logp[:, pad_id] = torch.where(finished, 0.0, float("-inf"))
        cand = (scores.view(-1, 1) + logp).view(B, K * V)  # (B, K·V)
        scores, idx = cand.topk(K, dim=1)  # (B, K)
        origin = (base + idx // V).view(-1)  # (B·K,) flat index of each survivor's parent
        tokens = (idx % V).view(-1)
        state = _select(state, origin)
        step_lp = logp.view(B * K, V)[origin, tokens]  # (B·K,)
        hist_tok = torch.cat([hist_tok[origin], tokens[:, None]], 1)
        hist_lp = torch.cat([hist_lp[origin], step_lp[:, None]], 1)
        hist_alpha = torch.cat([hist_alpha[origin], alpha[origin].float()[:, None]], 1)
        finished = finished[origin] | (tokens == end_id)
        if bool((finished | torch.isinf(scores).view(-1)).all()):
            break
    toks = hist_tok.tolist()
    hist_lp, hist_alpha, scores = hist_lp.cpu(), hist_alpha.cpu(), scores.cpu()
    hyps = []
    for b in range(B):
        best, best_score = None, float("-inf")
        for k in range(K):
            i = b * K + k
            if torch.isinf(scores[b, k]):
                continue
            n = _trim(toks[i], end_id)
            s = float(scores[b, k]) / (n ** length_alpha if length_alpha else 1.0)
            if best is None or s > best_score:
                best, best_score = (i, n), s
        i, n = best  # NOTE: beam 0 always holds a finite score, so best is set
        lp = hist_lp[i, :n].tolist()
        hyps.append(Hypothesis(toks[i][:n], hist_alpha[i, :n], lp, sum(lp), best_score))
    return hyps


@torch.no_grad()
def decode(decoder: Decoder, feats: torch.Tensor, *, mode: str = "beam", beam_size: int = 3,
           max_len: int = 20, temperature: float = 1.0, length_alpha: float = 0.0,
           generator: torch.Generator | None = None, pad_id: int = 0, start_id: int = 1,
           end_id: int = 2) -> list[Hypothesis]:
    """One entry point for the three modes: 'greedy', 'beam' or 'sample'."""
    ids = dict(pad_id=pad_id, start_id=start_id, end_id=end_id)
    if mode == "greedy":
        return greedy(decoder, feats, max_len=max_len, **ids)
    if mode == "beam":
        return beam_search(decoder, feats, beam_size=beam_size, max_len=max_len,
                           length_alpha=length_alpha, **ids)
    if mode == "sample":
        return sample(decoder, feats, max_len=max_len, temperature=temperature, generator=generator, **ids)
    raise ValueError(f"mode must be 'greedy', 'beam' or 'sample', got {mode!r}")
