"""One tokenizer end to end: model-side tokens (sat.vocab.tokenize) against the official metrics.

Real-style captions (clitics, hyphens, digits, commas, upper case, unicode): (a) an image's first
reference in the model's own tokens scores BLEU-4 1.0 against all its references, (b) the
references survive tokenize -> Vocab.encode -> Vocab.decode, (c) the quick validation BLEU-4
equals the official BLEU-4 on the same captions.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from sat.vocab import Vocab, tokenize
from train.evaluate import bleu4_quick
from train.metrics import CaptionScorer, java_available

pytestmark = [pytest.mark.skipif(not java_available(), reason="the official metrics need Java"),
              pytest.mark.slow]  # NOTE: starts Java (PTB tokenizer, METEOR)

REFS: dict[str, list[str]] = {
    "1": ["A man's well-worn T-shirt hangs on a line.", "A T-shirt that's drying outside, in the sun.",
          "The man\u2019s shirt is hanging on a clothesline."],
    "2": ["Two dogs don't want to share a 3-foot stick.", "2 dogs can't agree on the stick.",
          "Dogs' tug-of-war over a stick, in the park."],
    "3": ["A caf\u00e9 with 1,000 cups of cr\u00e8me br\u00fbl\u00e9e at 10:30.", "People eat dessert at a caf\u00e9.",
          "A busy CAF\u00c9 serving 2nd helpings."],
    "4": ["It's a 3-year-old girl's birthday party.", "A girl, aged 3, blows out candles.",
          "Kids at a birthday party (with cake)."],
    "5": ["A double-decker bus on Main St. in the U.S.", "A red bus they're riding downtown.",
          "The bus, number 42, drives past shops."],
    "6": ["A \u201csmart\u201d phone on a wooden desk \u2014 next to a laptop.", "A phone and a laptop on a desk.",
          "Someone's desk: phone, laptop & mug."],
    "7": ["Z\u00fcrich's old-fashioned tram at 5 p.m.", "A blue tram in Z\u00fcrich, Switzerland.",
          "A tram that isn't crowded, in the evening."],
    "8": ["A woman who's holding a 50% OFF sign.", "A sign says 50% off, held by a woman.",
          "A lady with a sale sign; it's red."],
}


@pytest.fixture(scope="module")
def scorer() -> Iterator[CaptionScorer]:
    with CaptionScorer() as s:
        yield s


def test_a_first_reference_in_model_tokens_scores_one(scorer: CaptionScorer) -> None:
    hyps = {k: " ".join(tokenize(refs[0])) for k, refs in REFS.items()}
    assert any("'s" in h.split() for h in hyps.values()) and any("-" in h for h in hyps.values())
    scores = scorer.score(REFS, hyps)
    assert scores["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert scores["bleu1"] == pytest.approx(1.0, abs=1e-6)


def test_b_encode_decode_round_trip_keeps_bleu(scorer: CaptionScorer) -> None:
    vocab = Vocab.build((tokenize(c) for refs in REFS.values() for c in refs), min_freq=1, max_len=30)
    hyps = {k: " ".join(vocab.decode(vocab.encode(tokenize(refs[0])))) for k, refs in REFS.items()}
    assert "<unk>" not in " ".join(hyps.values())
    assert scorer.score(REFS, hyps)["bleu4"] >= 0.99


def test_c_quick_bleu_equals_official_bleu(scorer: CaptionScorer) -> None:
    keys = list(REFS)
    # other captions as hypotheses, in the model's own tokens: a score well away from 0 and 1
    words = [tokenize(REFS[keys[(i + 1) % len(keys)]][1] if i % 2 else REFS[k][2]) for i, k in enumerate(keys)]
    official = scorer.score(REFS, {k: " ".join(w) for k, w in zip(keys, words)})["bleu4"]
    quick = bleu4_quick([REFS[k] for k in keys], words)
    assert 0.05 < official < 0.95
    assert quick == pytest.approx(official, abs=1e-6)
    # the loaders hand over tokens already (ImageRecord.captions): the same number
    assert bleu4_quick([[tokenize(r) for r in REFS[k]] for k in keys], words) == pytest.approx(official, abs=1e-6)
