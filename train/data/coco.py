"""MS COCO captions in the official layout (``--dataset coco``).

2014 layout (used when present)::

    ROOT/train2014/COCO_train2014_<12-digit id>.jpg
    ROOT/val2014/COCO_val2014_<12-digit id>.jpg
    ROOT/annotations/captions_train2014.json
    ROOT/annotations/captions_val2014.json

2017 layout: ``train2017/``, ``val2017/`` and ``annotations/captions_{train,val}2017.json`` with
file names ``<12-digit id>.jpg``. Each captions file is the official format::

    {"images": [{"id": 391895, "file_name": "...", ...}, ...],
     "annotations": [{"image_id": 391895, "id": 770337, "caption": "A man ..."}, ...]}

Splits: official train -> train; official val is shuffled with the seed (ids sorted first)
and cut in two halves, the first -> val, the second -> test. With ``--annotations
dataset_coco.json`` Karpathy's splits are used instead (matched by COCO id, restval -> train),
which is what the paper's numbers are measured on. The image id is ``str(COCO id)``, as in
the Karpathy loader, so feature caches of the two agree.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from .common import (MALFORMED_LINE, MISSING_IMAGE, NO_SPLIT, CaptionGrouper, LoadedDataset, SkipLog,
                     layout_error, listed_names)
from .karpathy import SPLIT_ALIASES

YEARS = ("2014", "2017")
OFFICIAL_SPLITS = ("train", "val")


def _pairs(root: Path, year: str) -> dict[str, tuple[Path, Path]]:
    """Official split -> (image folder, captions file) for the pairs of `year` that exist."""
    out = {}
    for split in OFFICIAL_SPLITS:
        folder = root / f"{split}{year}"
        ann = root / "annotations" / f"captions_{split}{year}.json"
        if folder.is_dir() and ann.is_file():
            out[split] = (folder, ann)
    return out


def _read_json(path: Path) -> Any:
    try:
        with path.open("r", encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def read_captions_file(path: Path, folder: Path, grouper: CaptionGrouper, log: SkipLog
                       ) -> dict[str, Path]:
    """Add the captions of one official file to `grouper`; returns image id -> image path."""
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path}: expected the COCO captions format with 'images' and 'annotations' lists")
    paths: dict[str, Path] = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            log.skip(MALFORMED_LINE, f"images[{i}] has no 'id'/'file_name'")
            continue
        paths[str(img["id"])] = folder / img["file_name"]
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str) \
                or str(ann.get("image_id")) not in paths:
            log.skip(MALFORMED_LINE, f"annotations[{i}] has no caption or an unknown image_id")
            continue
        grouper.add(str(ann["image_id"]), ann["caption"])
    return paths


def read_karpathy_coco(path: Path) -> tuple[dict[str, str], int]:
    """COCO id -> train/val/test from Karpathy's ``dataset_coco.json``, and the restval count."""
    data = _read_json(path)
    try:
        images = data["images"]
        splits = {str(img["cocoid"]): SPLIT_ALIASES[img["split"]] for img in images}
        restval = sum(1 for img in images if img["split"] == "restval")
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: not Karpathy's dataset_coco.json (every image needs 'cocoid' and a "
                         f"train/val/test/restval 'split'; {type(e).__name__}: {e})") from None
    return splits, restval


def load_coco(root: Path, *, annotations: str | None = None, seed: int = 0) -> LoadedDataset:
    """COCO captions from the official 2014 (preferred) or 2017 layout; see the module docstring."""
    year, pairs = next(((y, p) for y in YEARS if (p := _pairs(root, y))), (None, {}))
    if year is None:
        raise layout_error("coco", "train2014/, val2014/ and annotations/captions_{train,val}2014.json "
                                   "(or the same with 2017)", root)
    notes = [f"layout: COCO {year} ({', '.join(f'{s}{year}/' for s in pairs)})"]
    absent = [s for s in OFFICIAL_SPLITS if s not in pairs]
    if absent:
        notes.append(f"note: no {absent[0]}{year}/ + annotations/captions_{absent[0]}{year}.json pair; "
                     f"its images are not loaded")

    log = SkipLog(root / "annotations")
    grouper = CaptionGrouper(log)
    official: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for split, (folder, ann) in pairs.items():
        log.source = str(ann)
        found = read_captions_file(ann, folder, grouper, log)
        paths.update(found)
        official.update({i: split for i in found})

    # NOTE: one directory listing per folder instead of 120k stat calls.
    listings = {folder: listed_names(folder) for folder, _ in pairs.values()}
    usable: list[str] = []
    for image_id in grouper.image_ids():
        p = paths[image_id]
        if p.name not in listings[p.parent]:
            log.skip(MISSING_IMAGE, f"{p.parent.name}/{p.name} ({grouper.captions_text(image_id)})")
        else:
            usable.append(image_id)

    if annotations:
        karpathy = Path(annotations)
        if not karpathy.is_file():
            raise ValueError(f"coco: --annotations {karpathy} is not a file")
        splits, restval = read_karpathy_coco(karpathy)
        notes.append(f"splits: Karpathy's {karpathy.name}, matched by COCO id; {restval:,} restval "
                     f"images folded into train")
    else:
        splits = {i: "train" for i in usable if official[i] == "train"}
        val_ids = sorted((i for i in usable if official[i] == "val"), key=lambda s: (len(s), s))
        random.Random(seed).shuffle(val_ids)
        half = (len(val_ids) + 1) // 2
        splits.update({i: "val" for i in val_ids[:half]})
        splits.update({i: "test" for i in val_ids[half:]})
        notes.append(f"splits: train{year} -> train; val{year} shuffled with seed {seed} and halved: "
                     f"{half:,} -> val, {len(val_ids) - half:,} -> test (pass --annotations "
                     f"dataset_coco.json for Karpathy's split, as in the paper)")

    records = []
    for image_id in usable:
        if image_id not in splits:
            log.skip(NO_SPLIT, f"COCO id {image_id} is not in the split file")
            continue
        records.append(grouper.record(image_id, paths[image_id], splits[image_id], official_split=official[image_id]))
    return LoadedDataset(records, root, log.as_dict(), name="coco", notes=notes)
