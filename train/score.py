"""`python -m train score`: the official COCO metrics for captions from any system.

    python -m train score --dataset coco --data-root data/coco --split test --captions results.json

RESULTS.json is the COCO caption results format, a list of ``{"image_id": ..., "caption": "..."}``
(``image_id`` an int or a string; ``"file_name"``, the image file's name, may stand instead of it).
The captions are scored against every reference of their image in the dataset's split, exactly as
`python -m train evaluate` scores a model: raw strings on both sides, PTB-tokenized by the official
path (`train/metrics.py`). Entries for images that are not in the split are counted and listed,
never silently dropped; so are the split's images that got no caption (they are not scored).
A malformed file (not JSON, not a list, an entry without a caption or an image, the same image
twice) raises `ValueError` with a one-line message (the CLI prints `error: ...` and exits 2).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from train.data.karpathy import ImageRecord, load_karpathy

PREVIEW = 5
"""How many unknown / uncaptioned image ids the summary lists."""


@dataclass
class Matched:
    """Captions of a results file resolved against the images of one split."""
    hypotheses: dict[str, str]
    """record image_id -> caption, for the split's images that got one."""
    unknown: list[str] = field(default_factory=list)
    """The entries' ids (as written) that name no image of the split."""
    uncaptioned: list[str] = field(default_factory=list)
    """The split's images that got no caption."""


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a COCO caption results file, validated (ValueError with one line otherwise)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a JSON file ({type(e).__name__}: {e})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {{\"image_id\": ..., \"caption\": ...}} objects, "
                         f"got a {type(data).__name__}")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {i} is a {type(entry).__name__}, not an object")
        if not isinstance(entry.get("caption"), str):
            raise ValueError(f"{path}: entry {i} has no string 'caption'")
        image_id = entry.get("image_id")
        if image_id is None and not isinstance(entry.get("file_name"), str):
            raise ValueError(f"{path}: entry {i} has neither 'image_id' nor 'file_name'")
        if image_id is not None and (isinstance(image_id, bool) or not isinstance(image_id, (int, str))):
            raise ValueError(f"{path}: entry {i}: 'image_id' must be an int or a string, got {image_id!r}")
    return data


def match_results(entries: list[dict[str, Any]], records: list[ImageRecord], root: Path, *,
                  source: str = "results") -> Matched:
    """Resolve each entry to one record of `records` (one split) by image_id or file name."""
    by_id = {r.image_id: r for r in records}
    by_name: dict[str, list[ImageRecord]] = {}
    for r in records:
        names = {r.path.name}
        try:
            names.add(PurePosixPath(r.path.relative_to(root)).as_posix())
        except ValueError:
            pass
        for n in names:
            by_name.setdefault(n, []).append(r)
    hyps: dict[str, str] = {}
    first: dict[str, int] = {}
    unknown: list[str] = []
    for i, entry in enumerate(entries):
        if entry.get("image_id") is not None:
            key = str(entry["image_id"])
            rec = by_id.get(key)
        else:
            key = entry["file_name"]
            found = by_name.get(key, [])
            if len(found) > 1:
                raise ValueError(f"{source}: entry {i}: file_name {key!r} names {len(found)} images of the "
                                 f"split; use 'image_id' ({', '.join(r.image_id for r in found[:3])})")
            rec = found[0] if found else None
        if rec is None:
            unknown.append(key)
            continue
        if rec.image_id in first:
            raise ValueError(f"{source}: entries {first[rec.image_id]} and {i} are both for image "
                             f"{rec.image_id!r} (one caption per image)")
        first[rec.image_id] = i
        hyps[rec.image_id] = entry["caption"]
    uncaptioned = [r.image_id for r in records if r.image_id not in hyps]
    return Matched(hyps, unknown, uncaptioned)


def _records(dataset: str, data_root: str | Path | None, annotations: str | None, seed: int
             ) -> tuple[list[ImageRecord], Path]:
    if dataset == "scenes":
        from sat.paths import REPO
        root = Path(data_root) if data_root else REPO / "data" / "scenes"
        ann = Path(annotations) if annotations else root / "dataset_scenes.json"
        if not ann.is_file():
            raise ValueError(f"scenes: no {ann} (generate it with `python -m train scenes --data-root {root}`)")
        return load_karpathy(ann, image_root=root), root
    from train.data import load_dataset
    if not data_root:
        raise ValueError(f"--dataset {dataset} needs --data-root (the dataset's folder)")
    loaded = load_dataset(dataset, Path(data_root), annotations=annotations, seed=seed)
    return loaded.records, loaded.root


def _listing(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:PREVIEW])
    return f" ({shown}{', ...' if len(ids) > PREVIEW else ''})" if ids else ""


def run_score(*, dataset: str, data_root: str | Path | None, captions: str | Path, split: str = "test",
              annotations: str | None = None, seed: int = 0, json_out: str | Path | None = None) -> dict:
    """Score a results file on a dataset split with the official metrics; print and return them."""
    from train.evaluate import write_metrics
    from train.metrics import caption_metrics

    entries = read_results(captions)
    records, root = _records(dataset, data_root, annotations, seed)
    in_split = [r for r in records if r.split == split]
    if not in_split:
        raise ValueError(f"{dataset}: the {split!r} split has no images")
    m = match_results(entries, in_split, root, source=str(captions))
    elsewhere = sum(1 for k in m.unknown if k in {r.image_id for r in records})
    print(f"{captions}: {len(entries)} captions; matched {len(m.hypotheses)} of the {len(in_split)} "
          f"{split} images; unknown ids {len(m.unknown)}{_listing(m.unknown)}"
          + (f", {elsewhere} of them in another split" if elsewhere else "")
          + f"; images of the split with no caption {len(m.uncaptioned)}{_listing(m.uncaptioned)}")
    if not m.hypotheses:
        raise ValueError(f"no caption in {captions} is for an image of the {split!r} split")
    by_id = {r.image_id: r for r in in_split}
    refs = {k: list(by_id[k].raw) for k in m.hypotheses}
    metrics = caption_metrics(refs, m.hypotheses)
    metrics.update({"n_images": len(m.hypotheses), "dataset": dataset, "split": split,
                    "unknown_ids": len(m.unknown), "uncaptioned_images": len(m.uncaptioned)})
    write_metrics(metrics, json_out)
    return metrics
