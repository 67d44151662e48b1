"""Search: beam=1 equals greedy, beam equals brute force on a tiny vocabulary, batching is exact."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from sat.config import ModelConfig
from sat.decoder import create_decoder
from sat.search import beam_search, decode, greedy, sample

PAD, START, END = 0, 1, 2


def tiny_decoder(vocab_size: int = 7, seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(encoder="test-tiny", encoder_dim=8, grid=(2, 2), vocab_size=vocab_size,
                      embed_dim=8, attention_dim=8, decoder_dim=16, dropout=0.0)
    dec = create_decoder(cfg).eval()
    with torch.no_grad():  # sharpen the output so sequences differ clearly in probability
        dec.out.weight.mul_(8.0)
    return dec


def seq_logprob(dec, feats, seq):
    """log p(seq) under the model, with the search's conventions (pad/start banned)."""
    mem = dec.prepare(feats)
    state = dec.init_state(mem)
    tok = torch.tensor([START])
    total = 0.0
    for t, y in enumerate(seq):
        logits, _, state = dec.step(tok, state, mem)
        total += torch.log_softmax(logits, -1)[0, y].item()
        tok = torch.tensor([y])
    return total


def brute_force(dec, feats, max_len, words):
    """Every caption of ≤ max_len words followed by <end>: the most probable one."""
    best, best_lp = None, -math.inf
    for n in range(max_len + 1):
        for body in itertools.product(words, repeat=n):
            seq = list(body) + [END]
            lp = seq_logprob(dec, feats, seq)
            if lp > best_lp:
                best, best_lp = seq, lp
    return best, best_lp


@torch.no_grad()
def test_beam_one_equals_greedy():
    dec = tiny_decoder()
    feats = torch.randn(5, 4, 8)
    g = greedy(dec, feats, max_len=6)
    b = beam_search(dec, feats, beam_size=1, max_len=6)
    for x, y in zip(g, b):
        assert x.tokens == y.tokens
        assert x.logprob == pytest.approx(y.logprob, abs=1e-5)
        assert torch.allclose(x.alphas, y.alphas, atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_equals_brute_force(seed):
    dec = tiny_decoder(vocab_size=6, seed=seed)  # words: ids 3 (<unk>), 4, 5
    feats = torch.randn(1, 4, 8)
    max_len = 3
    best, best_lp = brute_force(dec, feats, max_len, words=[3, 4, 5])
    # 3 words, ≤3 steps + <end>: 40 sequences; a beam of 40 is exhaustive
    hyp = beam_search(dec, feats, beam_size=40, max_len=max_len)[0]
    assert hyp.tokens == best
    assert hyp.logprob == pytest.approx(best_lp, abs=1e-4)
    assert sum(hyp.token_logprobs) == pytest.approx(hyp.logprob, abs=1e-6)


@torch.no_grad()
def test_batched_beam_equals_one_image_at_a_time():
    dec = tiny_decoder()
    feats = torch.randn(4, 4, 8)
    together = beam_search(dec, feats, beam_size=3, max_len=8)
    for i in range(4):
        alone = beam_search(dec, feats[i:i + 1], beam_size=3, max_len=8)[0]
        assert alone.tokens == together[i].tokens
        assert alone.score == pytest.approx(together[i].score, abs=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("beam", [2, 3])
def test_finished_images_leave_the_batch_and_results_stay_exact(beam):
    """Images whose beams all ended drop out of the batch (the step sees fewer rows), and every
    caption, score, per-token log p and attention row is still the one-image-alone result."""
    dec = tiny_decoder(seed=5)
    with torch.no_grad():
        dec.out.weight.div_(4.0)  # softer outputs: beams end at varied steps
    feats = torch.randn(12, 4, 8, generator=torch.Generator().manual_seed(0))
    sizes = []
    step = dec.step
    dec.step = lambda tokens, *a: (sizes.append(tokens.size(0)), step(tokens, *a))[1]
    together = beam_search(dec, feats, beam_size=beam, max_len=8)
    del dec.step
    assert sizes[0] == 12 * beam and min(sizes) < 12 * beam  # the batch shrank
    assert len({len(h.tokens) for h in together}) > 1
    for i in range(12):
        alone = beam_search(dec, feats[i:i + 1], beam_size=beam, max_len=8)[0]
        assert alone.tokens == together[i].tokens
        assert alone.token_logprobs == pytest.approx(together[i].token_logprobs, abs=1e-5)
        assert torch.allclose(alone.alphas, together[i].alphas, atol=1e-6)


@torch.no_grad()
def test_outputs_shapes_and_limits():
    dec = tiny_decoder()
    feats = torch.randn(3, 4, 8)
    for mode in ("greedy", "beam", "sample"):
        for h in decode(dec, feats, mode=mode, beam_size=4, max_len=2, generator=torch.Generator().manual_seed(0)):
            assert 1 <= len(h.tokens) <= 3  # ≤ 2 words + <end>
            assert h.tokens[-1] == END  # at max_len only <end> is allowed
            assert PAD not in h.tokens and START not in h.tokens
            assert h.alphas.shape == (len(h.tokens), 4)
            assert torch.allclose(h.alphas.sum(-1), torch.ones(len(h.tokens)), atol=1e-5)


@torch.no_grad()
def test_sampling_is_seeded_and_temperature_matters():
    dec = tiny_decoder()
    feats = torch.randn(6, 4, 8)
    a = sample(dec, feats, max_len=8, generator=torch.Generator().manual_seed(3))
    b = sample(dec, feats, max_len=8, generator=torch.Generator().manual_seed(3))
    assert [h.tokens for h in a] == [h.tokens for h in b]
    cold = sample(dec, feats, max_len=8, temperature=1e-4, generator=torch.Generator().manual_seed(5))
    assert [h.tokens for h in cold] == [h.tokens for h in greedy(dec, feats, max_len=8)]
    with pytest.raises(ValueError):
        sample(dec, feats, max_len=8, temperature=0.0)


@torch.no_grad()
def test_length_normalisation_changes_the_ranking_rule():
    dec = tiny_decoder(seed=4)
    feats = torch.randn(8, 4, 8)
    plain = beam_search(dec, feats, beam_size=5, max_len=8, length_alpha=0.0)
    normed = beam_search(dec, feats, beam_size=5, max_len=8, length_alpha=1.0)
    for p, n in zip(plain, normed):
        assert p.score == pytest.approx(p.logprob)
        assert n.score == pytest.approx(n.logprob / len(n.tokens), abs=1e-5)
        assert len(n.tokens) >= len(p.tokens) or n.score >= p.logprob / len(p.tokens) - 1e-6


def test_bad_arguments():
    dec = tiny_decoder()
    with pytest.raises(ValueError):
        beam_search(dec, torch.randn(1, 4, 8), beam_size=0, max_len=3)
    with pytest.raises(ValueError):
        decode(dec, torch.randn(1, 4, 8), mode="nucleus")
