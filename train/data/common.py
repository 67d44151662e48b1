"""Pieces shared by the real-dataset loaders (flickr, coco, csv, karpathy).

* `LoadedDataset` — what every loader returns: records, the root, skip counts and notes.
* `SkipLog` — counts entries left out by reason and warns (with line numbers) about the first few.
* `CaptionGrouper` — collects `(image, caption)` lines into one `ImageRecord` per image,
  tokenizing captions with `sat.vocab.tokenize` and dropping duplicate lines.
* `seeded_split` — the deterministic split used when a dataset ships without one.
* `layout_error` — the `ValueError` for a root that does not look like the dataset.
* `summarize` — the one-paragraph summary printed when a dataset is loaded.
"""
from __future__ import annotations

import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from sat.vocab import tokenize

from .karpathy import SPLITS, ImageRecord

# Skip reasons; the summary prints them in this order, with the unit each one counts.
MISSING_IMAGE = "missing image file"
UNREADABLE_IMAGE = "unreadable image"
EMPTY_CAPTION = "empty caption"
DUPLICATE_LINE = "duplicate line"
NO_SPLIT = "no split"
MALFORMED_LINE = "malformed line"
NO_CAPTIONS = "no captions"
REASON_UNITS: dict[str, str] = {
    MISSING_IMAGE: "image", NO_SPLIT: "image", NO_CAPTIONS: "image",
    EMPTY_CAPTION: "caption", DUPLICATE_LINE: "line", MALFORMED_LINE: "line",
}
WARN_LIMIT = 5
"""Per reason, how many individual warnings a `SkipLog` emits before it only counts."""


class DatasetWarning(UserWarning):
    """A line of an annotation file was skipped."""


@dataclass
class LoadedDataset:
    records: list[ImageRecord]
    root: Path
    skipped: dict[str, int] = field(default_factory=dict)
    """Entries left out, by reason (e.g. 'missing image file', 'empty caption')."""
    name: str = ""
    notes: list[str] = field(default_factory=list)
    """Human-readable facts for the summary: where the splits came from, what was folded."""


class SkipLog:
    """Counts skipped entries by reason; warns about the first `WARN_LIMIT` of each reason."""

    def __init__(self, source: str | os.PathLike[str] = "") -> None:
        self.source = str(source)
        self.counts: dict[str, int] = {}

    def skip(self, reason: str, detail: str = "", *, line: int | None = None, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n
        if self.counts[reason] - n < WARN_LIMIT and (detail or line is not None):
            where = f"{self.source}:{line}: " if line is not None else (f"{self.source}: " if self.source else "")
            warnings.warn(f"{where}skipped ({reason}) {detail}".rstrip(), DatasetWarning, stacklevel=3)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if v}


class CaptionGrouper:
    """Groups caption lines by image, keeping the first-seen image order.

    `add` tokenizes the caption; an empty one counts as 'empty caption', the same image+text
    seen twice counts as 'duplicate line'. `records` builds the `ImageRecord`s.
    """

    def __init__(self, log: SkipLog) -> None:
        self.log = log
        self._raw: dict[str, list[str]] = {}
        self._tokens: dict[str, list[tuple[str, ...]]] = {}
        self._seen: set[tuple[str, str]] = set()

    def add(self, image_id: str, raw: str, *, line: int | None = None) -> bool:
        """Add one caption; returns False when it was skipped."""
        raw = raw.strip()
        tokens = tuple(tokenize(raw))
        if not tokens:
            self.log.skip(EMPTY_CAPTION, f"for {image_id}", line=line)
            return False
        # NOTE: compare the stripped raw text, not the tokens: two captions differing only in
        # punctuation are both real annotations, an identical repeated line is a copy error.
        key = (image_id, raw)
        if key in self._seen:
            self.log.skip(DUPLICATE_LINE, f"{image_id}: {raw[:60]!r}", line=line)
            return False
        self._seen.add(key)
        self._raw.setdefault(image_id, []).append(raw)
        self._tokens.setdefault(image_id, []).append(tokens)
        return True

    def image_ids(self) -> list[str]:
        return list(self._raw)

    def n_captions(self, image_id: str) -> int:
        return len(self._raw.get(image_id, ()))

    def captions_text(self, image_id: str) -> str:
        """'1 caption' / '5 captions', for skip messages."""
        return _plural(self.n_captions(image_id), "caption")

    def record(self, image_id: str, path: Path, split: str, **extra: object) -> ImageRecord:
        return ImageRecord(image_id=image_id, path=path, split=split, captions=tuple(self._tokens[image_id]),
                           raw=tuple(self._raw[image_id]), extra=dict(extra))


def listed_names(folder: Path) -> set[str]:
    """File names in `folder` (one directory listing: cheap even for COCO's 80k files)."""
    # NOTE: one scandir instead of an exists() per image; on network drives this is the
    # difference between seconds and many minutes.
    with os.scandir(folder) as it:
        return {e.name for e in it}


def seeded_split(ids: Sequence[str], *, seed: int, val_frac: float, test_frac: float,
                 max_val: int | None = None, max_test: int | None = None) -> dict[str, str]:
    """Assign each id to train/val/test: sort, shuffle with `seed`, the last `n_test` go to test,
    the `n_val` before them to val, the rest to train.

    `n_val = round(len * val_frac)` (capped by `max_val`), likewise for test; with 3 or more
    ids both val and test get at least one. Independent of the input order.
    """
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n = len(order)
    n_val, n_test = round(n * val_frac), round(n * test_frac)
    if max_val is not None:
        n_val = min(n_val, max_val)
    if max_test is not None:
        n_test = min(n_test, max_test)
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    else:
        n_val = n_test = 0
    n_train = n - n_val - n_test
    out = {i: "train" for i in order[:n_train]}
    out.update({i: "val" for i in order[n_train:n_train + n_val]})
    out.update({i: "test" for i in order[n_train + n_val:]})
    return out


def describe_root(root: Path, limit: int = 12) -> str:
    """'foo/, bar.txt, ...' — what a folder holds, for error messages."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        return f"(cannot list: {e.strerror})"
    names = [e.name + ("/" if e.is_dir() else "") for e in entries if not e.name.startswith(".")]
    if not names:
        return "nothing"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def layout_error(name: str, looked_for: str, root: Path) -> ValueError:
    """The error for a root that does not match a layout: what was expected, what is there."""
    return ValueError(f"{name}: looked for {looked_for} in {root}; found: {describe_root(root)}")


def first_existing(root: Path, names: Iterable[str], *, want_dir: bool) -> Path | None:
    """The first of `names` under `root` that exists as a folder (`want_dir`) or a file."""
    for n in names:
        p = root / n
        if (p.is_dir() if want_dir else p.is_file()):
            return p
    return None


def _plural(n: int, unit: str) -> str:
    return f"{n:,} {unit}{'' if n == 1 else 's'}"


def summarize(loaded: LoadedDataset) -> str:
    """The load summary: totals, per split, skipped entries by reason, and the loader's notes."""
    recs = loaded.records
    n_caps = sum(len(r.captions) for r in recs)
    head = f"{loaded.name or 'dataset'} from {loaded.root}: {_plural(len(recs), 'image')}, {_plural(n_caps, 'caption')}"
    parts = []
    for s in SPLITS:
        rs = [r for r in recs if r.split == s]
        parts.append(f"{s} {_plural(len(rs), 'image')} / {_plural(sum(len(r.captions) for r in rs), 'caption')}")
    lines = [head, "  " + "; ".join(parts)]
    skipped = {k: v for k, v in loaded.skipped.items() if v}
    if skipped:
        order = list(REASON_UNITS) + sorted(set(skipped) - set(REASON_UNITS))
        items = [f"{_plural(skipped[k], REASON_UNITS.get(k, 'item'))} ({k})" for k in order if k in skipped]
        lines.append("  skipped: " + ", ".join(items))
    else:
        lines.append("  skipped: nothing")
    lines.extend(f"  {note}" for note in loaded.notes)
    lines.append(f"  ({UNREADABLE_IMAGE}s are counted later, when features are extracted)")
    return "\n".join(lines)
