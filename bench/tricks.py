"""Do the CPU training tricks of sat/kernels.py pay? Each against the same run without it.

- "heap": `keep_freed_memory` (glibc keeps freed blocks for reuse; CPU training sets it) against
  glibc's adaptive default;
- "tanh": the attention's tanh as 2σ(2x) − 1 (`sat.kernels.tanh_`) against torch's tanh.

glibc's malloc settings are process-wide and its adaptive default cannot be restored once changed,
so each variant runs in its own child process: `python -m bench.tricks --child all|heap-default|torch-tanh`,
which times training steps as train/loop.py runs them (forward, backward, clip, fused Adam) and
prints its ms per step and peak RSS. The parent runs the children in turn, `rounds` times, so a drift
of the machine's speed lands on all; a speed-up is the median of the rounds' own ratios.

Two shapes: "scenes", the bundled model (`train.__main__.DEFAULT_MODEL`: 256 units, a 14×14 grid of
112 channels, the bundled vocabulary, captions of 6–16 words), and "bench", the training benchmark's
(bench/training.py: 512 units, 7×7×1280, 10,000 words).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

SHAPES = ("scenes", "bench")
VARIANTS = ("all", "heap-default", "torch-tanh")
"""Every trick on; all but the heap setting; all but the σ form of tanh."""


def _scenes_model_and_batches(quick: bool):
    import torch

    from sat.model import CaptionModel
    from sat.paths import WEIGHTS
    from train.__main__ import DEFAULT_MODEL

    from .training import TrainShape, make_batches

    vocab = len(json.loads((WEIGHTS / "soft" / "vocab.json").read_text(encoding="utf-8"))["itos"])
    cfg = DEFAULT_MODEL.replace(encoder="test-tiny", encoder_dim=112, grid=(14, 14), vocab_size=vocab, max_len=20)
    if quick:
        cfg = cfg.replace(embed_dim=16, attention_dim=16, decoder_dim=16, encoder_dim=8, grid=(3, 3))
    shape = TrainShape(batch=8 if quick else 64, vocab=vocab, encoder_dim=cfg.encoder_dim, grid=cfg.grid,
                       min_words=6, max_words=16)
    torch.manual_seed(0)
    return CaptionModel(cfg), make_batches(shape, 3)


def child(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--child", choices=VARIANTS, required=True)
    p.add_argument("--shape", choices=SHAPES, default="scenes")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    import torch

    import sat.attention
    from sat.kernels import keep_freed_memory

    from .system import own_peak_rss_mb
    from .training import QUICK, TrainShape, _stepper, build_pair, make_batches

    if a.child != "heap-default" and not keep_freed_memory():
        raise SystemExit("this C library has no glibc mallopt: nothing to compare")
    if a.child == "torch-tanh":
        sat.attention.tanh_ = lambda x: x.tanh_()  # NOTE: the plain op the kernel replaces
    if a.shape == "scenes":
        model, batches = _scenes_model_and_batches(a.quick)
    else:
        shape = QUICK if a.quick else TrainShape()
        model, _ = build_pair(shape)
        batches = make_batches(shape, 3)
    model.train()
    step = _stepper(model, lambda f, c: model.loss(f, c)[0], ours=True)
    step(*batches[0])  # warm-up
    t0 = time.perf_counter()
    for i in range(a.steps):
        step(*batches[(i + 1) % len(batches)])
    ms = 1000 * (time.perf_counter() - t0) / a.steps
    # NOTE: VmHWM, not ru_maxrss: Linux carries the parent's peak over fork + exec into ru_maxrss
    print(json.dumps({"ms_per_step": round(ms, 2), "peak_rss_mb": round(own_peak_rss_mb(), 1),
                      "threads": torch.get_num_threads()}))


def _run(mode: str, shape: str, steps: int, quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.tricks", "--child", mode, "--shape", shape, "--steps", str(steps)]
    out = subprocess.run(cmd + (["--quick"] if quick else []), capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_tricks(*, rounds: int = 3, steps: int = 8, quick: bool = False) -> dict[str, Any]:
    """Per shape and variant: ms per step, the rounds interleaved; each trick's speed-up."""
    res: dict[str, Any] = {"tricks_rounds": rounds, "tricks_steps": steps}
    for shape in SHAPES:
        runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for _ in range(rounds):
            for v in VARIANTS:
                runs[v].append(_run(v, shape, steps, quick))
        for v in VARIANTS:
            res[f"tricks_{shape}_step_ms_{v}"] = [r["ms_per_step"] for r in runs[v]]
            res[f"tricks_{shape}_peak_rss_mb_{v}"] = max(r["peak_rss_mb"] for r in runs[v])
        for trick, without in (("heap", "heap-default"), ("tanh", "torch-tanh")):
            ratios = [w["ms_per_step"] / a["ms_per_step"] for w, a in zip(runs[without], runs["all"])]
            res[f"tricks_{shape}_{trick}_speedup"] = round(statistics.median(ratios), 3)
    return res


if __name__ == "__main__":
    child()
