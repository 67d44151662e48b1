"""Flickr8k / Flickr30k loaders on tiny copies of the official layouts (tests/train/conftest.py)."""
from __future__ import annotations

import json
import shutil
import warnings
from collections import Counter
from pathlib import Path

import pytest

from train.data import load_dataset, summarize
from train.data.common import DatasetWarning, seeded_split

from .conftest import F8K_QUIRK, write_flickr8k, write_flickr30k


def _load(name: str, root: Path, **kw):
    """load_dataset without printing; the DatasetWarnings it raised are not shown."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        return load_dataset(name, root, verbose=False, **kw)


def test_flickr8k_official_archive_layout(flickr8k_root) -> None:
    root, info = flickr8k_root
    loaded = _load("flickr8k", root)
    by_id = {r.image_id: r for r in loaded.records}
    assert sorted(by_id) == sorted(info["names"])
    assert Counter(r.split for r in loaded.records) == {"train": 6, "val": 2, "test": 2}
    assert {by_id[n].split for n in info["splits"]["dev"]} == {"val"}
    first = by_id[info["names"][0]]
    # the duplicate of line 3 and the punctuation-only caption are dropped; 5 remain, in order
    assert first.raw == ("A red square.", "the red picture", "A red image, with a white corner .",
                         "RED background", "a plain red photo")
    assert first.captions[2] == ("a", "red", "image", "with", "a", "white", "corner")
    assert first.path == root / "Flicker8k_Dataset" / info["names"][0] and first.path.is_file()
    assert loaded.skipped == {"missing image file": 1, "no split": 1, "duplicate line": 1, "empty caption": 1}
    assert F8K_QUIRK not in by_id and info["no_split"] not in by_id


def test_flickr8k_warns_with_line_numbers(flickr8k_root) -> None:
    root, _ = flickr8k_root
    with pytest.warns(DatasetWarning) as caught:
        load_dataset("flickr8k", root, verbose=False)
    messages = [str(w.message) for w in caught]
    assert any("Flickr8k.token.txt:4: skipped (duplicate line)" in m for m in messages)
    assert any(F8K_QUIRK in m and "missing image file" in m for m in messages)


def test_flickr8k_text_files_in_root_and_images_folder(tmp_path: Path) -> None:
    write_flickr8k(tmp_path, n=5, image_dir="Images", text_dir=".")
    loaded = _load("flickr8k", tmp_path)
    assert len(loaded.records) == 5
    assert all(r.path.parent.name == "Images" for r in loaded.records)


def test_flickr8k_karpathy_annotations_replace_the_split_files(flickr8k_root) -> None:
    root, info = flickr8k_root
    for f in (root / "Flickr8k_text").glob("Flickr_8k.*Images.txt"):
        f.unlink()
    images = [{"filename": n, "split": "test" if i < 3 else "restval"} for i, n in enumerate(info["names"])]
    ann = root / "dataset_flickr8k.json"
    ann.write_text(json.dumps({"images": images}))
    loaded = _load("flickr8k", root, annotations=str(ann))
    assert Counter(r.split for r in loaded.records) == {"test": 3, "train": 7}
    assert "restval -> train" in summarize(loaded)


def test_flickr8k_wrong_root_names_what_it_looked_for(tmp_path: Path) -> None:
    (tmp_path / "foo").mkdir()
    (tmp_path / "bar.txt").write_text("x")
    with pytest.raises(ValueError) as e:
        load_dataset("flickr8k", tmp_path, verbose=False)
    msg = str(e.value)
    assert msg.startswith("flickr8k: looked for Flicker8k_Dataset/ (or Flickr8k_Dataset/, Images/)")
    assert "Flickr8k.token.txt" in msg and "Flickr_8k.devImages.txt" in msg
    assert msg.endswith("found: bar.txt, foo/") and str(tmp_path) in msg


def test_flickr8k_missing_split_file_is_a_layout_error(flickr8k_root) -> None:
    root, _ = flickr8k_root
    (root / "Flickr8k_text" / "Flickr_8k.testImages.txt").unlink()
    with pytest.raises(ValueError, match="Flickr_8k.testImages.txt"):
        load_dataset("flickr8k", root, verbose=False)


def test_summary_counts_splits_and_reasons(flickr8k_root) -> None:
    root, _ = flickr8k_root
    text = summarize(_load("flickr8k", root))
    assert "flickr8k from" in text and "10 images, 50 captions" in text
    assert "train 6 images / 30 captions; val 2 images / 10 captions; test 2 images / 10 captions" in text
    assert "1 image (missing image file)" in text and "1 image (no split)" in text
    assert "1 line (duplicate line)" in text and "1 caption (empty caption)" in text
    assert "dev -> val" in text


def test_flickr30k_token_file_with_karpathy_splits(tmp_path: Path) -> None:
    write_flickr30k(tmp_path, n=8, karpathy=True)
    loaded = _load("flickr30k", tmp_path)
    assert Counter(r.split for r in loaded.records) == {"train": 5, "val": 1, "test": 2}  # restval -> train
    assert all(len(r.captions) == 5 for r in loaded.records)
    assert loaded.records[0].image_id == "300000.jpg"
    assert loaded.skipped == {}
    assert "dataset_flickr30k.json (restval -> train)" in summarize(loaded)


def test_flickr30k_results_csv_malformed_line_and_seeded_split(tmp_path: Path) -> None:
    write_flickr30k(tmp_path, n=12, variant="csv")
    with pytest.warns(DatasetWarning, match=r"results\.csv:8: skipped \(malformed line\)"):
        loaded = load_dataset("flickr30k", tmp_path, seed=3, verbose=False)  # the only warning
    assert loaded.skipped == {"malformed line": 1}
    by_id = {r.image_id: r for r in loaded.records}
    assert len(by_id) == 12 and len(by_id["300001.jpg"].captions) == 4
    assert by_id["300000.jpg"].raw[0] == "A red square."  # spaces after '|' stripped
    splits = Counter(r.split for r in loaded.records)
    assert splits["val"] >= 1 and splits["test"] >= 1 and splits["train"] == 12 - splits["val"] - splits["test"]
    again = _load("flickr30k", tmp_path, seed=3)
    assert [(r.image_id, r.split) for r in again.records] == [(r.image_id, r.split) for r in loaded.records]


def test_flickr30k_without_images_folder_is_a_layout_error(tmp_path: Path) -> None:
    write_flickr30k(tmp_path, n=2)
    shutil.rmtree(tmp_path / "flickr30k-images")
    with pytest.raises(ValueError, match=r"flickr30k: looked for flickr30k-images/ .*results_20130124\.token"
                                         r".*found: results_20130124\.token$"):
        load_dataset("flickr30k", tmp_path, verbose=False)


def test_seeded_split_sizes_on_the_full_flickr30k() -> None:
    ids = [f"{i}.jpg" for i in range(31783)]
    split = seeded_split(ids, seed=0, val_frac=0.033, test_frac=0.032, max_val=1014, max_test=1000)
    assert Counter(split.values()) == {"train": 29769, "val": 1014, "test": 1000}
    assert split == seeded_split(list(reversed(ids)), seed=0, val_frac=0.033, test_frac=0.032,
                                 max_val=1014, max_test=1000)  # input order does not matter
    assert split != seeded_split(ids, seed=1, val_frac=0.033, test_frac=0.032, max_val=1014, max_test=1000)
