"""`python -m train fit --tensorboard DIR`: TensorBoard event files beside history.{csv,json} and loss.png.

Per epoch (the step is the epoch number): `train/loss`, `train/xent` (and any other training
statistic the decoder reports, e.g. hard attention's), `val/bleu4` (what early stopping watches),
`lr`, and `attention/0` … `attention/3`: the attention grid (`sat.viz.attention_grid`, one panel
per word) of the greedy caption of 4 fixed validation images, so one can watch where the model
learns to look. Rank 0 alone writes (the training loop calls it there only).

Cheap by design: 4 greedy captions of cached feature maps and 4 small figures per epoch.
A resumed run purges the events after the checkpoint it resumes from (SummaryWriter's purge_step).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from sat.model import CaptionModel
from sat.vocab import Vocab
from sat.viz import attention_grid_png
from train.evaluate import generate

THUMB = 160
"""Longest side of the photos in the logged grids (pixels): enough to see where α points."""


def require_tensorboard() -> None:
    """Fail now, with one line, if the tensorboard package is missing (not after the features)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard") from None


class TensorBoardLog:
    """The `on_epoch(model, row)` logger of `train.loop.fit` (row: one history.json entry)."""

    def __init__(self, log_dir: str | Path, *, vocab: Vocab, maps: torch.Tensor, images: Sequence[str | Path],
                 device: torch.device | str = "cpu"):
        require_tensorboard()
        self.log_dir = Path(log_dir)
        self.vocab, self.maps, self.device = vocab, maps, device  # maps: (n, C, h, w) cached trunk maps
        self.images = []
        for path in images:
            with Image.open(path) as im:
                img = im.convert("RGB")
            img.thumbnail((THUMB, THUMB), Image.BICUBIC)
            self.images.append(img)
        self._writer = None

    def __call__(self, model: CaptionModel, row: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        step = int(row["epoch"])
        if self._writer is None:  # NOTE: at the first epoch logged, so a resumed run purges what follows it
            self._writer = SummaryWriter(str(self.log_dir), purge_step=step)
        w = self._writer
        for k, v in row.items():
            if k.startswith("train_") and k != "train_seconds":
                w.add_scalar(f"train/{k[len('train_'):]}", v, step)
        w.add_scalar("val/bleu4", row["val_score"], step)
        w.add_scalar("lr", row["lr"], step)
        self._grids(model, step)
        w.flush()

    def _grids(self, model: CaptionModel, step: int) -> None:
        if not self.images:
            return
        cfg = model.config
        hyps = generate(model, self.maps, vocab=self.vocab, mode="greedy", device=self.device)
        for i, (img, hyp) in enumerate(zip(self.images, hyps)):
            tokens = [self.vocab.itos[t] for t in hyp.tokens]
            att = hyp.alphas.float().numpy().reshape(len(tokens), *cfg.grid)  # (T, h, w)
            png = attention_grid_png(img, tokens, att, resize=cfg.resize, image_size=cfg.image_size,
                                     crop_pct=cfg.crop_pct, max_side=THUMB, font_size=11,
                                     hard=cfg.attention == "hard")
            pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))  # (H, W, 3) uint8
            self._writer.add_image(f"attention/{i}", pixels, step, dataformats="HWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
