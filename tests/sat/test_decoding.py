"""Decoding options of `sat.search`: n-gram bans (vectorised rule, a model stuck in a loop, sampling)
and visible truncation at max_len; bad option values get one-line errors."""
from __future__ import annotations

import pytest
import torch

from sat.search import decode, sample
from tests.sat.test_search import END, START, repeats, tiny_decoder


@pytest.mark.parametrize("kw, needle", [
    ({"length_penalty": -0.1}, "length_penalty must be a number in [0, 5], got -0.1"),
    ({"length_penalty": float("nan")}, "length_penalty must be a number in [0, 5], got nan"),
    ({"length_penalty": 6}, "length_penalty must be a number in [0, 5], got 6"),
    ({"length_penalty": "1"}, "length_penalty must be a number"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size must be an integer in [0, 100], got -1"),
    ({"no_repeat_ngram_size": 2.5}, "no_repeat_ngram_size must be an integer in [0, 100], got 2.5"),
    ({"no_repeat_ngram_size": True}, "no_repeat_ngram_size must be an integer"),
    ({"no_repeat_ngram_size": 101}, "no_repeat_ngram_size must be an integer in [0, 100], got 101"),
])
@pytest.mark.parametrize("mode", ["greedy", "beam", "sample"])
def test_bad_decoding_options(mode, kw, needle):
    with pytest.raises(ValueError) as e:
        decode(tiny_decoder(), torch.randn(1, 4, 8), mode=mode, max_len=3, **kw)
    assert str(e.value) == needle or str(e.value).startswith(needle)


def test_banned_words_match_a_plain_loop():
    """_banned, vectorised, against the rule written out: w is banned when history[-(n-1):] + [w]
    is an n-gram already in history."""
    from sat.search import _banned
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 4):
        history = torch.randint(3, 6, (40, 9), generator=g)  # 3 words: many repeats
        ban = _banned(history, n, 7)
        for row, h in zip(ban, history.tolist()):
            grams = {tuple(h[i:i + n]) for i in range(len(h) - n + 1)}
            prefix = h[len(h) - n + 1:] if n > 1 else []
            assert row.tolist() == [tuple(prefix + [w]) in grams for w in range(7)]
    assert not _banned(torch.tensor([[4, 5]]), 3, 7).any()  # shorter than one n-gram: nothing seen


class LoopDecoder:
    """A hand-made decoder stuck in a cycle: after <start> it says 4, then 4 → 5 → 6 → 4 → … with
    logit 6 (the runner-up, word 7, has 3; <end> has 0), and after 7 it prefers <end> (logit 6).
    Greedy, beam and cold sampling all loop "4 5 6 4 5 6 …" until max_len."""

    V = 8

    def prepare(self, feats):
        return {"feats": feats}

    def init_state(self, memory):
        return (torch.zeros(memory["feats"].size(0), 1),)

    def step(self, tokens, state, memory):
        table = torch.zeros(self.V, self.V)  # (previous token, next token) logits
        table[:, 7] = 3.0
        for prev, nxt in ((START, 4), (4, 5), (5, 6), (6, 4), (7, END)):
            table[prev, nxt] = 6.0
        L = memory["feats"].size(1)
        return table[tokens], torch.full((tokens.size(0), L), 1.0 / L), state


@torch.no_grad()
@pytest.mark.parametrize("mode", ["greedy", "beam", "sample"])
def test_a_looping_model_is_cut_and_stops_looping_without_repeated_trigrams(mode):
    feats = torch.randn(2, 4, 8)
    kw = dict(mode=mode, beam_size=3, temperature=0.05, max_len=10, generator=torch.Generator().manual_seed(0))
    for h in decode(LoopDecoder(), feats, **kw):  # the loop runs into max_len and is cut
        assert h.tokens == [4, 5, 6, 4, 5, 6, 4, 5, 6, 4] and h.truncated
        assert h.alphas.shape == (10, 4) and len(h.token_logprobs) == 10  # no <end>, no 11th map
        assert h.logprob == pytest.approx(sum(h.token_logprobs))  # no forced <end> in the score
    for h in decode(LoopDecoder(), feats, no_repeat_ngram_size=3, **kw):
        assert not repeats(h.tokens, 3) and h.tokens[-1] == END and not h.truncated
        assert h.alphas.shape == (len(h.tokens), 4)
        if mode != "beam":  # "4 5 6" again is banned after "4 5": the runner-up 7, then <end>
            assert h.tokens == [4, 5, 6, 4, 5, 7, END]
        else:  # beam search finds the more probable "7 <end>" (log p -3.1 against -3.4)
            assert h.tokens == [7, END]


@torch.no_grad()
def test_sampling_never_repeats_an_ngram():
    feats = torch.randn(32, 4, 8)
    for n in (1, 2, 3):
        for h in sample(tiny_decoder(seed=1), feats, max_len=12, no_repeat_ngram_size=n,
                        generator=torch.Generator().manual_seed(n)):
            assert not repeats(h.tokens, n)
        for h in sample(LoopDecoder(), feats, max_len=12, temperature=2.0, no_repeat_ngram_size=n,
                        generator=torch.Generator().manual_seed(n)):
            assert not repeats(h.tokens, n)


@torch.no_grad()
def test_a_caption_that_ends_right_at_max_len_is_not_cut():
    """6 words then <end> (the model's choice at step 7): max_len 6 keeps the <end>, max_len 5 cuts."""
    feats = torch.randn(1, 4, 8)
    for mode in ("greedy", "sample"):
        full = decode(LoopDecoder(), feats, mode=mode, max_len=6, no_repeat_ngram_size=3, temperature=0.05)[0]
        assert full.tokens == [4, 5, 6, 4, 5, 7, END] and not full.truncated
        cut = decode(LoopDecoder(), feats, mode=mode, max_len=5, no_repeat_ngram_size=3, temperature=0.05)[0]
        assert cut.tokens == [4, 5, 6, 4, 5] and cut.truncated
        assert cut.logprob == pytest.approx(sum(full.token_logprobs[:5]), abs=1e-5)
