"""COCO captions loader on tiny copies of the official 2014 and 2017 layouts."""
from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import pytest

from train.data import load_dataset, summarize

from .conftest import write_coco


def _load(root: Path, **kw):
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        return load_dataset("coco", root, verbose=False, **kw)


def test_coco_2014_layout_keeps_every_caption(coco_root) -> None:
    root, info = coco_root
    loaded = _load(root)
    by_id = {r.image_id: r for r in loaded.records}
    assert len(by_id) == 11 and info["missing"] not in by_id
    first = by_id["9"]
    assert len(first.captions) == 7 and first.raw[0] == "A red square."   # trailing newline stripped
    assert first.path == root / "train2014" / "COCO_train2014_000000000009.jpg"
    assert by_id["42"].path == root / "val2014" / "COCO_val2014_000000000042.jpg"
    assert by_id["42"].extra["official_split"] == "val"
    assert loaded.skipped == {"missing image file": 1, "duplicate line": 1}


def test_coco_official_val_is_halved_into_val_and_test_by_seed(coco_root) -> None:
    root, info = coco_root
    loaded = _load(root, seed=0)
    split = {r.image_id: r.split for r in loaded.records}
    assert all(split[str(i)] == "train" for i in info["ids"]["train"])
    val_side = Counter(split[str(i)] for i in info["ids"]["val"] if str(i) != info["missing"])
    assert val_side == {"val": 3, "test": 2}
    assert {r.image_id: r.split for r in _load(root, seed=0).records} == split
    others = [{r.image_id: r.split for r in _load(root, seed=s).records} for s in range(1, 6)]
    assert any(o != split for o in others)  # the seed matters
    assert "val2014 shuffled with seed 0 and halved: 3 -> val, 2 -> test" in summarize(loaded)


def test_coco_karpathy_annotations_give_the_split(coco_root, tmp_path: Path) -> None:
    root, info = coco_root
    t, v = info["ids"]["train"], info["ids"]["val"]
    images = [{"filepath": "train2014", "filename": "x", "cocoid": c, "split": "train"} for c in t[:-1]]
    images += [{"filepath": "val2014", "filename": "x", "cocoid": v[0], "split": "restval"},
               {"filepath": "val2014", "filename": "x", "cocoid": v[1], "split": "val"},
               {"filepath": "val2014", "filename": "x", "cocoid": v[2], "split": "test"}]
    ann = tmp_path / "dataset_coco.json"
    ann.write_text(json.dumps({"dataset": "coco", "images": images}))
    loaded = _load(root, annotations=str(ann))
    split = {r.image_id: r.split for r in loaded.records}
    assert split[str(v[0])] == "train" and split[str(v[1])] == "val" and split[str(v[2])] == "test"
    assert len(split) == len(t) - 1 + 3
    # the last train image and two existing val images are not in Karpathy's file
    assert loaded.skipped["no split"] == 3
    assert "1 restval images folded into train" in summarize(loaded)


def test_coco_2017_layout(tmp_path: Path) -> None:
    write_coco(tmp_path, year="2017", n_train=3, n_val=3)
    loaded = _load(tmp_path)
    paths = sorted(str(r.path.relative_to(tmp_path)) for r in loaded.records)
    assert paths == ["train2017/000000000009.jpg", "train2017/000000000109.jpg", "train2017/000000000209.jpg",
                     "val2017/000000000042.jpg", "val2017/000000000142.jpg"]
    assert "layout: COCO 2017" in summarize(loaded)


def test_coco_wrong_root_names_what_it_looked_for(tmp_path: Path) -> None:
    (tmp_path / "train2014").mkdir()
    (tmp_path / "notes.md").write_text("")
    with pytest.raises(ValueError) as e:
        load_dataset("coco", tmp_path, verbose=False)
    assert str(e.value) == (f"coco: looked for train2014/, val2014/ and annotations/captions_{{train,val}}2014.json "
                            f"(or the same with 2017) in {tmp_path}; found: notes.md, train2014/")


def test_coco_invalid_json_names_the_file(coco_root) -> None:
    root, _ = coco_root
    (root / "annotations" / "captions_val2014.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"captions_val2014\.json: not valid JSON"):
        _load(root)
