"""The training loop: teacher forcing, Adam, clipping, LR-on-plateau and early stopping on a
validation score computed from *generated* captions, checkpoints with optimizer + RNG state.

It knows nothing about a specific decoder: it calls `model.loss(maps, captions)` and a
`validate(model) -> float` callback (higher is better; BLEU-4 of greedy captions by default).
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from sat.model import CaptionModel

LAST, BEST = "last.pt", "best.pt"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    """Maximum number of passes over the (image, caption) pairs."""
    batch_size: int = 64
    """(image, caption) pairs per optimizer step."""
    lr: float = 4e-4
    """Adam learning rate of the decoder."""
    encoder_lr: float = 1e-4
    """Adam learning rate of the fine-tuned encoder blocks (if any)."""
    grad_clip: float = 5.0
    """Clip the global gradient norm to this value (0 = off)."""
    alpha_c: float = 1.0
    """λ of the doubly stochastic attention regulariser."""
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
    captions_per_image: int = 0
    """Captions drawn per image each epoch (0 = every caption every epoch). NOTE: 1 makes an epoch
    five times shorter on 5-caption data while every caption is still seen across epochs."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be ≥ 1")
        if self.lr <= 0 or self.encoder_lr <= 0:
            raise ValueError("learning rates must be > 0")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must be in (0, 1), got {self.lr_factor}")
        if min(self.grad_clip, self.alpha_c, self.lr_patience, self.early_stop, self.max_steps,
               self.captions_per_image) < 0:
            raise ValueError("grad_clip, alpha_c, lr_patience, early_stop, max_steps and "
                             "captions_per_image must be ≥ 0")


@dataclass
class CaptionData:
    """Training pairs: `captions[k]` describes image `maps[rows[k]]`."""
    maps: torch.Tensor      # (N, C, h, w) float16 encoder-trunk maps
    rows: torch.Tensor      # (P,) long
    captions: torch.Tensor  # (P, T+1) long: <start> w… <end> <pad>…

    def __len__(self) -> int:
        return int(self.rows.numel())

    def epoch_order(self, generator: torch.Generator, per_image: int = 0) -> torch.Tensor:
        """Shuffled pair indices for one epoch; at most `per_image` random captions per image."""
        perm = torch.randperm(len(self), generator=generator)
        if not per_image:
            return perm
        # rank of each pair among its image's pairs in this random order; keep ranks < per_image
        rows = self.rows[perm]
        order = torch.argsort(rows, stable=True)  # group by image, random order inside a group
        sorted_rows = rows[order]
        first = torch.searchsorted(sorted_rows, sorted_rows, side="left")
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order)) - first
        return perm[rank < per_image]


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _save_history(out: Path, history: list[dict]) -> None:
    _write_json(out / "history.json", history)
    with open(out / "history.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    plot_history(history, out / "loss.png")


def plot_history(history: list[dict], path: Path) -> None:
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
    ax2.plot(ep, [h["val_score"] for h in history], "s--", color="tab:orange", label="val BLEU-4")
    ax2.set_ylabel("validation BLEU-4 (generated)")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fit(model: CaptionModel, *, data: CaptionData, validate: Callable[[CaptionModel], float],
        out_dir: str | Path, config: TrainConfig, pad_id: int = 0, resume: bool = False,
        device: torch.device | str = "cpu", progress: bool = True) -> list[dict]:
    """Train `model` in place; the best-scoring weights are loaded back at the end.

    Writes out_dir/{last.pt, best.pt, history.json, history.csv, loss.png}. Returns the history.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    model.to(device)
    tail = [p for p in model.tail.parameters() if p.requires_grad]
    groups = [{"params": list(model.decoder.parameters()), "lr": config.lr}]
    if tail:
        groups.append({"params": tail, "lr": config.encoder_lr})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=config.lr_factor,
                                                       patience=config.lr_patience)
    shuffle = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    history: list[dict] = []
    start_epoch, best, bad, steps = 1, -math.inf, 0, 0
    if resume and (out / LAST).is_file():
        # NOTE: our own checkpoint, still loaded with weights_only=True (tensors and plain data only)
        ck = torch.load(out / LAST, map_location=device, weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        shuffle.set_state(ck["shuffle_rng"])
        torch.set_rng_state(ck["torch_rng"])
        start_epoch, best, bad, steps = ck["epoch"] + 1, ck["best"], ck["bad_epochs"], ck["steps"]
        history = ck["history"]
        print(f"resuming after epoch {ck['epoch']} (best val {best:.4f})")

    for epoch in range(start_epoch, config.epochs + 1):
        if config.early_stop and bad >= config.early_stop:
            break
        if config.max_steps and steps >= config.max_steps:
            break
        t0 = time.time()
        model.train()
        perm = data.epoch_order(shuffle, config.captions_per_image)
        n_batches = math.ceil(len(perm) / config.batch_size)
        tot: dict[str, float] = {}
        cnt: dict[str, int] = {}
        seen = 0
        bar = tqdm(range(n_batches), desc=f"epoch {epoch}", unit="batch", disable=not progress, leave=False)
        for b in bar:
            idx = perm[b * config.batch_size:(b + 1) * config.batch_size]
            caps = data.captions[idx]
            caps = caps[:, : int((caps != pad_id).sum(1).max())]  # trim padding columns
            maps = data.maps[data.rows[idx]].to(device, torch.float32, non_blocking=True)
            loss, stats = model.loss(maps, caps.to(device), pad_id=pad_id, alpha_c=config.alpha_c)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            steps += 1
            for k, v in stats.items():
                if k != "tokens":
                    tot[k] = tot.get(k, 0.0) + v * len(idx)
                    cnt[k] = cnt.get(k, 0) + len(idx)
            seen += len(idx)
            if b % 20 == 0:
                bar.set_postfix(loss=f"{stats['loss']:.3f}", xent=f"{stats['xent']:.3f}")
            if config.max_steps and steps >= config.max_steps:
                break
        bar.close()
        train_secs = time.time() - t0
        model.eval()
        score = float(validate(model))
        sched.step(score)
        improved = score > best
        if improved:
            best, bad = score, 0
            torch.save(model.state_dict(), out / BEST)
        else:
            bad += 1
        row = {"epoch": epoch, "steps": steps, **{f"train_{k}": tot[k] / cnt[k] for k in sorted(tot)},
               "val_score": score, "lr": opt.param_groups[0]["lr"], "train_seconds": round(train_secs, 1),
               "epoch_seconds": round(time.time() - t0, 1)}
        history.append(row)
        print(f"epoch {epoch:3d} | loss {row['train_loss']:.4f} | xent {row['train_xent']:.4f} | "
              f"val BLEU-4 {score:.4f}{' *' if improved else ''} | lr {row['lr']:.2e} | "
              f"{row['epoch_seconds']:.0f}s", flush=True)
        _save_history(out, history)
        ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
              "shuffle_rng": shuffle.get_state(), "torch_rng": torch.get_rng_state(), "epoch": epoch,
              "best": best, "bad_epochs": bad, "steps": steps, "history": history,
              "train_config": asdict(config)}
        torch.save(ck, out / (LAST + ".tmp"))
        os.replace(out / (LAST + ".tmp"), out / LAST)

    if (out / BEST).is_file():
        model.load_state_dict(torch.load(out / BEST, map_location=device, weights_only=True))
    model.eval()
    return history
