"""Training throughput (target tokens/s) of our decoder vs the tutorial-style reference, its FLOPs,
and a short training run in a child process for the peak-memory figure.

Both decoders see the same batches: random annotation vectors (B, L, D) and random captions of
8–20 words (<start> … <end>, padded), one training step = loss + backward + grad clip + Adam.
A token is a target the loss scores (every word plus <end>), so padding never counts.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from sat.config import ModelConfig
from sat.model import CaptionModel

from train.loop import make_optimizer

from .reference import TutorialDecoder, reference_for


@dataclass(frozen=True)
class TrainShape:
    batch: int = 64
    vocab: int = 10000
    """NOTE: about the Karpathy COCO vocabulary at min count 5; the output layer scales with it."""
    embed: int = 512
    attention: int = 512
    decoder: int = 512
    encoder_dim: int = 1280
    grid: tuple[int, int] = (7, 7)
    min_words: int = 8
    max_words: int = 20
    steps: int = 6
    """Timed steps per decoder (after one warm-up step)."""
    dropout: float = 0.5


QUICK = TrainShape(batch=6, vocab=50, embed=16, attention=16, decoder=24, encoder_dim=32, grid=(2, 2),
                   min_words=2, max_words=6, steps=1)


def make_batches(shape: TrainShape, n: int, *, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """n batches of (feature maps (B, D, h, w), captions (B, T+1)) with random caption lengths."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        fmap = torch.randn(shape.batch, shape.encoder_dim, *shape.grid, generator=g).relu_()
        words = torch.randint(shape.min_words, shape.max_words + 1, (shape.batch,), generator=g)
        caps = torch.zeros(shape.batch, shape.max_words + 2, dtype=torch.long)
        for i, n_words in enumerate(words.tolist()):
            caps[i, 0] = 1  # <start>
            caps[i, 1:n_words + 1] = torch.randint(4, shape.vocab, (n_words,), generator=g)
            caps[i, n_words + 1] = 2  # <end>
        caps = caps[:, : int((caps != 0).sum(1).max())]  # trimmed as train/loop.py does
        out.append((fmap, caps))
    return out


def build_pair(shape: TrainShape, *, seed: int = 0) -> tuple[CaptionModel, TutorialDecoder]:
    """Our model and a reference decoder holding a copy of the same weights."""
    torch.manual_seed(seed)
    cfg = ModelConfig(encoder="test-tiny", encoder_dim=shape.encoder_dim, grid=shape.grid, vocab_size=shape.vocab,
                      max_len=shape.max_words, embed_dim=shape.embed, attention_dim=shape.attention,
                      decoder_dim=shape.decoder, dropout=shape.dropout)
    ours = CaptionModel(cfg)
    ref = reference_for(ours.decoder, attention_dim=shape.attention, dropout=shape.dropout)
    return ours, ref


def _annotations(fmap: torch.Tensor) -> torch.Tensor:
    return fmap.flatten(2).transpose(1, 2)  # (B, L, D), as CaptionModel.annotations


def _time_steps(steps: dict, batches, n_steps: int) -> dict[str, tuple[float, int]]:
    """Seconds and target tokens of `n_steps` training steps for each named step function.

    NOTE: the step functions take turns, one step each, so a change in the machine's speed during
    the run (other tenants, clock) lands on all of them alike instead of on whichever ran then.
    """
    for step in steps.values():
        step(*batches[0])  # warm-up (allocator, oneDNN primitive cache)
    out = {name: [0.0, 0] for name in steps}
    for i in range(n_steps):
        fmap, caps = batches[(i + 1) % len(batches)]
        for name, step in steps.items():
            t0 = time.perf_counter()
            step(fmap, caps)
            out[name][0] += time.perf_counter() - t0
            out[name][1] += int((caps[:, 1:] != 0).sum())
    return {name: (secs, tok) for name, (secs, tok) in out.items()}


def _stepper(module: torch.nn.Module, loss_fn, *, ours: bool = False):
    # NOTE: ours trains with our training loop's optimizer (fused Adam); the reference with the
    # tutorial's plain torch.optim.Adam. Same update rule, same learning rate.
    params = [{"params": list(module.parameters()), "lr": 1e-4}]
    opt = make_optimizer(params) if ours else torch.optim.Adam(params)

    def step(fmap, caps):
        loss = loss_fn(fmap, caps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0)
        opt.step()
    return step


def train_flops_per_token(model: CaptionModel, fmap: torch.Tensor, caps: torch.Tensor) -> float:
    """Matmul/conv FLOPs of one forward + backward of `model.loss`, per target token."""
    with FlopCounterMode(display=False) as counter:
        loss, _ = model.loss(fmap, caps)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / int((caps[:, 1:] != 0).sum())


def reference_flops_per_token(ref: TutorialDecoder, fmap: torch.Tensor, caps: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter:
        ref.loss(_annotations(fmap), caps).backward()
    ref.zero_grad(set_to_none=True)
    return counter.get_total_flops() / int((caps[:, 1:] != 0).sum())


def bench_train(shape: TrainShape, *, bf16: bool = True) -> dict[str, Any]:
    """Tokens/s of ours and of the reference on identical batches; ours under bf16 autocast too."""
    from sat.kernels import keep_freed_memory
    keep_freed_memory()  # NOTE: as train/loop.py's fit on the CPU; the process-wide setting serves both
    ours, ref = build_pair(shape)
    ours.train()
    ref.train()
    batches = make_batches(shape, 3)
    steps = {"ours": _stepper(ours, lambda f, c: ours.loss(f, c)[0], ours=True),
             "ref": _stepper(ref, lambda f, c: ref.loss(_annotations(f), c))}
    if bf16 and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        ours_bf16 = copy.deepcopy(ours)  # NOTE: its own weights and optimizer: same start as ours

        def bf16_loss(f, c):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return ours_bf16.loss(f, c)[0]
        steps["bf16"] = _stepper(ours_bf16, bf16_loss, ours=True)
    timed = _time_steps(steps, batches, shape.steps)
    (secs_ours, tok_ours), (secs_ref, tok_ref) = timed["ours"], timed["ref"]
    res: dict[str, Any] = {
        "train_tokens_per_s": round(tok_ours / secs_ours, 1),
        "train_tokens_per_s_reference": round(tok_ref / secs_ref, 1),
        "train_speedup_vs_reference": round((tok_ours / secs_ours) / (tok_ref / secs_ref), 2),
        "train_step_ms": round(1000 * secs_ours / shape.steps, 1),
        "train_step_ms_reference": round(1000 * secs_ref / shape.steps, 1),
        "train_shape": {k: (list(v) if isinstance(v, tuple) else v) for k, v in shape.__dict__.items()},
        "train_padding_fraction": round(1 - tok_ours / shape.steps / _slots(batches, shape.steps), 3),
    }
    fmap, caps = batches[0]
    res["train_flops_per_token"] = round(train_flops_per_token(ours, fmap, caps))
    res["train_flops_per_token_reference"] = round(reference_flops_per_token(ref, fmap, caps))
    res["train_gflops"] = round(res["train_flops_per_token"] * res["train_tokens_per_s"] / 1e9, 2)
    if "bf16" in timed:
        secs, tok = timed["bf16"]
        res["train_tokens_per_s_bf16"] = round(tok / secs, 1)
        # NOTE: ours under `--bf16` (AMX/AVX512-BF16 matmuls) against the same fp32 tutorial loop
        res["train_speedup_vs_reference_bf16"] = round((tok / secs) / (tok_ref / secs_ref), 2)
    return res


def _slots(batches, n_steps: int) -> float:
    """Mean (B × T) decoder slots per timed step: what our padded batch computes."""
    used = [batches[(i + 1) % len(batches)][1] for i in range(n_steps)]
    return sum(c[:, 1:].numel() for c in used) / n_steps


# ----------------------------------------------------------------------------- memory (child process)

def memory_child(argv: list[str] | None = None) -> None:
    """`python -m bench.training --n-images N --steps S [--quick]`: a short `train.loop.fit` run on
    random features held in RAM as the real trainer holds them; prints its peak RSS as JSON."""
    import tempfile

    from bench.system import own_peak_rss_mb
    from train.__main__ import DEFAULT_MODEL, DEFAULT_TRAIN
    from train.loop import CaptionData, TrainConfig, fit

    p = argparse.ArgumentParser()
    p.add_argument("--n-images", type=int, default=8000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    cfg = DEFAULT_MODEL.replace(vocab_size=60, max_len=20)
    if a.quick:
        cfg = cfg.replace(embed_dim=16, attention_dim=16, decoder_dim=16, encoder_dim=32, grid=(2, 2))
    C, (h, w) = cfg.encoder_dim, cfg.grid
    # the cache as caption_data loads it: float16 in RAM (filled in chunks: no float32 copy of it all)
    maps = torch.empty(a.n_images, C, h, w, dtype=torch.float16)
    for i in range(0, a.n_images, 256):
        maps[i:i + 256] = torch.randn(min(256, a.n_images - i), C, h, w, generator=g).relu_()
    rows = torch.arange(a.n_images).repeat_interleave(2)
    caps = torch.zeros(len(rows), cfg.max_len + 2, dtype=torch.long)
    lens = torch.randint(8, cfg.max_len + 1, (len(rows),), generator=g)
    for i, n in enumerate(lens.tolist()):
        caps[i, 0], caps[i, 1:n + 1], caps[i, n + 1] = 1, torch.randint(4, 60, (n,), generator=g), 2
    model = CaptionModel(cfg)
    tc = TrainConfig(**{**DEFAULT_TRAIN.__dict__, "epochs": 1, "max_steps": a.steps})
    with tempfile.TemporaryDirectory() as tmp:
        fit(model, data=CaptionData(maps, rows, caps), validate=lambda m: 0.0, out_dir=tmp, config=tc,
            progress=False)
    print(json.dumps({"peak_rss_mb": round(own_peak_rss_mb(), 1), "n_images": a.n_images,
                      "features_mb": round(maps.numel() * 2 / 2 ** 20, 1), "steps": a.steps}))


if __name__ == "__main__":
    memory_child()
