"""Flickr8k and Flickr30k in the layouts their archives unpack to.

Flickr8k (``--dataset flickr8k``)::

    ROOT/Flicker8k_Dataset/*.jpg          (the archive's spelling; Flickr8k_Dataset/ or Images/ too)
    ROOT/Flickr8k.token.txt               "<file>#<k>\\t<caption>", 5 lines per image
    ROOT/Flickr_8k.{train,dev,test}Images.txt   one file name per line; dev -> val
                                          (or --annotations dataset_flickr8k.json: Karpathy's)
    (the .txt files may also sit in ROOT/Flickr8k_text/, as the official text zip unpacks)

Flickr30k (``--dataset flickr30k``)::

    ROOT/flickr30k-images/*.jpg           (flickr30k_images/ or Images/ too)
    ROOT/results_20130124.token           same line format as Flickr8k, or
    ROOT/results.csv                      "image_name| comment_number| comment" with a header
    ROOT/dataset_flickr30k.json           optional (or --annotations): Karpathy's splits

Without the Karpathy file Flickr30k is split by seed (`flickr30k_split`). The image id is the
file name. Captions whose image is not in the image folder (the Flickr8k token file names
``2258277193_586949ec62.jpg.1``, which the archive does not have) are counted as
'missing image file'; images in no split file as 'no split'.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from .common import (MALFORMED_LINE, MISSING_IMAGE, NO_CAPTIONS, NO_SPLIT, CaptionGrouper, LoadedDataset,
                     SkipLog, first_existing, layout_error, listed_names, seeded_split)
from .karpathy import SPLIT_ALIASES

F8K_IMAGE_DIRS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images")
F8K_TEXT_DIRS = (".", "Flickr8k_text")
F8K_TOKENS = "Flickr8k.token.txt"
F8K_SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
                   "test": "Flickr_8k.testImages.txt"}

F30K_IMAGE_DIRS = ("flickr30k-images", "flickr30k_images", "Images")
F30K_TOKENS = ("results_20130124.token", "results.csv")
F30K_KARPATHY = "dataset_flickr30k.json"
# NOTE: Karpathy's Flickr30k split is 29,000 / 1,014 / 1,000; the seeded split reproduces those
# sizes on the full dataset (the caps) and the same proportions on smaller folders.
F30K_VAL, F30K_TEST = 1014, 1000
F30K_VAL_FRAC, F30K_TEST_FRAC = 0.033, 0.032



def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without the newline) for every non-blank line."""
    # NOTE: utf-8-sig drops a BOM; errors='replace' keeps one odd byte from failing the whole load.
    with path.open("r", encoding="utf-8-sig", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield n, line


def read_token_file(path: Path, grouper: CaptionGrouper, log: SkipLog) -> None:
    """Read ``<file>#<k>\\t<caption>`` lines (Flickr8k.token.txt, results_20130124.token)."""
    for n, line in _lines(path):
        key, tab, caption = line.partition("\t")
        if not tab:  # some re-distributions use spaces instead of the tab
            key, _, caption = line.strip().partition(" ")
        name, hash_, k = key.strip().rpartition("#")
        if not hash_ or not name or not k.strip().isdigit():
            log.skip(MALFORMED_LINE, f"expected '<file>#<k><TAB><caption>', got {line[:60]!r}", line=n)
            continue
        grouper.add(name, caption, line=n)


def read_results_csv(path: Path, grouper: CaptionGrouper, log: SkipLog) -> None:
    """Read the ``results.csv`` variant: ``image_name| comment_number| comment`` after a header."""
    for n, line in _lines(path):
        if n == 1 and line.replace(" ", "").lower().startswith("image_name|"):
            continue
        # NOTE: not the csv module: the separator is '|' padded with spaces, captions contain
        # commas and quotes, and maxsplit=2 keeps any '|' inside a caption.
        parts = line.split("|", 2)
        if len(parts) != 3 or not parts[0].strip() or not parts[1].strip().isdigit():
            log.skip(MALFORMED_LINE, f"expected 'image_name| comment_number| comment', got {line[:60]!r}",
                     line=n)
            continue
        grouper.add(parts[0].strip(), parts[2], line=n)


def _assemble(grouper: CaptionGrouper, log: SkipLog, image_dir: Path, splits: dict[str, str],
              *, name: str, root: Path, notes: list[str]) -> LoadedDataset:
    """Records for the grouped captions whose image exists and has a split."""
    present = listed_names(image_dir)
    records = []
    for image_id in grouper.image_ids():
        if image_id not in present:
            log.skip(MISSING_IMAGE, f"{image_id} ({grouper.captions_text(image_id)}) is not in "
                                    f"{image_dir.name}/")
        elif image_id not in splits:
            log.skip(NO_SPLIT, f"{image_id} is in no split")
        else:
            records.append(grouper.record(image_id, image_dir / image_id, splits[image_id]))
    captioned = set(grouper.image_ids())
    uncaptioned = sum(1 for i in splits if i not in captioned)
    if uncaptioned:
        log.skip(NO_CAPTIONS, n=uncaptioned)
    return LoadedDataset(records, root, log.as_dict(), name=name, notes=notes)


def load_flickr8k(root: Path, *, annotations: str | None = None, seed: int = 0) -> LoadedDataset:
    """Flickr8k from its official archive layout (see the module docstring)."""
    image_dir = first_existing(root, F8K_IMAGE_DIRS, want_dir=True)
    text_dir = next((root / d for d in F8K_TEXT_DIRS if (root / d / F8K_TOKENS).is_file()), None)
    karpathy = Path(annotations) if annotations else None
    missing_splits = [f for f in F8K_SPLIT_FILES.values() if text_dir is None or not (text_dir / f).is_file()]
    if image_dir is None or text_dir is None or (missing_splits and karpathy is None):
        raise layout_error(
            "flickr8k", f"{F8K_IMAGE_DIRS[0]}/ (or {', '.join(d + '/' for d in F8K_IMAGE_DIRS[1:])}), "
            f"{F8K_TOKENS} and {', '.join(F8K_SPLIT_FILES.values())} (the .txt files may be in "
            f"{F8K_TEXT_DIRS[1]}/)", root)

    if karpathy is not None:
        # NOTE: Karpathy's dataset_flickr8k.json uses the official split; accepting it lets a
        # root without the three split files still load.
        if not karpathy.is_file():
            raise ValueError(f"flickr8k: --annotations {karpathy} is not a file")
        splits = read_karpathy_splits(karpathy)
        notes = [f"splits: Karpathy's {karpathy.name} (restval -> train)"]
    else:
        splits = {}
        for split, fname in F8K_SPLIT_FILES.items():
            for _, line in _lines(text_dir / fname):
                splits.setdefault(line.strip(), split)
        notes = [f"splits: {', '.join(F8K_SPLIT_FILES.values())} (dev -> val)"]
    log = SkipLog(text_dir / F8K_TOKENS)
    grouper = CaptionGrouper(log)
    read_token_file(text_dir / F8K_TOKENS, grouper, log)
    return _assemble(grouper, log, image_dir, splits, name="flickr8k", root=root, notes=notes)


def read_karpathy_splits(path: Path) -> dict[str, str]:
    """file name -> train/val/test from a Karpathy ``dataset_*.json`` (restval -> train)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {img["filename"]: SPLIT_ALIASES[img["split"]] for img in data["images"]}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a Karpathy split file ({type(e).__name__}: {e})") from None


def load_flickr30k(root: Path, *, annotations: str | None = None, seed: int = 0) -> LoadedDataset:
    """Flickr30k; Karpathy's splits when `dataset_flickr30k.json` is there, else a seeded split."""
    image_dir = first_existing(root, F30K_IMAGE_DIRS, want_dir=True)
    token_file = first_existing(root, F30K_TOKENS, want_dir=False)
    if image_dir is None or token_file is None:
        raise layout_error(
            "flickr30k", f"{F30K_IMAGE_DIRS[0]}/ (or {', '.join(d + '/' for d in F30K_IMAGE_DIRS[1:])}) and "
            f"{F30K_TOKENS[0]} (or {F30K_TOKENS[1]}); optional {F30K_KARPATHY}", root)
    karpathy = Path(annotations) if annotations else root / F30K_KARPATHY
    if annotations and not karpathy.is_file():
        raise ValueError(f"flickr30k: --annotations {karpathy} is not a file")

    log = SkipLog(token_file)
    grouper = CaptionGrouper(log)
    if token_file.suffix == ".csv":
        read_results_csv(token_file, grouper, log)
    else:
        read_token_file(token_file, grouper, log)

    if karpathy.is_file():
        splits = read_karpathy_splits(karpathy)
        notes = [f"splits: Karpathy's {karpathy.name} (restval -> train)"]
    else:
        # NOTE: split only images that exist, so a partial download still gets val and test.
        present = listed_names(image_dir)
        usable = [i for i in grouper.image_ids() if i in present]
        splits = seeded_split(usable, seed=seed, val_frac=F30K_VAL_FRAC, test_frac=F30K_TEST_FRAC,
                              max_val=F30K_VAL, max_test=F30K_TEST)
        notes = [f"splits: no {F30K_KARPATHY}, so seeded (seed {seed}): sorted file names shuffled, the last "
                 f"{F30K_TEST:,} (3.2% if fewer images) are test, the {F30K_VAL:,} (3.3%) before them val, "
                 f"the rest train"]
    return _assemble(grouper, log, image_dir, splits, name="flickr30k", root=root, notes=notes)
