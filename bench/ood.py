"""`python -m bench.ood [--weights DIR] [--repeats N] [--out-dir bench]`: the OOD check's figures and
what it and the encoder's top-3 labels add to a caption's latency; writes ood.json and ood.md.

Figures: the flag rate on the model's own test split (from ood.json, measured when it was fitted),
the distance and flag of the 4 example scenes, of every real photo at hand (matplotlib's and
Gradio's sample photos) and of synthetic non-scene images (noise, gradients, plain colours, a
checkerboard), with the encoder's top-3; then one image's caption latency (beam 3, p50 over
`repeats` runs) with both extras on, the OOD check alone, and neither.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sat.atomic import write_atomic, write_json
from sat.captioner import Captioner
from sat.ood import INFO_FILE
from sat.paths import EXAMPLES, WEIGHTS

HERE = Path(__file__).resolve().parent


def real_photos() -> dict[str, Path]:
    import gradio
    import matplotlib.cbook

    g = Path(gradio.__file__).parent / "media_assets" / "images"
    found = {"grace_hopper.jpg": Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))}
    found.update({p.name: p for p in sorted(g.glob("*.jp*g"))})
    return {k: v for k, v in found.items() if v.is_file()}


def synthetic(size: int = 224) -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0, 255, size, dtype=np.uint8), (size, 1))  # (S, S)
    return {
        "uniform noise": Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)),
        "grey gradient": Image.fromarray(np.stack([ramp] * 3, -1)),
        "colour gradient": Image.fromarray(np.stack([ramp, ramp.T, np.full_like(ramp, 128)], -1)),
        "plain grey": Image.new("RGB", (size, size), (127, 127, 127)),
        "plain white": Image.new("RGB", (size, size), (255, 255, 255)),
        "checkerboard": Image.fromarray((np.indices((size, size)).sum(0) // 16 % 2 * 255).astype(np.uint8)).convert("RGB"),
    }


def check(cap: Captioner, images: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, im in images.items():
        c = cap.caption(im, mode="greedy")
        rows.append({"image": name, "distance": c.ood.distance, "flagged": c.ood.flagged,
                     "top3": c.encoder_top3, "caption": c.text})
    return rows


def latency(caps: list[Captioner], image: Path, repeats: int) -> dict[str, float]:
    """p50 ms of one app request (`studio.inference.caption_upload`: every model, beam 3) with both
    extras, the OOD check only, and neither."""
    from studio.inference import DecodeOptions, caption_upload, load_slot

    slots = [load_slot(f"m{i}", c, warmup=False) for i, c in enumerate(caps)]
    saved = [(c.ood, c.head) for c in caps]
    variants = {"full": saved, "ood_only": [(o, None) for o, _ in saved], "neither": [(None, None)] * len(caps)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    opts = DecodeOptions(beam_size=3)
    for _ in range(2):  # warm-up
        caption_upload(slots, image, opts)
    for _ in range(repeats):  # NOTE: interleaved, so load from other processes hits all three alike
        for k, pairs in variants.items():
            for c, (o, h) in zip(caps, pairs):
                c.ood, c.head = o, h
                if h is not None:
                    h._memo = None  # NOTE: a new image each time, as in the app
            t0, c0 = time.perf_counter(), time.process_time()
            caption_upload(slots, image, opts)
            times[k].append((time.perf_counter() - t0) * 1000)
            cpu[k].append((time.process_time() - c0) * 1000)
    for c, (o, h) in zip(caps, saved):
        c.ood, c.head = o, h
    # NOTE: CPU time (all threads) too: on a shared machine the wall clock mostly measures the others
    return {**{f"request_ms_p50_{k}": round(statistics.median(v), 2) for k, v in times.items()},
            **{f"request_cpu_ms_p50_{k}": round(statistics.median(v), 2) for k, v in cpu.items()}}


def parts(cap: Captioner, image: Path, repeats: int) -> dict[str, float]:
    """p50 ms of the pieces on one image's trunk map: the trunk itself, the OOD check, the ImageNet head."""
    from sat.ood import check_images

    x = cap.pixels([image])
    with torch.inference_mode():
        fmap = cap.encoder.encode_trunk(x)
        steps = {"trunk": lambda: cap.encoder.encode_trunk(x), "ood_check": lambda: check_images(cap.ood, fmap),
                 "imagenet_head": lambda: cap.head(fmap)}
        out = {}
        for name, fn in steps.items():
            fn()
            t = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                t.append((time.perf_counter() - t0) * 1000)
            out[f"{name}_ms_p50"] = round(statistics.median(t), 3)
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [f"# OOD check and encoder top-3 ({res['weights']})", "",
             f"Threshold {res['threshold']:.2f} (Mahalanobis distance of the pooled {res['dim']}-dim trunk "
             f"features); own test split flagged: {res['own_test_flagged']:.1%} of {res['n_test']} "
             f"(train split: {res['own_train_flagged']:.1%}).", "",
             "| group | image | distance | flagged | encoder top-3 |", "|---|---|---|---|---|"]
    for group in ("examples", "real_photos", "synthetic"):
        for r in res[group]:
            top = ", ".join(f"{k} {p:.0%}" for k, p in r["top3"]) if r["top3"] else ""
            lines.append(f"| {group} | {r['image']} | {r['distance']:.1f} | {'yes' if r['flagged'] else 'no'} | {top} |")
    lat = res["latency"]
    lines += ["", f"One app request (grace_hopper.jpg, {' + '.join(res['latency_models'])}, beam 3; p50 of "
              f"{res['repeats']} runs, {res['threads']} threads, load average {res['load_average']}): "
              f"with OOD + top-3 {lat['request_ms_p50_full']} ms, OOD only {lat['request_ms_p50_ood_only']} ms, "
              f"neither {lat['request_ms_p50_neither']} ms; CPU time (all threads) "
              f"{lat['request_cpu_ms_p50_full']} / {lat['request_cpu_ms_p50_ood_only']} / "
              f"{lat['request_cpu_ms_p50_neither']} ms.", "",
              f"The pieces alone (p50 of {res['repeats']}): trunk {res['parts']['trunk_ms_p50']} ms, OOD check "
              f"{res['parts']['ood_check_ms_p50']} ms, ImageNet head {res['parts']['imagenet_head_ms_p50']} ms "
              "(run once per request: the second model reuses the labels).", "",
              f"Produced by: `{res['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ood", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=WEIGHTS / "soft")
    p.add_argument("--hard", type=Path, default=WEIGHTS / "hard", help="the second model of the app request")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out-dir", type=Path, default=HERE)
    a = p.parse_args(argv)
    cap = Captioner.load(a.weights, device="cpu")
    if cap.ood is None:
        print(f"error: {cap.ood_error}", file=sys.stderr)
        return 2
    info = json.loads((a.weights / INFO_FILE).read_text())
    photos = real_photos()
    res = {"weights": str(a.weights.resolve().relative_to(HERE.parent)) if a.weights.resolve().is_relative_to(HERE.parent)
           else str(a.weights), "threshold": cap.ood.threshold, "dim": cap.ood.dim,
           "own_test_flagged": info["test_flagged"], "own_train_flagged": info["train_flagged"],
           "n_test": info["n_test"],
           "examples": check(cap, {q.name: q for q in sorted(EXAMPLES.glob("scene_*.jpg"))}),
           "real_photos": check(cap, photos), "synthetic": check(cap, synthetic()),
           "latency": latency([cap, Captioner.load(a.hard, device="cpu")], photos["grace_hopper.jpg"], a.repeats),
           "parts": parts(cap, photos["grace_hopper.jpg"], a.repeats),
           "latency_models": [a.weights.name, a.hard.name], "repeats": a.repeats,
           "load_average": round(os.getloadavg()[0], 2),
           "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "command": "python -m bench.ood " + " ".join(argv if argv is not None else sys.argv[1:])}
    a.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(a.out_dir / "ood.json", res, indent=2)
    write_atomic(a.out_dir / "ood.md", markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
