"""Training on a COCO-sized feature cache: peak memory per process and tokens/s, with the maps streamed
from the memory-mapped cache vs the whole training split copied into RAM first (as before).

    python -m bench.streaming write --coco-dir DIR          # the synthetic cache only (≈ 5.4 GB)
    python -m bench.streaming child --coco-dir DIR --mode stream|ram --steps N --batch B --workers W

The cache has the real layout (`train.features`: features.f16 + meta.json, written last) at COCO's
size: 123,287 images × 112 × 14 × 14 float16 (efficientnet-lite0's stride-16 map at 224 px) ≈ 5.4 GB.
Training uses Karpathy's train + restval images (all but 10,000 held out), 5 captions each, of exactly
CAPTION_WORDS words, so every step scores batch × (CAPTION_WORDS + 1) tokens and tokens/s is exact.
Each mode runs in its own process; it reports its peak RSS (VmHWM) and its children's (ru_maxrss of
the processes it waited for: the DataLoader workers): the memory figure is the larger, per process.
NOTE: a forked worker's RSS counts the pages it shares with its parent, so the children's figure is
an upper bound of what a worker adds.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sat.atomic import write_json
from train.features import DATA, META, FeatureCache, open_cache

COCO_IMAGES = 123_287
COCO_MAP = (112, 14, 14)  # (C, h, w): efficientnet-lite0 stride 16 at 224 px
HELD_OUT = 10_000  # NOTE: Karpathy's 5,000 val + 5,000 test images: never trained on
CAPTIONS_PER_IMAGE = 5
CAPTION_WORDS = 12  # NOTE: about COCO's mean (≈ 10.5 words); fixed, so the token count is exact
VOCAB = 10_000  # about the Karpathy COCO vocabulary at min count 5


def write_synthetic_cache(folder: str | Path, *, images: int = COCO_IMAGES, map_shape: tuple[int, int, int] = COCO_MAP,
                          chunk: int = 2048, seed: int = 0, progress: bool = True) -> FeatureCache:
    """A complete feature cache of random-ish non-negative maps in `folder` (kept when it already is one
    of this shape). Written in chunks, each through its own np.memmap: this process holds about a chunk."""
    folder = Path(folder)
    shape = (images, *map_shape)
    have = open_cache(folder)
    if have is not None and have.maps.shape == shape:
        return have
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META).unlink(missing_ok=True)  # NOTE: an unfinished cache is never served
    nbytes = int(np.prod(shape)) * 2
    old = (folder / DATA).stat().st_size if (folder / DATA).is_file() else 0
    free = shutil.disk_usage(folder).free + old
    if nbytes > free:
        raise OSError(f"the synthetic cache needs {nbytes / 2**30:.1f} GB in {folder}, {free / 2**30:.1f} GB "
                      "free there; point --coco-dir at a disk with room")
    rng = np.random.default_rng(seed)
    # NOTE: rows drawn from a pool of random ReLU-like maps plus a per-chunk scale: random-ish values
    # (no page is all zeros or a copy of its neighbour) at disk speed, not at random-generator speed.
    pool = np.maximum(rng.standard_normal((256, *map_shape), dtype=np.float32), 0).astype(np.float16)
    np.memmap(folder / DATA, dtype=np.float16, mode="w+", shape=shape).flush()  # the file, at full size
    row = int(np.prod(map_shape)) * 2
    for start in tqdm(range(0, images, chunk), desc="synthetic cache", unit="chunk", disable=not progress):
        n = min(chunk, images - start)
        block = pool[rng.integers(0, len(pool), n)]  # (n, C, h, w)
        block *= np.float16(rng.uniform(0.5, 2.0))
        # NOTE: one mapping per chunk, flushed and closed: written pages leave this process's RSS
        part = np.memmap(folder / DATA, dtype=np.float16, mode="r+", offset=start * row, shape=(n, *map_shape))
        part[:] = block
        part.flush()
        del part
    write_json(folder / META, {"ids": [f"synthetic_{i:06d}" for i in range(images)], "shape": list(shape),
                               "failed": {}, "encoder": "synthetic", "feature_map": "stride16",
                               "weights": None, "preprocessing": {}})
    return open_cache(folder)


def synthetic_captions(n_images: int, *, per_image: int = CAPTIONS_PER_IMAGE, words: int = CAPTION_WORDS,
                       vocab: int = VOCAB, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (P,), captions (P, words + 2)): `per_image` captions per image, <start>=1 w… <end>=2, no padding."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(n_images).repeat_interleave(per_image)  # (P,)
    caps = torch.randint(4, vocab, (len(rows), words + 2), generator=g)  # (P, T+1)
    caps[:, 0], caps[:, -1] = 1, 2
    return rows, caps


def train_child(argv: list[str] | None = None) -> dict[str, Any]:
    """One training run on the cache (`--mode stream`: maps read from the memmap by the DataLoader;
    `ram`: the training rows copied into a tensor first); prints and returns its figures."""
    import dataclasses

    from bench.system import own_peak_rss_mb
    from sat.model import CaptionModel
    from train import loop
    from train.__main__ import DEFAULT_MODEL, DEFAULT_TRAIN

    p = argparse.ArgumentParser(prog="python -m bench.streaming child")
    p.add_argument("--coco-dir", type=Path, required=True)
    p.add_argument("--mode", choices=["stream", "ram"], required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="a tiny model (checks the code)")
    a = p.parse_args(argv)
    cache = open_cache(a.coco_dir)
    if cache is None:
        raise SystemExit(f"error: no complete feature cache in {a.coco_dir} (run `python -m bench.streaming write`)")
    n = len(cache.ids)
    train_rows = np.arange(n - HELD_OUT if n > 2 * HELD_OUT else n)
    t0 = time.perf_counter()
    maps: Any = loop.FeatureRows(cache.maps, train_rows)  # (N, C, h, w) read on demand from the file
    if a.mode == "ram":
        maps = maps.in_ram()  # what training did before streaming: the split copied into RAM
    load_s = time.perf_counter() - t0
    vocab = 60 if a.quick else VOCAB
    rows, caps = synthetic_captions(len(train_rows), vocab=vocab)
    C, h, w = cache.maps.shape[1:]
    cfg = DEFAULT_MODEL.replace(vocab_size=vocab, max_len=CAPTION_WORDS + 2, encoder_dim=C, grid=(h, w))
    if not a.quick:  # NOTE: the --preset coco decoder sizes (train/presets.py)
        cfg = cfg.replace(embed_dim=512, attention_dim=512, decoder_dim=512)
    else:
        cfg = cfg.replace(embed_dim=16, attention_dim=16, decoder_dim=16)
    tc = dataclasses.replace(DEFAULT_TRAIN, epochs=1, max_steps=a.steps, batch_size=a.batch, captions_per_image=0,
                             workers=a.workers)
    torch.manual_seed(0)
    model = CaptionModel(cfg)
    with tempfile.TemporaryDirectory(prefix="sat-bench-coco-run-") as tmp:
        hist = loop.fit(model, data=loop.CaptionData(maps=maps, rows=rows, captions=caps),
                        validate=lambda m: 0.0, out_dir=tmp, config=tc, progress=False)
    steps = hist[-1]["steps"]
    secs = max(hist[-1]["train_seconds"], 0.05)  # NOTE: rounded to 0.1 s by fit; only quick runs are that short
    out = {"mode": a.mode, "peak_rss_mb": round(own_peak_rss_mb(), 1),
           "children_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
           "tokens_per_s": round(steps * a.batch * (CAPTION_WORDS + 1) / secs, 1), "train_seconds": secs,
           "steps": steps, "batch": a.batch, "workers": a.workers, "load_seconds": round(load_s, 1),
           "images": int(len(train_rows)), "pairs": int(len(rows)), "cache_gb": round(cache.maps.nbytes / 1e9, 2)}
    print(json.dumps(out), flush=True)
    return out


def bench_coco(coco_dir: Path | None, *, steps: int = 30, batch: int = 64, workers: int = 2,
               quick: bool = False, timeout: float = 1800) -> dict[str, Any]:
    """Write (or reuse) the synthetic cache, train `steps` steps streamed and in RAM, compare.

    `coco_dir` None: a temporary folder under /tmp, removed afterwards (the cache is 5.4 GB)."""
    from bench.system import run_child_peak_rss

    tmp = None
    if coco_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="sat-bench-coco-", dir="/tmp")
        coco_dir = Path(tmp.name)
    try:
        t0 = time.perf_counter()
        size = dict(images=300, map_shape=(16, 2, 2)) if quick else {}
        write_synthetic_cache(coco_dir, **size, progress=not quick)
        write_s = time.perf_counter() - t0
        runs = {}
        for mode in ("stream", "ram"):
            args = ["-m", "bench.streaming", "child", "--coco-dir", str(coco_dir), "--mode", mode,
                    "--steps", str(steps), "--batch", str(batch), "--workers", str(workers),
                    *(["--quick"] if quick else [])]
            peak, stdout = run_child_peak_rss(args, timeout=timeout)
            runs[mode] = {**json.loads(stdout.strip().splitlines()[-1]), "command": "python " + " ".join(args)}
    finally:
        if tmp is not None:
            tmp.cleanup()
    s, r = runs["stream"], runs["ram"]
    return {"peak_rss_mb_train_coco_scale": max(s["peak_rss_mb"], s["children_peak_rss_mb"]),
            "train_streamed_vs_ram": round(s["tokens_per_s"] / r["tokens_per_s"], 3),
            "coco_tokens_per_s_streamed": s["tokens_per_s"], "coco_tokens_per_s_ram": r["tokens_per_s"],
            "coco_peak_rss_mb_streamed_main": s["peak_rss_mb"], "coco_peak_rss_mb_streamed_children": s["children_peak_rss_mb"],
            "coco_peak_rss_mb_ram": max(r["peak_rss_mb"], r["children_peak_rss_mb"]),
            "coco_cache_gb": s["cache_gb"], "coco_images_trained": s["images"], "coco_pairs": s["pairs"],
            "coco_steps": steps, "coco_batch": batch, "coco_workers": s["workers"],
            "coco_load_seconds_ram": r["load_seconds"], "coco_cache_write_seconds": round(write_s, 1),
            "coco_commands": {m: v["command"] for m, v in runs.items()}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        train_child(argv[1:])
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.streaming")
    p.add_argument("what", choices=["write"])
    p.add_argument("--coco-dir", type=Path, required=True)
    p.add_argument("--images", type=int, default=COCO_IMAGES)
    a = p.parse_args(argv)
    try:
        cache = write_synthetic_cache(a.coco_dir, images=a.images)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{cache.path}: {cache.maps.shape} float16, {cache.maps.nbytes / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
