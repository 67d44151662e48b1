"""Tests for sat.vocab: the Vocab class (the tokenizer it re-exports: tests/sat/test_tokenizer.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from sat.vocab import END, PAD, START, UNK, Vocab


# ------------------------------------------------------------------- build
CAPTIONS = [
    ["a", "dog", "runs"],
    ["a", "dog", "sits"],
    ["a", "cat", "sits"],
    ["the", "cat", "runs"],
    ["a", "bird"],
]
# counts: a=4, dog=2, cat=2, runs=2, sits=2, the=1, bird=1


def test_specials_first() -> None:
    v = Vocab.build(CAPTIONS, min_freq=1)
    assert v.itos[:4] == [PAD, START, END, UNK]
    assert (v.pad_id, v.start_id, v.end_id, v.unk_id) == (0, 1, 2, 3)
    assert [v.stoi[t] for t in (PAD, START, END, UNK)] == [0, 1, 2, 3]


def test_build_threshold_and_order() -> None:
    v = Vocab.build(CAPTIONS, min_freq=2)
    # sorted by (-count, word): a(4), then the count-2 words alphabetically
    assert v.itos[4:] == ["a", "cat", "dog", "runs", "sits"]
    assert len(v) == 9
    v1 = Vocab.build(CAPTIONS, min_freq=1)
    assert set(v1.itos[4:]) == {"a", "cat", "dog", "runs", "sits", "the", "bird"}
    assert v1.itos[-2:] == ["bird", "the"]
    assert Vocab.build(CAPTIONS, min_freq=5).itos == [PAD, START, END, UNK]


def test_build_deterministic_under_shuffle() -> None:
    ref = Vocab.build(CAPTIONS, min_freq=1)
    for seed in range(5):
        shuffled = [list(c) for c in CAPTIONS]
        random.Random(seed).shuffle(shuffled)
        assert Vocab.build(shuffled, min_freq=1).itos == ref.itos


def test_build_max_size() -> None:
    v = Vocab.build(CAPTIONS, min_freq=1, max_size=3)
    assert v.itos[4:] == ["a", "cat", "dog"]
    assert len(Vocab.build(CAPTIONS, min_freq=1, max_size=0)) == 4


def test_build_ignores_specials_and_rejects_strings() -> None:
    v = Vocab.build([["<unk>", "x"], ["<pad>", "x"]], min_freq=1)
    assert v.itos == [PAD, START, END, UNK, "x"]
    with pytest.raises(TypeError):
        Vocab.build(["a dog"], min_freq=1)  # type: ignore[list-item]
    with pytest.raises(ValueError):
        Vocab.build(CAPTIONS, min_freq=0)


# ---------------------------------------------------------- encode / decode
def test_encode_decode_round_trip() -> None:
    v = Vocab.build(CAPTIONS, min_freq=1, max_len=10)
    ids = v.encode(["a", "dog", "runs"])
    assert ids[0] == v.start_id and ids[-1] == v.end_id
    assert ids[1:-1] == [v.stoi["a"], v.stoi["dog"], v.stoi["runs"]]
    assert v.decode(ids) == ["a", "dog", "runs"]


def test_unknown_word() -> None:
    v = Vocab.build(CAPTIONS, min_freq=2)
    ids = v.encode(["the", "dog", "zebra"])
    assert ids == [1, 3, v.stoi["dog"], 3, 2]
    assert v.decode(ids) == [UNK, "dog", UNK]


def test_truncation_has_no_end() -> None:
    """A caption cut at max_len did not end there: no <end> target (it would teach stopping mid-sentence)."""
    v = Vocab.build(CAPTIONS, min_freq=1, max_len=2)
    ids = v.encode(["a", "dog", "runs", "a", "cat"])
    assert ids == [v.start_id, v.stoi["a"], v.stoi["dog"]]
    assert v.decode(ids) == ["a", "dog"]
    assert v.encode(["a", "dog"])[-1] == v.end_id  # exactly max_len words still end


def test_decode_stops_at_end_and_drops_pad() -> None:
    v = Vocab.build(CAPTIONS, min_freq=1)
    a, dog = v.stoi["a"], v.stoi["dog"]
    assert v.decode([1, a, 0, dog, 2, a, a, 0, 0]) == ["a", "dog"]
    assert v.decode([a, dog]) == ["a", "dog"]  # no <end>: decode everything
    with pytest.raises(ValueError):
        v.decode([1, len(v), 2])


# ------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "itos",
    [
        [START, PAD, END, UNK, "a"],  # specials out of order
        [PAD, START, END],  # missing <unk>
        [PAD, START, END, UNK, "a", "a"],  # duplicate
        [PAD, START, END, UNK, ""],  # empty token
    ],
)
def test_invalid_itos(itos: list[str]) -> None:
    with pytest.raises(ValueError):
        Vocab(itos=itos, max_len=5)


@pytest.mark.parametrize("max_len", [0, -1, True, 2.5])
def test_invalid_max_len(max_len: object) -> None:
    with pytest.raises(ValueError):
        Vocab(itos=[PAD, START, END, UNK], max_len=max_len)  # type: ignore[arg-type]


# -------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path: Path) -> None:
    v = Vocab.build(CAPTIONS + [["caf\u00e9"]] * 3, min_freq=1, max_len=7)
    path = tmp_path / "sub" / "vocab.json"
    v.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "sat-vocab" and data["version"] == 1
    assert data["max_len"] == 7 and data["itos"] == v.itos
    assert "caf\u00e9" in path.read_text(encoding="utf-8")  # stored as UTF-8, not escaped
    w = Vocab.load(path)
    assert w == v
    assert dict(w.stoi) == dict(v.stoi)
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp files left


def test_dict_round_trip() -> None:
    v = Vocab.build(CAPTIONS, min_freq=2, max_len=3)
    assert Vocab.from_dict(v.to_dict()) == v


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2, 3]",
        '{"itos": ["<pad>", "<start>", "<end>", "<unk>"], "max_len": 5}',  # no format
        '{"format": "sat-vocab", "version": 2, "itos": ["<pad>", "<start>", "<end>", "<unk>"], "max_len": 5}',
        '{"format": "sat-vocab", "version": 1, "max_len": 5}',
        '{"format": "sat-vocab", "version": 1, "itos": "abc", "max_len": 5}',
        '{"format": "sat-vocab", "version": 1, "itos": ["<pad>", "<start>", "<end>", "<unk>", 7], "max_len": 5}',
        '{"format": "sat-vocab", "version": 1, "itos": ["<pad>", "<start>", "<end>", "<unk>"], "max_len": "5"}',
    ],
)
def test_load_malformed(tmp_path: Path, content: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="vocab.json"):
        Vocab.load(path)


def test_bundled_vocabularies_load_and_are_fixed_points_of_tokenize() -> None:
    """The shipped vocab.json files still load, and the PTB rule leaves every word as it is (the
    scenes captions have no clitics, hyphens or digits), so the new rule rebuilds the same vocabulary."""
    from sat.vocab import tokenize

    paths = sorted((Path(__file__).resolve().parents[2] / "assets" / "weights").glob("*/vocab.json"))
    assert paths
    for p in paths:
        v = Vocab.load(p)
        words = v.itos[len((PAD, START, END, UNK)):]
        assert words and tokenize(" ".join(words)) == words, p
