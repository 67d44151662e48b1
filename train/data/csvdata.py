"""Your own captions as a CSV or JSON Lines file (``--dataset csv``).

The file is ``--annotations FILE`` or else the single ``*.csv`` / ``*.jsonl`` in the root::

    image,caption,split                      # header required; 'split' is optional
    photos/dog.jpg,A dog runs on the beach.,train
    photos/dog.jpg,"A brown dog, running",train
    photos/cat.png,A cat asleep on a sofa,test

    {"image": "photos/dog.jpg", "caption": "A dog runs on the beach.", "split": "train"}

Image paths are relative to the annotation file (absolute paths work too); rows naming the same
image are grouped into one record whose id is the path as written (``./`` dropped). Split values:
train, val (or valid, validation, dev), test, restval (-> train). With no split values at all the
images are split by seed: 90% / 5% / 5%, at least one val and one test image when there are 3 or
more. Bad rows are skipped, counted and warned about with their line number: no image ->
'malformed line', an empty caption -> 'empty caption', an unknown split value or a split that
contradicts an earlier row of the same image -> 'malformed line', invalid JSON -> 'malformed
line', the same image and caption twice -> 'duplicate line'.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from .common import (EMPTY_CAPTION, MALFORMED_LINE, MISSING_IMAGE, NO_SPLIT, CaptionGrouper, LoadedDataset,
                     SkipLog, layout_error, seeded_split)
from .karpathy import SPLIT_ALIASES

SPLIT_VALUES = {**SPLIT_ALIASES, "valid": "val", "validation": "val", "dev": "val"}
VAL_FRAC = TEST_FRAC = 0.05
SUFFIXES = (".csv", ".jsonl")

Row = tuple[int, Any, Any, Any]
"""(line number, image, caption, split) as read; any of the last three may be None."""


def find_annotation_file(root: Path, annotations: str | None) -> Path:
    """`--annotations` if given, else the one *.csv / *.jsonl in `root`."""
    if annotations:
        path = Path(annotations)
        if not path.is_file():
            raise ValueError(f"csv: --annotations {path} is not a file")
        if path.suffix.lower() not in SUFFIXES:
            raise ValueError(f"csv: --annotations {path} must end in .csv or .jsonl")
        return path
    found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if len(found) != 1:
        what = "none" if not found else "several: " + ", ".join(p.name for p in found)
        raise layout_error("csv", f"one *.csv or *.jsonl file (columns image, caption[, split]; {what}; "
                                  "or pass --annotations FILE)", root)
    return found[0]


def _csv_rows(path: Path, log: SkipLog) -> Iterator[Row]:
    # NOTE: newline='' so quoted captions may span lines; reader.line_num then gives the line
    # a row ends on, which is what an editor shows for the row.
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        names = [h.strip().lower() for h in header or []]
        if "image" not in names or "caption" not in names:
            raise ValueError(f"{path}: the first line must be a header naming the columns 'image' and "
                             f"'caption' (and optionally 'split'); got {header!r}")
        col = {n: names.index(n) for n in ("image", "caption", "split") if n in names}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            yield (reader.line_num, *(row[col[n]] if n in col and col[n] < len(row) else None
                                      for n in ("image", "caption", "split")))


def _jsonl_rows(path: Path, log: SkipLog) -> Iterator[Row]:
    with path.open("r", encoding="utf-8-sig") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                log.skip(MALFORMED_LINE, f"invalid JSON ({e.msg})", line=n)
                continue
            if not isinstance(obj, dict):
                log.skip(MALFORMED_LINE, f"expected a JSON object, got {type(obj).__name__}", line=n)
                continue
            yield n, obj.get("image"), obj.get("caption"), obj.get("split")


def _image_key(value: Any) -> str | None:
    """Normalised relative (or absolute) POSIX path, or None when the cell is unusable."""
    if not isinstance(value, str) or not value.strip():
        return None
    key = str(PurePosixPath(value.strip().replace("\\", "/")))
    return None if key in (".", "") else key


def load_csv(root: Path, *, annotations: str | None = None, seed: int = 0) -> LoadedDataset:
    """Records from an image/caption[/split] CSV or JSONL file; see the module docstring."""
    path = find_annotation_file(root, annotations)
    base = path.parent
    log = SkipLog(path)
    grouper = CaptionGrouper(log)
    image_split: dict[str, str] = {}
    rows = _jsonl_rows(path, log) if path.suffix.lower() == ".jsonl" else _csv_rows(path, log)
    for line, image, caption, split in rows:
        key = _image_key(image)
        if key is None:
            log.skip(MALFORMED_LINE, "no image path", line=line)
            continue
        if caption is None or not isinstance(caption, str):
            log.skip(MALFORMED_LINE if caption is None else EMPTY_CAPTION,
                     f"no caption for {key}" if caption is None else f"caption for {key} is not text", line=line)
            continue
        split_value = str(split).strip().lower() if split is not None else ""
        if split_value:
            if split_value not in SPLIT_VALUES:
                log.skip(MALFORMED_LINE, f"unknown split value {split!r} (use train, val or test)", line=line)
                continue
            earlier = image_split.setdefault(key, SPLIT_VALUES[split_value])
            if earlier != SPLIT_VALUES[split_value]:
                log.skip(MALFORMED_LINE, f"{key} is in {earlier} on an earlier line, {split_value} here",
                         line=line)
                continue
        grouper.add(key, caption, line=line)

    usable = []
    for key in grouper.image_ids():
        # NOTE: one exists() per distinct image, not per row; an absolute key replaces `base`.
        if os.path.exists(base / key):
            usable.append(key)
        else:
            log.skip(MISSING_IMAGE, f"{key} ({grouper.captions_text(key)}) not found under {base}")

    if image_split:
        splits = image_split
        notes = [f"splits: the file's split column ({path.name})"]
    else:
        splits = seeded_split(usable, seed=seed, val_frac=VAL_FRAC, test_frac=TEST_FRAC)
        notes = [f"splits: none in {path.name}, so seeded (seed {seed}): 90% train / 5% val / 5% test, "
                 "at least 1 val and 1 test image when there are 3 or more"]
    records = []
    for key in usable:
        if key not in splits:
            log.skip(NO_SPLIT, f"{key} has no split value on any of its rows")
            continue
        records.append(grouper.record(key, base / key, splits[key]))
    return LoadedDataset(records, base, log.as_dict(), name="csv", notes=notes)
