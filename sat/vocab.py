"""The caption tokenizer and the word vocabulary shared by training and inference.

:func:`tokenize` (``sat/tokenizer.py``) is the one rule that turns a caption into words: the
PTB rule of the official COCO evaluation, so that the vocabulary, the training targets, the
validation BLEU and the official test references all agree.

The vocabulary maps words to integer ids with four fixed special tokens at the
front (``<pad>`` = 0, ``<start>`` = 1, ``<end>`` = 2, ``<unk>`` = 3).  It is built
once from the training captions, saved next to a checkpoint as a small JSON file
and loaded again by the inference code, so the file format is validated strictly.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from .atomic import write_json
from .tokenizer import tokenize

__all__ = ["PAD", "START", "END", "UNK", "SPECIALS", "tokenize", "Vocab"]

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS: tuple[str, ...] = (PAD, START, END, UNK)

FORMAT_NAME = "sat-vocab"
FORMAT_VERSION = 1

@dataclass
class Vocab:
    """Index <-> word mapping with the special tokens at ids 0..3.

    ``itos`` is the index-to-string list; ``max_len`` is the longest caption
    (in words, excluding ``<start>``/``<end>``) that :meth:`encode` produces.
    """

    itos: list[str]
    max_len: int
    _stoi: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.itos, (list, tuple)):
            raise ValueError(f"itos must be a list of str, got {type(self.itos).__name__}")
        # NOTE: copy so that a caller mutating its own list later cannot put
        # ``itos`` and the derived ``stoi`` out of step.
        self.itos = list(self.itos)
        bad = [t for t in self.itos if not isinstance(t, str) or not t]
        if bad:
            raise ValueError(f"itos must contain non-empty strings only, got {bad[:3]!r}")
        if tuple(self.itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(
                f"itos must start with the special tokens {list(SPECIALS)}, "
                f"got {self.itos[: len(SPECIALS)]!r}"
            )
        stoi: dict[str, int] = {}
        for i, tok in enumerate(self.itos):
            if tok in stoi:
                raise ValueError(f"duplicate token {tok!r} at ids {stoi[tok]} and {i}")
            stoi[tok] = i
        # NOTE: bool is a subclass of int; ``max_len=True`` is surely a bug.
        if isinstance(self.max_len, bool) or not isinstance(self.max_len, int):
            raise ValueError(f"max_len must be an int, got {self.max_len!r}")
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {self.max_len}")
        self._stoi = stoi

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        captions: Iterable[list[str]],
        *,
        min_freq: int = 5,
        max_size: int | None = None,
        max_len: int = 20,
    ) -> Vocab:
        """Build a vocabulary from tokenised captions.

        Words occurring at least ``min_freq`` times are kept, ordered by
        descending count and then alphabetically (so the result does not depend
        on the order of ``captions``).  ``max_size`` caps the number of
        non-special words.  Tokens equal to a special token are ignored.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be >= 0 or None, got {max_size}")
        counts: Counter[str] = Counter()
        for caption in captions:
            if isinstance(caption, str):
                # NOTE: a bare string would be counted character by character.
                raise TypeError("captions must be lists of tokens, not strings")
            counts.update(caption)
        for special in SPECIALS:
            counts.pop(special, None)
        counts.pop("", None)
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq),
            key=lambda w: (-counts[w], w),
        )
        if max_size is not None:
            words = words[:max_size]
        return cls(itos=[*SPECIALS, *words], max_len=max_len)

    # ------------------------------------------------------------- accessors
    @property
    def stoi(self) -> Mapping[str, int]:
        """Read-only word -> id mapping."""
        return MappingProxyType(self._stoi)

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def start_id(self) -> int:
        return 1

    @property
    def end_id(self) -> int:
        return 2

    @property
    def unk_id(self) -> int:
        return 3

    # ------------------------------------------------------- encode / decode
    def encode(self, tokens: list[str]) -> list[int]:
        """Return ``[<start>] + ids + [<end>]``; unknown words map to ``<unk>``, no padding.

        A caption longer than ``max_len`` words is cut to ``max_len`` and gets NO ``<end>``:
        it did not end there, and a target ``<end>`` would teach the model to stop mid-sentence.
        (The trainer leaves such captions out altogether and counts them.)
        """
        if isinstance(tokens, str):
            raise TypeError("encode expects a list of tokens, not a string")
        unk = self.unk_id
        ids = [self._stoi.get(t, unk) for t in tokens[: self.max_len]]
        return [self.start_id, *ids] + ([self.end_id] if len(tokens) <= self.max_len else [])

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Turn ids back into words.

        Stops at the first ``<end>``, drops ``<pad>`` and ``<start>`` and keeps
        ``<unk>`` as the literal string ``"<unk>"``.  Accepts any iterable of
        integer-like values (Python ints, numpy or 0-d torch integers).
        """
        words: list[str] = []
        n = len(self.itos)
        for raw in ids:
            i = int(raw)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            if not 0 <= i < n:
                raise ValueError(f"id {i} is outside the vocabulary (size {n})")
            words.append(self.itos[i])
        return words

    # --------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "max_len": self.max_len,
            "itos": list(self.itos),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Vocab:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on malformed input."""
        if not isinstance(d, Mapping):
            raise ValueError(f"vocab data must be a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT_NAME:
            raise ValueError(f"not a vocab file: format is {d.get('format')!r}, expected {FORMAT_NAME!r}")
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported vocab version {d.get('version')!r} (expected {FORMAT_VERSION})")
        missing = [k for k in ("itos", "max_len") if k not in d]
        if missing:
            raise ValueError(f"vocab data lacks key(s) {missing}")
        itos = d["itos"]
        if not isinstance(itos, list):
            raise ValueError(f"'itos' must be a list, got {type(itos).__name__}")
        return cls(itos=itos, max_len=d["max_len"])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the vocabulary as UTF-8 JSON (atomically, via a temp file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # NOTE: write-then-rename so an interrupted save never leaves a
        # truncated vocab next to a checkpoint.
        write_json(path, self.to_dict(), ensure_ascii=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocab:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a valid vocab JSON file ({exc})") from exc
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
