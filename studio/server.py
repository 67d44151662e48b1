"""`python app.py` as a child process, for the tests and the benchmarks that drive the real app.

    with serving("--soft", "w/soft", env={"GRADIO_TEMP_DIR": "/tmp/up"}) as app:
        app.url, app.proc.pid, app.start_s   # it answers 200 on app.url; stopped on exit

Standard library only (no Gradio, no torch): `app.py` itself needs none of this, and the tests
(tests/app_harness.py) and the benchmarks (bench/system.py, bench/load.py) share it from here.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from sat.paths import REPO

__all__ = ["Served", "free_port", "serving", "stop_serving", "wait_until_serving"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(proc: subprocess.Popen, url: str, *, timeout: float,
                       describe_exit: Callable[[], str] = lambda: "") -> float:
    """Poll `url` until the app started as `proc` answers 200; return the seconds it took.

    Raises RuntimeError (with `describe_exit()` appended) if the process exits first, TimeoutError
    after `timeout` seconds.
    """
    t0, deadline = time.perf_counter(), time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}{describe_exit()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"app.py did not answer on {url} within {timeout} s")
        time.sleep(0.3)


def stop_serving(proc: subprocess.Popen) -> None:
    """Terminate the app process, then kill it after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    """http://127.0.0.1:PORT/"""
    start_s: float
    """Seconds from the start of the process until the app answered."""
    command: str
    """`python app.py ...` as run (for results files)."""


@contextlib.contextmanager
def serving(*app_args: str, env: dict[str, str] | None = None, timeout: float = 90.0,
            log: Path | None = None) -> Iterator[Served]:
    """`python app.py APP_ARGS --host 127.0.0.1 --port FREE` in the repository root; yields once it
    answers 200, stops it on exit. Its stdout and stderr go to `log` (else a temporary file that is
    removed): a file, not a pipe, so a chatty app never blocks on a full pipe; the end of it is
    quoted when the app exits before it answers."""
    port = free_port()
    args = [sys.executable, "app.py", *app_args, "--host", "127.0.0.1", "--port", str(port)]
    full_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
    with contextlib.ExitStack() as stack:
        if log is None:
            log = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sat-app-"))) / "app.log"
        out = stack.enter_context(open(log, "w", encoding="utf-8"))
        proc = subprocess.Popen(args, cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        stack.callback(stop_serving, proc)
        url = f"http://127.0.0.1:{port}/"
        start_s = wait_until_serving(proc, url, timeout=timeout,
                                     describe_exit=lambda: f"; log: {log.read_text(errors='replace')[-2000:]}")
        yield Served(proc=proc, url=url, start_s=start_s, command="python " + " ".join(args[1:]))
