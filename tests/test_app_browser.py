"""The app in a real browser: upload through the image component, both captions, clicking words,
linked scrubbing of captions of different lengths, copy, the overlay styles, the grid download,
errors, and the phone layout (390×844: the caption and its overlay in the first screen).

The soft column runs the bundled weights (a real caption that ends) and the hard column a tiny
random hard-attention model (nonsense cut at the max length), so the two captions differ in length.
"""
from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from PIL import Image

from sat.paths import REPO, WEIGHTS
from tests.app_harness import (open_page, overlay_src, running_app, step_word, upload, wait_for_captions,
                               wait_idle)
from tests.conftest import make_tiny_weights

pytestmark = pytest.mark.slow  # NOTE: starts the app and Chromium

EXAMPLE = REPO / "assets" / "examples" / "scene_008504.jpg"
OTHER = REPO / "assets" / "examples" / "scene_008502.jpg"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    hard = make_tiny_weights(root / "hard", seed=5, attention="hard")
    with running_app("--soft", str(WEIGHTS / "soft"), "--hard", str(hard), log=root / "app.log") as url:
        yield url


def chips(page, name: str) -> list[str]:
    return page.locator(f"#{name}-caption .sat-chip").all_inner_texts()


def word_is(page, name: str, prefix: str) -> None:
    page.wait_for_function("([n, p]) => document.querySelector(`#${n}-word`).innerText.startsWith(p)",
                           arg=[name, prefix], timeout=30_000)


def test_upload_click_link_copy_styles_download_and_errors(app_url, tmp_path):
    with open_page(app_url) as page:
        upload(page, str(EXAMPLE))
        wait_for_captions(page)
        assert "scene_008504.jpg (224×224)" in page.inner_text("#status")
        assert page.locator("#upload img").count() >= 1  # the image component previews the upload
        soft, hard = chips(page, "soft"), chips(page, "hard")
        assert soft[-1] == "<end>" and len(hard) != len(soft), (soft, hard)  # different lengths
        words = {"soft": soft, "hard": hard}
        long, short = sorted(words, key=lambda n: -len(words[n]))
        L, S = len(words[long]), len(words[short])
        assert "%" in page.inner_text("#soft-word") and "probability for this word" in page.inner_text("#soft-word")
        assert "Solid box" in page.inner_text("#hard-legend") and "Solid box" not in page.inner_text("#soft-legend")
        # the grids come with the caption: the download is usable the moment the caption shows
        assert page.locator("#soft-grid").is_enabled() and page.locator("#hard-grid").is_enabled()
        assert "cut off" not in page.inner_text("#soft-legend")  # a square photo: nothing to explain

        # Click the last word of the longer caption, past the shorter one's end: the linked column
        # stops at its last token (same index, clamped).
        soft0, long0 = overlay_src(page, "soft"), overlay_src(page, long)
        page.locator(f"#{long}-caption .sat-chip").nth(L - 1).click()
        word_is(page, long, f"Word {L} of {L}")
        word_is(page, short, f"Word {S} of {S}")
        assert "sat-current" in page.locator(f"#{long}-caption .sat-chip").last.get_attribute("class")
        assert "sat-current" in page.locator(f"#{short}-caption .sat-chip").last.get_attribute("class")
        assert page.locator(f"#{long}-slider input[type=number]").input_value() == str(L)
        assert overlay_src(page, long) != long0
        # A click on the shorter caption moves the longer one to the same word.
        page.locator(f"#{short}-caption .sat-chip").nth(1).click()
        word_is(page, short, f"Word 2 of {S}: {words[short][1]}")
        word_is(page, long, f"Word 2 of {L}: {words[long][1]}")
        # The slider scrubs too (a user `input`), and the other column follows.
        soft2 = step_word(page, "soft")
        word_is(page, "hard", f"Word 3 of {len(hard)}")
        with urllib.request.urlopen(soft0) as a, urllib.request.urlopen(soft2) as b:
            assert a.read() != b.read()  # different pixels, not just a new URL

        # Copy the caption as a sentence.
        page.locator("#soft-caption .sat-copy").click()
        page.wait_for_function("() => document.querySelector('#soft-caption .sat-copy').innerText.startsWith('Copied')")
        assert page.evaluate("() => navigator.clipboard.readText()") == " ".join(soft[:-1])

        # The heatmap, with its colour bar, then the plain image.
        before = overlay_src(page, "soft")
        page.get_by_text("View", exact=True).click()
        page.get_by_role("radio", name="Heatmap").check()
        page.wait_for_selector("#soft-legend .sat-bar")
        page.wait_for_function("s => document.querySelector('#soft-overlay img').src !== s", arg=before)
        page.get_by_role("checkbox", name="Show the plain image").check()
        page.wait_for_function("() => document.querySelector('#soft-legend').innerText.includes('plain image')")
        wait_idle(page)
        page.screenshot(path=str(tmp_path / "desktop.png"), full_page=True)

        # The attention grid of every word downloads as a PNG.
        page.wait_for_selector("#soft-grid:not([disabled])")
        with page.expect_download() as dl:
            page.click("#soft-grid")
        grid = tmp_path / "grid.png"
        dl.value.save_as(grid)
        assert Image.open(grid).format == "PNG"

        # A new image replaces the shown one, no clearing first; 16-bit and CMYK files are captioned
        # through the image component (that their bytes reach load_image unchanged is checked in
        # tests/test_app.py::test_photo_input_hands_over_the_uploaded_file_intact).
        upload(page, str(OTHER))
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('scene_008502.jpg')")
        deep, cmyk = tmp_path / "deep.png", tmp_path / "cmyk.jpg"
        Image.fromarray(np.tile(np.linspace(0, 60000, 64).astype(np.uint16), (48, 1))).save(deep)
        Image.new("CMYK", (80, 60), (0, 200, 200, 0)).save(cmyk)
        for f, size in ((deep, "64×48"), (cmyk, "80×60")):
            upload(page, str(f))
            page.wait_for_function("t => document.querySelector('#status').innerText.includes(t)",
                                   arg=f"Captioned {f.name} ({size})")
            # a wide photo: each legend says the model sees only its centre square
            for name in ("soft", "hard"):
                assert "the sides are cut off" in page.inner_text(f"#{name}-legend")

        # A non-image gets our message; the app then captions an example picked from the gallery.
        bad = tmp_path / "letter.png"
        bad.write_text("Dear model, this is not a picture.")
        upload(page, str(bad))
        page.wait_for_function("() => document.querySelector('#status').innerText.includes(\"Can't read\")")
        status = page.inner_text("#status")
        assert "letter.png" in status and "not an image file" in status and "Traceback" not in status
        assert page.locator("#soft-caption .sat-chip").count() == 0
        page.locator("#examples .thumbnail-item").nth(3).click()  # all four examples are on screen
        wait_for_captions(page)
        assert "scene_" in page.inner_text("#status")
    assert (tmp_path / "desktop.png").stat().st_size > 10_000


def test_phone_shows_the_caption_and_its_overlay_in_the_first_screen(app_url):
    with open_page(app_url, width=390, height=844) as page:
        upload(page, str(EXAMPLE))
        wait_for_captions(page)
        wait_idle(page)
        page.wait_for_timeout(300)
        for sel in ("#soft-caption", "#soft-overlay img"):
            box = page.locator(sel).bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= 844, (sel, box)
        # the upload and the examples, then the results, then the (collapsed) settings
        y = {s: page.locator(s).bounding_box()["y"] for s in ("#upload", "#examples", "#soft-column", "#hard-column", "#settings")}
        assert y["#upload"] < y["#examples"] < y["#soft-column"] < y["#hard-column"] < y["#settings"], y
        assert not page.locator("#mode").is_visible()  # the decoding settings start collapsed


def click_picture(page, name: str, fx: float, fy: float) -> None:
    """Click the point at fractions (fx, fy) of the picture shown in a column (object-fit: contain)."""
    img = page.locator(f"#{name}-overlay img")
    box = img.bounding_box()
    nw, nh = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    s = min(box["width"] / nw, box["height"] / nh)
    x0, y0 = box["x"] + (box["width"] - nw * s) / 2, box["y"] + (box["height"] - nh * s) / 2
    page.mouse.click(x0 + fx * nw * s, y0 + fy * nh * s)


@pytest.mark.parametrize("width,height", [(1400, 1000), (390, 844)])
def test_a_steering_click_changes_the_caption(app_url, tmp_path, width, height):
    """Word "circle" selected, a click on the red star: the soft model now says "star" there,
    with the words before it kept and the changed word marked; reset clears it."""
    with open_page(app_url, width=width, height=height) as page:
        upload(page, str(OTHER))  # a yellow circle (top left), an orange heart, a red star (right)
        wait_for_captions(page)
        soft = chips(page, "soft")
        assert "circle" in soft, soft
        t = soft.index("circle") + 1
        page.locator("#soft-caption .sat-chip").nth(t - 1).click()
        word_is(page, "soft", f"Word {t} of")
        wait_idle(page)
        click_picture(page, "soft", 158 / 224, 114 / 224)  # the star's centre (its box: x 120–196, y 76–152)
        page.wait_for_selector("#soft-steer .sat-steered", timeout=60_000)
        steered = page.inner_text("#soft-steer .sat-steered").split()
        assert steered[:t - 1] == soft[:t - 1] and steered[t - 1] == "star", (soft, steered)
        assert "star" in page.locator("#soft-steer .sat-changed").all_inner_texts()
        assert f"If word {t} looked here" in page.inner_text("#soft-steer")
        assert page.locator("#soft-caption .sat-chip").all_inner_texts() == soft  # the original stays
        wait_idle(page)
        page.screenshot(path=str(tmp_path / f"steer-{width}.png"), full_page=False)
        page.click("#soft-steer-reset")
        page.wait_for_function("() => !document.querySelector('#soft-steer .sat-steered')")
        assert not page.locator("#soft-steer-reset").is_visible()


# a chip click and a picture click in the same task of the page: the chip's round trip cannot be back
# when the picture's event is sent, as for a person tapping the word, then the picture, quickly
TAP_WORD_THEN_PICTURE = """([chipCol, k, picCol, fx, fy]) => {
  document.querySelectorAll(`#${chipCol}-caption .sat-chip`)[k - 1].click();
  const img = document.querySelector(`#${picCol}-overlay img`), r = img.getBoundingClientRect();
  const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight, 1);
  const x = r.left + (r.width - img.naturalWidth * s) / 2 + fx * img.naturalWidth * s;
  const y = r.top + (r.height - img.naturalHeight * s) / 2 + fy * img.naturalHeight * s;
  img.dispatchEvent(new MouseEvent('click', {bubbles: true, clientX: x, clientY: y}));
}"""


def test_a_picture_click_right_after_a_word_click_steers_that_word(app_url):
    """The word picked last steers, even when the picture is clicked before the word's round trip
    is back; with the columns linked, the other column's picture steers the same word number
    (clamped to its caption)."""
    with open_page(app_url) as page:
        upload(page, str(OTHER))
        wait_for_captions(page)
        wait_idle(page)
        soft, hard = chips(page, "soft"), chips(page, "hard")
        t = soft.index("circle") + 1
        assert not page.inner_text("#soft-word").startswith(f"Word {t} "), "pick a word not selected yet"
        page.evaluate(TAP_WORD_THEN_PICTURE, ["soft", t, "soft", 158 / 224, 114 / 224])  # the red star
        page.wait_for_selector("#soft-steer .sat-steered", timeout=60_000)
        assert f"If word {t} looked here" in page.inner_text("#soft-steer")
        assert page.inner_text("#soft-steer .sat-steered").split()[t - 1] == "star"
        word_is(page, "soft", f"Word {t} of")
        wait_idle(page)
        # linked: a soft word, then at once the hard picture → the hard model's same word number
        # (clamped to its caption); a word other than the one the hard column shows now
        shown = min(t, len(hard))
        u = next(k for k in range(1, len(soft) + 1) if k not in (t, shown))
        page.evaluate(TAP_WORD_THEN_PICTURE, ["soft", u, "hard", 0.5, 0.5])
        page.wait_for_function("k => document.querySelector('#hard-steer')?.innerText.includes(`If word ${k} looked`)",
                               arg=min(u, len(hard)), timeout=60_000)
        word_is(page, "hard", f"Word {min(u, len(hard))} of")
        wait_idle(page)
        # unlinked (the checkbox in the collapsed View settings): the hard picture keeps its own word
        page.get_by_text("View", exact=True).click()
        page.locator("#link input").uncheck()
        v = next(k for k in range(1, len(soft) + 1) if k not in (u, min(u, len(hard))))
        before = page.inner_text("#hard-steer")
        page.evaluate(TAP_WORD_THEN_PICTURE, ["soft", v, "hard", 0.25, 0.25])  # another cell
        page.wait_for_function("b => document.querySelector('#hard-steer')?.innerText !== b", arg=before,
                               timeout=60_000)
        assert f"If word {min(u, len(hard))} looked here" in page.inner_text("#hard-steer")
        wait_idle(page)
        # a new caption (even the same words): the picks made for the old one are forgotten
        assert page.evaluate("() => Object.keys(window.satWords).sort()") == ["hard", "soft"]
        page.locator("#link input").check()
        page.click("#caption-btn")
        page.wait_for_function("() => Object.keys(window.satWords).length === 0", timeout=60_000)
        wait_for_captions(page)
