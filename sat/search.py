"""Caption search over any `sat.decoders.Decoder`: greedy, temperature sampling and batched beam search.

Every mode returns, per image, a `Hypothesis`: the generated token ids (ending with <end> when the
model produced it), one attention map per generated token (T, L), the per-token log-probabilities,
their sum, the ranking score and whether the caption was cut at `max_len`.

Conventions shared by all modes (and by the brute-force reference in the tests):
- log-probabilities are the model's own (log-softmax over the full vocabulary); <pad>,
  <start> and <unk> are never generated;
- no repeated n-grams (`no_repeat_ngram_size` = n > 0, 0 = off; Paulus et al. 2018): a word that
  would complete an n-gram already in the caption gets -inf, in every mode;
- a caption has at most `max_len` words. After `max_len` words the model is asked once more: when
  its choice there (greedy and beam: its most probable allowed token; sampling: the drawn one) is
  <end>, the caption ends with it; otherwise the caption is *cut*: `truncated=True`, and it gets no
  <end> token, no attention row and no log-probability for the word that did not fit;
- the score of a caption y of |y| tokens (<end> included when generated) is GNMT's length-penalised
  log-probability (Wu et al. 2016, eq. 14): s(y) = log p(y) / lp(|y|), lp(n) = ((5 + n) / 6)^α,
  α = `length_penalty` (0 = off: s = log p). Beam search prunes and ranks by s alone: each image
  keeps the `beam_size` best of its live beams' one-word extensions and its finished captions (which
  are carried along at their own length and score); all beams of all images advance in one
  (B·K, …) tensor per step;
- beam search stops for an image when no live beam can still beat its best finished caption: log p
  only falls as words are added and lp only grows (α ≥ 0), so a live beam can reach at most
  log p / lp(max_len + 1). With α = 0 that is "the best beam has ended". The answer is the one a
  run to `max_len` would give;
- a NaN logit counts as -inf (that word is never chosen); when no word at all has a finite
  log-probability (e.g. a model whose activations overflowed) the search raises `SearchError`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import INT_LIMITS
from .decoders import Decoder, Memory, State

MAX_BEAM_SIZE = 20
"""Largest beam `Captioner` and `python -m sat` accept: time and memory grow with K (K = 10 000
took 58 s and 2.5 GB on one image). beam_search itself has no cap (the tests' brute force uses 40)."""
MAX_LENGTH_PENALTY = 5.0
"""Largest α: at α = 5 a 20-token caption's log p is already divided by ≈ 1 500."""
MAX_NGRAM = INT_LIMITS["max_len"][1]
"""Largest `no_repeat_ngram_size` (an n longer than the caption never bans anything)."""


class SearchError(RuntimeError):
    """The model gave no usable (finite) probability for any next word: its weights or activations
    hold NaN/Inf. The message says which step."""


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
    """The ranking score: logprob / lp(len(tokens)) (== logprob when length_penalty is 0)."""
    truncated: bool = False
    """Cut at max_len words: the model would have gone on (so there is no <end> token)."""


def check_options(*, length_penalty: float, no_repeat_ngram_size: int) -> None:
    """Raise a one-line ValueError for a length penalty or n-gram size the search does not take."""
    lp = length_penalty
    if (isinstance(lp, bool) or not isinstance(lp, (int, float)) or not math.isfinite(lp)
            or not 0 <= lp <= MAX_LENGTH_PENALTY):
        raise ValueError(f"length_penalty must be a number in [0, {MAX_LENGTH_PENALTY:g}], got {lp!r}")
    n = no_repeat_ngram_size
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_NGRAM:
        raise ValueError(f"no_repeat_ngram_size must be an integer in [0, {MAX_NGRAM}], got {n!r}")


def _lp(length, alpha: float):
    """GNMT's length penalty lp(|y|) = ((5 + |y|) / 6)^α (an int or a tensor of lengths)."""
    return ((5 + length) / 6) ** alpha


def _banned(history: torch.Tensor, n: int, V: int) -> torch.Tensor:
    """(N, T) generated ids → (N, V) True for each word that would complete an n-gram the row
    already holds (its last n - 1 ids followed by the word)."""
    N, T = history.shape
    ban = torch.zeros(N, V, dtype=torch.bool, device=history.device)
    if n == 0 or T < n:
        return ban
    grams = history.unfold(1, n, 1)  # (N, T - n + 1, n) every n-gram so far
    prefix = history[:, T - n + 1:]  # (N, n - 1) the n-gram the next word would complete
    seen = (grams[:, :, :-1] == prefix[:, None, :]).all(dim=-1)  # (N, T - n + 1)
    row, at = seen.nonzero(as_tuple=True)
    ban[row, grams[row, at, -1]] = True
    return ban


def _select(xs: Memory | State, index: torch.Tensor):
    """Pick rows (batch dim 0) of every tensor in a decoder memory dict or state tuple."""
    if isinstance(xs, dict):
        return {k: v.index_select(0, index) for k, v in xs.items()}
    return tuple(v.index_select(0, index) for v in xs)


def _log_probs(logits: torch.Tensor, *, pad_id: int, start_id: int, unk_id: int | None = None,
               history: torch.Tensor | None = None, no_repeat: int = 0) -> torch.Tensor:
    """(N, V) logits → (N, V) log-probabilities with the forbidden tokens (NaN logits, and with
    `history` (N, T) the words completing a repeated n-gram) at -inf."""
    logits = logits.float()
    logp = torch.log_softmax(logits.masked_fill(logits.isnan(), float("-inf")), dim=-1)
    logp = logp.masked_fill(logp.isnan(), float("-inf"))  # NOTE: a +inf logit gives NaN: no usable word
    logp[:, pad_id] = float("-inf")
    logp[:, start_id] = float("-inf")
    if unk_id is not None:  # NOTE: "<unk>" is a training target for rare words, never a caption word
        logp[:, unk_id] = float("-inf")
    if no_repeat and history is not None:
        logp.masked_fill_(_banned(history, no_repeat, logp.size(1)), float("-inf"))
    return logp


def _no_word(t: int) -> SearchError:
    return SearchError(f"the model gave no finite probability for any word at step {t + 1} "
                       "(NaN/Inf in its weights or activations)")


def _trim(tokens: list[int], *, end_id: int, pad_id: int) -> tuple[int, bool]:
    """(tokens kept, cut?): up to and including the first <end>; a caption cut at max_len holds a
    <pad> where its next word would have been."""
    for i, tok in enumerate(tokens):
        if tok == end_id:
            return i + 1, False
        if tok == pad_id:
            return i, True
    return len(tokens), True


def _sequential(decoder: Decoder, feats: torch.Tensor, *, max_len: int, pad_id: int, start_id: int,
                end_id: int, unk_id: int | None, temperature: float | None, generator: torch.Generator | None,
                length_penalty: float, no_repeat_ngram_size: int) -> list[Hypothesis]:
    """Greedy (temperature None) or sampling, one token per image per step."""
    check_options(length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    B = feats.size(0)
    memory = decoder.prepare(feats)
    state = decoder.init_state(memory)
    tokens = torch.full((B,), start_id, dtype=torch.long, device=feats.device)
    done = torch.zeros(B, dtype=torch.bool, device=feats.device)
    out_tok, out_lp, out_alpha = [], [], []
    for t in range(max_len + 1):
        logits, alpha, state = decoder.step(tokens, state, memory)  # (B, V), (B, L)
        history = torch.stack(out_tok, 1) if out_tok and no_repeat_ngram_size else None  # (B, t)
        logp = _log_probs(logits, pad_id=pad_id, start_id=start_id, unk_id=unk_id, history=history,
                          no_repeat=no_repeat_ngram_size)
        dead = torch.isneginf(logp.max(dim=-1).values)  # (B,) rows without one finite word
        if bool((dead & ~done).any()):
            raise _no_word(t)
        logp[dead, end_id] = 0.0  # NOTE: finished captions only: their next token is dropped anyway
        if temperature is None:
            tokens = logp.argmax(dim=-1)
        else:
            probs = torch.softmax(logp / temperature, dim=-1)
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        if t == max_len:  # no room for the chosen word: a caption that would go on is cut (<pad> marks it)
            tokens = tokens.masked_fill(~done & (tokens != end_id), pad_id)
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
        n, cut = _trim(toks[b], end_id=end_id, pad_id=pad_id)
        lp = lps[b, :n].tolist()
        hyps.append(Hypothesis(toks[b][:n], alphas[b, :n], lp, sum(lp), sum(lp) / _lp(n, length_penalty), cut))
    return hyps


@torch.no_grad()
def greedy(decoder: Decoder, feats: torch.Tensor, *, max_len: int, length_penalty: float = 0.0,
           no_repeat_ngram_size: int = 0, pad_id: int = 0, start_id: int = 1, end_id: int = 2,
           unk_id: int | None = 3) -> list[Hypothesis]:
    """The most probable word at every step. feats: (B, L, D) annotation vectors. The length
    penalty only scales the reported score (one caption per image: nothing to rank)."""
    return _sequential(decoder, feats, max_len=max_len, pad_id=pad_id, start_id=start_id,
                       end_id=end_id, unk_id=unk_id, temperature=None, generator=None,
                       length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)


@torch.no_grad()
def sample(decoder: Decoder, feats: torch.Tensor, *, max_len: int, temperature: float = 1.0,
           generator: torch.Generator | None = None, length_penalty: float = 0.0,
           no_repeat_ngram_size: int = 0, pad_id: int = 0, start_id: int = 1,
           end_id: int = 2, unk_id: int | None = 3) -> list[Hypothesis]:
    """Draw each word from softmax(log p / temperature); log-probabilities reported at temperature 1."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    return _sequential(decoder, feats, max_len=max_len, pad_id=pad_id, start_id=start_id,
                       end_id=end_id, unk_id=unk_id, temperature=temperature, generator=generator,
                       length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)


def _compact(keep: torch.Tensor, K: int) -> torch.Tensor:
    """Row indices (A'·K,) of the K beams of each kept image (keep: (A',) image positions)."""
    return (keep[:, None] * K + torch.arange(K, device=keep.device)).view(-1)


@torch.no_grad()
def beam_search(decoder: Decoder, feats: torch.Tensor, *, beam_size: int, max_len: int,
                length_penalty: float = 0.0, no_repeat_ngram_size: int = 0, pad_id: int = 0,
                start_id: int = 1, end_id: int = 2, unk_id: int | None = 3) -> list[Hypothesis]:
    """Beam search batched across images: all beams of all unfinished images advance in one tensor.

    NOTE: two things keep the per-step cost flat: a step stores only its new tokens and
    back-pointers (the captions are read back once at the end, not copied every step), and images
    that are done leave the batch (in groups, since dropping rows copies memory).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be ≥ 1, got {beam_size}")
    check_options(length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    B, K, dev, alpha_lp = feats.size(0), beam_size, feats.device, length_penalty
    memory = decoder.prepare(feats)
    state = decoder.init_state(memory)
    rows = torch.arange(B, device=dev).repeat_interleave(K)  # (B·K,) image of each beam
    memory, state = _select(memory, rows), _select(state, rows)
    images = list(range(B))  # image id of each active image; the rows are images × K
    tokens = torch.full((B * K,), start_id, dtype=torch.long, device=dev)
    logprobs = torch.full((B, K), float("-inf"), device=dev)  # log p of each beam's tokens
    logprobs[:, 0] = 0.0  # NOTE: one live beam per image at first, else K copies of the same words
    lengths = torch.zeros(B * K, dtype=torch.long, device=dev)  # tokens of each beam
    finished = torch.zeros(B * K, dtype=torch.bool, device=dev)
    history = torch.zeros(B * K, 0, dtype=torch.long, device=dev)  # (B·K, t), kept for n-gram bans only
    reach = _lp(max_len + 1, alpha_lp)  # a live beam's score can at best become log p / reach
    steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []  # tok, parent, lp, alpha
    ends: dict[int, tuple[int, list[int], list[float], list[bool]]] = {}  # image → step, rows, scores, finished
    remap: torch.Tensor | None = None  # rows kept at the last compaction, to map parents back
    for t in range(max_len + 1):
        A = len(images)
        logits, alpha, state = decoder.step(tokens, state, memory)  # (A·K, V), (A·K, L)
        logp = _log_probs(logits, pad_id=pad_id, start_id=start_id, unk_id=unk_id, history=history,
                          no_repeat=no_repeat_ngram_size)
        V = logp.size(1)
        stop, new_len = finished, torch.full_like(lengths, t + 1)
        if t == max_len:  # no room for a word: a beam ends when <end> is its best token, else it is cut
            cut = ~finished & (logp.argmax(dim=-1) != end_id)
            end = logp[:, end_id].clone()
            logp.fill_(float("-inf"))
            logp[:, end_id] = end
            stop, new_len = finished | cut, torch.where(cut, t, t + 1)
        # a finished (or cut) beam may only continue with <pad>, at no cost, keeping its length
        logp = torch.where(stop[:, None], torch.full_like(logp, float("-inf")), logp)
        logp[:, pad_id] = torch.where(stop, 0.0, float("-inf"))
        new_len = torch.where(finished, lengths, new_len)
        cand_lp = logprobs.view(-1, 1) + logp  # (A·K, V) log p of every one-token extension
        cand = (cand_lp / _lp(new_len, alpha_lp)[:, None].float()).view(A, K * V)  # (A, K·V) scores
        scores, idx = cand.topk(K, dim=1)  # (A, K) pruning and ranking by one rule
        if bool(torch.isneginf(scores[:, 0]).any()):  # an image with no finite caption left
            raise _no_word(t)
        logprobs = cand_lp.view(A, K * V).gather(1, idx)  # (A, K)
        origin = (torch.arange(A, device=dev)[:, None] * K + idx // V).view(-1)  # (A·K,) parent row
        tokens = (idx % V).view(-1)
        state = _select(state, origin)
        finished, lengths = stop[origin] | (tokens == end_id), new_len[origin]
        if no_repeat_ngram_size:
            history = torch.cat([history[origin], tokens[:, None]], dim=1)  # (A·K, t + 1)
        parent = origin if remap is None else remap[origin]
        steps.append((tokens, parent, logp[origin, tokens], alpha[origin].float()))  # read back once, at the end
        # done: the best finished caption beats every live beam's best reachable score
        alive = (~finished).view(A, K) & ~torch.isneginf(scores)
        best = torch.where(finished.view(A, K), scores, float("-inf")).max(dim=1).values  # (A,)
        hope = torch.where(alive, logprobs / reach, float("-inf")).max(dim=1).values  # (A,)
        done = best >= hope  # (A,)
        done_list = done.tolist()
        for a in [a for a, d in enumerate(done_list) if d and images[a] not in ends]:
            ends[images[a]] = (t, list(range(a * K, a * K + K)), scores[a].tolist(),
                               finished.view(A, K)[a].tolist())
        if all(done_list):
            break
        n_done = sum(done_list)
        remap = None
        if n_done * 4 >= A:  # drop finished images once they are a quarter of the batch
            keep = (~done).nonzero().flatten()
            remap = _compact(keep, K)  # (A'·K,) rows of this step that stay
            memory, state = _select(memory, remap), _select(state, remap)
            tokens, finished, lengths, history = tokens[remap], finished[remap], lengths[remap], history[remap]
            logprobs = logprobs[keep]
            images = [images[a] for a in keep.tolist()]
    return _read_back(steps, ends, B, end_id=end_id, pad_id=pad_id, length_penalty=alpha_lp)


def _read_back(steps, ends, B: int, *, end_id: int, pad_id: int, length_penalty: float) -> list[Hypothesis]:
    """Follow the back-pointers of each image's best finished beam (beams still live when the image
    stopped cannot beat it)."""
    toks = [s[0].tolist() for s in steps]
    parents = [s[1].tolist() for s in steps]
    lps = [s[2].tolist() for s in steps]
    hyps = []
    for b in range(B):
        t_end, rows, final, done = ends[b]
        # NOTE: the stop rule guarantees a finished beam with a finite score
        k = max((k for k in range(len(rows)) if done[k] and final[k] > float("-inf")), key=final.__getitem__)
        path, r = [], rows[k]
        for t in range(t_end, -1, -1):  # (step, row) pairs from the last step back to the first
            path.append((t, r))
            r = parents[t][r]
        path.reverse()
        seq = [toks[t][r] for t, r in path]
        n, cut = _trim(seq, end_id=end_id, pad_id=pad_id)
        lp = [lps[t][r] for t, r in path[:n]]
        alphas = torch.stack([steps[t][3][r] for t, r in path[:n]]).cpu()  # (T, L)
        hyps.append(Hypothesis(seq[:n], alphas, lp, sum(lp), sum(lp) / _lp(n, length_penalty), cut))
    return hyps


@torch.no_grad()
def compile_step(decoder: Decoder) -> Decoder:
    """torch.compile the decoder's `step` (the one call per generated word of every search, steering
    included), in place; returns the decoder. Decoding is unchanged within float rounding (tested).

    NOTE: dynamic shapes: the rows change with the batch, the beam and finished captions; the plain
    ops are traced (sat/kernels.py), so on a CPU the first captions pay seconds of compilation.
    """
    if not getattr(decoder, "step_compiled", False):
        decoder.step = torch.compile(decoder.step, dynamic=True)  # NOTE: an instance attribute shadows the method
        decoder.step_compiled = True
    return decoder


def decode(decoder: Decoder, feats: torch.Tensor, *, mode: str = "beam", beam_size: int = 3,
           max_len: int = 20, temperature: float = 1.0, length_penalty: float = 0.0,
           no_repeat_ngram_size: int = 0, generator: torch.Generator | None = None, pad_id: int = 0,
           start_id: int = 1, end_id: int = 2, unk_id: int | None = 3) -> list[Hypothesis]:
    """One entry point for the three modes: 'greedy', 'beam' or 'sample'. `<unk>` (`unk_id`;
    None allows it) is never generated, like `<pad>` and `<start>`."""
    ids = dict(pad_id=pad_id, start_id=start_id, end_id=end_id, unk_id=unk_id)
    opts = dict(length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    if mode == "greedy":
        return greedy(decoder, feats, max_len=max_len, **opts, **ids)
    if mode == "beam":
        return beam_search(decoder, feats, beam_size=beam_size, max_len=max_len, **opts, **ids)
    if mode == "sample":
        return sample(decoder, feats, max_len=max_len, temperature=temperature, generator=generator,
                      **opts, **ids)
    raise ValueError(f"mode must be 'greedy', 'beam' or 'sample', got {mode!r}")
