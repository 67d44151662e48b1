"""The weights folder's out-of-distribution statistics (`sat.ood`), from the feature cache.

`write_ood_stats` runs when a weights folder is shipped (train/pipeline.py `ship`); `run_ood_stats`
(`python -m train ood-stats --weights DIR --data-root ROOT [--cache-dir DIR]`) adds them to an
existing folder, e.g. the bundled ones, from the data it was trained on (its config.json fixes the
encoder and preprocessing, so the cache key, and thus a cache already extracted, is the same).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from sat.config import ModelConfig
from sat.device import resolve_device
from sat.encoder import create_encoder
from sat.ood import OODStats, load_stats, pool
from sat.weights import CONFIG_FILE, read_weights
from train.batches import split_rows
from train.data.karpathy import ImageRecord
from train.features import FeatureCache

CHUNK = 512
"""Cache rows pooled at a time (the memory-mapped maps are never all in RAM)."""


def pooled_rows(cache: FeatureCache, rows: Sequence[int], *, progress: bool = True, desc: str = "") -> torch.Tensor:
    """Spatially pooled trunk features (N, C) of these cache rows (float32)."""
    rows = np.asarray(rows)
    out = [pool(cache.tensor(rows[i:i + CHUNK])) for i in
           tqdm(range(0, len(rows), CHUNK), desc=desc, disable=not progress, leave=False)]
    return torch.cat(out) if out else torch.zeros(0, cache.maps.shape[1])


def write_ood_stats(folder: str | Path, records: list[ImageRecord], cache: FeatureCache, *, dataset: str,
                    progress: bool = True) -> OODStats:
    """Fit on the train split's pooled features, threshold on the test split's; write them into `folder`."""

    train, test = split_rows(records, cache, "train"), split_rows(records, cache, "test")
    if not train or not test:
        raise ValueError(f"OOD statistics need train and test images, got {len(train)} and {len(test)}")
    stats = OODStats.fit(pooled_rows(cache, train, progress=progress, desc="pool train"),
                         pooled_rows(cache, test, progress=progress, desc="pool test"),
                         info={"dataset": dataset, "cache": cache.path.name})
    stats.save(folder)
    load_stats(folder, dim=stats.dim)  # NOTE: what the app will read, read back once
    i = stats.info
    print(f"OOD statistics written to {folder}: {i['n_train']} train images, D {i['dim']}, threshold "
          f"{stats.threshold:.2f} (flags {i['test_flagged']:.1%} of {i['n_test']} test images)")
    return stats


def run_ood_stats(weights: str | Path, dc, *, device: str = "auto", progress: bool = True) -> OODStats:
    """Compute the statistics of an existing weights folder from its training data (`dc`)."""
    from train.pipeline import features_for, load_records

    folder = Path(weights)
    read_weights(folder)  # NOTE: a broken folder fails here, before minutes of feature extraction
    cfg = ModelConfig.load(folder / CONFIG_FILE)
    if cfg.finetune_blocks:
        print(f"note: {folder} fine-tunes {cfg.finetune_blocks} encoder blocks; the statistics are of the "
              "frozen trunk's map (what the app computes too)")
    records, root = load_records(dc, progress=progress)
    encoder = create_encoder(cfg.encoder, feature_map=cfg.feature_map, finetune_blocks=cfg.finetune_blocks)
    cache = features_for(records, root, cfg, dc, device=resolve_device(device), progress=progress,
                         encoder=encoder)
    return write_ood_stats(folder, records, cache, dataset=dc.dataset, progress=progress)
