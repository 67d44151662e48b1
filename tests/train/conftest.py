"""Writers for tiny copies of the real dataset layouts (Flickr8k, Flickr30k, COCO, CSV/JSONL).

Each writer puts small real JPEG/PNG files and annotation files in the exact on-disk format of
the original release (quirks included) under a folder, and returns what it wrote so tests can
check counts. The `*_root` fixtures call them in a fresh tmp folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (200, 30, 200), (30, 200, 200),
          (120, 120, 120), (250, 250, 250), (10, 10, 10), (250, 130, 0)]
NAMES = ["red", "green", "blue", "yellow", "purple", "cyan", "grey", "white", "black", "orange"]
F8K_QUIRK = "2258277193_586949ec62.jpg.1"


def write_image(path: Path, i: int, *, size: int = 24) -> Path:
    """A small real image whose colour depends on `i` (JPEG or PNG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (size, size), COLORS[i % len(COLORS)])
    img.paste((255, 255, 255), (0, 0, size // 3, size // 3))
    img.save(path)
    return path


def captions_for(i: int, k: int = 5) -> list[str]:
    """k distinct raw captions (mixed case and punctuation) describing image i."""
    c = NAMES[i % len(NAMES)]
    forms = [f"A {c} square.", f"the {c} picture", f"A {c} image, with a white corner .",
             f"{c.upper()} background", f"a plain {c} photo", f"one {c} tile", f"a {c}-ish scene"]
    return forms[:k]


def write_flickr8k(root: Path, *, n: int = 10, image_dir: str = "Flicker8k_Dataset",
                   text_dir: str = "Flickr8k_text") -> dict:
    """Flickr8k: images 0..n-1 split 60/20/20 by the three split files; plus the quirks:
    the token file names the absent F8K_QUIRK image, one image is in no split file, one line is
    repeated and one caption is only punctuation."""
    names = [f"{1000 + i}_abc{i}.jpg" for i in range(n + 1)]  # the last one: in no split file
    for i, name in enumerate(names):
        write_image(root / image_dir / name, i)
    lines = [f"{name}#{k}\t{cap}" for i, name in enumerate(names) for k, cap in enumerate(captions_for(i))]
    lines += [f"{F8K_QUIRK}#{k}\tA dog runs {k} ." for k in range(5)]
    lines.insert(3, lines[2])                       # duplicate line
    lines.append(f"{names[0]}#5\t . , !")          # empty after normalisation
    text = root / text_dir
    text.mkdir(parents=True, exist_ok=True)
    (text / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    n_train, n_val = int(n * 0.6), int(n * 0.2)
    parts = {"train": names[:n_train], "dev": names[n_train:n_train + n_val], "test": names[n_train + n_val:n]}
    for split, members in parts.items():
        (text / f"Flickr_8k.{split}Images.txt").write_text("".join(m + "\n" for m in members))
    return {"names": names[:n], "no_split": names[n], "splits": parts}


def write_flickr30k(root: Path, *, n: int = 12, variant: str = "token", karpathy: bool = False) -> dict:
    """Flickr30k: flickr30k-images/ + results_20130124.token or the results.csv variant (with the
    real file's malformed line: a comment row missing its second '|'), optional Karpathy JSON."""
    names = [f"{300000 + i}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        write_image(root / "flickr30k-images" / name, i)
    if variant == "token":
        rows = [f"{name}#{k}\t{cap}" for i, name in enumerate(names) for k, cap in enumerate(captions_for(i))]
        (root / "results_20130124.token").write_text("\n".join(rows) + "\n", encoding="utf-8")
    else:
        rows = ["image_name| comment_number| comment"]
        rows += [f"{name}| {k}| {cap}" for i, name in enumerate(names) for k, cap in enumerate(captions_for(i))]
        rows[7] = f"{names[1]}| 1   the {NAMES[1]} picture"    # the malformed line
        (root / "results.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    if karpathy:
        splits = ["train"] * (n - 4) + ["restval", "val", "test", "test"]
        images = [{"filename": name, "split": s, "imgid": i, "sentences": []}
                  for i, (name, s) in enumerate(zip(names, splits))]
        (root / "dataset_flickr30k.json").write_text(json.dumps({"dataset": "flickr30k", "images": images}))
    return {"names": names}


def write_coco(root: Path, *, year: str = "2014", n_train: int = 6, n_val: int = 6) -> dict:
    """COCO captions: official JSON per split; image 0 has 7 captions, one val image is listed but
    not on disk, one caption is repeated verbatim."""
    ids = {"train": [9 + 100 * i for i in range(n_train)], "val": [42 + 100 * i for i in range(n_val)]}
    ann_id, out = 1, {"ids": ids, "missing": None}
    for split, split_ids in ids.items():
        images, anns = [], []
        for j, cid in enumerate(split_ids):
            i = j + (0 if split == "train" else n_train)
            name = f"COCO_{split}{year}_{cid:012d}.jpg" if year == "2014" else f"{cid:012d}.jpg"
            images.append({"id": cid, "file_name": name, "width": 24, "height": 24})
            if split == "val" and j == n_val - 1:
                out["missing"] = str(cid)         # listed in the JSON, absent from the folder
            else:
                write_image(root / f"{split}{year}" / name, i)
            for cap in captions_for(i, 7 if i == 0 else 5):
                anns.append({"image_id": cid, "id": ann_id, "caption": cap + "\n"})
                ann_id += 1
        if split == "train":
            anns.append(dict(anns[1], id=ann_id))   # the same caption twice
            ann_id += 1
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"captions_{split}{year}.json").write_text(
            json.dumps({"info": {}, "images": images, "annotations": anns}))
    return out


def write_csv(root: Path, *, n: int = 8, with_split: bool = False, bad_rows: bool = True) -> dict:
    """captions.csv next to photos/*.png; 2 rows per image; optional bad rows."""
    rows = ["image,caption" + (",split" if with_split else "")]
    for i in range(n):
        write_image(root / "photos" / f"p{i}.png", i)
        split = ("train" if i < n - 2 else "val" if i == n - 2 else "test") if with_split else None
        for cap in captions_for(i, 2):
            rows.append(f'photos/p{i}.png,"{cap}"' + (f",{split}" if split else ""))
    if bad_rows:
        rows.append(',"no image here"' + (",train" if with_split else ""))   # line n*2+2
        rows.append("photos/p0.png," + (",train" if with_split else ""))     # empty caption
        rows.append(rows[1])                                                # duplicate line
    (root / "captions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return {"n": n}


@pytest.fixture
def flickr8k_root(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path / "f8k", write_flickr8k(tmp_path / "f8k")


@pytest.fixture
def coco_root(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path / "coco", write_coco(tmp_path / "coco")
