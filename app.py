"""`python app.py` — SAT Studio in the browser: soft vs hard attention, word by word.

    python app.py                                  # http://127.0.0.1:7860, bundled weights
    python app.py --host 0.0.0.0 --port 8080       # listen on every interface
    python app.py --soft hf://owner/sat-soft@v1 --hard my_weights/hard
    SAT_WEIGHTS_HARD=runs/hard_weights python app.py

Weights: ``--soft`` / ``--hard``, else ``SAT_WEIGHTS_SOFT`` / ``SAT_WEIGHTS_HARD``, else the bundled
``assets/weights/{soft,hard}``; each a local folder or ``hf://owner/repo[@revision]`` (resolved in
the standard Hugging Face cache; ``HF_HUB_OFFLINE=1`` is honoured). A model that cannot be loaded
is reported (here and in its column) and the app serves the other; with neither it exits with 2.
Hugging Face Spaces runs this file as is (``app_file: app.py``), with ``GRADIO_SERVER_NAME`` /
``GRADIO_SERVER_PORT`` set by the Space.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
DEFAULTS = {"soft": REPO / "assets" / "weights" / "soft", "hard": REPO / "assets" / "weights" / "hard"}


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for tests and benchmarks that start this app)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(proc, url: str, *, timeout: float, describe_exit=lambda: "") -> float:
    """Poll `url` until the app started as `proc` answers 200; return the seconds it took.

    Raises RuntimeError (with `describe_exit()` appended) if the process exits first, TimeoutError
    after `timeout` seconds.
    """
    import urllib.request
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


def stop_serving(proc) -> None:
    """Stop an app process started for a test or benchmark: terminate, then kill after 10 s."""
    import subprocess
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def weights_spec(name: str, flag: str | None) -> str:
    """--soft/--hard, else SAT_WEIGHTS_SOFT/HARD, else the bundled folder."""
    return flag or os.environ.get(f"SAT_WEIGHTS_{name.upper()}") or str(DEFAULTS[name])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python app.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # NOTE: Spaces (and docker setups) pass the address through Gradio's own variables.
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--soft", default=None, help="soft-attention weights: folder or hf://owner/repo[@rev]")
    p.add_argument("--hard", default=None, help="hard-attention weights: folder or hf://owner/repo[@rev]")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when present)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from studio.inference import load_slot, pretty_spec  # NOTE: here: `import app` does no work
    from studio.ui import create_app, serve

    t0 = time.perf_counter()
    slots = [load_slot(name, weights_spec(name, getattr(args, name)), device=args.device)
             for name in ("soft", "hard")]
    for slot in slots:
        state = "loaded" if slot.ready else f"NOT loaded: {slot.error}"
        print(f"{slot.title}: {pretty_spec(slot.spec)} — {state}", file=sys.stderr if not slot.ready else sys.stdout)
    if not any(s.ready for s in slots):
        print("error: no weights could be loaded; see above", file=sys.stderr)
        return 2
    demo = create_app(soft=slots[0], hard=slots[1])
    print(f"models ready in {time.perf_counter() - t0:.1f} s")
    serve(demo, host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
