"""Procedurally generated captioned scenes: SAT Studio's default training data.

Every image shows 1-3 saturated objects (shape x colour x size) on a muted background
(flat, gradient, smooth noise or stripes). Each image gets five reference captions from a
small grammar (``train.data.scene_grammar``) that mentions attributes, counts and spatial
relations computed from the real geometry. Because every object's box and pixel mask is
known, the dataset doubles as an attention/grounding benchmark.

Layout under ``root`` (Karpathy-split JSON, readable by the same loader as ``dataset_coco.json``)::

    dataset_scenes.json          {"dataset": "scenes", "meta": {...}, "images": [...]}
    images/scene_000123.jpg      RGB, image_size x image_size, JPEG quality 92
    masks/scene_000123.png       mode "L": 0 = background, k = objects[k - 1]

Each image entry holds ``filename``, ``filepath`` (folder relative to root), ``imgid``,
``sceneid``, ``split``, ``sentids``, ``sentences`` (``raw``, ``tokens``, ``imgid``, ``sentid``;
sentid is global, ``imgid * 5 + k``), ``objects`` (``shape``, ``colour``, ``size``, ``box`` =
[x0, y0, x1, y1] with exclusive x1/y1, ``mask_value``; listed left to right) and ``mask``.
Generation is deterministic: image ``i`` uses ``np.random.default_rng([seed, i])``.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from sat.atomic import write_json
from sat.vocab import tokenize
from train.data.scene_grammar import COLOURS, SHAPES, SIZES, make_captions

GENERATOR = "sat-scenes"
VERSION = 1
JSON_NAME = "dataset_scenes.json"
CAPTIONS_PER_IMAGE = 5
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.18, 0.24), "large": (0.32, 0.40)}
SHARE_PROB = 0.25  # chance (for >= 2 objects) that two objects share shape + colour
GAP = 3  # minimum free pixels between object boxes
BACKGROUNDS = ("flat", "gradient_v", "gradient_h", "gradient_d", "noise", "stripes")


def _unit_polygon(points: np.ndarray) -> list[tuple[float, float]]:
    """Scale a polygon uniformly so it fills [0, 1]^2 on its long side, centred."""
    lo, hi = points.min(0), points.max(0)
    scale = (hi - lo).max()
    pts = (points - lo) / scale + (1.0 - (hi - lo) / scale) / 2.0
    return [(float(x), float(y)) for x, y in pts]


def _star() -> list[tuple[float, float]]:
    ang = -np.pi / 2 + np.arange(10) * np.pi / 5
    # NOTE: inner radius 0.45 (a regular star uses 0.38) keeps the arms thick enough to
    # survive JPEG and stay recognisable at the small size on 64-px images.
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    return _unit_polygon(np.stack([r * np.cos(ang), r * np.sin(ang)], 1))


def _heart() -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return _unit_polygon(np.stack([x, y], 1))


_A, _B = 0.33, 0.67  # cross arm edges
UNIT_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "triangle": [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)],
    "star": _star(),
    "cross": [(_A, 0), (_B, 0), (_B, _A), (1, _A), (1, _B), (_B, _B), (_B, 1), (_A, 1),
              (_A, _B), (0, _B), (0, _A), (_A, _A)],
    "heart": _heart(),
}


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: list[int], fill: Any) -> None:
    """Draw ``shape`` filling ``box`` ([x0, y0, x1, y1], exclusive); never paints outside it."""
    x0, y0, x1, y1 = box
    w, h = x1 - 1 - x0, y1 - 1 - y0
    if shape == "circle":
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
    elif shape == "square":
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
    elif shape in UNIT_POLYGONS:
        draw.polygon([(x0 + u * w, y0 + v * h) for u, v in UNIT_POLYGONS[shape]], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _muted(rng: np.random.Generator) -> np.ndarray:
    # NOTE: backgrounds are grey plus a small tint (channel spread <= 32, i.e. low
    # saturation) while object colours are fully saturated, so nothing in the
    # background can be mistaken for an object colour.
    return np.clip(rng.uniform(45, 225) + rng.uniform(-16, 16, 3), 0, 255)


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted ``(size, size, 3)`` uint8 background of a random kind (see ``BACKGROUNDS``)."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    c1, c2 = _muted(rng).astype(np.float32), _muted(rng).astype(np.float32)
    # (1, size) and (size, 1) ramps; broadcasting keeps this cheap (it dominates render time)
    xx = np.linspace(0, 1, size, dtype=np.float32)[None, :]
    yy = xx.reshape(size, 1)
    if kind == "flat":
        t = np.zeros((1, 1), np.float32)
    elif kind == "gradient_v":
        t = yy
    elif kind == "gradient_h":
        t = xx
    elif kind == "gradient_d":
        t = (xx + yy) / 2 if rng.random() < 0.5 else (xx + 1 - yy) / 2
    elif kind == "noise":
        k = int(rng.integers(3, 8))
        coarse = Image.fromarray(rng.random((k, k)).astype(np.float32), mode="F")
        t = np.clip(np.asarray(coarse.resize((size, size), Image.BICUBIC)), 0, 1)
        t = t + 0.03 * rng.standard_normal((size, size), dtype=np.float32)
    else:  # stripes
        period = rng.uniform(0.05, 0.12) * size
        coord = [xx, yy, (xx + yy) / 2][rng.integers(3)] * (size - 1)
        t = (np.floor(coord / (period / 2)) % 2).astype(np.float32)
    t = np.broadcast_to(t, (size, size))[..., None]
    return np.clip(c1 + (c2 - c1) * t, 0, 255).astype(np.uint8)


def _overlaps(box: list[int], others: list[list[int]]) -> bool:
    return any(box[0] < o[2] + GAP and o[0] < box[2] + GAP and box[1] < o[3] + GAP
               and o[1] < box[3] + GAP for o in others)


def sample_objects(rng: np.random.Generator, image_size: int) -> list[dict[str, Any]]:
    """1-3 non-overlapping objects fully inside the image, listed left to right by centre x."""
    n = int(rng.integers(1, 4))
    objs = [{"shape": SHAPES[rng.integers(len(SHAPES))],
             "colour": list(COLOURS)[rng.integers(len(COLOURS))],
             "size": SIZES[rng.integers(len(SIZES))]} for _ in range(n)]
    if n >= 2 and rng.random() < SHARE_PROB:
        objs[1]["shape"], objs[1]["colour"] = objs[0]["shape"], objs[0]["colour"]
    boxes: list[list[int]] = []
    for obj in objs:
        while True:  # terminates: three small boxes always fit, and we shrink on failure
            lo, hi = SIZE_RANGES[obj["size"]]
            side = int(round(rng.uniform(lo, hi) * image_size))
            for _ in range(100):
                x0 = int(rng.integers(0, image_size - side + 1))
                y0 = int(rng.integers(0, image_size - side + 1))
                box = [x0, y0, x0 + side, y0 + side]
                if not _overlaps(box, boxes):
                    break
            else:
                obj["size"] = "small"  # crowded: retry this object at the small size
                continue
            boxes.append(box)
            obj["box"] = box
            break
    objs.sort(key=lambda o: (o["box"][0] + o["box"][2], o["box"][1] + o["box"][3]))
    for k, obj in enumerate(objs, start=1):
        obj["mask_value"] = k
    return objs


def render_scene(rng: np.random.Generator, image_size: int = 224
                 ) -> tuple[Image.Image, np.ndarray, list[dict[str, Any]], list[str]]:
    """Render one scene: (RGB image, uint8 mask, objects, five captions)."""
    _check_image_size(image_size)
    img = Image.fromarray(render_background(rng, image_size), mode="RGB")
    mask = Image.new("L", (image_size, image_size), 0)
    objects = sample_objects(rng, image_size)
    draw_img, draw_mask = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    for obj in objects:
        jitter = rng.integers(-12, 13, 3)
        fill = tuple(int(v) for v in np.clip(np.array(COLOURS[obj["colour"]]) + jitter, 0, 255))
        draw_shape(draw_img, obj["shape"], obj["box"], fill)
        draw_shape(draw_mask, obj["shape"], obj["box"], obj["mask_value"])
    captions = make_captions(objects, rng)
    return img, np.asarray(mask, dtype=np.uint8).copy(), objects, captions


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 64:
        raise ValueError(f"image_size must be an int >= 64, got {image_size!r}")


def _validate(n_train: int, n_val: int, n_test: int, image_size: int, seed: int,
              workers: int | None) -> None:
    for name, value, minimum in (("n_train", n_train, 1), ("n_val", n_val, 0),
                                 ("n_test", n_test, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            what = "a positive int" if minimum else "a non-negative int"
            raise ValueError(f"{name} must be {what}, got {value!r}")
    _check_image_size(image_size)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers must be None or a positive int, got {workers!r}")


def _render_chunk(job: tuple[str, int, int, int, int]) -> list[dict[str, Any]]:
    """Worker: render images ``start..stop-1``, write JPEG + mask, return partial entries."""
    root_s, seed, image_size, start, stop = job
    root = Path(root_s)
    entries = []
    for index in range(start, stop):
        img, mask, objects, captions = render_scene(np.random.default_rng([seed, index]),
                                                    image_size)
        name = f"scene_{index:06d}"
        img.save(root / "images" / f"{name}.jpg", format="JPEG", quality=92)
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{name}.png", format="PNG",
                                             compress_level=1)
        entries.append({"index": index, "objects": objects, "captions": captions})
    return entries


def _entry(part: dict[str, Any], split: str) -> dict[str, Any]:
    i = part["index"]
    sentids = [i * CAPTIONS_PER_IMAGE + k for k in range(CAPTIONS_PER_IMAGE)]
    sentences = [{"raw": raw, "tokens": tokenize(raw), "imgid": i, "sentid": sid}
                 for raw, sid in zip(part["captions"], sentids)]
    return {"filename": f"scene_{i:06d}.jpg", "filepath": "images", "imgid": i, "sceneid": i,
            "split": split, "sentids": sentids, "sentences": sentences,
            "objects": part["objects"], "mask": f"masks/scene_{i:06d}.png"}


def _load_meta(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("meta")
    except (OSError, ValueError, AttributeError):
        return None


def generate_scenes(root: str | Path, *, n_train: int = 8000, n_val: int = 500,
                    n_test: int = 1000, image_size: int = 224, seed: int = 0,
                    workers: int | None = None, progress: bool = True) -> Path:
    """Write (or reuse) the dataset under root; return the path of dataset_scenes.json.

    Images ``0..n_train-1`` are train, the next ``n_val`` val, the rest test. If a JSON
    with identical ``meta`` already exists it is returned without touching anything.
    """
    _validate(n_train, n_val, n_test, image_size, seed, workers)
    root = Path(root)
    json_path = root / JSON_NAME
    meta = {"generator": GENERATOR, "version": VERSION, "seed": seed, "image_size": image_size,
            "n_train": n_train, "n_val": n_val, "n_test": n_test}
    if json_path.exists() and _load_meta(json_path) == meta:
        return json_path
    # NOTE: a stale JSON (other meta) is removed before any image is overwritten; otherwise a
    # run killed mid-way would leave old captions next to new images, and a later call with
    # the old arguments would wrongly reuse that mix.
    json_path.unlink(missing_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)

    total = n_train + n_val + n_test
    workers = max(1, min(workers or os.cpu_count() or 1, total))
    chunk = max(1, min(64, math.ceil(total / (workers * 8))))
    jobs = [(str(root), seed, image_size, s, min(s + chunk, total))
            for s in range(0, total, chunk)]
    parts: list[dict[str, Any]] = []
    with tqdm(total=total, desc="scenes", unit="img", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                parts.extend(_render_chunk(job))
                bar.update(job[4] - job[3])
        else:
            # Pool.__exit__ terminates the workers, also when rendering raises or is interrupted.
            with mp.get_context().Pool(workers) as pool:
                for res in pool.imap(_render_chunk, jobs):  # ordered: output is worker-independent
                    parts.extend(res)
                    bar.update(len(res))

    def split_of(i: int) -> str:
        return "train" if i < n_train else "val" if i < n_train + n_val else "test"

    data = {"dataset": "scenes", "meta": meta,
            "images": [_entry(p, split_of(p["index"])) for p in parts]}
    # NOTE: the JSON is the completion marker, so it is written last and atomically: a run
    # killed mid-way leaves no (or the previous) JSON and the next call regenerates.
    return write_json(json_path, data, separators=(",", ":"))
