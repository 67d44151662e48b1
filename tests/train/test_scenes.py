"""Tests for the procedural scenes dataset (train/data/scenes.py, train/data/scene_grammar.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sat.vocab import tokenize
from train.data.scene_grammar import COLOURS, PLURALS, article, relation
from train.data.scenes import generate_scenes, render_scene

SMALL = dict(n_train=12, n_val=4, n_test=4, image_size=96, progress=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("scenes")
    path = generate_scenes(root, seed=3, workers=1, **SMALL)
    with open(path, encoding="utf-8") as f:
        return root, json.load(f)


def _scenes(n: int, size: int = 96, seed: int = 11):
    return [render_scene(np.random.default_rng([seed, i]), size) for i in range(n)]


def _centre(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _desc(obj) -> str:
    return f"a {obj['size']} {obj['colour']} {obj['shape']}"


def test_layout_and_json_keys(dataset):
    root, data = dataset
    assert (root / "dataset_scenes.json").is_file()
    assert data["dataset"] == "scenes"
    assert data["meta"] == {"generator": "sat-scenes", "version": 1, "seed": 3, "image_size": 96,
                            "n_train": 12, "n_val": 4, "n_test": 4}
    images = data["images"]
    assert [im["imgid"] for im in images] == list(range(20))
    assert [im["split"] for im in images] == ["train"] * 12 + ["val"] * 4 + ["test"] * 4
    for im in images:
        assert set(im) == {"filename", "filepath", "imgid", "sceneid", "split", "sentids",
                           "sentences", "objects", "mask"}
        assert im["filename"] == f"scene_{im['imgid']:06d}.jpg" and im["filepath"] == "images"
        assert im["mask"] == f"masks/scene_{im['imgid']:06d}.png"
        with Image.open(root / im["filepath"] / im["filename"]) as img:
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (96, 96))
        with Image.open(root / im["mask"]) as mask:
            assert (mask.format, mask.mode, mask.size) == ("PNG", "L", (96, 96))
        assert 1 <= len(im["objects"]) <= 3
        for k, obj in enumerate(im["objects"], start=1):
            assert set(obj) == {"shape", "colour", "size", "box", "mask_value"}
            assert obj["mask_value"] == k and obj["size"] in ("small", "large")
            assert all(isinstance(v, int) for v in obj["box"])
    assert not list(root.glob(".*tmp")), "temporary JSON left behind"


def test_five_captions_tokens_match_raw(dataset):
    _, data = dataset
    for im in data["images"]:
        sents = im["sentences"]
        assert len(sents) == 5
        assert im["sentids"] == [s["sentid"] for s in sents] == [im["imgid"] * 5 + k for k in range(5)]
        for s in sents:
            assert s["imgid"] == im["imgid"]
            assert s["tokens"] == s["raw"].split() and s["raw"] == s["raw"].lower()
            assert all(t.isalpha() for t in s["tokens"])
            assert len(s["tokens"]) <= 20
        raws = [s["raw"] for s in sents]
        # canonical phrasing first and the most frequent reference
        assert raws.count(raws[0]) >= 2
        assert all(raws.count(raws[0]) > raws.count(r) for r in raws if r != raws[0])


def test_same_seed_is_identical_across_worker_counts(dataset, tmp_path):
    root1, _ = dataset
    root2 = tmp_path / "b"
    generate_scenes(root2, seed=3, workers=2, **SMALL)
    assert (root1 / "dataset_scenes.json").read_bytes() == (root2 / "dataset_scenes.json").read_bytes()
    for sub in ("images", "masks"):
        names = sorted(p.name for p in (root1 / sub).iterdir())
        assert names == sorted(p.name for p in (root2 / sub).iterdir()) and len(names) == 20
        for name in names:
            assert (root1 / sub / name).read_bytes() == (root2 / sub / name).read_bytes(), name


def test_different_seed_differs(dataset, tmp_path):
    root1, data1 = dataset
    path = generate_scenes(tmp_path / "c", seed=4, workers=1, **SMALL)
    data2 = json.loads(path.read_text())
    caps1 = [im["sentences"][0]["raw"] for im in data1["images"]]
    caps2 = [im["sentences"][0]["raw"] for im in data2["images"]]
    assert sum(a != b for a, b in zip(caps1, caps2)) >= 10
    a = np.asarray(Image.open(root1 / "images" / "scene_000000.jpg"))
    b = np.asarray(Image.open(tmp_path / "c" / "images" / "scene_000000.jpg"))
    assert not np.array_equal(a, b)


def test_reuse_does_not_rewrite_and_meta_change_regenerates(tmp_path):
    path = generate_scenes(tmp_path, seed=1, workers=1, **SMALL)
    img = tmp_path / "images" / "scene_000005.jpg"
    before = (path.stat().st_mtime_ns, img.stat().st_mtime_ns)
    assert generate_scenes(tmp_path, seed=1, workers=1, **SMALL) == path
    assert (path.stat().st_mtime_ns, img.stat().st_mtime_ns) == before
    # different arguments -> regenerated with the new meta
    generate_scenes(tmp_path, seed=1, workers=1, **{**SMALL, "n_test": 5})
    data = json.loads(path.read_text())
    assert data["meta"]["n_test"] == 5 and len(data["images"]) == 21
    # a run killed before the JSON was written (here: corrupt JSON) is redone
    path.write_text("{truncated")
    generate_scenes(tmp_path, seed=1, workers=1, **SMALL)
    assert len(json.loads(path.read_text())["images"]) == 20


def test_interrupted_regeneration_leaves_no_json(tmp_path, monkeypatch):
    import train.data.scenes as scenes

    path = generate_scenes(tmp_path, seed=1, workers=1, **SMALL)
    real = scenes._render_chunk
    calls = []

    def flaky(job):
        calls.append(job)
        if len(calls) > 1:
            raise KeyboardInterrupt  # simulated kill after the first chunk was written
        return real(job)

    monkeypatch.setattr(scenes, "_render_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_scenes(tmp_path, seed=2, workers=1, **SMALL)
    assert len(calls) == 2
    # the seed=1 JSON must not survive next to half-overwritten images
    assert not path.exists()
    monkeypatch.setattr(scenes, "_render_chunk", real)
    generate_scenes(tmp_path, seed=1, workers=1, **SMALL)
    assert json.loads(path.read_text())["meta"]["seed"] == 1


def test_masks_agree_with_boxes_and_colours(dataset):
    root, data = dataset
    names = list(COLOURS)
    table = np.array([COLOURS[n] for n in names], dtype=float)
    for im in data["images"]:
        mask = np.asarray(Image.open(root / im["mask"]))
        rgb = np.asarray(Image.open(root / im["filepath"] / im["filename"]).convert("RGB"), float)
        assert set(np.unique(mask)) <= set(range(len(im["objects"]) + 1))
        boxes = [o["box"] for o in im["objects"]]
        for i, a in enumerate(boxes):  # boxes inside the image and pairwise disjoint
            assert 0 <= a[0] < a[2] <= 96 and 0 <= a[1] < a[3] <= 96
            for b in boxes[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
        for obj in im["objects"]:
            ys, xs = np.nonzero(mask == obj["mask_value"])
            x0, y0, x1, y1 = obj["box"]
            assert len(xs) > 0.25 * (x1 - x0) * (y1 - y0)
            assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
            med = np.median(rgb[ys, xs], axis=0)
            assert np.abs(med - COLOURS[obj["colour"]]).max() < 45, (obj, med)
            assert names[int(np.argmin(((table - med) ** 2).sum(1)))] == obj["colour"]


def test_sizes_clearly_different_and_counts_varied():
    small, large, counts = [], [], set()
    for _, _, objs, _ in _scenes(150):
        counts.add(len(objs))
        for o in objs:
            (small if o["size"] == "small" else large).append(o["box"][2] - o["box"][0])
    assert counts == {1, 2, 3}
    assert max(small) < 0.25 * 96 and min(large) > 0.30 * 96


def test_background_is_muted_objects_saturated():
    for img, mask, objs, _ in _scenes(40):
        rgb = np.asarray(img).astype(int)
        spread = rgb.max(2) - rgb.min(2)
        assert spread[mask == 0].max() < 48
        for o in objs:
            assert np.median(spread[mask == o["mask_value"]]) > 120


def test_spatial_relations_match_geometry():
    checked = 0
    for _, _, objs, caps in _scenes(300):
        xs = [_centre(o["box"])[0] for o in objs]
        assert xs == sorted(xs), "objects must be listed left to right"
        if len(objs) != 2 or (objs[0]["shape"], objs[0]["colour"]) == (objs[1]["shape"], objs[1]["colour"]):
            continue
        (ax, ay), (bx, by) = _centre(objs[0]["box"]), _centre(objs[1]["box"])
        if abs(bx - ax) >= abs(by - ay):
            rel, rev = "to the left of", "to the right of"
        else:
            rel, rev = ("above", "below") if by > ay else ("below", "above")
        a, b = _desc(objs[0]), _desc(objs[1])
        assert caps[0] == f"{a} {rel} {b}"
        for cap in caps:
            for word in ("left of", "right of", "above", "below"):
                if word in cap and cap.startswith(b):
                    assert cap == f"{b} {rev} {a}"
        checked += 1
    assert checked >= 30


def test_count_phrase_when_shape_and_colour_shared():
    shared = 0
    for _, _, objs, caps in _scenes(300, seed=5):
        keys = [(o["shape"], o["colour"]) for o in objs]
        dup = {k for k in keys if keys.count(k) >= 2}
        if not dup:
            assert not {"two", "three"} & set(" ".join(caps).split())
            continue
        shape, colour = dup.pop()
        number = {2: "two", 3: "three"}[keys.count((shape, colour))]
        sizes = {o["size"] for o in objs if (o["shape"], o["colour"]) == (shape, colour)}
        size = f"{sizes.pop()} " if len(sizes) == 1 else ""
        assert f"{number} {size}{colour} {PLURALS[shape]}" in caps[0]
        if len(objs) == keys.count((shape, colour)):
            assert caps[0] == f"{number} {size}{colour} {PLURALS[shape]}"
        shared += 1
    assert shared >= 20


def test_captions_depend_on_image():
    canon = [caps[0] for _, _, _, caps in _scenes(100, seed=9)]
    assert len(set(canon)) >= 80


def test_grammar_helpers():
    assert article("orange") == "an" and article("red") == "a"
    assert relation((10, 50), (60, 40)) == "to the left of"
    assert relation((60, 40), (10, 50)) == "to the right of"
    assert relation((50, 10), (40, 60)) == "above" and relation((40, 60), (50, 10)) == "below"
    assert tokenize("A Red, circle!") == ["a", "red", "circle"]
    found_an = any("an orange" in c for _, _, _, caps in _scenes(200) for c in caps)
    assert found_an and not any(" a orange" in f" {c}" for _, _, _, caps in _scenes(200) for c in caps)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_train": 0}, "n_train"), ({"n_val": -1}, "n_val"), ({"n_test": 1.5}, "n_test"),
    ({"image_size": 32}, "image_size"), ({"image_size": 64.0}, "image_size"),
    ({"seed": -1}, "seed"), ({"workers": 0}, "workers"),
])
def test_argument_validation(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_scenes(tmp_path, **{**SMALL, **kwargs})
    assert not (tmp_path / "dataset_scenes.json").exists()


def test_render_scene_rejects_tiny_images():
    with pytest.raises(ValueError, match="image_size"):
        render_scene(np.random.default_rng(0), 16)
