"""Tests for train.metrics (pycocoevalcap wrapper).

The real-scoring tests share one CaptionScorer so the METEOR JVM (several
seconds to start: it loads a paraphrase table) is started only once.  The
lifecycle tests swap pycocoevalcap's Meteor for a fake backed by a cheap
subprocess, so they check process clean-up without paying for a JVM.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import train.metrics as metrics
from train.metrics import METRIC_KEYS, CaptionScorer, caption_metrics, java_available

SENTENCES = [
    "A man riding a brown horse on a dirt road.",
    "Two dogs playing with a frisbee in the snow.",
    "A plate of pasta with tomato sauce and basil.",
    "A red double decker bus parked next to a building.",
    "A young girl flying a kite at the beach.",
    "An old clock tower under a cloudy sky.",
]
WRONG = [
    "A kitchen with a white refrigerator.",
    "A cat sleeping on a laptop keyboard.",
    "People skiing down a snowy mountain.",
    "A giraffe eating leaves from a tall tree.",
    "A bowl of fruit on a wooden table.",
    "A surfer riding a big wave.",
]


@pytest.fixture(scope="module")
def scorer() -> Iterator[CaptionScorer]:
    s = CaptionScorer()
    yield s
    meteor = s._meteor
    s.close()
    if meteor is not None:  # the real JVM must be gone after close()
        assert meteor.meteor_p.poll() is not None


@pytest.mark.slow
def test_perfect_hypotheses(scorer: CaptionScorer) -> None:
    refs = {f"img{i}": [s] * 5 for i, s in enumerate(SENTENCES)}
    hyps = {k: v[0] for k, v in refs.items()}
    scores = scorer.score(refs, hyps)
    assert tuple(scores) == METRIC_KEYS
    assert all(isinstance(v, float) for v in scores.values())
    assert scores["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert scores["bleu1"] == pytest.approx(1.0, abs=1e-6)
    assert scores["rouge_l"] == pytest.approx(1.0)
    assert scores["meteor"] > 0.95
    assert scores["cider"] > 9.0  # CIDEr-D of an exact match is 10


@pytest.mark.slow
def test_wrong_scores_lower_on_every_metric(scorer: CaptionScorer) -> None:
    refs = {
        f"img{i}": [s, s.replace("A ", "The ", 1), s.lower().rstrip(".")]
        for i, s in enumerate(SENTENCES)
    }
    right = {k: v[0] for k, v in refs.items()}
    wrong = {k: WRONG[i] for i, k in enumerate(refs)}
    good, bad = scorer.score(refs, right), scorer.score(refs, wrong)
    for key in METRIC_KEYS:
        assert bad[key] < good[key], key


@pytest.mark.slow
def test_empty_hypothesis_allowed(scorer: CaptionScorer) -> None:
    refs = {f"img{i}": [s] for i, s in enumerate(SENTENCES[:3])}
    hyps = {"img0": "", "img1": SENTENCES[1], "img2": "..."}  # "..." is empty after PTB
    scores = scorer.score(refs, hyps)
    assert set(scores) == set(METRIC_KEYS)
    assert 0.0 < scores["rouge_l"] < 1.0


@pytest.mark.slow
def test_line_breaks_do_not_misalign(scorer: CaptionScorer) -> None:
    # \r and \u2028 are line breaks to the Java tokenizer; unsanitised they
    # shift captions onto the wrong image.
    refs = {f"img{i}": [s] for i, s in enumerate(SENTENCES[:3])}
    hyps = {k: v[0].replace(" ", "\r", 1).replace(" ", "\u2028", 1) for k, v in refs.items()}
    scores = scorer.score(refs, hyps)
    assert scores["bleu4"] == pytest.approx(1.0, abs=1e-6)


def test_mismatched_ids() -> None:
    with pytest.raises(ValueError, match=r"no hypothesis for 'b'.*no references for 'c'"):
        caption_metrics({"a": ["x y"], "b": ["x y"]}, {"a": "x y", "c": "x y"})


@pytest.mark.parametrize(
    ("refs", "hyps"),
    [
        ({}, {}),
        ({"a": "a dog on a bed"}, {"a": "a dog"}),  # bare string instead of a list
        ({"a": []}, {"a": "a dog"}),
        ({"a": ["   "]}, {"a": "a dog"}),
        ({"a": ["a dog"]}, {"a": None}),
    ],
)
def test_invalid_inputs(refs: Any, hyps: Any) -> None:
    with pytest.raises(ValueError):
        caption_metrics(refs, hyps)


def test_missing_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics.shutil, "which", lambda name, *a, **k: None)
    assert not java_available()
    with pytest.raises(RuntimeError, match="Java runtime.*default-jre-headless"):
        caption_metrics({"a": ["a dog"]}, {"a": "a dog"})


# ----------------------------------------------- JVM lifecycle (fake Meteor)
class _FakeMeteor:
    """Stands in for pycocoevalcap's Meteor: same attributes, cheap process."""

    instances: list[_FakeMeteor] = []
    fail = False

    def __init__(self) -> None:
        self.meteor_p = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lock = threading.Lock()
        _FakeMeteor.instances.append(self)

    def compute_score(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        self.lock.acquire()  # mimics pycocoevalcap: no try/finally around the lock
        if _FakeMeteor.fail:
            raise ValueError("could not convert string to float: b''")
        self.lock.release()
        return 0.5, [0.5] * len(gts)


@pytest.fixture
def fake_meteor(monkeypatch: pytest.MonkeyPatch) -> type[_FakeMeteor]:
    import pycocoevalcap.meteor.meteor as meteor_module

    monkeypatch.setattr(meteor_module, "Meteor", _FakeMeteor)
    monkeypatch.setattr(_FakeMeteor, "instances", [])
    monkeypatch.setattr(_FakeMeteor, "fail", False)
    return _FakeMeteor


def test_caption_metrics_closes_jvm(fake_meteor: type[_FakeMeteor]) -> None:
    scores = caption_metrics({"a": ["a dog"], "b": ["a cat"]}, {"a": "a dog", "b": "a cat"})
    assert scores["meteor"] == 0.5
    (m,) = fake_meteor.instances
    assert m.meteor_p.poll() is not None  # process ended, not leaked
    assert not m.lock.locked()


def test_meteor_failure_releases_lock_and_process(fake_meteor: type[_FakeMeteor]) -> None:
    fake_meteor.fail = True
    with pytest.raises(RuntimeError, match="METEOR"):
        caption_metrics({"a": ["a dog"], "b": ["a cat"]}, {"a": "a dog", "b": "a cat"})
    (m,) = fake_meteor.instances
    assert m.meteor_p.poll() is not None
    # pycocoevalcap's Meteor.__del__ acquires this lock; left held, GC would hang.
    assert not m.lock.locked()


def test_closed_scorer_refuses(fake_meteor: type[_FakeMeteor]) -> None:
    s = CaptionScorer()
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        s.score({"a": ["a dog"]}, {"a": "a dog"})


def test_java_available_matches_path() -> None:
    import shutil

    assert java_available() == (shutil.which("java") is not None)
