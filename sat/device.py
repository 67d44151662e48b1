"""Which device to run on: the one resolver behind `python -m sat --device`, `python app.py --device`,
`Captioner(device=...)` and `python -m train ... --device`.

    resolve_device(None)     # cuda when present, else cpu ("auto" means the same)
    resolve_device("cuda")   # ValueError (one line) on a machine without CUDA
"""
from __future__ import annotations

import os

import torch

__all__ = ["cpu_cores", "default_device", "resolve_device"]


def cpu_cores() -> int:
    """The CPU cores this process may use (its affinity mask; all of them where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: torch.device | str | None) -> torch.device:
    """`device` ("cpu", "cuda", "cuda:N"; None or "auto": `default_device()`). Raises ValueError
    (one line) for a device this machine lacks, instead of torch's error from deep inside the first
    `.to()`."""
    if device is None or device == "auto":
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}: use cpu or cuda[:N]") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("CUDA was requested but torch.cuda.is_available() is False")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{dev} was requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"unknown device {device!r}: use cpu or cuda[:N]")
    return dev
