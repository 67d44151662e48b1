"""Data-parallel helpers for `torchrun --nproc_per_node=N -m train fit ...` (one process = one rank).

Everything here degrades to a no-op in a plain single process, so the trainer and the feature
extractor call the same functions either way:

    ctx = current()                  # rank, world size, local rank (world 1 without torchrun)
    shard(global_batch, ctx)         # this rank's rows of a global batch
    data_parallel(model, device)     # DistributedDataParallel, or the model itself
    all_reduce_sum_(tensors)         # in place, one coalesced collective
    barrier(); broadcast_object(x); gather_objects(x)

`init(device)` starts the process group from torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT): NCCL when the ranks use CUDA, gloo on CPU (`backend_for`). Each
rank on a CUDA machine takes GPU LOCAL_RANK (`device_for`). `autocast(device, enabled)` is the
bf16 autocast context of training on either device type.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist

from sat.device import resolve_device

# NOTE: rank 0 alone validates and evaluates while the others wait in a collective; the default
# timeout (10-30 min depending on backend) is too short for a large test split on one GPU.
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that logs, checkpoints, evaluates and writes weights."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def env_context(environ: dict[str, str] | None = None) -> DistContext:
    """Rank, world size and local rank as torchrun sets them (world 1 when it did not)."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1"))
    rank = int(env.get("RANK", "0"))
    local = int(env.get("LOCAL_RANK", str(rank)))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return DistContext(rank=rank, world=world, local_rank=local)


def current() -> DistContext:
    """The running process group's view, or a single process when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(rank=dist.get_rank(), world=dist.get_world_size(),
                           local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistContext()


def backend_for(device_type: str) -> str:
    """NCCL for CUDA ranks, gloo for CPU ranks."""
    return "nccl" if device_type == "cuda" else "gloo"


def device_for(name: str, *, local_rank: int = 0, world: int = 1, cuda_available: bool | None = None) -> torch.device:
    """The device of one rank: 'auto' → cuda:LOCAL_RANK when CUDA is present (cuda when single), else cpu;
    an explicit 'cuda' under torchrun also becomes cuda:LOCAL_RANK; anything else is taken as is."""
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if name == "auto":
        name = "cuda" if cuda else "cpu"
    if name == "cuda" and world > 1:
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init(device: str = "auto", environ: dict[str, str] | None = None) -> tuple[DistContext, torch.device]:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1); pick this rank's device."""
    ctx = env_context(environ)
    dev = resolve_device(device_for(device, local_rank=ctx.local_rank, world=ctx.world))  # NOTE: one-line error
    if ctx.active and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend_for(dev.type), timeout=TIMEOUT)
    return ctx, dev


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's part of a global batch: rows rank, rank + world, … (DistributedSampler's split).

    Taken within every global batch of one shared permutation, the ranks' parts together are
    exactly the batch a single process would draw, whatever the world size.
    """
    return items[ctx.rank::ctx.world] if ctx.active else items


def shard_rows(n: int, ctx: DistContext) -> list[int]:
    """Rows i ≡ rank (mod world) of 0..n-1: a rank's share of the feature extraction."""
    return list(range(ctx.rank, n, ctx.world))


def barrier() -> None:
    if current().active:
        dist.barrier()


def all_reduce_sum_(tensors: Sequence[torch.Tensor]) -> None:
    """Sum each tensor across ranks, in place, with one collective over a flat buffer."""
    if not current().active or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s value of a picklable object, on every rank."""
    if not current().active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's value of a picklable object, in rank order, on every rank."""
    ctx = current()
    if not ctx.active:
        return [obj]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` wrapped in DistributedDataParallel under torchrun (the model itself in one process).

    DDP copies rank 0's parameters and buffers to every rank at construction (an identical start
    even if a rank's initialisation drew other numbers), all-reduces the gradients in buckets while
    the backward pass runs, and copies rank 0's buffers to the others before each forward.
    """
    if not current().active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the body first (e.g. writes a dataset to disk), the others after it is done."""
    ctx = current()
    if ctx.active and not ctx.is_main:
        dist.barrier()
    try:
        yield
    finally:
        if ctx.active and ctx.is_main:
            dist.barrier()


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` (CUDA or CPU) when enabled, else a null context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
