"""The training engine per optimizer step: host syncs, operator calls, tokens/s; eager and compiled.

`python -m bench.engine [--device cpu|cuda] [--compile] [--quick] [--out FILE]` runs one training
step as train/loop.py does (forward → loss, backward, grad clip, fused Adam, the stats read once for
logging) on the benchmark's batches (bench/training.py: batch 64, vocabulary 10 000, 512 units,
7×7×1280 maps) and counts, per step:

- host syncs: reads of device values by the host — scalar reads (`.item()`, `bool()`, `float()`:
  `aten::_local_scalar_dense`), data-dependent shapes (`nonzero`, `masked_select`, boolean-mask
  indexing), `Tensor.tolist()`. On CUDA also torch's own sync detector (`set_sync_debug_mode`).
- operator calls: aten operators dispatched (forward, backward and optimizer; a `TorchDispatchMode`
  counter). Compiled: top-level operator calls plus generated kernels, from the profiler.

Paths: "kernels" = the CPU micro-kernels (the packed recurrence, sat/kernels.py; the CPU default),
"plain" = plain PyTorch ops over every position (the CUDA default and what `--compile` traces).
"""
from __future__ import annotations

import argparse
import collections
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from sat.kernels import cpu_kernels
from sat.model import stats_to_floats
from train.loop import make_optimizer

from .training import QUICK, TrainShape, build_pair, make_batches

SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "nonzero_static"}


class _Ops(TorchDispatchMode):
    """Counts aten operator calls (and the ones among them that read device values on the host)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.syncs: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        name = func.overloadpacket.__name__
        if name in SYNC_OPS:
            self.syncs[name] += 1
        elif name in ("index", "index_put", "index_put_") and any(  # NOTE: a boolean mask's shape is data
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())):
            self.syncs["boolean_index"] += 1
        return func(*args, **(kwargs or {}))


class _ToList(TorchFunctionMode):
    """`Tensor.tolist()` (a device-to-host copy on CUDA; invisible to the dispatcher on the CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.tolist:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _stepper(model, forward: Callable, device: torch.device) -> Callable:
    opt = make_optimizer([{"params": list(model.parameters()), "lr": 1e-4}])

    def step(fmap, caps) -> dict[str, float]:
        opt.zero_grad(set_to_none=True)
        loss, stats = forward(fmap.to(device, non_blocking=True), caps.to(device, non_blocking=True))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        return stats_to_floats(stats)  # NOTE: the loop's one read per step, for logging
    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_step(step: Callable, batch, device: torch.device) -> dict[str, Any]:
    """Operator calls and host syncs of one step."""
    ops, tolist = _Ops(), _ToList()
    cuda_syncs = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with tolist, ops:
                step(*batch)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    if device.type == "cuda":
        cuda_syncs = sum("synchroniz" in str(w.message) for w in caught)
    return {"ops": ops.calls, "syncs": sum(ops.syncs.values()) + tolist.count,
            "sync_kinds": dict(ops.syncs, tolist=tolist.count), "cuda_sync_warnings": cuda_syncs}


def count_compiled(step: Callable, batch, device: torch.device) -> int:
    """Top-level operator calls + generated kernels of one compiled step (profiler events)."""
    import torch._inductor.config as inductor_config
    from torch.profiler import ProfilerActivity, profile

    inductor_config.cpp.enable_kernel_profile = True  # NOTE: C++ kernels show up as profiler events
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step(*batch)
        _sync(device)
    n = 0
    for e in prof.events():
        name = e.name
        kernel = name.startswith(("cpp_fused", "triton_", "cpp_kernel")) or e.device_type.name == "CUDA"
        top_op = name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
        n += kernel or top_op
    return n


def tokens_per_s(step: Callable, batches, device: torch.device, n: int) -> float:
    step(*batches[0])
    _sync(device)
    t0, tok = time.perf_counter(), 0
    for i in range(n):
        fmap, caps = batches[(i + 1) % len(batches)]
        step(fmap, caps)
        tok += int((caps[:, 1:] != 0).sum())
    _sync(device)
    return tok / (time.perf_counter() - t0)


def bench_engine(shape: TrainShape, *, device: torch.device, compile: bool = False) -> dict[str, Any]:
    paths_out: dict[str, Any] = {}
    out: dict[str, Any] = {"engine_device": str(device), "engine_shape": {**shape.__dict__, "grid": list(shape.grid)},
                           "engine_paths": paths_out}
    batches = make_batches(shape, 3)
    width = max(c.size(1) for _, c in batches)
    # NOTE: a fixed caption width for compile (as fit --compile does: no per-batch trimming)
    fixed = [(f, torch.nn.functional.pad(c, (0, width - c.size(1)))) for f, c in batches]
    paths = {"plain": "off"} if device.type == "cuda" else {"kernels": "on", "plain": "off"}
    for name, mode in paths.items():
        with cpu_kernels(mode):
            model, _ = build_pair(shape)
            model.to(device).train()
            step = _stepper(model, model, device)
            step(*batches[0])  # warm-up
            counts = count_step(step, batches[1], device)
            paths_out[name] = {**counts, "tokens_per_s": round(tokens_per_s(step, batches, device, shape.steps), 1)}
    # the tutorial-style reference decoder (bench/reference.py) on the same batches and device
    _, ref = build_pair(shape)
    ref.to(device).train()
    ref_step = _stepper(ref, lambda f, c: (ref.loss(f.flatten(2).transpose(1, 2), c), {}), device)
    out["engine_reference_tokens_per_s"] = round(tokens_per_s(ref_step, batches, device, shape.steps), 1)
    if compile:
        model, _ = build_pair(shape)
        model.to(device).train()
        step = _stepper(model, torch.compile(model), device)
        t0 = time.perf_counter()
        step(*fixed[0])
        _sync(device)
        out["engine_compile_seconds"] = round(time.perf_counter() - t0, 1)
        paths_out["compiled"] = {"ops": count_compiled(step, fixed[1], device),
                           "tokens_per_s": round(tokens_per_s(step, fixed, device, shape.steps), 1)}
    # NOTE: the keys hold the plain path: what runs on CUDA, where a host sync stalls the device
    out["train_host_syncs_per_step"] = paths_out["plain"]["syncs"]
    out["train_ops_per_step"] = paths_out["plain"]["ops"]
    default = paths_out["kernels" if "kernels" in paths_out else "plain"]
    ref = out["engine_reference_tokens_per_s"]
    out["engine_speedup_vs_reference_eager"] = round(default["tokens_per_s"] / ref, 2)
    if compile:
        out["train_ops_per_step_compiled"] = paths_out["compiled"]["ops"]
        out["engine_speedup_vs_reference_compiled"] = round(paths_out["compiled"]["tokens_per_s"] / ref, 2)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile on a CPU)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a check that the code runs")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    a = p.parse_args(argv)
    shape = QUICK if a.quick else TrainShape(steps=a.steps)
    res = bench_engine(shape, device=torch.device(a.device), compile=a.compile)
    res["command"] = "python -m bench.engine " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
