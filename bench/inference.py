"""Inference benchmarks: batched vs per-image beam search, one photo's end-to-end latency, and the
encoder's images/s under several execution variants (with their accuracy drift vs fp32).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

from sat.captioner import Captioner
from sat.encoder import Encoder
from sat.image import load_image, preprocess
from sat.search import beam_search

# NOTE: phone and camera sizes (VGA … 12 MP); the JPEG draft mode in load_image matters for the big ones.
PHOTO_SIZES = [(640, 480), (1024, 768), (1280, 960), (1600, 1200), (2048, 1536), (3024, 4032), (4000, 3000)]


def feats_for(cap: Captioner, images: list[Path], n: int) -> torch.Tensor:
    """Annotation vectors (n, L, D) of real images (repeated to n) through the encoder."""
    with torch.inference_mode():
        fmap = cap.encoder.encode_trunk(cap.pixels(images))
        feats = cap.model.annotations(fmap.float())
    reps = -(-n // feats.size(0))
    return feats.repeat(reps, 1, 1)[:n].contiguous()


def bench_beam(cap: Captioner, feats: torch.Tensor, *, beam: int = 5, per_image: int | None = None) -> dict[str, Any]:
    """Images/s of one batched beam search over all of `feats` vs one image at a time.

    "One image at a time" is measured twice: the tutorial's way (`TutorialDecoder.beam_search_one`:
    a Python loop over the image's k beams that shrinks k as beams finish and recomputes the attention
    projection every step; same weights) — the figure the target is about — and our own batched
    search called with B=1, which isolates what batching alone buys.
    """
    from .reference import reference_for

    dec, v = cap.model.decoder, cap.vocab
    kw = dict(beam_size=beam, max_len=cap.config.max_len, pad_id=v.pad_id, start_id=v.start_id, end_id=v.end_id,
              unk_id=v.unk_id)
    c = cap.config
    if (c.decoder, c.attention, c.gate) != ("lstm", "soft", True):
        raise ValueError(f"the tutorial-style search needs soft-attention LSTM weights with the gate; "
                         f"{c.attention}/{c.decoder} (gate {c.gate}) given")
    ref = reference_for(dec, attention_dim=c.attention_dim, dropout=0.0).eval()
    beam_search(dec, feats[:2], **kw)  # warm-up
    ref.beam_search_one(feats[:1], **kw)
    t0 = time.perf_counter()
    batched = beam_search(dec, feats, **kw)
    t_batch = time.perf_counter() - t0
    n_single = per_image or feats.size(0)
    t0 = time.perf_counter()
    tutorial = [ref.beam_search_one(feats[i:i + 1], **kw)[0] for i in range(n_single)]
    t_tutorial = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [beam_search(dec, feats[i:i + 1], **kw)[0] for i in range(n_single)]
    t_single = time.perf_counter() - t0
    same = sum(a.tokens == b.tokens for a, b in zip(batched, single))
    same_tutorial = sum(a.tokens == b for a, b in zip(batched, tutorial))
    ips_batch, ips_tutorial, ips_single = feats.size(0) / t_batch, n_single / t_tutorial, n_single / t_single
    return {"beam5_images_per_s": round(ips_batch, 1), "beam5_images_per_s_per_image": round(ips_tutorial, 2),
            "beam5_speedup_vs_per_image": round(ips_batch / ips_tutorial, 2),
            "beam5_same_captions": f"{same_tutorial}/{n_single}",
            "beam5_images_per_s_ours_b1": round(ips_single, 2),
            "beam5_speedup_vs_ours_b1": round(ips_batch / ips_single, 2),
            "beam5_same_captions_ours_b1": f"{same}/{n_single}",
            "beam5_batch": feats.size(0), "beam5_per_image_images": n_single,
            "beam5_mean_words": round(statistics.mean(len(h.tokens) for h in batched), 1)}


def make_photos(folder: Path, n: int, *, sizes: list[tuple[int, int]] | None = None, seed: int = 0) -> list[Path]:
    """n JPEGs of realistic sizes with photo-like content (gradients, shapes, noise) at quality 90."""
    sizes = sizes or PHOTO_SIZES
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        # NOTE: drawn small and upscaled, plus mild noise: JPEG sizes near real photos' without
        # spending seconds per 12 MP image on per-pixel randomness.
        sw, sh = max(1, w // 8), max(1, h // 8)
        yy, xx = np.mgrid[0:sh, 0:sw]
        base = np.stack([(xx * rng.uniform(0.5, 2)) % 255, (yy * rng.uniform(0.5, 2)) % 255,
                         np.full((sh, sw), rng.uniform(0, 255))], -1)
        base = base + rng.normal(0, 12, base.shape)
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = int(rng.uniform(0, w * 0.8)), int(rng.uniform(0, h * 0.8))
            box = (x0, y0, x0 + int(rng.uniform(0.1, 0.3) * w), y0 + int(rng.uniform(0.1, 0.3) * h))
            draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        p = folder / f"photo_{i:03d}_{w}x{h}.jpg"
        img.save(p, quality=90)
        paths.append(p)
    return paths


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def bench_latency(cap: Captioner, photos: list[Path], *, beam: int = 3) -> dict[str, Any]:
    """Per-photo wall time of `Captioner.caption(path, beam_size=3)`: file decode, preprocessing,
    encoder, beam search and the attention maps; then the same photos stage by stage."""
    cap.caption(photos[0], beam_size=beam)  # warm-up (the app warms up at start too)
    totals = []
    for p in photos:
        t0 = time.perf_counter()
        out = cap.caption(p, beam_size=beam)
        totals.append(1000 * (time.perf_counter() - t0))
        assert out.attention.shape[0] == len(out.tokens)
    stages: dict[str, list[float]] = {"decode_ms": [], "preprocess_ms": [], "encoder_ms": [], "search_ms": []}
    with torch.inference_mode():
        for p in photos:
            t0 = time.perf_counter()
            img = load_image(p, decode_for=cap.config.preprocessing)  # as Captioner.pixels decodes
            t1 = time.perf_counter()
            x = preprocess(img, **cap.config.preprocessing)[None]
            t2 = time.perf_counter()
            fmap = cap.encoder.encode_trunk(x)
            t3 = time.perf_counter()
            cap.caption_features(fmap, beam_size=beam)
            t4 = time.perf_counter()
            for k, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                stages[k].append(1000 * dt)
    return {"latency_ms_p50": round(_pct(totals, 50), 1), "latency_ms_p95": round(_pct(totals, 95), 1),
            "latency_ms_max": round(max(totals), 1), "latency_photos": len(photos),
            "latency_sizes": sorted({f"{Image.open(p).width}x{Image.open(p).height}" for p in photos}),
            "latency_stage_ms_p50": {k: round(_pct(v, 50), 1) for k, v in stages.items()}}


# ----------------------------------------------------------------------------- encoder variants

def _ips(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, iters: int) -> float:
    with torch.inference_mode():
        fn(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(iters):
            fn(x)
    return iters * x.size(0) / (time.perf_counter() - t0)


def _drift(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    with torch.inference_mode():
        y = fn(x).float()
    d = (y - ref).abs()
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
            "rel_mean_abs_diff": float(d.mean() / ref.abs().mean().clamp_min(1e-12))}


def bench_encoder(encoder: Encoder, *, batch: int = 32, size: int = 224, iters: int = 3,
                  try_compile: bool = True) -> dict[str, Any]:
    """Images/s of the encoder trunk for each variant; accuracy drift of each vs fp32 channels-last."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    base = encoder.encode_trunk
    with torch.inference_mode():
        ref = base(x).float()
    variants: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "fp32 channels-last (default)": base,
        "fp32 NCHW (contiguous)": lambda t: encoder.trunk(t.contiguous()),
    }
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        def bf16(t: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return base(t)
        variants["bf16 autocast channels-last"] = bf16
    results: dict[str, dict[str, Any]] = {}
    threads = torch.get_num_threads()
    for name, fn in variants.items():
        results[name] = {"images_per_s": round(_ips(fn, x, iters), 1), **_drift(fn, x, ref)}
    if threads > 1:
        torch.set_num_threads(max(1, threads // 2))
        try:
            results[f"fp32 channels-last, {max(1, threads // 2)} thread(s)"] = {
                "images_per_s": round(_ips(base, x, iters), 1)}
        finally:
            torch.set_num_threads(threads)
    if try_compile:
        results["torch.compile (fp32)"] = _compiled(encoder, x, ref, iters)
    best = max((r for r in results.values() if "images_per_s" in r), key=lambda r: r["images_per_s"])
    return {"encoder_images_per_s": results["fp32 channels-last (default)"]["images_per_s"],
            "encoder_best_images_per_s": best["images_per_s"], "encoder_batch": batch, "encoder_size": size,
            "encoder_threads": threads, "encoder_variants": results}


def _compiled(encoder: Encoder, x: torch.Tensor, ref: torch.Tensor, iters: int) -> dict[str, Any]:
    """torch.compile of the trunk; any failure (no compiler, unsupported build) is reported, not raised."""
    try:
        t0 = time.perf_counter()
        fn = torch.compile(encoder.trunk)
        run = lambda t: fn(t.contiguous(memory_format=torch.channels_last))  # noqa: E731
        with torch.inference_mode():
            run(x)
        compile_s = time.perf_counter() - t0
        return {"images_per_s": round(_ips(run, x, iters), 1), "compile_s": round(compile_s, 1), **_drift(run, x, ref)}
    except Exception as e:  # noqa: BLE001 - every failure mode of the compiler stack is a result here
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}


def bf16_caption_agreement(cap: Captioner, images: list[Path], *, beam: int = 3) -> str | None:
    """How many captions stay the same when the encoder runs under bf16 autocast ("k/n")."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    with torch.inference_mode():
        x = cap.pixels(images)
        ref = cap.caption_features(cap.encoder.encode_trunk(x), beam_size=beam)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fmap = cap.encoder.encode_trunk(x)
        low = cap.caption_features(fmap.float(), beam_size=beam)
    return f"{sum(a.words == b.words for a, b in zip(ref, low))}/{len(ref)}"


def photos_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="sat-bench-photos-")
