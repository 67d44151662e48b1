"""The app's UI logic without a browser: word-slider linking, overlays, grids, the Blocks it builds.

Captions here are made by hand (`fake_result`) so lengths and attention peaks are known exactly.
"""
from __future__ import annotations

import json

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from sat.captioner import Caption
from sat.weights import WEIGHTS_FILE
from studio.inference import ModelOutput, StudioResult, describe_slot, load_slot, render_overlay
from studio.notices import crop_note
from studio.ui import Studio, caption_chips, create_app, word_info
from tests.conftest import make_tiny_weights


def peaked(n: int, grid: int = 3) -> np.ndarray:
    """(n, grid, grid) maps, token t attending to cell t (mod grid²) with 0.9 of its mass."""
    att = np.full((n, grid, grid), 0.1 / (grid * grid - 1), dtype=np.float32)
    for t in range(n):
        att[t].flat[t % (grid * grid)] = 0.9
    return att


def fake_caption(words: list[str]) -> Caption:
    tokens = words + ["<end>"]
    return Caption(words=words, tokens=tokens, attention=peaked(len(tokens)),
                   token_probs=[0.5 + 0.05 * i for i in range(len(tokens))], logprob=-1.0, score=-1.0)


def fake_result(soft: list[str], hard: list[str]) -> StudioResult:
    img = Image.new("RGB", (90, 90), (128, 128, 128))
    res = StudioResult(display=img, size=img.size)
    for name, words in (("soft", soft), ("hard", hard)):
        res.outputs[name] = ModelOutput(fake_caption(words), "crop", 96, f"/w/{name}")
    return res


@pytest.fixture(scope="module")
def studio() -> Studio:
    from studio.inference import ModelSlot
    return Studio([ModelSlot("soft", "s"), ModelSlot("hard", "h")])


def columns(outs: list) -> dict[str, list]:
    return {"soft": outs[:4], "hard": outs[4:]}


def is_skip(x) -> bool:
    return x == gr.skip()


def test_equal_lengths_linked_both_follow(studio):
    res = fake_result(["a", "red", "circle"], ["a", "blue", "square"])
    cols = columns(studio.on_scrub("soft", res, (3, 1), True, 0.6, 0.5))
    assert is_skip(cols["soft"][2])  # the moved slider is not echoed back
    assert cols["hard"][2].value == 3  # the other slider jumps to the same word
    for name, word in (("soft", "circle"), ("hard", "square")):
        chips, overlay, _, info = cols[name]
        assert 'sat-current" data-i="2" title="60%: ' in chips and f">{word}</button>" in chips
        assert info.startswith(f"Word 3 of 4: **{word}** · 60%") and "probability for this word" in info
        assert overlay == render_overlay(res, name, 2, opacity=0.6)  # same pixels as a direct render


def test_equal_lengths_unlinked_only_the_moved_column(studio):
    res = fake_result(["a", "red", "circle"], ["a", "blue", "square"])
    cols = columns(studio.on_scrub("hard", res, (1, 4), False, 0.6, 0.5))
    assert all(is_skip(x) for x in cols["soft"])
    assert "`<end>`" in cols["hard"][3] and 'sat-end sat-current' in cols["hard"][0]


def test_different_lengths_linked_same_index_clamped(studio):
    res = fake_result(["a", "circle"], ["a", "small", "blue", "square"])  # 3 and 5 tokens
    cols = columns(studio.on_scrub("hard", res, (1, 5), True, 0.6, 0.5))
    assert cols["hard"][3].startswith("Word 5 of 5") and is_skip(cols["hard"][2])
    assert cols["soft"][2].value == 3 and cols["soft"][3].startswith("Word 3 of 3: `<end>`")  # clamped
    cols = columns(studio.on_scrub("soft", res, (2, 5), True, 0.6, 0.5))
    assert cols["soft"][3].startswith("Word 2 of 3: **circle**")
    assert cols["hard"][2].value == 2 and cols["hard"][3].startswith("Word 2 of 5: **small**")


def test_clicking_a_chip_selects_that_word_in_both_columns(studio):
    res = fake_result(["a", "circle"], ["a", "small", "blue", "square"])
    cols = columns(studio.on_scrub("hard", res, (1, 1), True, 0.6, 0.5, clicked=3))
    assert cols["hard"][2].value == 4  # the clicked column's slider is set too
    assert cols["hard"][3].startswith("Word 4 of 5: **square**") and 'sat-current" data-i="3"' in cols["hard"][0]
    assert cols["soft"][2].value == 3  # linked: same index, clamped to soft's 3 tokens
    cols = columns(studio.on_scrub("soft", res, (1, 1), False, 0.6, 0.5, clicked=1))
    assert cols["soft"][2].value == 2 and all(is_skip(x) for x in cols["hard"])


def test_scrub_before_any_caption_does_nothing(studio):
    assert all(is_skip(x) for x in studio.on_scrub("soft", None, (2, 1), True, 0.6, 0.5))


def test_overlay_follows_the_word_and_the_settings():
    res = fake_result(["a", "red", "circle"], ["a"])
    first, second = render_overlay(res, "soft", 0), render_overlay(res, "soft", 1)
    def heat(*args, **kw):
        return render_overlay(*args, style="heatmap", **kw)
    assert first.size == (90, 90) and first != second
    # unsmoothed, the peak cell is the only red one: cell 0 (top left), then 1 (top middle)
    def red_cells(im: Image.Image) -> np.ndarray:
        a = np.asarray(im, dtype=float)
        return ((a[..., 0] - a[..., 2]) > 40).reshape(3, 30, 3, 30).mean(axis=(1, 3))
    for index, cell in ((0, (0, 0)), (1, (0, 1))):
        hot = red_cells(heat(res, "soft", index, smooth=0.0))
        assert hot[cell] > 0.95 and np.delete(hot.ravel(), cell[0] * 3 + cell[1]).max() < 0.05
    assert render_overlay(res, "soft", 99) == render_overlay(res, "soft", 3)  # clamped to <end>
    for style in ("heatmap", "spotlight"):
        grey = np.asarray(render_overlay(res, "soft", 0, opacity=0.0, style=style))
        assert (grey == 128).all()  # opacity 0: the photo itself
    assert (np.asarray(render_overlay(res, "soft", 0, plain=True)) == 128).all()
    spot = np.asarray(render_overlay(res, "soft", 0, smooth=0.0, opacity=0.75), dtype=int)  # spotlight
    assert (spot[5:25, 5:25] == 128).all() and (spot[35:85, 35:85] < 50).all()  # cell 0 lit, the rest dimmed
    sharp, smooth = (np.asarray(heat(res, "soft", 0, smooth=s), dtype=int) for s in (0.0, 1.5))
    assert np.abs(sharp - smooth).max() > 20


def test_hard_attention_outlines_the_cell_it_read_and_the_crop_is_drawn():
    res = fake_result(["a", "red", "circle"], ["a", "blue"])
    res.outputs["hard"].hard = True
    for index, (r, c) in ((0, (0, 0)), (2, (0, 2))):  # peaked(): token t's argmax is cell t
        a = np.asarray(render_overlay(res, "hard", index, opacity=0.0), dtype=int)
        x0, y0 = 30 * c, 30 * r
        assert (a[y0, x0:x0 + 30] == 255).all() and (a[y0:y0 + 30, x0] == 255).all()  # white outline
        assert (a[45, 45] == 128).all() and (a[89, :] == 128).all()  # nothing drawn elsewhere
    wide = StudioResult(display=Image.new("RGB", (180, 90), (128, 128, 128)), size=(180, 90))
    wide.outputs["soft"] = res.outputs["soft"]
    a = np.asarray(render_overlay(wide, "soft", 0, opacity=0.75, smooth=1.0), dtype=int)
    assert (a[:, :44] == 32).all() and (a[:, 136:] == 32).all()  # cropped-off strips: dimmed, no attention
    assert (a[20:70, 45] == 255).any()  # the dashed outline of the square the model saw (x 45 … 135)


def test_legends_say_how_to_read_the_overlay(studio):
    from studio.ui import legend
    assert "Bright" in legend("spotlight", False, hard=False) and "Solid box" not in legend("spotlight", False, hard=False)
    assert "sat-bar" in legend("heatmap", False, hard=True) and "argmax" in legend("heatmap", False, hard=True)
    assert "plain image" in legend("heatmap", True, hard=True)


def test_crop_note_only_when_the_model_sees_part_of_the_photo(studio):
    square = fake_result(["a"], ["b", "c"])  # 90×90: the model sees all of it
    assert crop_note(square, "soft") == crop_note(square, "hard") == ""
    assert all("sat-crop" not in text for text in studio.legends("spotlight", False, square))
    wide = fake_result(["a"], ["b", "c"])
    wide.display = Image.new("RGB", (150, 90))
    sides = "The model sees only the centre square (dashed); the sides are cut off."
    assert crop_note(wide, "soft") == crop_note(wide, "hard") == sides
    assert all(sides in text for text in studio.legends("heatmap", False, wide))
    assert crop_note(wide, "soft", plain=True) == "The model sees only the centre square; the sides are cut off."
    assert "the sides are cut off" in studio.legends("spotlight", True, wide)[0]  # the plain image too
    tall = fake_result(["a"], ["b"])
    tall.display = Image.new("RGB", (60, 90))
    assert crop_note(tall, "hard").endswith("the top and bottom are cut off.")
    wide.outputs["soft"].resize = "pad"  # padded: the model sees the whole photo
    assert crop_note(wide, "soft") == "" and crop_note(wide, "hard") == sides
    assert crop_note(None, "soft") == "" and "sat-crop" not in studio.legends("spotlight", False)[0]


def test_overlay_settings_redraw_every_column(studio):
    res = fake_result(["a", "red"], ["a", "blue", "big", "square"])
    soft, hard = studio.on_overlay_settings(res, (2, 4), 0.3, 1.0, "heatmap")
    assert soft == render_overlay(res, "soft", 1, opacity=0.3, smooth=1.0, style="heatmap")
    assert hard == render_overlay(res, "hard", 3, opacity=0.3, smooth=1.0, style="heatmap")
    assert soft != render_overlay(res, "soft", 1, opacity=0.3, smooth=1.0)  # spotlight differs
    assert all(is_skip(x) for x in studio.on_overlay_settings(None, (1, 1), 0.3, 1.0))


def test_grids_are_png_files_per_model(studio):
    res = fake_result(["a", "red", "circle"], ["a", "square"])
    soft_btn, hard_btn = studio.on_grids(res, 0.6, 0.5)
    assert soft_btn.interactive and hard_btn.interactive
    soft_png, hard_png = Image.open(soft_btn.value["path"]), Image.open(hard_btn.value["path"])
    assert soft_png.format == "PNG" and soft_btn.value["orig_name"] == "attention_soft_a_red_circle.png"
    assert soft_png.width > hard_png.width or soft_png.height > hard_png.height  # 5 vs 4 panels
    empty = studio.on_grids(None, 0.6, 0.5)
    assert all(not b.interactive and b.value is None for b in empty)


def test_chips_escape_html_and_mark_the_current_word():
    res = fake_result(["<b>", "x"], ["y"])
    chips = caption_chips(res, "soft", 1)
    assert "&lt;b&gt;" in chips and "<b>" not in chips and chips.count("sat-current") == 1
    assert word_info(res, "soft", 1).startswith("Word 2 of 3: **x**")
    assert caption_chips(None, "soft", 0) == '<div class="sat-caption"></div>'


def _component(demo: gr.Blocks, elem_id: str) -> dict:
    comps = [c for c in demo.config["components"] if c.get("props", {}).get("elem_id") == elem_id]
    assert len(comps) == 1, elem_id
    return comps[0]["props"]


def test_create_app_builds_with_an_api_endpoint_and_model_info(tmp_path):
    soft = make_tiny_weights(tmp_path / "soft", seed=5)
    metrics = json.loads((soft / "metrics.json").read_text())
    (soft / "metrics.json").write_text(json.dumps({**metrics, "dataset": "scenes"}))
    bad = tmp_path / "pickled"
    bad.mkdir()
    (bad / "model.pt").write_bytes(b"\x80\x04")
    demo = create_app(soft=soft, hard=bad, warmup=False, examples=[])
    assert isinstance(demo, gr.Blocks)
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert public == {"caption", "steer"}  # the UI's own events stay private
    soft_info = _component(demo, "soft-info")["value"]
    assert str(soft) in soft_info and "synthetic scenes" in soft_info and "not* a photo model" in soft_info
    hard_info = _component(demo, "hard-info")["value"]
    assert "Hard attention is not available" in hard_info and "pickled" in hard_info
    assert WEIGHTS_FILE in hard_info and "SAT_WEIGHTS_HARD" in hard_info
    assert "trained on synthetic scenes" in _component(demo, "intro")["value"]


def test_trained_on_comes_from_the_card_when_metrics_lack_it(tmp_path):
    folder = make_tiny_weights(tmp_path / "w")
    (folder / "README.md").write_text("# card\n\n- Data: `flickr8k` (train 6000 images)\n")
    text = describe_slot(load_slot("soft", folder, warmup=False))
    assert "Trained on **flickr8k**" in text and "test BLEU-4 0.100" in text
    (folder / "README.md").write_text("# card\n")
    assert "Trained on **unknown**" in describe_slot(load_slot("soft", folder, warmup=False))


def test_weights_paths_inside_the_repository_are_shown_relative(tmp_path):
    from studio.inference import REPO, pretty_spec
    assert pretty_spec(str(REPO / "assets" / "weights" / "soft")) == "assets/weights/soft"
    assert pretty_spec("hf://owner/sat@v1") == "hf://owner/sat@v1"
    assert pretty_spec(str(tmp_path / "w")) == str(tmp_path / "w")


def test_attention_grids_beside_the_examples_are_not_examples(tmp_path):
    from PIL import Image

    from studio.ui import _example_paths

    for name in ("scene_1.jpg", "photo.png", "attention_1.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x") if name.endswith(".txt") else Image.new("RGB", (4, 4)).save(tmp_path / name)
    assert [p.rsplit("/", 1)[-1] for p in _example_paths(tmp_path)] == ["photo.png", "scene_1.jpg"]


def test_photo_input_hands_over_the_uploaded_file_intact(tmp_path):
    """The upload component passes 16-bit, CMYK and non-image files untouched to load_image;
    pasted / webcam data URLs are written to a file by Gradio and decoded the same way."""
    import base64
    import io
    from pathlib import Path

    from gradio.data_classes import ImageData

    from sat.image import load_image
    from studio.components import PhotoInput

    comp = PhotoInput(type="filepath")
    assert comp.get_block_name() == "image"  # Gradio's own Image front end
    deep = tmp_path / "deep.png"
    Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)).save(deep)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (0, 200, 200, 0)).save(cmyk)
    letter = tmp_path / "letter.png"
    letter.write_text("not a picture")
    for path in (deep, cmyk, letter):
        got = comp.preprocess(ImageData(path=str(path), orig_name=path.name))
        assert got == str(path) and Path(got).read_bytes() == path.read_bytes()
    assert Image.open(deep).mode.startswith("I")  # still 16-bit on disk: load_image rescales it
    assert load_image(comp.preprocess(ImageData(path=str(cmyk), orig_name="cmyk.jpg"))).getpixel((5, 5))[0] > 200
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (250, 10, 10)).save(buf, "PNG")
    pasted = comp.preprocess(ImageData(url="data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()))
    assert load_image(pasted).size == (8, 6)


def test_input_check_errors_are_one_log_line(caplog):
    """Gradio prints a traceback for every gr.Error unless print_exception=False; the API's inputs
    re-raise their own checks' errors that way, with one log line."""
    from studio.components import Radio, Slider, api_error
    slider = Slider(0, 5, label="Length penalty")
    with caplog.at_level("WARNING", logger="sat.studio"):
        with pytest.raises(gr.Error) as err:
            slider.preprocess(7)
        assert err.value.print_exception is False and "greater than maximum value 5" in str(err.value)
        with pytest.raises(gr.Error) as err:
            Radio(["beam", "greedy"], label="Search").preprocess("medium")
        assert err.value.print_exception is False
        assert slider.preprocess(2.5) == 2.5 and slider.get_block_name() == "slider"
        e = api_error("/caption", "no image given")
        assert isinstance(e, gr.Error) and e.print_exception is False
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and lines[0].startswith("input 'Length penalty': Value 7")
    assert lines[1].startswith("input 'Search': ") and lines[2] == "/caption: no image given"
