"""Checks shared by the app's handler tests (tests/test_app*.py): run `Studio.on_caption` and assert on
what both columns show (the `studio` and `good_jpeg` fixtures are in tests/conftest.py)."""
from __future__ import annotations

from PIL import Image

from studio.ui import Studio

N_OUT = 2 + 2 * 5 + 2  # state, status, (chips, overlay, slider, word, grid) per model, the legends


def run(studio: Studio, path, **kw) -> list:
    opts = {"mode": "beam", "beam": 3, "temperature": 1.0, "max_len": 8, "opacity": 0.6,
            "smooth": 0.5, **kw}
    out = studio.on_caption(str(path) if path is not None else None, opts["mode"], opts["beam"],
                            opts["temperature"], opts["max_len"], opts["opacity"], opts["smooth"])
    assert len(out) == N_OUT
    return out


def assert_captioned(out: list) -> None:
    result, status = out[0], out[1]
    assert result is not None, status
    assert status.startswith("Captioned"), status
    for k, name in enumerate(("soft", "hard")):
        chips, overlay, slider, word, grid = out[2 + 5 * k: 7 + 5 * k]
        # the grid's download is ready with the caption itself, not written by a later event
        assert grid.interactive and Image.open(grid.value["path"]).format == "PNG"
        cap = result.outputs[name].caption
        assert cap.attention.shape[0] == len(cap.tokens) == chips.count("sat-chip\"") + chips.count("sat-chip ")
        assert isinstance(overlay, Image.Image) and overlay.size == result.display.size
        assert slider.maximum == max(len(cap.tokens), 2) and slider.value == 1
        assert word.startswith(f"Word 1 of {len(cap.tokens)}")


def assert_refused(out: list, *needles: str) -> None:
    result, status = out[0], out[1]
    assert result is None
    assert status.startswith("⚠️"), status
    assert "Traceback" not in status
    for needle in needles:
        assert needle in status, status
    for k in range(2):  # columns cleared
        assert out[3 + 5 * k] is None and out[5 + 5 * k] == ""
