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

from sat.paths import WEIGHTS

DEFAULTS = {"soft": WEIGHTS / "soft", "hard": WEIGHTS / "hard"}


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
    from sat.device import resolve_device

    try:
        resolve_device(args.device)  # NOTE: both columns would fail alike; say it once, up front
    except ValueError as e:
        print(f"error: --device: {e}", file=sys.stderr)
        return 2
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
