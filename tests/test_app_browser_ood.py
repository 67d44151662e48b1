"""The out-of-distribution notice in a real browser, with both bundled models: a real photo
(matplotlib's Grace Hopper) gets the notice and "the encoder sees" in both columns, an example scene
does not get the notice; /caption over HTTP (gradio_client) carries "ood" per model. Screenshots of
both at desktop (1400×1000) and phone (390×844) size go to $SAT_SHOTS (default: the test's tmp dir)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.cbook
import pytest
from gradio_client import Client, handle_file

from sat.paths import EXAMPLES, WEIGHTS
from tests.app_harness import open_page, running_app, upload, wait_for_captions, wait_idle

pytestmark = pytest.mark.slow  # NOTE: starts the app and Chromium

GRACE_HOPPER = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
EXAMPLE = EXAMPLES / "scene_008504.jpg"
NOTICE = "This image is unlike the synthetic scenes this model was trained on: the caption is unreliable."


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-ood")
    with running_app("--soft", str(WEIGHTS / "soft"), "--hard", str(WEIGHTS / "hard"), log=root / "app.log") as url:
        yield url


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("SAT_SHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def notice(page, name: str) -> str:
    loc = page.locator(f"#{name}-caption .sat-ood")
    return loc.inner_text() if loc.count() else ""


@pytest.mark.parametrize("width, height, kind", [(1400, 1000, "desktop"), (390, 844, "phone")])
def test_photo_gets_the_notice_and_an_example_does_not(app_url, shots, width, height, kind):
    with open_page(app_url, width=width, height=height) as page:
        upload(page, str(GRACE_HOPPER))
        wait_for_captions(page)
        wait_idle(page)
        for name in ("soft", "hard"):
            assert notice(page, name).strip() == "⚠️ " + NOTICE, name
            assert page.locator(f"#{name}-caption .sat-ood").is_visible()
            assert "The encoder sees: military uniform" in page.inner_text(f"#{name}-caption .sat-sees")
        if kind == "phone":  # the notice and the caption are in the first screen after the upload
            box = page.locator("#soft-caption .sat-ood").bounding_box()
            assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= height, box
        page.wait_for_timeout(400)
        page.screenshot(path=str(shots / f"ood_photo_{kind}.png"))

        upload(page, str(EXAMPLE))
        wait_for_captions(page)
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('scene_008504')",
                               timeout=30_000)
        wait_idle(page)
        for name in ("soft", "hard"):
            assert notice(page, name) == "", name
            assert "The encoder sees:" in page.inner_text(f"#{name}-caption")
        page.wait_for_timeout(400)
        page.screenshot(path=str(shots / f"ood_example_{kind}.png"))


def test_caption_endpoint_carries_ood_per_model(app_url):
    client = Client(app_url, verbose=False)
    photo = client.predict(handle_file(str(GRACE_HOPPER)), "greedy", 1, 1.0, 8, api_name="/caption")
    scene = client.predict(handle_file(str(EXAMPLE)), "greedy", 1, 1.0, 8, api_name="/caption")
    for name in ("soft", "hard"):
        assert photo[name]["ood"] is True and scene[name]["ood"] is False, name
        assert photo[name]["encoder_top3"][0]["label"] == "military uniform"
