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


def _compact(keep: torch.Tensor, K: int) -> torch.Tensor:
    """Row indices (A'·K,) of the K beams of each kept image (keep: (A',) image positions)."""
    return (keep[:, None] * K + torch.arange(K, device=keep.device)).view(-1)


@torch.no_grad()
def beam_search(decoder: Decoder, feats: torch.Tensor, *, beam_size: int, max_len: int,
                length_alpha: float = 0.0, pad_id: int = 0, start_id: int = 1,
                end_id: int = 2) -> list[Hypothesis]:
    """Beam search batched across images: all beams of all unfinished images advance in one tensor.

    NOTE: two things keep the per-step cost flat: a step stores only its new tokens and
    back-pointers (the captions are read back once at the end, not copied every step), and images
    whose K beams have all finished leave the batch (in groups, since dropping rows copies memory).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be ≥ 1, got {beam_size}")
    B, K, dev = feats.size(0), beam_size, feats.device
    memory = decoder.prepare(feats)
    state = decoder.init_state(memory)
    rows = torch.arange(B, device=dev).repeat_interleave(K)  # (B·K,) image of each beam
    memory, state = _select(memory, rows), _select(state, rows)
    images = list(range(B))  # image id of each active image; the rows are images × K
    tokens = torch.full((B * K,), start_id, dtype=torch.long, device=dev)
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # NOTE: one live beam per image at first, else K copies of the same words
    finished = torch.zeros(B * K, dtype=torch.bool, device=dev)
    steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []  # tok, parent, lp, alpha
    ends: dict[int, tuple[int, list[int], list[float]]] = {}  # image → (step, its K rows there, scores)
    remap: torch.Tensor | None = None  # rows kept at the last compaction, to map parents back
    for t in range(max_len + 1):
        A = len(images)
        logits, alpha, state = decoder.step(tokens, state, memory)  # (A·K, V), (A·K, L)
        logp = _log_probs(logits, t, max_len=max_len, pad_id=pad_id, start_id=start_id, end_id=end_id)
        V = logp.size(1)
        # a finished beam may only continue with <pad>, at no cost
        logp = torch.where(finished[:, None], torch.full_like(logp, float("-inf")), logp)
        logp[:, pad_id] = torch.where(finished, 0.0, float("-inf"))
        cand = (scores.view(-1, 1) + logp).view(A, K * V)  # (A, K·V)
        scores, idx = cand.topk(K, dim=1)  # (A, K)
        origin = (torch.arange(A, device=dev)[:, None] * K + idx // V).view(-1)  # (A·K,) parent row
        tokens = (idx % V).view(-1)
        state = _select(state, origin)
        finished = finished[origin] | (tokens == end_id)
        parent = origin if remap is None else remap[origin]
        steps.append((tokens, parent, logp[origin, tokens], alpha[origin].float()))  # read back once, at the end
        done = (finished | torch.isinf(scores).view(-1)).view(A, K).all(dim=1)  # (A,)
        done_list = done.tolist()
        for a in [a for a, d in enumerate(done_list) if d and images[a] not in ends]:
            ends[images[a]] = (t, list(range(a * K, a * K + K)), scores[a].tolist())
        if all(done_list):
            break
        n_done = sum(done_list)
        remap = None
        if n_done * 4 >= A:  # drop finished images once they are a quarter of the batch
            keep = (~done).nonzero().flatten()
            remap = _compact(keep, K)  # (A'·K,) rows of this step that stay
            memory, state = _select(memory, remap), _select(state, remap)
            tokens, finished, scores = tokens[remap], finished[remap], scores[keep]
            images = [images[a] for a in keep.tolist()]
    return _read_back(steps, ends, B, end_id=end_id, length_alpha=length_alpha)


def _read_back(steps, ends, B: int, *, end_id: int, length_alpha: float) -> list[Hypothesis]:
    """Follow the back-pointers of each image's K final beams; keep the best by the ranking rule."""
    toks = [s[0].tolist() for s in steps]
    parents = [s[1].tolist() for s in steps]
    lps = [s[2].tolist() for s in steps]
    hyps = []
    for b in range(B):
        t_end, rows, final = ends[b]
        best = None
        for row, score in zip(rows, final):
            if score == float("-inf"):
                continue
            path, r = [], row
            for t in range(t_end, -1, -1):  # (step, row) pairs from the last step back to the first
                path.append((t, r))
                r = parents[t][r]
            path.reverse()
            seq = [toks[t][r] for t, r in path]
            n = _trim(seq, end_id)
            s = score / (n ** length_alpha if length_alpha else 1.0)
            if best is None or s > best[0]:
                best = (s, seq[:n], path[:n])
        s, seq, path = best  # NOTE: beam 0 always holds a finite score, so best is set
        lp = [lps[t][r] for t, r in path]
        alphas = torch.stack([steps[t][3][r] for t, r in path]).cpu()  # (T, L)
        hyps.append(Hypothesis(seq, alphas, lp, sum(lp), s))
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
