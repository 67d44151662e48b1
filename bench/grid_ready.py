"""`python -m bench.grid_ready`: in the real app (Chromium), how long after an upload the captions
show, and how long after that the attention-grid downloads become usable.

    python -m bench.grid_ready                 # the 4 examples and a 900×600 photo, 2 rounds
    python -m bench.grid_ready --rounds 1 --out-dir /tmp/grid

For each upload (the page reloaded first, so nothing of the previous caption is on screen) a script
in the page checks every animation frame for both columns' word chips (with the status saying
"Captioned") and then for both grid buttons being enabled; the two times are measured in the
browser. Writes `grid_ready.json` and `grid_ready.md` to `--out-dir`.
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sat.paths import EXAMPLES

from . import system
from .report import save_outputs

HERE = Path(__file__).resolve().parent
WATCH_JS = """() => { window.__satReady = null; const t0 = performance.now(); let shown = null;
  const chips = () => ['soft', 'hard'].every(n => document.querySelector(`#${n}-caption .sat-chip`))
                      && document.querySelector('#status').innerText.startsWith('Captioned');
  const grids = () => ['soft', 'hard'].every(n => { const b = document.querySelector(`#${n}-grid`);
                                                     return b && !b.disabled; });
  const tick = () => { const now = performance.now();
    if (shown === null && chips()) shown = now;
    if (shown !== null && grids()) { window.__satReady = [shown - t0, now - shown]; return; }
    if (now - t0 > 60000) { window.__satReady = [shown === null ? -1 : shown - t0, -1]; return; }
    requestAnimationFrame(tick); };
  tick(); }"""
"""Sets window.__satReady to [ms from now to the captions shown, ms from then to both grids ready]."""


def photo(folder: Path) -> Path:
    """A 900×600 noise photo: a non-square upload with a short caption."""
    import numpy as np
    from PIL import Image

    path = folder / "photo_900x600.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 900, 3), dtype=np.uint8)).save(path)
    return path


def measure(images: list[Path], rounds: int) -> list[dict[str, Any]]:
    from tests.app_harness import UI_TIMEOUT_MS, open_page, running_app, upload

    rows = []
    with running_app() as url, open_page(url) as page:
        for r in range(rounds):
            for image in images:
                page.reload()
                page.wait_for_selector("#upload", timeout=UI_TIMEOUT_MS)
                page.evaluate(WATCH_JS)
                upload(page, str(image))
                page.wait_for_function("() => window.__satReady !== null", timeout=70_000)
                shown, ready = page.evaluate("() => window.__satReady")
                rows.append({"round": r + 1, "image": image.name, "caption_shown_s": round(shown / 1000, 2),
                             "grids_ready_after_caption_s": round(ready / 1000, 2)})
                print(f"{image.name:22s} caption shown {shown / 1000:.2f} s after the upload, "
                      f"grids ready {ready / 1000:.2f} s after the caption", flush=True)
    return rows


def write_markdown(res: dict[str, Any], path: Path) -> None:
    m = res.get("machine") or {}
    lines = [f"Machine: {m.get('cores')} cores, {m.get('cpu_model')} (shared: times include other work).", "",
             "| round | image | caption shown after the upload (s) | grids ready after the caption (s) |",
             "|---|---|---|---|"]
    lines += [f"| {r['round']} | {r['image']} | {r['caption_shown_s']} | {r['grids_ready_after_caption_s']} |"
              for r in res["rows"]]
    s = res["summary"]
    lines += ["", f"Median: caption shown {s['caption_shown_s_median']} s after the upload, grids ready "
              f"{s['grids_ready_s_median']} s after it (max {s['grids_ready_s_max']} s).", "",
              f"Produced by: `{res['command']}`"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.grid_ready", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="passes over the images")
    p.add_argument("--out-dir", type=Path, default=HERE, help="where grid_ready.json and .md go")
    args_list = sys.argv[1:] if argv is None else argv
    a = p.parse_args(args_list)
    if a.rounds < 1:
        p.error("--rounds must be ≥ 1")
    with tempfile.TemporaryDirectory(prefix="sat-grid-") as tmp:
        images = sorted(EXAMPLES.glob("scene_*.jpg")) + [photo(Path(tmp))]
        rows = measure(images, a.rounds)
    ready = [r["grids_ready_after_caption_s"] for r in rows]
    res = {"rows": rows, "summary": {
        "caption_shown_s_median": round(statistics.median(r["caption_shown_s"] for r in rows), 2),
        "grids_ready_s_median": round(statistics.median(ready), 2), "grids_ready_s_max": max(ready)},
        "machine": system.machine(), "command": " ".join(["python -m bench.grid_ready", *map(shlex.quote, args_list)]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(save_outputs(res, a.out_dir, "grid_ready", write_markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
