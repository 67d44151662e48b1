"""Search: beam=1 equals greedy, beam equals brute force on a tiny vocabulary (with the length penalty
and n-gram bans), pruning by the penalised score, batching is exact, truncation is visible."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from sat.config import ModelConfig
from sat.decoders import create_decoder
from sat.search import SearchError, beam_search, decode, greedy, sample

PAD, START, END = 0, 1, 2


def tiny_decoder(vocab_size: int = 7, seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(encoder="test-tiny", encoder_dim=8, grid=(2, 2), vocab_size=vocab_size,
                      embed_dim=8, attention_dim=8, decoder_dim=16, dropout=0.0)
    dec = create_decoder(cfg).eval()
    with torch.no_grad():  # sharpen the output so sequences differ clearly in probability
        dec.out.weight.mul_(8.0)
    return dec


def walk(dec, feats, seq):
    """(log p(seq), log p of the next token after seq) under the model (its own log-softmax)."""
    mem = dec.prepare(feats)
    state = dec.init_state(mem)
    tok = torch.tensor([START])
    total = 0.0
    for y in seq:
        logits, _, state = dec.step(tok, state, mem)
        total += torch.log_softmax(logits, -1)[0, y].item()
        tok = torch.tensor([y])
    logits, _, _ = dec.step(tok, state, mem)
    return total, torch.log_softmax(logits, -1)[0]


def seq_logprob(dec, feats, seq):
    return walk(dec, feats, seq)[0]


def lp(n, alpha):
    """GNMT's length penalty, written out independently of sat.search."""
    return ((5 + n) / 6) ** alpha


def repeats(seq, n):
    """True if some n-gram occurs twice in seq."""
    grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
    return n > 0 and len(grams) != len(set(grams))


def brute_force(dec, feats, max_len, words, *, alpha=0.0, no_repeat=0):
    """Every caption the search may return, the best by log p / lp(|y|): ≤ max_len - 1 words then
    <end>, or max_len words then <end> when <end> is the model's best allowed token there, else the
    max_len words alone (cut). With no_repeat, captions repeating an n-gram are not captions."""
    best, best_score, best_lp = None, -math.inf, None
    for n in range(max_len + 1):
        for body in itertools.product(words, repeat=n):
            body = list(body)
            if repeats(body, no_repeat):
                continue
            total, nxt = walk(dec, feats, body)
            if n == max_len:  # the model's choice among allowed tokens (no pad/start, no banned word)
                allowed = {END} | {w for w in words if not repeats(body + [w], no_repeat)}
                choice = max(allowed, key=lambda w: nxt[w].item())
                seq = body + [END] if choice == END else body
            else:
                seq = body + [END]
            total += nxt[END].item() if seq[-1:] == [END] else 0.0
            score = total / lp(len(seq), alpha)
            if score > best_score:
                best, best_score, best_lp = seq, score, total
    return best, best_lp, best_score


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
@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_equals_brute_force(seed, alpha):
    dec = tiny_decoder(vocab_size=6, seed=seed)  # words: ids 3 (<unk>), 4, 5
    feats = torch.randn(1, 4, 8)
    max_len = 3
    best, best_lp, best_score = brute_force(dec, feats, max_len, words=[3, 4, 5], alpha=alpha)
    # 3 words, ≤ 3 of them, then <end> or cut: 40 sequences; a beam of 40 is exhaustive
    hyp = beam_search(dec, feats, beam_size=40, max_len=max_len, length_penalty=alpha, unk_id=None)[0]
    assert hyp.tokens == best
    assert hyp.logprob == pytest.approx(best_lp, abs=1e-4)
    assert hyp.score == pytest.approx(best_score, abs=1e-4)
    assert hyp.truncated == (best[-1] != END)
    assert sum(hyp.token_logprobs) == pytest.approx(hyp.logprob, abs=1e-6)


@torch.no_grad()
def test_the_length_penalty_changes_the_brute_force_winner():
    """The brute-force test above can fail: the penalty changes which caption is best."""
    winners = {}
    for seed in range(3):
        dec, feats = tiny_decoder(vocab_size=6, seed=seed), torch.randn(1, 4, 8)
        winners[seed] = [brute_force(dec, feats, 3, [3, 4, 5], alpha=a)[0] for a in (0.0, 3.0)]
    assert any(plain != penalised for plain, penalised in winners.values()), winners


@torch.no_grad()
@pytest.mark.parametrize("no_repeat", [1, 2])
@pytest.mark.parametrize("seed", [0, 3])
def test_beam_equals_brute_force_without_repeated_ngrams(seed, no_repeat):
    dec = tiny_decoder(vocab_size=6, seed=seed)
    feats = torch.randn(1, 4, 8)
    best, best_lp, _ = brute_force(dec, feats, 4, words=[3, 4, 5], alpha=0.5, no_repeat=no_repeat)
    hyp = beam_search(dec, feats, beam_size=150, max_len=4, length_penalty=0.5,
                      no_repeat_ngram_size=no_repeat, unk_id=None)[0]
    assert hyp.tokens == best and hyp.logprob == pytest.approx(best_lp, abs=1e-4)


def reference_beam(dec, feats, *, K, max_len, alpha, no_repeat=0):
    """Beam search written plainly (one image, Python lists, no early stop: it runs to max_len):
    each step keeps the K best of the finished captions and the live beams' extensions, all
    scored by log p / lp(|y|)."""
    live, done = [([], 0.0)], []  # (tokens, log p)
    for t in range(max_len + 1):
        cands = [(seq, total, True) for seq, total in done]
        for seq, total in live:
            _, nxt = walk(dec, feats, seq)
            nxt = nxt.clone()
            nxt[PAD] = nxt[START] = nxt[3] = -math.inf  # <unk> is id 3
            for w in range(nxt.numel()):
                if w != END and repeats(seq + [w], no_repeat):
                    nxt[w] = -math.inf
            if t == max_len:  # end if <end> is the best token, else cut
                if int(nxt.argmax()) == END:
                    cands.append((seq + [END], total + nxt[END].item(), True))
                else:
                    cands.append((seq, total, True))
                continue
            for w in range(nxt.numel()):
                if nxt[w] > -math.inf:
                    cands.append((seq + [w], total + nxt[w].item(), w == END))
        cands.sort(key=lambda c: c[1] / lp(len(c[0]), alpha), reverse=True)
        kept = cands[:K]
        done = [(s, x) for s, x, f in kept if f]
        live = [(s, x) for s, x, f in kept if not f]
        if not live:
            break
    seq, total = max(done, key=lambda d: d[1] / lp(len(d[0]), alpha))
    return seq, total


@torch.no_grad()
@pytest.mark.parametrize("alpha, no_repeat", [(0.0, 0), (0.8, 0), (2.0, 0), (4.0, 0), (1.0, 2)])
@pytest.mark.parametrize("K", [2, 3])
def test_pruning_uses_the_ranking_rule(K, alpha, no_repeat):
    """With a small beam (pruning at work), the batched search equals the plain reference that
    prunes by the penalised score and runs to max_len: so the early stop loses nothing."""
    dec = tiny_decoder(seed=15)  # NOTE: a seed where pruning by plain log p changes 5 of 8 captions (K 2, α 2)
    feats = torch.randn(8, 4, 8, generator=torch.Generator().manual_seed(15))
    hyps = beam_search(dec, feats, beam_size=K, max_len=6, length_penalty=alpha,
                       no_repeat_ngram_size=no_repeat)
    for i, hyp in enumerate(hyps):
        seq, total = reference_beam(dec, feats[i:i + 1], K=K, max_len=6, alpha=alpha, no_repeat=no_repeat)
        assert hyp.tokens == seq
        assert hyp.logprob == pytest.approx(total, abs=1e-4)
        assert hyp.score == pytest.approx(total / lp(len(seq), alpha), abs=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("alpha, no_repeat", [(0.0, 0), (1.5, 2)])
def test_batched_beam_equals_one_image_at_a_time(alpha, no_repeat):
    dec = tiny_decoder()
    feats = torch.randn(4, 4, 8)
    kw = dict(beam_size=3, max_len=8, length_penalty=alpha, no_repeat_ngram_size=no_repeat)
    together = beam_search(dec, feats, **kw)
    for i in range(4):
        alone = beam_search(dec, feats[i:i + 1], **kw)[0]
        assert (alone.tokens, alone.truncated) == (together[i].tokens, together[i].truncated)
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
    together = beam_search(dec, feats, beam_size=beam, max_len=8, unk_id=None)
    del dec.step
    assert sizes[0] == 12 * beam and min(sizes) < 12 * beam  # the batch shrank
    assert len({len(h.tokens) for h in together}) > 1
    for i in range(12):
        alone = beam_search(dec, feats[i:i + 1], beam_size=beam, max_len=8, unk_id=None)[0]
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
            assert (h.tokens[-1] == END) != h.truncated  # ended by the model, or cut at 2 words
            assert not h.truncated or (len(h.tokens) == 2 and END not in h.tokens)
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
@pytest.mark.parametrize("mode", ["greedy", "beam", "sample"])
def test_score_is_the_penalised_logprob(mode):
    dec = tiny_decoder(seed=4)
    feats = torch.randn(8, 4, 8)
    kw = dict(mode=mode, beam_size=5, max_len=8, generator=torch.Generator().manual_seed(0))
    for h in decode(dec, feats, length_penalty=0.0, **kw):
        assert h.score == pytest.approx(h.logprob, abs=1e-6)
    for h in decode(dec, feats, length_penalty=1.5, **kw):
        assert h.score == pytest.approx(h.logprob / ((5 + len(h.tokens)) / 6) ** 1.5, abs=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("alpha, no_repeat", [(0.0, 0), (2.0, 0), (1.0, 2)])
def test_beam_one_equals_greedy_with_options(alpha, no_repeat):
    dec = tiny_decoder(seed=2)
    feats = torch.randn(6, 4, 8)
    kw = dict(max_len=5, length_penalty=alpha, no_repeat_ngram_size=no_repeat)
    for g, b in zip(greedy(dec, feats, **kw), beam_search(dec, feats, beam_size=1, **kw)):
        assert (g.tokens, g.truncated) == (b.tokens, b.truncated)
        assert g.score == pytest.approx(b.score, abs=1e-5)


class Poisoned:
    """Wraps a decoder and overwrites some logits (NaN / inf), as broken weights would produce."""

    def __init__(self, dec, *, columns=slice(None), value=float("nan")):
        self.dec, self.columns, self.value = dec, columns, value

    def prepare(self, feats):
        return self.dec.prepare(feats)

    def init_state(self, memory):
        return self.dec.init_state(memory)

    def step(self, tokens, state, memory):
        logits, alpha, state = self.dec.step(tokens, state, memory)
        logits = logits.clone()
        logits[:, self.columns] = self.value
        return logits, alpha, state


@torch.no_grad()
def test_a_nan_logit_is_never_chosen():
    dec = tiny_decoder()
    feats = torch.randn(4, 4, 8)
    best = greedy(dec, feats, max_len=6)[0].tokens[0]  # the word greedy search picks first
    poisoned = Poisoned(dec, columns=best)
    for mode in ("greedy", "beam", "sample"):
        hyps = decode(poisoned, feats, mode=mode, beam_size=3, max_len=6,
                      generator=torch.Generator().manual_seed(0))
        for h in hyps:
            assert best not in h.tokens and (h.tokens[-1] == END) != h.truncated
            assert math.isfinite(h.logprob) and math.isfinite(h.score)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("mode", ["greedy", "beam", "sample"])
@torch.no_grad()
def test_no_finite_word_raises_search_error(mode, value):
    poisoned = Poisoned(tiny_decoder(), value=value)
    with pytest.raises(SearchError, match="no finite probability for any word at step 1"):
        decode(poisoned, torch.randn(3, 4, 8), mode=mode, beam_size=3, max_len=6,
               generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_temperature_must_be_finite_and_positive(temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        sample(tiny_decoder(), torch.randn(1, 4, 8), max_len=3, temperature=temperature)


@torch.no_grad()
@pytest.mark.parametrize("mode", ["greedy", "beam", "sample"])
def test_unk_is_never_generated(mode):
    """<unk> (id 3) is the model's favourite word here, yet no mode emits it; with unk_id=None it would."""
    UNK = 3
    dec = tiny_decoder(seed=1)
    with torch.no_grad():
        dec.out.bias[UNK] += 50.0
    feats = torch.randn(4, 4, 8)
    kw = dict(mode=mode, beam_size=3, max_len=5, generator=torch.Generator().manual_seed(0))
    allowed = decode(dec, feats, unk_id=None, **kw)
    assert any(UNK in h.tokens for h in allowed)
    for h in decode(dec, feats, **kw):
        assert UNK not in h.tokens and PAD not in h.tokens and START not in h.tokens
        assert len(h.tokens) >= 1 and all(math.isfinite(lp) for lp in h.token_logprobs)


@pytest.mark.slow
def test_compiled_decoder_step_decodes_as_eager():
    """`compile_step`: greedy, beam and steered decoding give eager's captions (and scores within
    float rounding) with the step under torch.compile."""
    import copy

    from sat.config import ModelConfig
    from sat.model import CaptionModel
    from sat.search import compile_step, decode

    torch.manual_seed(0)
    cfg = ModelConfig(encoder="test-tiny", encoder_dim=8, grid=(2, 2), vocab_size=12, embed_dim=8,
                      attention_dim=8, decoder_dim=16, dropout=0.0, max_len=6)
    eager = CaptionModel(cfg).eval()
    compiled = copy.deepcopy(eager)
    compile_step(compiled.decoder)
    assert compiled.decoder.step_compiled and compile_step(compiled.decoder) is compiled.decoder
    feats = eager.annotations(torch.randn(3, 8, 2, 2))
    from torch._dynamo.utils import counters
    graphs = counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        for mode, k in (("greedy", 1), ("beam", 3)):
            a = decode(eager.decoder, feats, mode=mode, beam_size=k, max_len=6)
            b = decode(compiled.decoder, feats, mode=mode, beam_size=k, max_len=6)
            assert [h.tokens for h in a] == [h.tokens for h in b], mode
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4), mode
    assert counters["stats"]["unique_graphs"] > graphs  # Dynamo really compiled the step
