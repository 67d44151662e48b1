"""Steering in the app without a browser (studio/steering.py, `Studio.on_steer`): the diff shown,
display → image coordinates, and what bad input turns into."""
from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from sat.captioner import Caption
from studio.inference import DecodeOptions, StudioResult, caption_upload, load_slot
from studio.steering import Steered, display_to_image, steer_html, steer_upload
from studio.ui import Studio
from tests.conftest import make_tiny_weights


def cap(words: list[str], end: bool = True) -> Caption:
    tokens = words + (["<end>"] if end else [])
    return Caption(words=words, tokens=tokens, attention=np.zeros((len(tokens), 2, 2), np.float32),
                   token_probs=[0.5] * len(tokens), logprob=-1.0, score=-1.0, truncated=not end)


def test_steer_html_marks_exactly_the_changed_words():
    s = Steered("soft", cap("a red circle and a blue square".split()), cap("a red star and a blue square".split()),
                3, 10.0, 20.0, (4, 5), (224, 224), "w")
    out = steer_html(s)
    assert 'data-word="3"' in out and "row 5, column 6" in out
    assert out.count('class="sat-changed"') == 1 and '<mark class="sat-changed">star</mark>' in out
    assert "&lt;end&gt;" not in out  # an unchanged end is not shown as a word
    shorter = Steered("hard", cap("a red circle and a square".split()), cap("a red circle".split()),
                      3, 0.0, 0.0, (0, 0), (9, 9), "w")
    assert "dropped: and a square" in steer_html(shorter)
    assert steer_html(None) == '<div class="sat-steer"></div>'


def test_display_click_maps_to_the_uploaded_pixels():
    res = StudioResult(display=Image.new("RGB", (512, 256)), size=(2048, 1024))
    assert display_to_image(res, 256, 128) == (1024.0, 512.0)


def test_steer_upload_and_the_click_handler(tmp_path):
    slots = [load_slot("soft", make_tiny_weights(tmp_path / "s")),
             load_slot("hard", make_tiny_weights(tmp_path / "h", attention="hard"))]
    img = tmp_path / "wide.png"
    Image.new("RGB", (120, 60), (30, 200, 30)).save(img)
    opts = DecodeOptions(mode="greedy", max_len=5)
    # a 120×60 image: the model sees its centre square x 30–89, on a 2×2 grid of 30-px cells
    out = steer_upload(slots, img, "hard", 1, 80, 10, opts)
    assert out.cell == (0, 1) and out.caption.attention[0].tolist() == [[0.0, 1.0], [0.0, 0.0]]
    assert out.to_json()["hard"]["steered"] == {"word": 1, "x": 80.0, "y": 10.0, "cell": [0, 1],
                                                "original": out.original.text}
    with pytest.raises(ValueError, match=r"outside the part of the image the model sees \(x 30–89, y 0–59\)"):
        steer_upload(slots, img, "hard", 1, 95, 10, opts)
    for bad, msg in [(dict(name="big"), "model must be one of"), (dict(word=1.5), "whole number"),
                     (dict(x="left"), "x must be a number"), (dict(y=float("nan")), "y must be a finite")]:
        args = {"name": "soft", "word": 1, "x": 40, "y": 20, **bad}
        with pytest.raises(ValueError, match=msg):
            steer_upload(slots, img, args["name"], args["word"], args["x"], args["y"], opts)

    studio = Studio(slots)
    result = caption_upload(slots, str(img), opts)
    dw, dh = result.display.size
    kw = dict(mode="greedy", beam=1, temperature=1.0, max_len=5)
    shown, reset, row = studio.on_steer("soft", [dw * 70 / 120, dh * 0.5], result, str(img), 1, **kw)
    assert "If word 1 looked here" in shown and reset.visible and row.visible
    shown, reset, _ = studio.on_steer("soft", [dw * 0.05, dh * 0.5], result, str(img), 1, **kw)
    assert "sat-warning" in shown and "outside the part of the image" in shown and not reset.visible
    assert studio.on_steer_reset()[0] == steer_html(None)
