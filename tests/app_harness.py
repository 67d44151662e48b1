"""Drive the real app: `python app.py` in a subprocess and headless Chromium through Playwright.

Used by tests/test_app_live.py and tests/test_app_browser.py, and on its own to regenerate the
README's picture:

    python -m tests.app_harness [--soft DIR] [--hard DIR] [--example FILE] [--word K]
                                [--out assets/screenshot.png] [--strip assets/scrub_strip.png]

The browser is Debian's /usr/bin/chromium; Playwright never downloads one (`.ci/run` installs the
Debian package when it is missing).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from sat.paths import EXAMPLES, REPO, WEIGHTS
from studio.server import serving

if TYPE_CHECKING:  # pragma: no cover
    from playwright.sync_api import Page

START_TIMEOUT_S = 90
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
UI_TIMEOUT_MS = 30_000


# ----------------------------------------------------------------------------- the server

@contextlib.contextmanager
def running_app(*args: str, env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[str]:
    """`python app.py ARGS` on a free 127.0.0.1 port; yields its URL once it answers, then stops it."""
    with serving(*args, env=env, timeout=START_TIMEOUT_S, log=log) as app:
        yield app.url


# ----------------------------------------------------------------------------- the browser

@contextlib.contextmanager
def open_page(url: str, *, width: int = 1400, height: int = 1000) -> Iterator["Page"]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True,
                                    permissions=["clipboard-read", "clipboard-write"])
            page.goto(url)
            page.wait_for_selector("#upload", timeout=UI_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def overlay_src(page: "Page", name: str) -> str:
    return page.get_attribute(f"#{name}-overlay img", "src") or ""


def wait_for_captions(page: "Page", status_prefix: str = "Captioned") -> None:
    """Both columns show word chips and the status box reports the caption."""
    for name in ("soft", "hard"):
        page.wait_for_selector(f"#{name}-caption .sat-chip", timeout=UI_TIMEOUT_MS)
    page.wait_for_function("p => document.querySelector('#status').innerText.startsWith(p)",
                           arg=status_prefix, timeout=UI_TIMEOUT_MS)


def wait_idle(page: "Page") -> None:
    """No event is running: every Gradio status tracker is hidden again."""
    page.wait_for_function("() => document.querySelectorAll("
                           "'[data-testid=status-tracker]:not(.hide)').length === 0",
                           timeout=UI_TIMEOUT_MS)


def upload(page: "Page", path: str) -> None:
    """Put a file into the image component, as a person choosing it does (a shown image is
    replaced, not cleared first)."""
    page.set_input_files("#upload input[type=file]", path)


def step_word(page: "Page", name: str, presses: int = 1) -> str:
    """Move a column's word slider with the keyboard (a user `input`); returns the new overlay src."""
    before = overlay_src(page, name)
    page.locator(f"#{name}-slider input[type=range]").focus()
    for _ in range(presses):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("([n, s]) => document.querySelector(`#${n}-overlay img`).src !== s",
                           arg=[name, before], timeout=UI_TIMEOUT_MS)
    return overlay_src(page, name)


# ----------------------------------------------------------------------------- the README picture

def select_word(page: "Page", name: str, k: int) -> None:
    """Click word ``k`` (from 1) of a column's caption and wait for its overlay to be redrawn."""
    before = overlay_src(page, name)
    chip = page.locator(f"#{name}-caption .sat-chip").nth(k - 1)
    if "sat-current" in (chip.get_attribute("class") or ""):
        return  # NOTE: already selected: nothing is redrawn
    chip.click()
    page.wait_for_function("([n, k]) => document.querySelector(`#${n}-word`).innerText.startsWith(`Word ${k} `)",
                           arg=[name, k], timeout=UI_TIMEOUT_MS)
    page.wait_for_function("([n, s]) => document.querySelector(`#${n}-overlay img`).src !== s",
                           arg=[name, before], timeout=UI_TIMEOUT_MS)
    wait_idle(page)
    page.wait_for_timeout(300)  # NOTE: let the new image load and its fade finish


def scrub_frames(page: "Page", name: str, words: list[int], *, scale: float = 0.55) -> "Image.Image":
    """One frame per word in ``words`` (from 1): the column's caption (the word highlighted) and its
    overlay, side by side in one image, each scaled by ``scale``."""
    import io

    from PIL import Image

    frames = []
    for k in words:
        select_word(page, name, k)
        top = page.locator(f"#{name}-caption .sat-caption").bounding_box()  # the chips, not the notes above
        img = page.locator(f"#{name}-overlay").bounding_box()
        assert top and img
        clip = {"x": img["x"], "y": top["y"], "width": img["width"], "height": img["y"] + img["height"] - top["y"]}
        frame = Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")
        frames.append(frame.resize((round(frame.width * scale), round(frame.height * scale)), Image.LANCZOS))
    gap = 8
    strip = Image.new("RGB", (sum(f.width for f in frames) + gap * (len(frames) - 1), frames[0].height), "white")
    x = 0
    for f in frames:
        strip.paste(f, (x, 0))
        x += f.width + gap
    return strip


def set_no_repeat(page: "Page", n: int) -> None:
    """Set the Decoding panel's "No repeated n-grams" to ``n``, then fold the panel again."""
    page.get_by_text("Decoding", exact=True).click()
    box = page.locator("#no-repeat input[type=number]")
    box.fill(str(n))
    box.press("Enter")
    page.wait_for_function("n => document.querySelector('#no-repeat input[type=range]').value === String(n)",
                           arg=n, timeout=UI_TIMEOUT_MS)
    page.get_by_text("Decoding", exact=True).click()


def make_screenshot(out: Path, *, soft: Path, hard: Path, example: Path, word: int = 4,
                    strip: Path | None = None, strip_words: tuple[int, ...] = (1, 2, 3, 4),
                    no_repeat: int | None = None) -> Path:
    """Caption ``example`` (with ``no_repeat`` as the no-repeated-n-gram size when given), click the
    soft column's word ``word`` and save the page as a PNG; with ``strip``, also the soft column at
    each of ``strip_words`` side by side (scrubbing through words)."""
    from PIL import Image

    raw = out.with_suffix(".raw.png")
    with running_app("--soft", str(soft), "--hard", str(hard)) as url:
        with open_page(url, width=1400, height=1000) as page:
            if no_repeat is not None:
                set_no_repeat(page, no_repeat)
            upload(page, str(example))
            wait_for_captions(page)
            page.wait_for_selector("#soft-grid:not([disabled])")  # the grids come with the caption
            n = page.locator("#soft-caption .sat-chip").count()
            if strip is not None:
                scrub_frames(page, "soft", [k for k in strip_words if k <= n]).save(strip, optimize=True)
            if n > 1:
                select_word(page, "soft", min(word, n))
            page.mouse.move(0, 0)  # NOTE: no hover outline on a chip
            page.evaluate("() => window.scrollTo(0, 0)")  # NOTE: the clicks above may have scrolled
            wait_idle(page)
            page.wait_for_timeout(500)  # NOTE: let the last images load and fades finish
            page.screenshot(path=str(raw), full_page=False)
    # NOTE: full colour: a 256-colour palette bands the spotlight's smooth dimming into contours
    # and shifts the example thumbnails' colours (the green star came out olive); ≈ 300 KB.
    Image.open(raw).convert("RGB").save(out, optimize=True)
    raw.unlink()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.app_harness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--soft", type=Path, default=WEIGHTS / "soft")
    p.add_argument("--hard", type=Path, default=WEIGHTS / "hard")
    # NOTE: the soft model says "two large blue hearts" (the references' words); the hard model
    # describes the two hearts one by one, which the app's default (no repeated 4-gram) would cut
    # short: the picture allows repeats so that both columns show what the models would say.
    p.add_argument("--example", type=Path, default=EXAMPLES / "scene_008507.jpg")
    p.add_argument("--no-repeat", type=int, default=0, help="no repeated n-grams of n words (0 = off)")
    p.add_argument("--word", type=int, default=4, help="the word selected in the picture (from 1)")
    p.add_argument("--out", type=Path, default=REPO / "assets" / "screenshot.png")
    p.add_argument("--strip", type=Path, default=REPO / "assets" / "scrub_strip.png",
                   help="the soft column at a few words, side by side")
    args = p.parse_args(argv)
    if not args.soft.is_dir():
        print(f"error: {args.soft} does not exist; build the weights first (python -m train)", file=sys.stderr)
        return 2
    hard = args.hard
    if not hard.is_dir():
        print(f"note: {hard} does not exist yet; the soft weights stand in for the hard column")
        hard = args.soft
    path = make_screenshot(args.out, soft=args.soft, hard=hard, example=args.example, word=args.word,
                           strip=args.strip, no_repeat=args.no_repeat)
    for p in (path, args.strip):
        print(f"wrote {p} ({p.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
