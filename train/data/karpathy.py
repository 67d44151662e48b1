"""Reader for Karpathy-split caption files.

Handles ``dataset_coco.json``, ``dataset_flickr8k.json``,
``dataset_flickr30k.json`` and our generated ``dataset_scenes.json``, which all
share one layout::

    {"dataset": "coco",
     "images": [{"filepath": "val2014",            # optional (COCO only)
                 "filename": "COCO_val2014_000000391895.jpg",
                 "imgid": 0, "cocoid": 391895,      # cocoid: COCO only
                 "split": "train" | "val" | "test" | "restval",
                 "sentences": [{"tokens": [...], "raw": "A man ...",
                                "imgid": 0, "sentid": 0}, ...],
                 "sentids": [...]},
                ...]}

Every caption is re-tokenized from its ``raw`` text with :func:`sat.vocab.tokenize` (the
official evaluation's PTB rule) so that all datasets follow the same tokenisation rule.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from sat.vocab import tokenize

__all__ = ["SPLITS", "SPLIT_ALIASES", "ImageRecord", "load_karpathy", "load_karpathy_with_stats", "split_records"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
# NOTE: "restval" is the part of COCO val2014 that Karpathy's split did not put
# into val/test; the usual practice (and the SAT / Karpathy papers) trains on
# it, so it is folded into "train" here.
SPLIT_ALIASES: dict[str, str] = {"train": "train", "val": "val", "test": "test", "restval": "train"}
"""Karpathy split names → ours: the one alias table of every loader (flickr, coco, csv add theirs to it)."""

# Per-image keys consumed into ImageRecord fields; everything else goes to ``extra``.
_CONSUMED_KEYS = frozenset({"filepath", "filename", "split", "sentences", "sentids"})

SKIP_EMPTY_CAPTION = "empty caption"
SKIP_NO_CAPTIONS = "no captions"


@dataclass(frozen=True)
class ImageRecord:
    """One image with its tokenized reference captions (``sat.vocab.tokenize``).

    ``image_id`` is ``str(cocoid)`` when the entry has a ``cocoid`` and
    otherwise the image's relative POSIX path (``filepath/filename`` or just
    ``filename``), which is unique within a dataset file and stable across runs.
    ``raw`` holds the original sentence strings, aligned with ``captions``.
    ``extra`` keeps any other per-image keys (``imgid``, ``cocoid``, and e.g.
    ``objects``/``mask`` in the scenes dataset), plus ``karpathy_split: "restval"``
    for images whose split was folded into ``"train"``.
    """

    image_id: str
    path: Path
    split: str
    captions: tuple[tuple[str, ...], ...]
    raw: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class _EntryError(ValueError):
    """Problem with one image entry; re-raised with the file name attached."""


def _relative_path(entry: dict[str, Any]) -> PurePosixPath:
    filename = entry.get("filename")
    if not isinstance(filename, str) or not filename:
        raise _EntryError("missing or empty 'filename'")
    filepath = entry.get("filepath")
    if filepath is not None and not isinstance(filepath, str):
        raise _EntryError(f"'filepath' must be a string, got {type(filepath).__name__}")
    rel = PurePosixPath(filepath or "", filename.replace("\\", "/"))
    # NOTE: the JSON decides which files get opened, so refuse anything that
    # would escape image_root.
    if rel.is_absolute() or ".." in rel.parts:
        raise _EntryError(f"image path {str(rel)!r} must be relative and stay inside the image root")
    return rel


def _image_id(entry: dict[str, Any], rel: PurePosixPath) -> str:
    cocoid = entry.get("cocoid")
    if cocoid is None:
        return str(rel)
    if isinstance(cocoid, bool) or not isinstance(cocoid, (int, str)) or str(cocoid) == "":
        raise _EntryError(f"'cocoid' must be an int or non-empty string, got {cocoid!r}")
    return str(cocoid)


def _caption(sentence: Any, index: int) -> tuple[tuple[str, ...], str]:
    """Return (tokens, raw text) for one sentence entry."""
    if not isinstance(sentence, dict):
        raise _EntryError(f"sentence {index} must be an object, got {type(sentence).__name__}")
    raw = sentence.get("raw")
    if isinstance(raw, str):
        return tuple(tokenize(raw)), raw
    tokens = sentence.get("tokens")
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        # NOTE: without "raw" we re-tokenize the joined tokens: for the
        # Karpathy files (already lower-cased, punctuation-free) this is just
        # lower-casing, and it keeps the one-rule-for-all-datasets guarantee.
        text = " ".join(tokens)
        return tuple(tokenize(text)), text
    raise _EntryError(f"sentence {index} has neither a string 'raw' nor a list of string 'tokens'")


def _parse_entry(
    entry: Any, image_root: Path, stats: dict[str, int]
) -> ImageRecord | None:
    if not isinstance(entry, dict):
        raise _EntryError(f"must be an object, got {type(entry).__name__}")
    rel = _relative_path(entry)
    split = entry.get("split")
    if split not in SPLIT_ALIASES:
        raise _EntryError(f"unknown split {split!r} (expected one of {sorted(SPLIT_ALIASES)})")
    sentences = entry.get("sentences")
    if not isinstance(sentences, list):
        raise _EntryError("missing 'sentences' list")

    captions: list[tuple[str, ...]] = []
    raws: list[str] = []
    for i, sentence in enumerate(sentences):
        tokens, raw = _caption(sentence, i)
        if not tokens:
            stats[SKIP_EMPTY_CAPTION] += 1
            continue
        captions.append(tokens)
        raws.append(raw)
    if not captions:
        stats[SKIP_NO_CAPTIONS] += 1
        return None

    return ImageRecord(
        image_id=_image_id(entry, rel),
        path=image_root.joinpath(*rel.parts),
        split=SPLIT_ALIASES[split],
        captions=tuple(captions),
        raw=tuple(raws),
        extra={k: v for k, v in entry.items() if k not in _CONSUMED_KEYS}
        | ({"karpathy_split": split} if split != SPLIT_ALIASES[split] else {}),
    )


def load_karpathy_with_stats(
    json_path: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
) -> tuple[list[ImageRecord], dict[str, int]]:
    """Load a Karpathy-format file and report what was skipped.

    Returns the records in file order and a dict counting skipped items by
    reason: ``"empty caption"`` (sentences that tokenize to no words) and
    ``"no captions"`` (images left without any caption; these are dropped).
    ``image_root`` defaults to the folder holding ``json_path``.
    Raises ``ValueError`` naming the file when the JSON is malformed.
    """
    json_path = Path(json_path)
    root = Path(image_root) if image_root is not None else json_path.parent
    root = root.absolute()

    try:
        with json_path.open("r", encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{json_path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{json_path}: expected a JSON object with an 'images' list")

    stats = {SKIP_EMPTY_CAPTION: 0, SKIP_NO_CAPTIONS: 0}
    records: list[ImageRecord] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(data["images"]):
        try:
            record = _parse_entry(entry, root, stats)
        except _EntryError as exc:
            name = entry.get("filename") if isinstance(entry, dict) else None
            where = f"images[{index}]" + (f" ({name})" if isinstance(name, str) else "")
            raise ValueError(f"{json_path}: {where}: {exc}") from None
        if record is None:
            continue
        if record.image_id in seen:
            raise ValueError(
                f"{json_path}: images[{index}]: duplicate image id {record.image_id!r} "
                f"(first seen at images[{seen[record.image_id]}])"
            )
        seen[record.image_id] = index
        records.append(record)
    return records, stats


def load_karpathy(
    json_path: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
) -> list[ImageRecord]:
    """Load a Karpathy-format file; see :func:`load_karpathy_with_stats`."""
    records, _ = load_karpathy_with_stats(json_path, image_root=image_root)
    return records


def split_records(records: Iterable[ImageRecord], split: str) -> list[ImageRecord]:
    """Records of one split (``"train"``, ``"val"`` or ``"test"``), order kept.

    ``"restval"`` is not accepted: those images already carry ``"train"``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected one of {list(SPLITS)})")
    return [r for r in records if r.split == split]
