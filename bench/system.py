"""The machine, its matmul speed, and peak resident memory of training and of the app.

Peak RSS is the kernel's high-water mark of a *separate* process (`VmHWM` in /proc/<pid>/status,
or `ru_maxrss` of a waited-for child), so the benchmark process's own memory never leaks into it.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from sat.device import cpu_cores
from sat.paths import REPO


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine() -> dict[str, Any]:
    """What every figure is tied to: cores, CPU model, torch version and threads."""
    flags = cpu_flags()
    return {
        "cpu_model": cpu_model(),
        "cores": cpu_cores(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "amx_bf16": "amx_bf16" in flags,
        "avx512": "avx512f" in flags,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def matmul_gflops(n: int = 2048, seconds: float = 2.0) -> dict[str, Any]:
    """Sustained fp32 GFLOP/s of n×n @ n×n matmuls (2n³ FLOPs each), best of short runs."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up: oneDNN/MKL picks its kernel
    best, runs, t_end = 0.0, 0, time.perf_counter() + seconds
    while time.perf_counter() < t_end or runs < 3:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        dt = time.perf_counter() - t0
        best = max(best, 2 * n ** 3 / dt / 1e9)
        runs += 1
    return {"matmul_gflops": round(best, 1), "matmul_n": n, "matmul_runs": runs}


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set of a running process (VmHWM) in MB, or None where /proc has no such line."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def run_child_peak_rss(args: list[str], *, timeout: float) -> tuple[float, str]:
    """Run `python ARGS` to completion; return its peak RSS in MB (VmHWM at exit) and its stdout."""
    # NOTE: ru_maxrss of RUSAGE_CHILDREN is the max over *all* children ever waited for, so the
    # child reports its own VmHWM on its last line instead (see bench/training.py:memory_child).
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    last = json.loads(out.stdout.strip().splitlines()[-1])
    return float(last["peak_rss_mb"]), out.stdout


def app_peak_rss(*, soft: str | None, hard: str | None, image: Path, start_timeout: float = 120.0) -> dict[str, Any]:
    """Start `python app.py`, caption `image` once through gradio_client, read the app's VmHWM."""
    from gradio_client import Client, handle_file

    from studio.server import serving

    args = [*(["--soft", soft] if soft else []), *(["--hard", hard] if hard else [])]
    with serving(*args, timeout=start_timeout) as app:
        idle = vm_hwm_mb(app.proc.pid)
        client = Client(app.url, verbose=False)
        t1 = time.perf_counter()
        client.predict(handle_file(str(image)), "beam", 3, 1.0, 20, api_name="/caption")
        request_s = time.perf_counter() - t1
        peak = vm_hwm_mb(app.proc.pid)
    return {"peak_rss_mb_app": None if peak is None else round(peak, 1),
            "app_rss_mb_after_start": None if idle is None else round(idle, 1),
            "app_start_s": round(app.start_s, 1), "app_caption_request_s": round(request_s, 2),
            "app_command": app.command}


def own_peak_rss_mb() -> float:
    """This process's peak RSS in MB."""
    hwm = vm_hwm_mb(os.getpid())
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
