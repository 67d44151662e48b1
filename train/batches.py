"""Training pairs and the batches the loop reads: streamed from the memory-mapped feature cache.

A COCO-sized cache does not fit in every rank's RAM (123k images × 14×14×112 float16 = 5.4 GB; more
with ResNet or ViT maps), so the training split is never copied: `FeatureRows` reads the rows a batch
needs straight from the cache file (the OS page cache keeps the hot ones), and a standard
`torch.utils.data.DataLoader` over `StepBatches` prepares the next batches in worker processes
(pinned memory on CUDA) while the current one trains.

    data = caption_data(records, cache, vocab)   # CaptionData(maps=FeatureRows(cache.maps, train_rows), ...)
    for batch in batch_loader(data, perm, batch_size=64, pad_id=0, ctx=ctx, workers=2, pin=False):
        batch.maps, batch.captions      # this rank's share of one *global* batch

One item of `StepBatches` is one optimizer step's data for this rank: its rows of the global batch
(`train.distributed.shard`), the captions trimmed to the global batch's longest, and the global
pair and token counts the loss is normalised by — so N ranks see exactly the batch one process
would. Items are made in order from a fixed permutation: the workers add no randomness.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sat.vocab import Vocab
from train import distributed as D
from train.data.karpathy import ImageRecord
from train.features import FeatureCache


class FeatureRows:
    """Rows `rows` of a memory-mapped float16 cache (N, C, h, w), read on demand.

    `fr[idx]` (a LongTensor of positions into `rows`, or a slice of them) → float16 tensor (k, C, h, w):
    the training batches, and validation / evaluation captioning a split batch by batch
    (`train.evaluate.generate`). Pickles as the file's path (a spawned DataLoader worker re-opens the
    map instead of receiving a copy).
    """

    def __init__(self, array: np.ndarray, rows: Sequence[int]):
        if not isinstance(array, np.memmap) or array.filename is None:
            raise TypeError("FeatureRows reads a file-backed np.memmap (train.features.FeatureCache.maps)")
        self.path, self.offset = Path(array.filename), int(array.offset)
        self.file_shape, self._array = tuple(array.shape), array
        self.rows = np.asarray(rows, dtype=np.int64)
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= self.file_shape[0]):
            raise ValueError(f"rows outside the cache's {self.file_shape[0]} images")

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.file_shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: torch.Tensor | Sequence[int] | slice) -> torch.Tensor:
        if isinstance(idx, slice):
            idx = np.arange(len(self.rows))[idx]
        want = self.rows[np.asarray(idx, dtype=np.int64)]  # file rows, in batch order
        # NOTE: read each row once and in file order (sequential I/O), then put them in batch order
        uniq, back = np.unique(want, return_inverse=True)
        block = np.asarray(self.array[uniq])  # (u, C, h, w): a copy of just these rows
        return torch.from_numpy(block[back])  # (k, C, h, w)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.memmap(self.path, dtype=np.float16, mode="r", offset=self.offset,
                                    shape=self.file_shape)
        return self._array

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    def in_ram(self) -> torch.Tensor:
        """All rows as one tensor in RAM (what training used before streaming; the bench compares)."""
        return torch.from_numpy(np.ascontiguousarray(self.array[self.rows]))


@dataclass
class CaptionData:
    """Training pairs: `captions[k]` describes image `maps[rows[k]]`."""
    maps: torch.Tensor | FeatureRows  # (N, C, h, w) float16: in RAM, or rows of the cache file
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


@dataclass
class Batch:
    """One rank's data for one optimizer step."""
    maps: torch.Tensor       # (b, C, h, w) float16
    captions: torch.Tensor   # (b, T'+1) long, T' = the global batch's longest caption
    image_rows: torch.Tensor  # (b,) long: rows of `CaptionData.maps`
    n_global: int            # pairs in the global batch
    tokens_global: float     # real target tokens in the global batch
    dummy: bool = False      # this rank had no rows: it carries one row with zero weight (see below)

    def pin_memory(self) -> "Batch":
        """Called by the DataLoader's pinning thread (pin_memory=True, on CUDA)."""
        self.maps, self.captions = self.maps.pin_memory(), self.captions.pin_memory()
        return self

    @property
    def n_local(self) -> int:
        return 0 if self.dummy else int(self.captions.size(0))


class StepBatches(Dataset):
    """Item b = this rank's part of global batch b of one epoch's permutation."""

    def __init__(self, data: CaptionData, perm: torch.Tensor, *, batch_size: int, pad_id: int,
                 ctx: D.DistContext, trim: bool = True):
        self.data, self.perm, self.batch_size, self.pad_id, self.ctx = data, perm, batch_size, pad_id, ctx
        self.trim = trim

    def __len__(self) -> int:
        return math.ceil(len(self.perm) / self.batch_size)

    def __getitem__(self, b: int) -> Batch:
        idx_global = self.perm[b * self.batch_size:(b + 1) * self.batch_size]
        caps_global = self.data.captions[idx_global]  # (n, T+1)
        width = caps_global.size(1)
        if self.trim:  # NOTE: drop all-padding columns; untrimmed, every batch has one shape (torch.compile)
            width = int((caps_global != self.pad_id).sum(1).max())
        tokens = float((caps_global[:, 1:width] != self.pad_id).sum())
        idx = D.shard(idx_global, self.ctx)
        # NOTE: a short last batch can leave a rank without rows, but every DDP rank must run the
        # forward and backward of every step: it takes the global batch's first row with weight 0.
        dummy = idx.numel() == 0
        if dummy:
            idx = idx_global[:1]
        rows = self.data.rows[idx]
        return Batch(maps=self.data.maps[rows], captions=self.data.captions[idx][:, :width], image_rows=rows,
                     n_global=len(idx_global), tokens_global=tokens, dummy=dummy)


def batch_loader(data: CaptionData, perm: torch.Tensor, *, batch_size: int, pad_id: int, ctx: D.DistContext,
                 workers: int = 0, pin: bool = False, trim: bool = True) -> DataLoader:
    """The epoch's batches in order, prepared by `workers` processes (0: in this process)."""
    ds = StepBatches(data, perm, batch_size=batch_size, pad_id=pad_id, ctx=ctx, trim=trim)
    # NOTE: batch_size=None: each item is already a whole Batch and passes through as it is
    return DataLoader(ds, batch_size=None,
                      shuffle=False, num_workers=workers, pin_memory=pin,
                      prefetch_factor=4 if workers else None)


def split_rows(records: list[ImageRecord], cache: FeatureCache, split: str) -> list[int]:
    """Cache rows of a split, without images that failed to decode."""
    index, valid = cache.index, cache.valid
    return [index[r.image_id] for r in records if r.split == split and valid[index[r.image_id]]]


def caption_data(records: list[ImageRecord], cache: FeatureCache, vocab: Vocab) -> CaptionData:
    """All (image, caption) pairs of the training split, captions encoded and padded.

    Captions longer than `vocab.max_len` words are left out (`prepare` counts them): cut short,
    their `<end>` would teach the model to stop mid-sentence."""
    rows, caps = [], []
    by_id = {r.image_id: r for r in records}
    train_rows = split_rows(records, cache, "train")
    for new_row, row in enumerate(train_rows):
        for tokens in by_id[cache.ids[row]].captions:
            if len(tokens) > vocab.max_len:
                continue
            rows.append(new_row)
            caps.append(vocab.encode(list(tokens)))
    width = max(len(c) for c in caps)
    padded = torch.full((len(caps), width), vocab.pad_id, dtype=torch.long)
    for i, c in enumerate(caps):
        padded[i, : len(c)] = torch.tensor(c)
    # NOTE: streamed from the cache file, never copied whole (train/batches.py)
    return CaptionData(maps=FeatureRows(cache.maps, train_rows), rows=torch.tensor(rows), captions=padded)
