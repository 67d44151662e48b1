"""`python -m train score`: captions from any system scored against each dataset layout's references."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

import train.metrics
from train.__main__ import main as train_main
from train.metrics import java_available
from train.score import _records

from .conftest import write_coco, write_csv, write_flickr8k, write_flickr30k, write_image

LAYOUTS = {
    "flickr8k": lambda root: write_flickr8k(root, n=10),
    "flickr30k": lambda root: write_flickr30k(root, n=12, variant="csv", karpathy=True),
    "coco": lambda root: write_coco(root, n_train=4, n_val=9),
    "csv": lambda root: write_csv(root, n=40),  # seeded split: 2 test images
    "karpathy": lambda root: write_karpathy(root),
}


def write_karpathy(root: Path) -> None:
    images = []
    for i, split in enumerate(["train", "train", "val", "test", "test", "test"]):
        write_image(root / "images" / f"k{i}.jpg", i)
        images.append({"filename": f"k{i}.jpg", "filepath": "images", "split": split, "cocoid": 100 + i,
                       "sentences": [{"raw": f"A man's {i}-year-old T-shirt, number {i}."},
                                     {"raw": f"A shirt that's {i} years old"}]})
    (root / "dataset_test.json").write_text(json.dumps({"images": images}))


def _test_split(name: str, root: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records, base = _records(name, root, None, 0)
    return [r for r in records if r.split == "test"], base


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = train_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_layout_matches_ids_and_file_names(name: str, tmp_path: Path, capsys, monkeypatch) -> None:
    root = tmp_path / name
    LAYOUTS[name](root)
    test, base = _test_split(name, root)
    assert len(test) >= 2
    seen = {}

    def fake_metrics(refs, hyps):
        seen.update(refs=refs, hyps=hyps)
        return {k: 0.5 for k in train.metrics.METRIC_KEYS}

    monkeypatch.setattr(train.metrics, "caption_metrics", fake_metrics)
    first, *rest = test[:-1]  # the last test image gets no caption
    # COCO ids as ints (as the official results format has them), the others as strings; one by file name
    entries = [{"image_id": int(first.image_id) if first.image_id.isdigit() else first.image_id, "caption": "a cap"}]
    entries += [{"file_name": r.path.name, "caption": f"cap {r.image_id}"} for r in rest]
    entries.append({"image_id": "no-such-image", "caption": "lost"})
    results = tmp_path / "results.json"
    results.write_text(json.dumps(entries))
    report = tmp_path / "metrics.json"
    code, out, err = _run(["score", "--dataset", name, "--data-root", str(root), "--captions", str(results),
                           "--json", str(report)], capsys)
    assert code == 0, err
    assert f"matched {len(test) - 1} of the {len(test)} test images" in out
    assert "unknown ids 1 ('no-such-image')" in out
    assert f"images of the split with no caption 1 ({test[-1].image_id!r})" in out
    assert seen["hyps"] == {first.image_id: "a cap", **{r.image_id: f"cap {r.image_id}" for r in rest}}
    assert seen["refs"] == {r.image_id: list(r.raw) for r in test[:-1]}  # raw strings: PTB tokenizes them
    saved = json.loads(report.read_text())
    assert saved["n_images"] == len(test) - 1 and saved["unknown_ids"] == 1 and saved["uncaptioned_images"] == 1


@pytest.mark.skipif(not java_available(), reason="the official metrics need Java")
@pytest.mark.slow
def test_official_scores_of_reference_captions(tmp_path: Path, capsys) -> None:
    root = tmp_path / "coco"
    write_coco(root, n_train=4, n_val=9)
    test, _ = _test_split("coco", root)
    entries = [{"image_id": int(r.image_id), "caption": max(r.raw, key=len)} for r in test]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(entries))
    code, out, err = _run(["score", "--dataset", "coco", "--data-root", str(root), "--captions", str(results),
                           "--json", str(tmp_path / "m.json")], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["bleu4"] == pytest.approx(1.0, abs=1e-6) and m["n_images"] == len(test)
    assert "unknown ids 0;" in out and "no caption 0" in out


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not a JSON file"),
    ('{"image_id": 1, "caption": "x"}', "expected a JSON list"),
    ('[{"image_id": 42}]', "entry 0 has no string 'caption'"),
    ('[{"caption": "x"}]', "entry 0 has neither 'image_id' nor 'file_name'"),
    ('[{"image_id": [1], "caption": "x"}]', "'image_id' must be an int or a string"),
    ('[3]', "entry 0 is a int"),
    ('DUP', "are both for image"),
])
def test_bad_results_files_exit_2_with_one_line(content: str, message: str, tmp_path: Path, capsys) -> None:
    root = tmp_path / "coco"
    write_coco(root, n_train=4, n_val=9)
    if content == "DUP":  # the same image by int id and by string id
        test, _ = _test_split("coco", root)
        content = json.dumps([{"image_id": int(test[0].image_id), "caption": "a"},
                              {"image_id": test[0].image_id, "caption": "b"}])
    results = tmp_path / "results.json"
    results.write_text(content)
    code, out, err = _run(["score", "--dataset", "coco", "--data-root", str(root), "--captions", str(results)],
                          capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_no_matching_caption_is_an_error(tmp_path: Path, capsys) -> None:
    root = tmp_path / "csv"
    write_csv(root, n=8, with_split=True)
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": "elsewhere.png", "caption": "x"}]))
    code, out, err = _run(["score", "--dataset", "csv", "--data-root", str(root), "--captions", str(results)], capsys)
    assert code == 2 and "no caption in" in err and "unknown ids 1" in out
