"""One switch for the CPU micro-kernels: on where they measure faster (CPU), plain PyTorch elsewhere.

The kernels (each tested against the plain op it replaces):
- `sat.steplinear.StepLSTMCell` for `nn.LSTMCell` in the LSTM's teacher forcing (one ∂L/∂W matmul
  for all steps instead of one per step),
- `sat.xent.token_nll` for `F.cross_entropy(..., reduction="none")` (cache-sized chunks),
- the chunked tanh of `sat.attention.SoftAttention.weights` in search (B = images × beams rows).

    with cpu_kernels("off"):          # "auto" (default) | "on" | "off"
        loss, stats = model(fmap, captions)

"auto" = on for tensors on the CPU, off on CUDA, where the plain ops are what torch.compile and CUDA
graphs handle. Under torch.compile the plain ops are used whatever the mode: Dynamo cannot trace
the custom autograd Functions' deferred weight gradient (`StepLinear`'s `_Collect`).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch

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
