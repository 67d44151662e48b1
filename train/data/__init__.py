"""Dataset loaders: every dataset becomes a list of `ImageRecord`s (train/data/karpathy.py).

`load_dataset(name, root, ...)` is the one entry point the trainer calls for real datasets; it
prints `summarize(loaded)` (images, captions, per split, skipped entries by reason, where the
splits came from). The generated scenes are written in the Karpathy layout and read by the same
`load_karpathy`. Layouts: karpathy (here), flickr8k / flickr30k (flickr.py), coco (coco.py),
csv (csvdata.py).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .coco import load_coco
from .common import MISSING_IMAGE, LoadedDataset, SkipLog, describe_root, listed_names, summarize
from .csvdata import load_csv
from .flickr import load_flickr8k, load_flickr30k
from .karpathy import ImageRecord, load_karpathy_with_stats

__all__ = ["LOADERS", "ImageRecord", "LoadedDataset", "load_dataset", "summarize"]


def _karpathy(root: Path, *, annotations: str | None = None, seed: int = 0) -> LoadedDataset:
    ann = Path(annotations) if annotations else None
    if ann is None:
        found = sorted(root.glob("dataset_*.json"))
        if len(found) != 1:
            raise ValueError(f"karpathy: looked for one dataset_*.json in {root} (or pass --annotations FILE); "
                             f"found: {describe_root(root)}")
        ann = found[0]
    records, stats = load_karpathy_with_stats(ann, image_root=root)
    log = SkipLog(ann)
    # NOTE: one listing per image folder (COCO's records point into train2014/ and val2014/).
    listings: dict[Path, set[str]] = {}
    kept = []
    for r in records:
        folder = r.path.parent
        if folder not in listings:
            listings[folder] = listed_names(folder) if folder.is_dir() else set()
        if r.path.name in listings[folder]:
            kept.append(r)
        else:
            log.skip(MISSING_IMAGE, f"{os.path.relpath(r.path, root)} ({len(r.captions)} caption{'' if len(r.captions) == 1 else 's'})")
    restval = sum(1 for r in kept if r.extra.get("karpathy_split") == "restval")
    notes = [f"splits: {ann.name}" + (f"; {restval:,} restval images folded into train" if restval else "")]
    return LoadedDataset(kept, root, {**{k: v for k, v in stats.items() if v}, **log.as_dict()},
                         name="karpathy", notes=notes)


Loader = Callable[..., LoadedDataset]
LOADERS: dict[str, Loader] = {
    "karpathy": _karpathy,
    "flickr8k": load_flickr8k,
    "flickr30k": load_flickr30k,
    "coco": load_coco,
    "csv": load_csv,
}


def load_dataset(name: str, root: Path, *, annotations: str | None = None, seed: int = 0,
                 verbose: bool = True) -> LoadedDataset:
    """Load a dataset by name from its root folder and print its summary (unless not `verbose`).

    Raises `ValueError` for an unknown name, a root that is not a folder or does not match the
    layout (the message says what was looked for and what is there), or no usable image.
    """
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: scenes, {', '.join(sorted(LOADERS))}")
    if not Path(root).is_dir():
        raise ValueError(f"--data-root {root} is not a folder")
    loaded = LOADERS[name](Path(root), annotations=annotations, seed=seed)
    if not loaded.name:
        loaded.name = name
    if verbose:
        print(summarize(loaded), flush=True)
    if not loaded.records:
        raise ValueError(f"{name}: no usable image in {root} (see the summary above)")
    return loaded
