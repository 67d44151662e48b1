"""Fast sentence-level CIDEr-D (Vedantam et al. 2015) for SCST rewards, and BLEU-4 as an alternative.

CIDEr-D of a caption c against its image's references S = {s_1 … s_m}, n-grams of order n = 1…4:

    g_n(x) = tf(x) · (log N − log max(1, df(ngram)))            tf-idf weights (df: images whose refs hold it)
    CIDEr-D_n(c, S) = 1/m Σ_j e^{−(l_c − l_j)² / 2σ²} · Σ_k min(g_k(c), g_k(s_j)) g_k(s_j) / (‖g(c)‖ ‖g(s_j)‖)
    CIDEr-D(c, S) = 10 · 1/4 Σ_n CIDEr-D_n(c, S),   σ = 6

exactly as pycocoevalcap's `Cider` scorer computes it (the clipped numerator, the Gaussian length
penalty, ×10; its "length" is the caption's count of bigrams, reproduced here), so the scores equal
it to float rounding (tests/train/test_cider.py). The difference is where the work happens:
document frequencies come once from a fixed corpus — the *training* references for rewards — and
each image's references are turned into a (refs × n-grams) weight matrix once and cached, so a
sampled caption costs one gather and a few numpy reductions against all its references at once.

Captions are lists of tokens from `sat.vocab.tokenize` (the vocabulary's tokenizer, the PTB rule the
official scorer uses), hypotheses the vocabulary's words of the sampled ids.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, Sequence

import numpy as np

Tokens = Sequence[str]


def ngram_counts(words: Tokens, n: int = 4) -> Counter:
    """Counts of every 1…n-gram (tuples of words) of one caption."""
    words = list(words)
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


class CiderD:
    """CIDEr-D with document frequencies fixed by `corpus` (per image, its reference captions).

    `scores(hyps, refs, keys)` scores each hypothesis against its own references; `keys` (say the
    feature-cache rows) name the reference sets so each is prepared only once.
    """

    def __init__(self, corpus: Sequence[Sequence[Tokens]], *, n: int = 4, sigma: float = 6.0):
        if not corpus:
            raise ValueError("CIDEr-D needs at least one image's references for its document frequencies")
        self.n, self.sigma = n, sigma
        df: Counter = Counter()
        for refs in corpus:
            df.update({g for r in refs for g in ngram_counts(r, n)})
        self.df = df
        self.log_n = math.log(float(len(corpus)))  # pycocoevalcap's ref_len
        self._refs: dict[Hashable, tuple] = {}

    def _weights(self, counts: Counter) -> tuple[dict, np.ndarray, int]:
        """tf-idf weights {ngram: g}, norms (n,), length (bigram count, as pycocoevalcap)."""
        w, norm = {}, np.zeros(self.n)
        for g, tf in counts.items():
            w[g] = float(tf) * (self.log_n - math.log(max(1.0, self.df.get(g, 0.0))))
            norm[len(g) - 1] += w[g] ** 2
        length = sum(tf for g, tf in counts.items() if len(g) == 2)
        return w, np.sqrt(norm), length

    def _prepare(self, refs: Sequence[Tokens]) -> tuple:
        """One image's references → (column of each n-gram, weights (m, G), norms (m, n), lengths (m,))."""
        cooked = [self._weights(ngram_counts(r, self.n)) for r in refs]
        column: dict = {}
        for w, _, _ in cooked:
            for g in w:
                column.setdefault(g, len(column))
        W = np.zeros((len(refs), len(column)))  # (m, G)
        for j, (w, _, _) in enumerate(cooked):
            W[j, [column[g] for g in w]] = list(w.values())
        norms = np.stack([c[1] for c in cooked]) if cooked else np.zeros((0, self.n))  # (m, n)
        lengths = np.array([c[2] for c in cooked], dtype=float)  # (m,)
        return column, W, norms, lengths

    def score(self, hyp: Tokens, refs: Sequence[Tokens], key: Hashable | None = None) -> float:
        """CIDEr-D of one caption against its references (prepared once per `key` when given)."""
        if key is None:
            prepared = self._prepare(refs)
        else:
            prepared = self._refs.get(key)
            if prepared is None:
                prepared = self._refs[key] = self._prepare(refs)
        column, W, ref_norms, ref_lengths = prepared
        m = W.shape[0]
        if m == 0:
            raise ValueError("CIDEr-D needs at least one reference per image")
        w, norm, length = self._weights(ngram_counts(hyp, self.n))
        if not w:
            return 0.0
        grams = list(w)
        order = np.array([len(g) - 1 for g in grams])  # (g,)
        h = np.array([w[g] for g in grams])  # (g,)
        cols = np.array([column.get(g, -1) for g in grams])  # (g,)
        seen = cols >= 0
        R = np.zeros((m, len(grams)))  # (m, g): each reference's weight of the hypothesis's n-grams
        R[:, seen] = W[:, cols[seen]]
        num = np.minimum(h, R) * R  # (m, g): clipped by the reference, as CIDEr-D
        onehot = np.zeros((len(grams), self.n))
        onehot[np.arange(len(grams)), order] = 1.0
        val = num @ onehot  # (m, n)
        denom = norm[None, :] * ref_norms  # (m, n)
        val = np.where(denom != 0, val / np.where(denom != 0, denom, 1.0), val)
        penalty = np.exp(-((length - ref_lengths) ** 2) / (2 * self.sigma ** 2))  # (m,)
        return float((val * penalty[:, None]).mean(1).sum() / m * 10.0)

    def scores(self, hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]],
               keys: Sequence[Hashable] | None = None) -> np.ndarray:
        """CIDEr-D of each hypothesis against its references → (P,) float64."""
        if len(hyps) != len(refs) or (keys is not None and len(keys) != len(hyps)):
            raise ValueError("need one reference set (and key) per hypothesis")
        return np.array([self.score(h, r, None if keys is None else keys[i])
                         for i, (h, r) in enumerate(zip(hyps, refs))], dtype=np.float64)


def bleu4_sentences(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]]) -> np.ndarray:
    """Sentence-level BLEU-4 of each hypothesis (pycocoevalcap's scorer, its own smoothing) → (P,)."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    if len(hyps) != len(refs):
        raise ValueError("need one reference set per hypothesis")
    scorer = BleuScorer(n=4)
    for h, rs in zip(hyps, refs):
        scorer += (" ".join(h), [" ".join(r) for r in rs])
    _, per_sentence = scorer.compute_score(option="closest", verbose=0)
    return np.array(per_sentence[3], dtype=np.float64)


REWARDS = ("cider", "bleu4")
