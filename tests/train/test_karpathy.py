"""Tests for train.data.karpathy (Karpathy-split JSON reader)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from train.data.karpathy import ImageRecord, load_karpathy, load_karpathy_with_stats, split_records


def _sent(raw: str | None = None, tokens: list[str] | None = None, sentid: int = 0) -> dict[str, Any]:
    s: dict[str, Any] = {"imgid": 0, "sentid": sentid}
    if raw is not None:
        s["raw"] = raw
    s["tokens"] = tokens if tokens is not None else (raw or "").lower().split()
    return s


COCO = {
    "dataset": "coco",
    "images": [
        {
            "filepath": "val2014",
            "filename": "COCO_val2014_000000391895.jpg",
            "imgid": 0,
            "split": "test",
            "cocoid": 391895,
            "sentids": [0, 1],
            "sentences": [_sent("A man's bike, parked."), _sent("Well-lit street at NIGHT")],
        },
        {
            "filepath": "val2014",
            "filename": "COCO_val2014_000000522418.jpg",
            "imgid": 1,
            "split": "restval",
            "cocoid": 522418,
            "sentids": [2],
            "sentences": [_sent("A woman cutting a cake.")],
        },
        {
            "filepath": "train2014",
            "filename": "COCO_train2014_000000000009.jpg",
            "imgid": 2,
            "split": "train",
            "cocoid": 9,
            "sentids": [3, 4],
            "sentences": [_sent("...", tokens=[]), _sent("Food on a plate")],
        },
        {
            "filepath": "val2014",
            "filename": "COCO_val2014_000000000042.jpg",
            "imgid": 3,
            "split": "val",
            "cocoid": 42,
            "sentids": [5],
            "sentences": [_sent(". , !", tokens=[])],  # no usable caption -> skipped
        },
    ],
}

FLICKR = {
    "dataset": "flickr8k",
    "images": [
        {
            "filename": "1000268201_693b08cb0e.jpg",
            "imgid": 0,
            "split": "train",
            "sentids": [0],
            "sentences": [{"tokens": ["A", "child", "in", "a", "pink", "dress"], "imgid": 0, "sentid": 0}],
        },
        {
            "filename": "1001773457_577c3a7d70.jpg",
            "imgid": 1,
            "split": "val",
            "sentids": [1],
            "sentences": [_sent("A black dog and a spotted dog are fighting")],
        },
        {"filename": "empty.jpg", "imgid": 2, "split": "test", "sentids": [], "sentences": []},
    ],
}


def _write(tmp_path: Path, data: Any, name: str = "dataset.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_coco_paths_ids_and_splits(tmp_path: Path) -> None:
    path = _write(tmp_path, COCO, "dataset_coco.json")
    records, stats = load_karpathy_with_stats(path)
    assert [r.image_id for r in records] == ["391895", "522418", "9"]
    assert records[0].path == tmp_path / "val2014" / "COCO_val2014_000000391895.jpg"
    assert records[0].path.is_absolute()
    assert [r.split for r in records] == ["test", "train", "train"]  # restval -> train
    assert stats == {"empty caption": 2, "no captions": 1}


def test_image_root_override(tmp_path: Path) -> None:
    path = _write(tmp_path, COCO)
    root = tmp_path / "images"
    records = load_karpathy(path, image_root=root)
    assert records[2].path == root / "train2014" / "COCO_train2014_000000000009.jpg"


def test_tokenization_and_raw(tmp_path: Path) -> None:
    records = load_karpathy(_write(tmp_path, COCO))
    first = records[0]
    # the official PTB rule (sat.vocab.tokenize): clitics split, hyphenated words kept
    assert first.captions == (("a", "man", "'s", "bike", "parked"), ("well-lit", "street", "at", "night"))
    assert first.raw == ("A man's bike, parked.", "Well-lit street at NIGHT")
    # the empty caption is dropped from both captions and raw, which stay aligned
    third = records[2]
    assert third.captions == (("food", "on", "a", "plate"),)
    assert third.raw == ("Food on a plate",)


def test_flickr_without_filepath(tmp_path: Path) -> None:
    path = _write(tmp_path, FLICKR, "dataset_flickr8k.json")
    records, stats = load_karpathy_with_stats(path)
    assert [r.image_id for r in records] == ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg"]
    assert records[0].path == tmp_path / "1000268201_693b08cb0e.jpg"
    # tokens-only sentence: lower-cased tokens, raw rebuilt from tokens
    assert records[0].captions == (("a", "child", "in", "a", "pink", "dress"),)
    assert records[0].raw == ("A child in a pink dress",)
    assert stats == {"empty caption": 0, "no captions": 1}


def test_split_records(tmp_path: Path) -> None:
    records = load_karpathy(_write(tmp_path, COCO))
    assert [r.image_id for r in split_records(records, "train")] == ["522418", "9"]
    assert [r.image_id for r in split_records(records, "test")] == ["391895"]
    assert split_records(records, "val") == []
    with pytest.raises(ValueError):
        split_records(records, "restval")


def test_extra_keys_kept(tmp_path: Path) -> None:
    data = {
        "dataset": "scenes",
        "meta": {"generator": "v1"},
        "images": [
            {
                "filename": "scene_000.png",
                "imgid": 0,
                "split": "train",
                "sentences": [_sent("A red circle left of a blue square")],
                "objects": [{"shape": "circle", "color": "red"}],
                "mask": "masks/scene_000.png",
            }
        ],
    }
    (record,) = load_karpathy(_write(tmp_path, data, "dataset_scenes.json"))
    assert record.extra["objects"] == [{"shape": "circle", "color": "red"}]
    assert record.extra["mask"] == "masks/scene_000.png"
    assert record.extra["imgid"] == 0
    assert "sentences" not in record.extra and "filename" not in record.extra


def test_records_are_hashable_and_frozen(tmp_path: Path) -> None:
    records = load_karpathy(_write(tmp_path, COCO))
    assert len(set(records)) == len(records)
    with pytest.raises(AttributeError):
        records[0].split = "val"  # type: ignore[misc]
    assert isinstance(records[0], ImageRecord)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("{oops", "not valid JSON"),
        ([1, 2], "'images' list"),
        ({"dataset": "coco"}, "'images' list"),
        ({"images": [{"split": "train", "sentences": []}]}, r"images\[0\].*filename"),
        ({"images": [{"filename": "a.jpg", "split": "train"}]}, r"a\.jpg.*sentences"),
        ({"images": [{"filename": "a.jpg", "split": "dev", "sentences": []}]}, "unknown split 'dev'"),
        ({"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"x": 1}]}]}, "sentence 0"),
        ({"images": [{"filename": "../a.jpg", "split": "train", "sentences": []}]}, "inside the image root"),
        (
            {"images": [{"filename": "a.jpg", "split": "train", "sentences": [_sent("x")]}] * 2},
            "duplicate image id 'a.jpg'",
        ),
    ],
)
def test_malformed(tmp_path: Path, data: Any, match: str) -> None:
    path = tmp_path / "bad_dataset.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=match) as info:
        load_karpathy(path)
    assert "bad_dataset.json" in str(info.value)


def test_load_dataset_karpathy_checks_images_and_states_restval(tmp_path: Path) -> None:
    from PIL import Image

    from train.data import load_dataset, summarize

    (tmp_path / "dataset_coco.json").write_text(json.dumps(COCO), encoding="utf-8")
    for entry in COCO["images"][1:]:  # the first (test) image is not on disk
        (tmp_path / entry["filepath"]).mkdir(exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / entry["filepath"] / entry["filename"])
    with pytest.warns(UserWarning, match="COCO_val2014_000000391895.jpg"):
        loaded = load_dataset("karpathy", tmp_path, verbose=False)
    assert [(r.image_id, r.split) for r in loaded.records] == [("522418", "train"), ("9", "train")]
    assert loaded.skipped == {"missing image file": 1, "empty caption": 2, "no captions": 1}
    text = summarize(loaded)
    assert "1 restval images folded into train" in text and "1 image (missing image file)" in text
