"""The training loop: teacher forcing, Adam, clipping, LR-on-plateau and early stopping on a
validation score computed from *generated* captions, checkpoints with optimizer + RNG state.

It knows nothing about a specific decoder: it calls `model(maps, captions)` (the loss, stats as
tensors: one host sync per step, for logging) and a `validate(model) -> float` callback (higher is better; BLEU-4 of greedy captions by default).

Batches stream from the feature cache through a DataLoader (train/batches.py). Under torchrun
(train/distributed.py) the model is wrapped in DistributedDataParallel: every rank draws the same
shuffled order and takes its rows of each *global* batch (`--batch-size` is the global batch), DDP
all-reduces the gradients during the backward pass, and rank 0 alone validates, logs and
checkpoints. For soft attention the result equals a single process with the same batch size, up to
float rounding (see `_step`). Hard attention: each rank samples its own locations, and the reward
baselines b_t are rank 0's running averages (DDP copies rank 0's buffers to every rank before each
forward), so an N-rank hard run is a different random run than one process, not the same numbers.
"""
from __future__ import annotations

import csv
import functools
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from sat.atomic import write_json
from sat.kernels import check_mode, cpu_kernels, keep_freed_memory, use_cpu_kernels
from sat.model import CaptionModel, stats_to_floats
from train import distributed as D
from train.batches import Batch, CaptionData, FeatureRows, batch_loader  # noqa: F401 (re-exported)
from train.checkpoint import apply_settings, check_model, load_checkpoint, resumed_config, save_atomic

LAST, BEST = "last.pt", "best.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. The defaults are the bundled models' (the CLI's `fit` flags default to them
    too: one source), measured on the scenes; see README "Train"."""
    epochs: int = 10
    """Maximum number of passes over the (image, caption) pairs."""
    batch_size: int = 64
    """(image, caption) pairs per optimizer step."""
    lr: float = 1e-3
    """Adam learning rate of the decoder."""
    encoder_lr: float = 1e-4
    """Adam learning rate of the fine-tuned encoder blocks (if any)."""
    grad_clip: float = 5.0
    """Clip the global gradient norm to this value (0 = off)."""
    alpha_c: float = 0.0
    """λ of the doubly stochastic attention regulariser (averaged over the L locations, see
    `sat.attention.doubly_stochastic`). NOTE: 0 by default: measured on the scenes, see README "Train"."""
    lr_patience: int = 1
    """Epochs without a better validation score before the LR is multiplied by lr_factor."""
    lr_factor: float = 0.5
    """LR decay factor on plateau."""
    early_stop: int = 3
    """Stop after this many epochs without a better validation score (0 = never)."""
    seed: int = 0
    """Seeds parameter init (done by the caller), dropout and the shuffling order."""
    max_steps: int = 0
    """Stop after this many optimizer steps in total (0 = no limit); for smoke tests."""
    captions_per_image: int = 2
    """Captions drawn per image each epoch (0 = every caption every epoch). NOTE: 2 makes an epoch
    2.5 times shorter on 5-caption data while every caption is still seen across epochs."""
    init_from: str = ""
    """Weights folder (or hf://owner/repo[@revision]) whose tensors start the training instead of a random initialisation (fine-tuning;
    the default run starts hard attention from the soft model). Same vocabulary and tensor shapes
    required; only buffers the folder lacks (hard attention's baselines) keep their initial value."""
    bf16: bool = False
    """bfloat16 autocast of the forward pass (weights, gradients, Adam and the loss sum stay float32).
    On CUDA the matmuls run on bf16 tensor cores; on CPU oneDNN runs them in bf16 where the CPU has
    AVX512-BF16/AMX, and elsewhere bf16 is emulated (slower): off by default."""
    cpu_kernels: str = "auto"
    """The CPU micro-kernels (sat/kernels.py: StepLSTMCell, chunked cross-entropy and attention):
    'auto' = on for a CPU run, off on CUDA (plain nn.LSTMCell / F.cross_entropy); 'on' or 'off'."""
    workers: int = 2
    """DataLoader worker processes preparing the next batches from the feature cache (0 = in the
    training process). NOTE: the reads are sequential and tiny next to a step, so 2 suffice."""
    compile: bool = False
    """torch.compile the model's loss and the decoder step of validation's search (the plain ops are used under compile, sat/kernels.py). On CPU
    it needs a C++ compiler, and the first steps pay the compilation."""

    scst: bool = False
    """Self-critical sequence training (Rennie et al. 2017; train/scst.py) instead of cross-entropy:
    needs `init_from` (a cross-entropy model); validation and early stopping watch greedy CIDEr-D."""
    scst_samples: int = 5
    """SCST: captions sampled per image (K)."""
    scst_baseline: str = "mean"
    """SCST baseline: "mean" (the mean reward of the image's other K−1 samples) or "greedy" (the
    greedy caption's reward, the paper's)."""
    scst_reward: str = "cider"
    """SCST reward: "cider" (CIDEr-D, document frequencies of the training references) or "bleu4"."""
    scst_entropy: float = 0.0
    """SCST: weight of a bonus on the mean per-word entropy of the sampled captions (0 = off)."""
    scst_max_len: int = 0
    """SCST: longest sampled caption in words (0 = the model's max_len)."""

    def __post_init__(self) -> None:
        if self.scst:
            if not self.init_from:
                raise ValueError("--scst fine-tunes a trained model: give --init-from DIR")
            if self.scst_baseline not in ("mean", "greedy"):
                raise ValueError(f"scst_baseline must be 'mean' or 'greedy', got {self.scst_baseline!r}")
            if self.scst_reward not in ("cider", "bleu4"):
                raise ValueError(f"scst_reward must be 'cider' or 'bleu4', got {self.scst_reward!r}")
            if self.scst_samples < (2 if self.scst_baseline == "mean" else 1):
                raise ValueError("scst_samples must be ≥ 2 with the mean baseline (≥ 1 with greedy)")
            if self.scst_entropy < 0 or self.scst_max_len < 0:
                raise ValueError("scst_entropy and scst_max_len must be ≥ 0")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be ≥ 1")
        if self.lr <= 0 or self.encoder_lr <= 0:
            raise ValueError("learning rates must be > 0")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must be in (0, 1), got {self.lr_factor}")
        if min(self.grad_clip, self.alpha_c, self.lr_patience, self.early_stop, self.max_steps,
               self.captions_per_image, self.workers) < 0:
            raise ValueError("grad_clip, alpha_c, lr_patience, early_stop, max_steps, "
                             "captions_per_image and workers must be ≥ 0")
        check_mode(self.cpu_kernels)


def _save_history(out: Path, history: list[dict], score_name: str = "BLEU-4") -> None:
    write_json(out / "history.json", history, indent=2)
    with open(out / "history.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    plot_history(history, out / "loss.png", score_name=score_name)


def plot_history(history: list[dict], path: Path, *, score_name: str = "BLEU-4") -> None:
    """Loss curve (train loss per epoch) with the validation score on a second axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.plot(ep, [h["train_xent"] for h in history], "o-", label="train cross-entropy")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy / token")
    ax2 = ax.twinx()
    ax2.plot(ep, [h["val_score"] for h in history], "s--", color="tab:orange", label=f"val {score_name}")
    ax2.set_ylabel(f"validation {score_name} (generated)")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _step(forward: Callable, batch: Batch, *, pad_id: int, config: TrainConfig,
          device: torch.device) -> dict[str, torch.Tensor]:
    """Forward + backward of this rank's part of a global batch; returns the step's stats as tensors.

    `forward` is the model, its DistributedDataParallel wrapper, or either compiled. Each rank's
    loss is its share of the *global* batch's loss: cross-entropy summed over its tokens divided by
    the global token count, its regulariser weighted by its share of the pairs. The global loss is
    the *sum* over ranks, while DDP *averages* gradients: the backward pass scales by the world size.
    A rank without rows in a short last batch backpropagates one row with weight 0, so every rank
    joins every gradient all-reduce. "loss"/"xent" are summed across ranks (the global batch's).
    """
    ctx = D.current()
    maps = batch.maps.to(device, torch.float32, non_blocking=True)
    caps = batch.captions.to(device, non_blocking=True)
    share = batch.n_local / batch.n_global
    with D.autocast(device, config.bf16):
        loss, stats = forward(maps, caps, pad_id=pad_id, alpha_c=config.alpha_c,
                              n_tokens=batch.tokens_global if ctx.active else None, share=share)
    weight = 0.0 if batch.dummy else float(ctx.world)
    (loss * weight).backward()
    if batch.dummy:
        stats = {k: torch.zeros_like(v) for k, v in stats.items()}
    if ctx.active:  # NOTE: an async device op: read with the other stats, one sync per step
        pair = torch.stack([stats["loss"], stats["xent"]]).float()
        D.all_reduce_sum_([pair])
        stats = {**stats, "loss": pair[0], "xent": pair[1]}
    return stats


def make_optimizer(groups) -> torch.optim.Adam:
    """Adam as the training loop uses it (the benchmark times the same one)."""
    # NOTE: fused=True runs the whole update in one kernel per parameter group instead of ~10
    # elementwise ops per tensor: ~8 % of a CPU training step otherwise (bench/training.py).
    return torch.optim.Adam(groups, fused=True)


def _under_cpu_kernels(fn: Callable) -> Callable:
    """Run `fn` with the CPU-kernels switch set from its `config` (validation's search too)."""
    @functools.wraps(fn)
    def run(*args, config: TrainConfig, **kwargs):
        with cpu_kernels(config.cpu_kernels):
            return fn(*args, config=config, **kwargs)
    return run


@_under_cpu_kernels
def fit(model: CaptionModel, *, data: CaptionData, validate: Callable[[CaptionModel], float],
        out_dir: str | Path, config: TrainConfig, pad_id: int = 0, resume: bool = False,
        device: torch.device | str = "cpu", progress: bool = True,
        on_epoch: Callable[[CaptionModel, dict], None] | None = None,
        objective: Callable[[CaptionModel, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]] | None = None,
        score_name: str = "BLEU-4") -> list[dict]:
    """Train `model` in place; the best-scoring weights are loaded back at the end.

    Writes out_dir/{last.pt, best.pt, history.json, history.csv, loss.png} (rank 0 only under
    torchrun; every rank returns the same history and ends with the same weights). `on_epoch(model,
    row)` is called on rank 0 after each epoch's checkpoint, the model in eval mode (a logger:
    train/tblog.py).

    `objective(model, maps, image_rows) -> (loss, stats)` replaces teacher forcing (SCST,
    train/scst.py): batches are then of images (each once per epoch), one process only.
    `score_name` names the validation score in the log.
    """
    ctx = D.current()
    if objective is not None and ctx.active:
        raise ValueError("SCST runs as one process (no torchrun)")
    main = ctx.is_main
    out = Path(out_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    model.to(device)
    if use_cpu_kernels(next(model.parameters())):
        keep_freed_memory()  # NOTE: CPU: no page faults for each step's temporaries (sat/kernels.py)
    engine = D.data_parallel(model, device)  # NOTE: DDP copies rank 0's weights to every rank
    tail = [p for p in model.tail.parameters() if p.requires_grad]
    groups = [{"params": list(model.decoder.parameters()), "lr": config.lr}]
    if tail:
        groups.append({"params": tail, "lr": config.encoder_lr})
    opt = make_optimizer(groups)
    forward = torch.compile(engine) if config.compile else engine  # NOTE: shares model's parameters
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=config.lr_factor,
                                                       patience=config.lr_patience)
    shuffle = torch.Generator().manual_seed(config.seed)  # NOTE: the same order on every rank
    # dropout and hard-attention samples: rank 0 draws what a single process draws, others differ
    torch.manual_seed(config.seed + ctx.rank)
    history: list[dict] = []
    start_epoch, best, bad, steps = 1, -math.inf, 0, 0
    D.barrier()
    if resume and (out / LAST).is_file():
        ck = load_checkpoint(out / LAST, device)
        config, warning = resumed_config(ck, config, check_model(ck, model, out / LAST))
        if warning and main:
            print(warning, file=sys.stderr, flush=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        apply_settings(ck, config, opt, sched)
        shuffle.set_state(ck["shuffle_rng"])
        rng = ck.get("torch_rng_ranks") or [ck["torch_rng"]]
        if len(rng) == ctx.world:
            torch.set_rng_state(rng[ctx.rank])
        cuda_rng = ck.get("cuda_rng_ranks")
        if device.type == "cuda" and cuda_rng and len(cuda_rng) == ctx.world:
            torch.cuda.set_rng_state(cuda_rng[ctx.rank].cpu(), device)
        start_epoch, best, bad, steps = ck["epoch"] + 1, ck["best"], ck["bad_epochs"], ck["steps"]
        history = ck["history"]
        if main:
            print(f"resuming after epoch {ck['epoch']} (best val {best:.4f})")

    for epoch in range(start_epoch, config.epochs + 1):
        if config.early_stop and bad >= config.early_stop:
            break
        if config.max_steps and steps >= config.max_steps:
            break
        t0 = time.time()
        model.train()
        perm = data.epoch_order(shuffle, 1 if objective is not None else config.captions_per_image)
        loader = batch_loader(data, perm, batch_size=config.batch_size, pad_id=pad_id, ctx=ctx,
                              workers=config.workers, pin=device.type == "cuda", trim=not config.compile)
        tot: dict[str, float] = {}
        cnt: dict[str, int] = {}
        bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", disable=not (progress and main), leave=False)
        for b, batch in enumerate(bar):
            opt.zero_grad(set_to_none=True)
            if objective is not None:
                maps = batch.maps.to(device, torch.float32, non_blocking=True)
                with D.autocast(device, config.bf16):
                    loss, t_stats = objective(model, maps, batch.image_rows)
                loss.backward()
                t_stats = {k: torch.as_tensor(v) for k, v in t_stats.items()}
            else:
                t_stats = _step(forward, batch, pad_id=pad_id, config=config, device=device)
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            steps += 1
            stats = stats_to_floats({k: v for k, v in t_stats.items() if k != "tokens"})  # NOTE: the one host sync
            # NOTE: loss/xent are the global batch's; other stats are this rank's, merged per epoch
            for k, v in stats.items():
                w = batch.n_global if k in ("loss", "xent") else batch.n_local
                tot[k] = tot.get(k, 0.0) + v * w
                cnt[k] = cnt.get(k, 0) + w
            if b % 20 == 0:
                bar.set_postfix(loss=f"{stats['loss']:.3f}", xent=f"{stats['xent']:.3f}")
            if config.max_steps and steps >= config.max_steps:
                break
        bar.close()
        tot, cnt = _merge_epoch_stats(tot, cnt, ctx)
        train_secs = time.time() - t0
        model.eval()
        score = float(validate(model)) if main else 0.0
        score = float(D.broadcast_object(score))  # NOTE: every rank steps the scheduler alike
        sched.step(score)
        improved = score > best
        if improved:
            best, bad = score, 0
            if main:
                save_atomic(model.state_dict(), out / BEST)
        else:
            bad += 1
        row = {"epoch": epoch, "steps": steps, **{f"train_{k}": tot[k] / cnt[k] for k in sorted(tot)},
               "val_score": score, "lr": opt.param_groups[0]["lr"], "train_seconds": round(train_secs, 1),
               "epoch_seconds": round(time.time() - t0, 1)}
        history.append(row)
        rng_states = D.gather_objects(torch.get_rng_state())
        # NOTE: dropout and hard attention's samples on a GPU draw from its own generator
        cuda_states = D.gather_objects(torch.cuda.get_rng_state(device)) if device.type == "cuda" else None
        if main:
            print(f"epoch {epoch:3d} | loss {row['train_loss']:.4f} | xent {row['train_xent']:.4f} | "
                  f"val {score_name} {score:.4f}{' *' if improved else ''} | lr {row['lr']:.2e} | "
                  f"{row['epoch_seconds']:.0f}s", flush=True)
            _save_history(out, history, score_name)
            ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                  "shuffle_rng": shuffle.get_state(), "torch_rng": torch.get_rng_state(),
                  "torch_rng_ranks": rng_states, "cuda_rng_ranks": cuda_states, "epoch": epoch, "best": best, "bad_epochs": bad,
                  "steps": steps, "history": history, "train_config": asdict(config),
                  "model_config": model.config.to_dict()}
            save_atomic(ck, out / LAST)
            if on_epoch is not None:  # NOTE: its own RNG streams: a logger never changes the training
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    on_epoch(model, row)

    D.barrier()  # NOTE: best.pt is complete before any rank reads it
    if (out / BEST).is_file():
        model.load_state_dict(torch.load(out / BEST, map_location=device, weights_only=True))
    model.eval()
    return history


def _merge_epoch_stats(tot: dict[str, float], cnt: dict[str, int],
                       ctx: D.DistContext) -> tuple[dict[str, float], dict[str, int]]:
    """Epoch sums over all ranks (loss/xent are already global: taken from rank 0 alone)."""
    if not ctx.active:
        return tot, cnt
    mt, mc = dict(tot), dict(cnt)
    for r, (t, c) in enumerate(D.gather_objects((tot, cnt))):
        if r == ctx.rank:
            continue
        for k in t:
            if k in ("loss", "xent"):
                continue
            mt[k] = mt.get(k, 0.0) + t[k]
            mc[k] = mc.get(k, 0) + c[k]
    return mt, mc
