"""One switch for the CPU micro-kernels: on where they measure faster (CPU), plain PyTorch elsewhere.

The kernels (each tested against the plain op it replaces):
- `sat.steplinear.StepLSTMCell` for `nn.LSTMCell` in the LSTM's teacher forcing (one ∂L/∂W matmul
  for all steps instead of one per step),
- `sat.xent.token_nll` for `F.cross_entropy(..., reduction="none")` (cache-sized chunks),
- the chunked tanh of `sat.attention.SoftAttention.weights` in search (B = images × beams rows),
- `tanh_`: tanh(x) = 2σ(2x) − 1 for the attention's (B, L, A) tanh at every step (training and search),
- `keep_freed_memory`: training on the CPU keeps freed blocks in the heap (glibc's malloc settings).

    with cpu_kernels("off"):          # "auto" (default) | "on" | "off"
        loss, stats = model(fmap, captions)

"auto" = on for tensors on the CPU, off on CUDA, where the plain ops are what torch.compile and CUDA
graphs handle. Under torch.compile the plain ops are used whatever the mode: Dynamo cannot trace
the custom autograd Functions' deferred weight gradient (`StepLinear`'s `_Collect`).
"""
from __future__ import annotations

import contextlib
import contextvars
import ctypes
from typing import Iterator

import torch
from torch.autograd import Function

MODES = ("auto", "on", "off")

# NOTE: a context variable, not a global: a training thread's setting never leaks into the app's
# captioning threads (new threads start from the default, "auto")
_MODE: contextvars.ContextVar[str] = contextvars.ContextVar("sat_cpu_kernels", default="auto")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"cpu_kernels must be one of {MODES}, got {mode!r}")
    return mode


@contextlib.contextmanager
def cpu_kernels(mode: str) -> Iterator[None]:
    """Use the CPU kernels per `mode` inside the block (this thread / task only)."""
    token = _MODE.set(check_mode(mode))
    try:
        yield
    finally:
        _MODE.reset(token)


def use_cpu_kernels(x: torch.Tensor) -> bool:
    """Whether the kernels serve a computation on `x`'s device now."""
    if torch.compiler.is_compiling():
        return False
    mode = _MODE.get()
    return mode == "on" or mode == "auto" and x.device.type == "cpu"


def _sigmoid_tanh_(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2σ(2x) − 1, in place on x (four passes)."""
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)


class _SigmoidTanh(Function):
    """y = `_sigmoid_tanh_(x)` with autograd;  ∂y/∂x = 1 − y²."""

    @staticmethod
    def forward(ctx, x):
        ctx.mark_dirty(x)
        y = _sigmoid_tanh_(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, gy):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(gy, y)


def tanh_(x: torch.Tensor) -> torch.Tensor:
    """`x.tanh_()` for a temporary x; with the CPU kernels on, computed as 2σ(2x) − 1.

    NOTE: torch's CPU tanh (SLEEF, 1-ulp) runs ~5× slower than its sigmoid: on the attention's
    (64, 196, 128) grid 3.0 ms against 0.56 ms for the four in-place passes here (2 threads), about
    a tenth of a scenes training step. The result differs from tanh by ≤ 2e-7 absolute (float32
    rounding of σ near ½), far below what the scores that follow can tell apart."""
    if not use_cpu_kernels(x):
        return x.tanh_()
    if torch.is_grad_enabled() and x.requires_grad:
        return _SigmoidTanh.apply(x)
    return _sigmoid_tanh_(x)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
HEAP_KEEP_BYTES = 32 << 20
"""Freed blocks up to this size stay in the heap (glibc's largest mmap threshold on 64-bit)."""
HEAP_TRIM_BYTES = 1 << 30
"""Free memory at the top of the heap kept, not handed back to the OS."""


def keep_freed_memory(keep: bool = True) -> bool:
    """Tell glibc's malloc to keep freed blocks up to `HEAP_KEEP_BYTES` for reuse (`keep`), or go
    back to its fixed default thresholds (128 KB). False where it cannot (not glibc).

    NOTE: by default glibc maps every block over its (adaptive) threshold fresh from the OS and
    trims the heap top when freed, so the (B, L, A) temporaries of every decoder step come back as
    new pages, each a page fault on first touch: keeping them makes a scenes training step 1.07–1.10×
    faster (bench/tricks.py). The process keeps its high-water memory afterwards, which a training
    run reaches anyway. Process-wide; training on the CPU sets it (train/loop.py)."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mmap, trim = (HEAP_KEEP_BYTES, HEAP_TRIM_BYTES) if keep else (128 << 10, 128 << 10)
    return bool(mallopt(M_MMAP_THRESHOLD, mmap)) and bool(mallopt(M_TRIM_THRESHOLD, trim))
