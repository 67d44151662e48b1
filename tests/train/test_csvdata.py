"""The `csv` dataset: image,caption[,split] rows from a CSV or JSON Lines file."""
from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import pytest

from train.data import load_dataset, summarize
from train.data.common import DatasetWarning

from .conftest import write_csv, write_image


def _load(root: Path, **kw):
    return _load_warned(root, **kw)[0]


def _load_warned(root: Path, **kw):
    """load_dataset without printing; returns the dataset and its DatasetWarning messages."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_dataset("csv", root, verbose=False, **kw)
    return loaded, [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]


def test_csv_rows_are_grouped_and_bad_rows_skipped_with_line_numbers(tmp_path: Path) -> None:
    write_csv(tmp_path, n=8)
    loaded, messages = _load_warned(tmp_path)
    assert any("captions.csv:18: skipped (malformed line) no image path" in m for m in messages)
    assert any("captions.csv:19: skipped (empty caption)" in m for m in messages)
    assert any("captions.csv:20: skipped (duplicate line)" in m for m in messages)
    assert loaded.skipped == {"malformed line": 1, "empty caption": 1, "duplicate line": 1}
    by_id = {r.image_id: r for r in loaded.records}
    assert sorted(by_id) == [f"photos/p{i}.png" for i in range(8)]
    assert by_id["photos/p0.png"].raw == ("A red square.", "the red picture")
    assert by_id["photos/p0.png"].path == tmp_path / "photos" / "p0.png"
    assert loaded.root == tmp_path


def test_csv_without_split_column_is_split_by_seed(tmp_path: Path) -> None:
    write_csv(tmp_path, n=8, bad_rows=False)
    loaded = _load(tmp_path, seed=1)
    assert Counter(r.split for r in loaded.records) == {"train": 6, "val": 1, "test": 1}
    assert [r.split for r in _load(tmp_path, seed=1).records] == [r.split for r in loaded.records]
    assert "90% train / 5% val / 5% test" in summarize(loaded)


def test_csv_split_column_and_its_bad_values(tmp_path: Path) -> None:
    write_csv(tmp_path, n=5, with_split=True, bad_rows=False)
    with (tmp_path / "captions.csv").open("a") as fh:
        fh.write('photos/p1.png,"another caption",holdout\n')   # unknown split value (line 12)
        fh.write('photos/p1.png,"yet another caption",test\n')  # contradicts p1's train rows
        fh.write('./photos/p1.png,"a red fox",dev\n')           # contradicts too, same image after ./
    loaded, messages = _load_warned(tmp_path)
    assert any("captions.csv:12: skipped (malformed line) unknown split value 'holdout'" in m for m in messages)
    assert any("captions.csv:14: skipped (malformed line) photos/p1.png is in train" in m for m in messages)
    assert loaded.skipped == {"malformed line": 3}
    assert Counter(r.split for r in loaded.records) == {"train": 3, "val": 1, "test": 1}
    assert len({r.image_id: r for r in loaded.records}["photos/p1.png"].captions) == 2


def test_jsonl_with_a_malformed_line_and_a_missing_image(tmp_path: Path) -> None:
    for i in range(4):
        write_image(tmp_path / "img" / f"{i}.jpg", i)
    lines = [json.dumps({"image": f"img/{i}.jpg", "caption": f"picture number {i}"}) for i in range(4)]
    lines.insert(2, '{"image": "img/1.jpg", "caption": ')                  # line 3: broken JSON
    lines.append(json.dumps({"image": "img/gone.jpg", "caption": "not on disk"}))
    lines.append(json.dumps({"image": "img/0.jpg"}))                       # no caption key
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    loaded, messages = _load_warned(tmp_path)
    assert any("data.jsonl:3: skipped (malformed line) invalid JSON" in m for m in messages)
    assert any("img/gone.jpg (1 caption) not found" in m for m in messages)
    assert loaded.skipped == {"malformed line": 2, "missing image file": 1}
    assert len(loaded.records) == 4 and {r.split for r in loaded.records} == {"train", "val", "test"}


def test_annotations_flag_picks_the_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "a", n=3, bad_rows=False)
    write_csv(tmp_path / "b", n=4, bad_rows=False)
    loaded = _load(tmp_path, annotations=str(tmp_path / "b" / "captions.csv"))
    assert len(loaded.records) == 4 and loaded.root == tmp_path / "b"


def test_csv_layout_errors(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError) as e:
        load_dataset("csv", tmp_path, verbose=False)
    assert str(e.value).startswith("csv: looked for one *.csv or *.jsonl file")
    assert str(e.value).endswith("found: images/")
    (tmp_path / "x.csv").write_text("file,text\na.jpg,hello\n")
    (tmp_path / "y.jsonl").write_text("")
    with pytest.raises(ValueError, match="several: x.csv, y.jsonl"):
        load_dataset("csv", tmp_path, verbose=False)
    with pytest.raises(ValueError, match="header naming the columns 'image' and 'caption'"):
        load_dataset("csv", tmp_path, annotations=str(tmp_path / "x.csv"), verbose=False)
