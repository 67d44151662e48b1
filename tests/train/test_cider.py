"""The fast CIDEr-D equals pycocoevalcap's Cider scorer; BLEU-4 per sentence equals its BleuScorer."""
import random

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from sat.vocab import tokenize
from train.cider import CiderD, bleu4_sentences

WORDS = "a the red blue green small large circle square triangle left right of above below and is".split()


def _corpus(n_images=300, seed=0):
    rng = random.Random(seed)
    refs, hyps = [], []
    for i in range(n_images):
        rs = [[rng.choice(WORDS) for _ in range(rng.randint(1, 12))] for _ in range(rng.randint(1, 5))]
        refs.append(rs)
        kind = i % 4
        if kind == 0:
            hyps.append(list(rng.choice(rs)))  # a copy of a reference
        elif kind == 1:
            hyps.append(rng.choice(rs)[: rng.randint(0, 4)])  # a prefix, possibly empty or one word
        else:
            hyps.append([rng.choice(WORDS) for _ in range(rng.randint(1, 16))])
    return refs, hyps


def test_equals_pycocoevalcap_cider_to_1e6():
    refs, hyps = _corpus()
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    mean, official = Cider().compute_score(gts, res)
    ours = CiderD(refs).scores(hyps, refs, keys=list(range(len(refs))))
    assert official.shape == ours.shape == (300,)
    assert np.abs(ours - official).max() < 1e-6
    assert abs(ours.mean() - mean) < 1e-6
    assert ours.max() > 1.0 and (ours == 0).any()  # the corpus spans good and empty captions


def test_tokenized_real_captions_and_cache():
    raw = [["A red circle is left of a blue square.", "The red circle, left of the square!"],
           ["Two green triangles.", "A pair of green triangles above the circle"]]
    refs = [[tokenize(c) for c in rs] for rs in raw]
    hyps = [tokenize("a red circle left of the blue square"), tokenize("green triangles")]
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    _, official = Cider().compute_score(gts, {i: [" ".join(h)] for i, h in enumerate(hyps)})
    scorer = CiderD(refs)
    first = scorer.scores(hyps, refs, keys=["a", "b"])
    again = scorer.scores(hyps, refs, keys=["a", "b"])  # from the cached reference matrices
    np.testing.assert_allclose(first, official, atol=1e-6)
    np.testing.assert_array_equal(first, again)


def test_document_frequencies_fixed_by_the_corpus():
    refs, hyps = _corpus(50, seed=1)
    train = CiderD(refs[:25])  # rewards: df from the training references only
    a = train.scores(hyps[25:], refs[25:])
    b = CiderD(refs[25:]).scores(hyps[25:], refs[25:])
    assert not np.allclose(a, b)  # the idf differs, so would the scores


def test_bleu4_sentences_equals_pycocoevalcap():
    refs, hyps = _corpus(60, seed=2)
    hyps = [h or ["a"] for h in hyps]
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    _, per = Bleu(4).compute_score(gts, res, verbose=0)
    np.testing.assert_allclose(bleu4_sentences(hyps, refs), per[3], atol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError):
        CiderD([])
    with pytest.raises(ValueError):
        CiderD([[["a"]]]).scores([["a"]], [])
