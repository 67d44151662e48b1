"""Feature cache: run the frozen encoder trunk once per image and keep the maps on disk (float16).

    cache_dir/<key>/
      features.f16    raw float16 array (N, C, h, w), memory-mapped
      progress.json   rows done so far + failed images (rewritten atomically after each flush)
      meta.json       written last: ids, shape, failed ids — its presence marks a complete cache

The key hashes the backbone, its feature map, the weights' identity (a file hash or the Hub
repo@commit), the fine-tune split point, the whole preprocessing (image size, resize mode, crop_pct,
interpolation, mean/std; `sat.image.preprocess`), the preprocessing version, the dataset root and the
ordered image ids, so datasets, encoders and weights never mix and a changed preprocessing never
serves stale maps. A killed extraction resumes at the last
flushed row; a cache without meta.json is never served. An unreadable image is skipped: its row
stays zero, it is counted and listed in meta.json, and `valid` excludes it.

Images are decoded and preprocessed a batch at a time (`ImageBatches`): on CUDA by DataLoader worker
processes while the encoder runs on the previous batch, the batches coming through pinned memory; on
the CPU by a pool of threads in this process between the encoder's batches (the encoder already uses
every core there). Batches arrive in order, so the cache's bytes depend on neither.

Under torchrun the ranks share the work: rank r extracts rows i ≡ r (mod world) into the same
memory-mapped file (rank 0 creates it), keeps its own progress file (progress.json is rank 0's,
progress.rank<r>.json the others') so each resumes where it stopped, and rank 0 writes meta.json
once every rank is done. The cache is the same file a single process writes.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from sat.atomic import write_json
from sat.device import cpu_cores
from sat.encoder import Encoder
from sat.image import PREPROCESS_VERSION, ImageError, model_input, preprocess
from train import distributed as D

META, PROGRESS, DATA = "meta.json", "progress.json", "features.f16"


@dataclass
class FeatureCache:
    """A complete cache: `maps[i]` is the trunk map of `ids[i]`; `valid[i]` is False for failed images."""
    path: Path
    ids: list[str]
    maps: np.ndarray  # (N, C, h, w) float16, memory-mapped
    failed: dict[str, str]

    @property
    def index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.ids)}

    @property
    def valid(self) -> np.ndarray:
        bad = set(self.failed)
        return np.array([k not in bad for k in self.ids], dtype=bool)

    def tensor(self, rows: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
        """Rows (all by default) as a float16 torch tensor in RAM."""
        a = self.maps if rows is None else self.maps[np.asarray(rows)]
        return torch.from_numpy(np.ascontiguousarray(a))


def _preprocessing(preprocessing: dict[str, Any]) -> dict[str, Any]:
    """The full keyword set of `preprocess` (defaults filled in), as the cache key sees it."""
    full = {k: p.default for k, p in inspect.signature(preprocess).parameters.items()
            if p.kind is p.KEYWORD_ONLY}
    unknown = set(preprocessing) - set(full)
    if unknown:
        raise ValueError(f"not preprocessing settings: {sorted(unknown)}")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in {**full, **preprocessing}.items()}


def cache_key(encoder: Encoder, *, dataset_root: str | Path, ids: Sequence[str], bf16: bool = False,
              **preprocessing: Any) -> str:
    """`preprocessing`: the keyword arguments of `sat.image.preprocess` (image_size, resize, …)."""
    h = hashlib.sha256()
    pp = _preprocessing(preprocessing)
    spec = {"encoder": encoder.name, "feature_map": encoder.feature_map, "weights": encoder.weights,
            "dim": encoder.dim, "stride": encoder.stride, "finetune_blocks": encoder.finetune_blocks,
            **pp, "preprocess": PREPROCESS_VERSION, "root": str(Path(dataset_root).resolve())}
    if bf16:  # NOTE: only when set, so the keys of existing fp32 caches stay what they were
        spec["bf16"] = True
    h.update(json.dumps(spec, sort_keys=True).encode())
    for i in ids:
        h.update(i.encode() + b"\0")
    return f"{encoder.name.replace(':', '-').replace('/', '-')}-{pp['image_size']}-{h.hexdigest()[:16]}"


def open_cache(path: str | Path) -> FeatureCache | None:
    """Open a complete cache, or None when it is absent or unfinished."""
    path = Path(path)
    if not (path / META).is_file():
        return None
    meta = json.loads((path / META).read_text(encoding="utf-8"))
    maps = np.memmap(path / DATA, dtype=np.float16, mode="r", shape=tuple(meta["shape"]))
    return FeatureCache(path, meta["ids"], maps, meta["failed"])


def _load(path: Path, preprocessing: dict[str, Any]) -> torch.Tensor | str:
    try:
        return model_input(path, **preprocessing)
    except ImageError as e:
        return str(e)


class ImageFiles(Dataset):
    """Item k: image `paths[k]` decoded and preprocessed (3, S, S), or the error text of an unreadable one."""

    def __init__(self, paths: Sequence[str | Path], preprocessing: dict[str, Any]):
        self.paths, self.preprocessing = list(paths), preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, k: int) -> torch.Tensor | str:
        return _load(Path(self.paths[k]), self.preprocessing)


def collate_images(items: list[torch.Tensor | str]) -> tuple[torch.Tensor | None, list[int], dict[int, str]]:
    """A batch of `ImageFiles` items → (the decoded images stacked (B_ok, 3, S, S) or None, their positions
    in the batch, position → error text of the images that failed)."""
    ok = [j for j, it in enumerate(items) if isinstance(it, torch.Tensor)]
    errors = {j: it for j, it in enumerate(items) if not isinstance(it, torch.Tensor)}
    return (torch.stack([items[j] for j in ok]) if ok else None), ok, errors


class ImageBatches(Dataset):
    """Item k: images [k·batch_size, (k+1)·batch_size) of `images` as `collate_images` returns them,
    decoded by `threads` threads.

    NOTE: PIL decodes and resizes with the GIL released, so threads scale with the cores (a 640×480
    JPEG for 224 px: 4.0 ms on one thread, 2.0 ms per image on two here); unlike worker processes
    they pass no image between processes and never run beside the encoder's own threads."""

    def __init__(self, images: ImageFiles, *, batch_size: int, threads: int = 1):
        self.images, self.batch_size, self.threads = images, batch_size, max(1, threads)

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, k: int) -> tuple[torch.Tensor | None, list[int], dict[int, str]]:
        rows = range(k * self.batch_size, min(len(self.images), (k + 1) * self.batch_size))
        if self.threads == 1 or len(rows) == 1:
            return collate_images([self.images[i] for i in rows])
        with ThreadPoolExecutor(min(self.threads, len(rows)), thread_name_prefix="decode") as pool:
            return collate_images(list(pool.map(self.images.__getitem__, rows)))  # NOTE: map keeps order


def decode_workers(requested: int | None = None, device: torch.device | str = "cpu") -> int:
    """DataLoader worker processes that decode images: `requested`; by default none on the CPU
    (threads in this process decode, `decode_threads`) and on a GPU min(8, this process's share of the
    CPU cores: cores / processes on this machine under torchrun).

    NOTE: on a GPU the encoder outruns JPEG decoding, so workers decoding ahead are what sets the
    pace. On a CPU the encoder already keeps every core busy: workers beside it only take cores away
    (and its OpenMP threads wait for the one a worker preempted), so threads decode between batches.
    Measured on 2 cores (bench/extraction.py, two runs of 5 rounds): threads 0.91× and 0.89× the
    encoder-only rate (medians), 2 worker processes 0.90× and 0.64×: never slower, far steadier."""
    if requested is not None:
        if requested < 0:
            raise ValueError(f"decode workers must be 0 (decode in this process) or more, got {requested}")
        return requested
    if torch.device(device).type == "cpu":
        return 0
    return max(1, min(8, cpu_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))))


def decode_threads(workers: int) -> int:
    """Threads decoding each batch: one per worker process, else as many as torch's own threads."""
    return 1 if workers else max(1, min(cpu_cores(), torch.get_num_threads()))


def image_loader(paths: Sequence[str | Path], preprocessing: dict[str, Any], *, batch_size: int,
                 workers: int, device: torch.device) -> DataLoader:
    """Batches of `collate_images`, in order: decoded by `workers` processes ahead of the encoder
    (each batch by one worker) or, with none, by `decode_threads` threads in this process.

    NOTE: decoding + preprocessing a 640×480 JPEG costs ≈ 4 CPU ms with the JPEG draft (≈ 6 without)
    next to ≈ 34 ms of Lite0's per image here (bench/extraction.py), and on a GPU likely more than the
    encoder (not measured). Order is kept (no shuffle, in-order delivery), so the cache does not
    depend on the number of workers or threads."""
    batches = ImageBatches(ImageFiles(paths, preprocessing), batch_size=batch_size, threads=decode_threads(workers))
    return DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers,
                      pin_memory=device.type == "cuda", prefetch_factor=2 if workers else None)


def progress_file(rank: int) -> str:
    """Rank 0 keeps the single-process name, so a cache resumes across launch modes on rank 0's rows."""
    return PROGRESS if rank == 0 else f"progress.rank{rank}.json"


def _allocated(path: Path) -> int:
    """Bytes the file system has actually given `path` (a fresh memmap is sparse: none)."""
    try:
        return path.stat().st_blocks * 512
    except (OSError, AttributeError):
        return 0


def _check_space(path: Path, shape: tuple[int, ...]) -> int:
    """Raise a one-line OSError unless the cache folder has room for the maps; returns their bytes.

    NOTE: the data file is memory-mapped; a write into it on a full disk is a SIGBUS (the process
    dies without a message), so the space is checked here and reserved in `_create_or_reuse`."""
    nbytes = int(np.prod(shape)) * 2
    data = path / DATA
    have = _allocated(data) if data.is_file() and data.stat().st_size == nbytes else 0
    free = shutil.disk_usage(path).free
    if nbytes - have > free:
        raise OSError(f"not enough space for the feature cache {data}: it needs {_mb(nbytes - have)} more "
                      f"({_mb(nbytes)} in all, {shape[0]} images), {_mb(free)} free there; free some space "
                      "or point --cache-dir elsewhere")
    return nbytes


def _mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MB" if n >= 2**20 else f"{n / 1024:,.1f} KB"


def _create_or_reuse(path: Path, shape: tuple[int, ...]) -> None:
    """Rank 0: the data file at the right size (kept when it already is: its rows may be resumed),
    its blocks reserved on disk (posix_fallocate) so that no later memory-mapped write can fail."""
    nbytes = int(np.prod(shape)) * 2
    data = path / DATA
    try:
        if not data.is_file() or data.stat().st_size != nbytes:
            for f in path.glob("progress*.json"):  # NOTE: progress of another shape means nothing now
                f.unlink()
            np.memmap(data, dtype=np.float16, mode="w+", shape=shape).flush()
        if hasattr(os, "posix_fallocate"):
            with open(data, "r+b") as f:
                os.posix_fallocate(f.fileno(), 0, nbytes)
    except OSError as e:
        raise OSError(f"could not create the feature cache {data} ({_mb(nbytes)} needed): "
                      f"{e.strerror or e}") from None


def extract_features(paths: Sequence[str | Path], ids: Sequence[str], *, encoder: Encoder,
                     dataset_root: str | Path, cache_dir: str | Path, batch_size: int = 32,
                     device: torch.device | str = "cpu", progress: bool = True, bf16: bool = False,
                     workers: int | None = None, **preprocessing: Any) -> FeatureCache:
    """Return the cache for these images, extracting (or resuming) what is missing.

    `preprocessing`: the keyword arguments of `sat.image.preprocess` (image_size, resize, crop_pct,
    interpolation, mean, std; `ModelConfig.preprocessing`), all part of the cache key.

    `bf16` runs the encoder under bfloat16 autocast (a separate cache: the maps differ slightly;
    bench/ reports the speed-up and the drift on this machine).

    `workers`: DataLoader processes decoding images while the encoder runs (`decode_workers`: None =
    none on the CPU, min(8, the CPU cores per process) on a GPU; 0 = decode in this process, with one
    thread per core). The cache is the same either way.

    Under torchrun every rank calls this with the same arguments and gets the same cache back.
    """
    if len(paths) != len(ids) or len(set(ids)) != len(ids):
        raise ValueError("paths and ids must have the same length and ids must be unique")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    decode_workers(workers, device)  # NOTE: a bad count is an error before any file is touched
    path = Path(cache_dir) / cache_key(encoder, dataset_root=dataset_root, ids=ids, bf16=bf16, **preprocessing)
    image_size = _preprocessing(preprocessing)["image_size"]
    cache = open_cache(path)
    if cache is not None:
        return cache
    ctx = D.current()
    D.barrier()  # NOTE: no rank may see meta.json missing after another has started rewriting files
    path.mkdir(parents=True, exist_ok=True)
    encoder = encoder.to(device).eval()
    with torch.inference_mode():
        probe = encoder.encode_trunk(torch.zeros(1, 3, image_size, image_size, device=device))
    shape = (len(ids), *probe.shape[1:])  # (N, C, h, w)
    nbytes = _check_space(path, shape)  # NOTE: on every rank, so none waits for a rank that failed
    if ctx.is_main:
        _create_or_reuse(path, shape)
    D.barrier()
    mine = D.shard_rows(len(ids), ctx)  # this rank's rows, in order
    prog_path = path / progress_file(ctx.rank)
    done, failed = 0, {}
    if prog_path.is_file():
        prog = json.loads(prog_path.read_text(encoding="utf-8"))
        if tuple(prog["shape"]) == shape and int(prog.get("world", 1)) == ctx.world:
            done, failed = int(prog["done"]), dict(prog["failed"])
    maps = np.memmap(path / DATA, dtype=np.float16, mode="r+", shape=shape)
    bar = tqdm(total=len(mine), initial=done, desc="features", unit="img", disable=not (progress and ctx.is_main))
    loader = image_loader([paths[i] for i in mine[done:]], preprocessing, batch_size=batch_size,
                          workers=decode_workers(workers, device), device=torch.device(device))
    start = done
    with torch.inference_mode():
        for x, ok, errors in loader:
            n = len(ok) + len(errors)
            rows = mine[start:start + n]
            for j, err in errors.items():
                failed[ids[rows[j]]] = err
            block = np.zeros((n, *shape[1:]), dtype=np.float16)
            if ok:
                x = x.to(device, non_blocking=True)  # NOTE: from pinned memory on CUDA: an async copy
                with D.autocast(x.device, bf16):
                    fmap = encoder.encode_trunk(x)
                block[ok] = fmap.float().cpu().numpy().astype(np.float16)
            try:
                if ctx.world == 1:
                    maps[rows[0]:rows[-1] + 1] = block  # contiguous rows: a plain slice write
                else:
                    maps[np.asarray(rows)] = block
                maps.flush()
                write_json(prog_path, {"done": start + n, "shape": list(shape), "failed": failed,
                                        "world": ctx.world})
            except OSError as e:
                raise OSError(f"writing the feature cache {path} failed ({_mb(nbytes)} needed, "
                              f"{_mb(shutil.disk_usage(path).free)} free): {e.strerror or e}") from None
            start += n
            bar.update(n)
    bar.close()
    del maps
    all_failed: dict[str, str] = {}
    for part in D.gather_objects(failed):  # NOTE: a collective: every rank arrives here
        all_failed.update(part)
    if ctx.is_main:
        failed_in_order = {k: all_failed[k] for k in ids if k in all_failed}
        write_json(path / META, {"ids": list(ids), "shape": list(shape), "failed": failed_in_order,
                                  "encoder": encoder.name, "feature_map": encoder.feature_map,
                                  "weights": encoder.weights, "preprocessing": _preprocessing(preprocessing)})
    D.barrier()
    return open_cache(path)
