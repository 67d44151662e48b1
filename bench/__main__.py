"""`python -m bench [--quick] [--only train,beam,...] [--out-dir bench]`: measure, then write
`results.json` (every figure, the machine, the commands) and `results.md` (the README's table).

Parts (all by default): matmul, train, engine, tricks (bench/tricks.py), beam, latency, encoder, memory, extract, coco (engine:
bench/engine.py; coco writes a 5.4 GB synthetic feature cache, --coco-dir keeps it for the next run). Each figure is tied to the
machine it ran on and the command that produced it; `--merge` keeps the figures of parts not run
this time from an existing results.json (each part records its own machine and command).
`--quick` runs every part at tiny sizes in well under a minute: a check that the code works, not a
measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from sat.paths import EXAMPLES, WEIGHTS

from . import system
from .report import KEYS, PARTS, write_markdown

HERE = Path(__file__).resolve().parent
DEFAULT_WEIGHTS = WEIGHTS / "soft"


def run_part(part: str, a: argparse.Namespace, res: dict[str, Any]) -> dict[str, Any]:
    """Measure one part; returns its figures."""
    if part == "matmul":
        return system.matmul_gflops(256 if a.quick else 2048, 0.2 if a.quick else 3.0)
    if part == "train":
        from .training import QUICK, TrainShape, bench_train
        shape = QUICK if a.quick else TrainShape(batch=a.batch, vocab=a.vocab, steps=a.train_steps)
        out = bench_train(shape, bf16=not a.quick)
        if res.get("matmul_gflops"):
            out["train_fraction_of_matmul"] = round(out["train_gflops"] / res["matmul_gflops"], 3)
        return out
    if part in ("beam", "latency", "encoder"):
        from sat.captioner import Captioner
        cap = Captioner.load(a.weights, device="cpu")
        if part == "beam":
            from .inference import bench_beam, feats_for
            n = 4 if a.quick else 100
            return bench_beam(cap, feats_for(cap, sorted(EXAMPLES.glob("*.jpg")), n), beam=5)
        if part == "latency":
            from .inference import bench_latency, make_photos, photos_dir
            with photos_dir() as tmp:
                sizes = [(64, 48), (320, 240)] if a.quick else None
                photos = make_photos(Path(tmp), 3 if a.quick else a.photos, sizes=sizes)
                return bench_latency(cap, photos, beam=3)
        from .inference import bench_encoder, bf16_caption_agreement, make_photos, photos_dir
        out = bench_encoder(cap.encoder, batch=2 if a.quick else 32, iters=1 if a.quick else 4,
                            try_compile=not a.quick and not a.no_compile)
        with photos_dir() as tmp:
            images = sorted(EXAMPLES.glob("*.jpg")) + make_photos(Path(tmp), 4 if a.quick else 28,
                                                                   sizes=[(320, 240), (640, 480)])
            out["encoder_bf16_same_captions"] = bf16_caption_agreement(cap, images)
        return out
    if part == "engine":
        from .engine import bench_engine
        from .training import QUICK, TrainShape
        shape = QUICK if a.quick else TrainShape(batch=a.batch, vocab=a.vocab, steps=a.train_steps)
        return bench_engine(shape, device=torch.device("cpu"), compile=a.compile_engine)
    if part == "tricks":
        from .tricks import bench_tricks
        return bench_tricks(rounds=1 if a.quick else 3, steps=1 if a.quick else 8, quick=a.quick)
    if part == "memory":
        args = ["-m", "bench.training", "--n-images", "64" if a.quick else "8000",
                "--steps", "2" if a.quick else "20", *(["--quick"] if a.quick else [])]
        peak, stdout = system.run_child_peak_rss(args, timeout=600)
        child = json.loads(stdout.strip().splitlines()[-1])
        out = {"peak_rss_mb_train": round(peak, 1), "train_memory_images": child["n_images"],
               "train_memory_features_mb": child["features_mb"],
               "train_memory_command": "python " + " ".join(args)}
        image = sorted(EXAMPLES.glob("*.jpg"))[0]
        out.update(system.app_peak_rss(soft=str(a.weights), hard=a.hard, image=image))
        return out
    if part == "extract":
        from .extraction import bench_extract
        if a.quick:
            return bench_extract(n_photos=8, size=(160, 120), batch=4, workers=2, repeats=1)
        return bench_extract(n_photos=a.extract_photos, batch=32, workers=a.extract_workers, repeats=5,
                             device=a.extract_device)
    if part == "coco":
        from .streaming import bench_coco
        if a.quick:
            return bench_coco(None, steps=3, batch=8, workers=2, quick=True)
        return bench_coco(a.coco_dir, steps=a.coco_steps, batch=64, workers=a.coco_workers)
    raise ValueError(f"unknown part {part!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the code, measures nothing")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--out-dir", type=Path, default=HERE, help="where results.json/results.md go")
    p.add_argument("--merge", action="store_true", help="keep other parts' figures from an existing results.json")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="weights for beam/latency/encoder/app")
    p.add_argument("--hard", default=None, help="hard-attention weights for the app (default: the app's own)")
    p.add_argument("--batch", type=int, default=64, help="training batch")
    p.add_argument("--vocab", type=int, default=10000, help="training vocabulary size")
    p.add_argument("--train-steps", type=int, default=10, help="timed training steps per decoder")
    p.add_argument("--photos", type=int, default=60, help="photos for the latency figure (≥ 50)")
    p.add_argument("--extract-photos", type=int, default=200, help="640×480 JPEGs for the extraction figure")
    p.add_argument("--extract-workers", type=int, default=2, help="decode workers for the extraction figure")
    p.add_argument("--extract-device", default="cpu", help="device of the extraction figure's encoder (cpu, cuda)")
    p.add_argument("--coco-dir", type=Path, default=None,
                   help="where the synthetic COCO-sized cache (5.4 GB) is written and reused (default: a "
                        "temporary folder under /tmp, removed afterwards)")
    p.add_argument("--coco-steps", type=int, default=30, help="training steps per mode on the COCO-sized cache")
    p.add_argument("--coco-workers", type=int, default=2, help="DataLoader workers of the COCO-sized training")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile encoder variant")
    p.add_argument("--compile-engine", action="store_true",
                   help="engine part: also compile the training step (minutes of compilation on a CPU)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads here and in the child processes (default: torch's; --quick: 1)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    threads = a.threads or (1 if a.quick else 0)
    if threads:
        # NOTE: --quick uses one thread: on a busy machine (CI, or a training run beside it) two
        # OpenMP threads fighting for cores slow every op by 10-50×; a quick run only checks code.
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the training and app child processes
    parts = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"unknown part(s) {unknown}; known: {', '.join(PARTS)}")
    if "train" in parts and "matmul" not in parts and not a.merge:
        parts.insert(0, "matmul")  # NOTE: train_gflops is reported as a fraction of it
    parts = [q for q in PARTS if q in parts]
    command = "python -m bench " + " ".join(shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))
    out_json = a.out_dir / "results.json"
    res: dict[str, Any] = {k: None for k in KEYS}
    if a.merge and out_json.is_file():
        res.update(json.loads(out_json.read_text(encoding="utf-8")))
    machine = system.machine()
    res.update({"machine": machine, "quick": a.quick})
    res.setdefault("parts", {})
    res["parts"] = dict(res.get("parts") or {})
    res["commands"] = dict(res.get("commands") or {})
    for part in parts:
        t0 = time.perf_counter()
        print(f"[bench] {part} …", flush=True)
        figures = run_part(part, a, res)
        res.update(figures)
        res["parts"][part] = {"machine": machine, "command": command, "quick": a.quick,
                              "seconds": round(time.perf_counter() - t0, 1),
                              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        res["commands"][part] = command
        print(f"[bench] {part}: " + ", ".join(f"{k}={v}" for k, v in figures.items()
                                              if k in KEYS or k.endswith("_per_s")), flush=True)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    write_markdown(res, a.out_dir / "results.md")
    print(f"[bench] wrote {out_json} and {a.out_dir / 'results.md'}")
    return 0


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main())
