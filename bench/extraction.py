"""Feature extraction vs the encoder alone: does decoding keep the encoder busy?

`extract_vs_encoder` = images/s of the real `train.features.extract_features` on generated JPEG
photos (decode + preprocess as the extraction does by default on this device, the encoder, the
float16 cache writes and its progress file) ÷ images/s of the encoder trunk alone on the same images
already decoded and preprocessed (same encoder, 224 px, same batch). 1.0: decoding costs nothing.

The default decodes with `train.features.decode_workers(None, device)` worker processes: none on the
CPU (a thread pool decodes each batch between the encoder's batches), min(8, cores) on a GPU. The
same run with `workers` DataLoader processes (2 by default) is timed beside it, round by round.

NOTE: on a CPU-only machine decoding and the encoder share the same cores, so the ratio measures
how little decoding costs next to the encoder there; on a GPU box the workers run on cores the
encoder does not use.
"""
from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.inference import make_photos
from sat.config import ModelConfig
from sat.image import model_input
from train.features import decode_workers, decode_threads, extract_features
from train.pipeline import encoder_config


def _cpu_s() -> float:
    """CPU seconds used so far by this process and its finished children (the decode workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _encoder_only(encoder, x: torch.Tensor, batch: int) -> tuple[float, torch.Tensor, float]:
    """Images/s of the trunk over all of `x` (N, 3, S, S, already on the encoder's device) in batches;
    its maps (N, C, h, w) float16 on the CPU; and the CPU ms it used per image."""
    out = []
    with torch.inference_mode():
        _sync(x.device)
        c0, t0 = _cpu_s(), time.perf_counter()
        for i in range(0, x.size(0), batch):
            out.append(encoder.encode_trunk(x[i:i + batch]))
        _sync(x.device)
        dt, cpu = time.perf_counter() - t0, _cpu_s() - c0
    return x.size(0) / dt, torch.cat(out).float().cpu().to(torch.float16), 1000 * cpu / x.size(0)


def _extract(encoder, photos: list[Path], root: Path, cache_dir: Path, *, batch: int, workers: int,
             preprocessing: dict[str, Any], device: torch.device) -> tuple[float, np.ndarray, float]:
    """Images/s of one whole `extract_features` call into an empty cache folder; the cache's maps; and
    the CPU ms per image of this process and its decode workers together."""
    c0, t0 = _cpu_s(), time.perf_counter()
    cache = extract_features(photos, [p.name for p in photos], encoder=encoder, dataset_root=root,
                             cache_dir=cache_dir, batch_size=batch, workers=workers, progress=False,
                             device=device, **preprocessing)
    dt, cpu = time.perf_counter() - t0, _cpu_s() - c0
    return len(photos) / dt, np.asarray(cache.maps), 1000 * cpu / len(photos)


def bench_extract(*, n_photos: int = 200, size: tuple[int, int] = (640, 480), batch: int = 32,
                  workers: int = 2, repeats: int = 2, encoder: str = "efficientnet-lite0",
                  feature_map: str = "stride16", image_size: int = 224,
                  device: torch.device | str = "cpu") -> dict[str, Any]:
    """`repeats` interleaved rounds of: the encoder alone, the extraction as it runs by default, the
    extraction with `workers` DataLoader processes. Ratios: the median of the rounds' own ratios."""
    device = torch.device(device)
    enc, cfg = encoder_config(ModelConfig(encoder=encoder, feature_map=feature_map, image_size=image_size))
    enc = enc.to(device).eval()
    pp = cfg.preprocessing
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sat-bench-extract-") as tmp:
        root = Path(tmp) / "photos"
        photos = make_photos(root, n_photos, sizes=[size])
        # NOTE: one torch thread, as in a DataLoader worker: with two, every small tensor op of the
        # preprocessing wakes an OpenMP team, and on a busy machine its spinning costs 10× the decode
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            c0, t0 = time.process_time(), time.perf_counter()
            x = torch.stack([model_input(p, **pp) for p in photos])  # (N, 3, S, S): extraction's own path
            decode_s, decode_cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            torch.set_num_threads(threads)
        x = x.to(device)
        _encoder_only(enc, x[:batch], batch)  # warm-up: oneDNN picks its kernels
        default = decode_workers(None, device)
        enc_rates, ext_rates, proc_rates, enc_cpu, ext_cpu, ref = [], [], [], [], [], None
        for r in range(repeats):
            rate, ref, cpu = _encoder_only(enc, x, batch)
            enc_rates.append(rate)
            enc_cpu.append(cpu)
            rate, maps, cpu = _extract(enc, photos, root, Path(tmp) / f"cache{r}", batch=batch, workers=default,
                                       preprocessing=pp, device=device)
            ext_rates.append(rate)
            ext_cpu.append(cpu)
            rate, maps_w, _ = _extract(enc, photos, root, Path(tmp) / f"cache-w{r}", batch=batch, workers=workers,
                                       preprocessing=pp, device=device)
            proc_rates.append(rate)
    drift = float(np.abs(maps.astype(np.float32) - ref.numpy().astype(np.float32)).max())
    enc_best, ext_best = max(enc_rates), max(ext_rates)
    # NOTE: the ratios are the median of each round's own ratio: a round's runs follow each other,
    # so they compare like with like on a machine whose speed drifts (±25 % here), best-of-each does not
    rounds = [e / n for e, n in zip(ext_rates, enc_rates)]
    rounds_proc = [e / n for e, n in zip(proc_rates, enc_rates)]
    return {
        "extract_vs_encoder": round(float(np.median(rounds)), 3),
        "extract_images_per_s": round(ext_best, 1),
        "extract_encoder_only_images_per_s": round(enc_best, 1),
        "extract_images_per_s_processes": round(max(proc_rates), 1),
        "extract_vs_encoder_processes": round(float(np.median(rounds_proc)), 3),
        "extract_decode_only_images_per_s": round(n_photos / decode_s, 1),
        "extract_rounds_images_per_s": [round(v, 1) for v in ext_rates],
        "extract_rounds_encoder_only_images_per_s": [round(v, 1) for v in enc_rates],
        "extract_rounds_vs_encoder": [round(v, 3) for v in rounds],
        "extract_rounds_vs_encoder_processes": [round(v, 3) for v in rounds_proc],
        # NOTE: CPU time (this process + the decode workers) is what a busy machine distorts least:
        # with no idle core, extraction can reach at best encoder CPU ÷ extraction CPU of its rate
        "extract_decode_only_cpu_ms_per_image": round(1000 * decode_cpu / n_photos, 2),
        "extract_cpu_ms_per_image": round(min(ext_cpu), 1),
        "extract_encoder_only_cpu_ms_per_image": round(min(enc_cpu), 1),
        "extract_cpu_ratio": round(min(enc_cpu) / min(ext_cpu), 3),
        "extract_workers": default, "extract_decode_threads": decode_threads(default),
        "extract_process_workers": workers, "extract_batch": batch, "extract_photos": n_photos,
        "extract_photo_size": f"{size[0]}x{size[1]}", "extract_image_size": image_size,
        "extract_encoder": f"{encoder} ({feature_map}: {tuple(maps.shape[1:])})",
        "extract_threads": torch.get_num_threads(), "extract_device": str(device),
        # NOTE: the cache holds what the encoder computes (float16), whatever decoded the images
        "extract_max_abs_diff_vs_encoder": drift,
        "extract_processes_same_cache": bool(np.array_equal(maps, maps_w)),
        "extract_loadavg_1min_before": round(load_before, 2),
        "extract_loadavg_1min_after": round(os.getloadavg()[0], 2),
    }
