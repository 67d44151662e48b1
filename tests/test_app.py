"""The app's captioning function (`Studio.on_caption`, `/caption`'s `api_caption`) on good and bad input.

Every bad file is made here. Each bad upload must give a readable message in the status box (no
traceback, no exception) and leave the app serving: the next, valid upload is captioned.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from studio.inference import DecodeOptions, ModelSlot, caption_upload, load_slot
from studio.ui import Studio
from tests.conftest import make_tiny_weights
from tests.studio_checks import assert_captioned, run

def test_legends_explain_the_crop_of_a_non_square_photo_only(studio, good_jpeg, tmp_path):
    wide = run(studio, good_jpeg)  # 96×80: the model sees the centre 80×80
    assert_captioned(wide)
    for text in wide[-2:]:
        assert "The model sees only the centre square (dashed); the sides are cut off." in text
    square = tmp_path / "square.png"
    Image.new("RGB", (80, 80), (30, 120, 200)).save(square)
    out = run(studio, square)
    assert_captioned(out)
    assert all("sat-crop" not in text and "cut off" not in text for text in out[-2:])


def test_caption_good_image_fills_both_columns(studio, good_jpeg):
    out = run(studio, good_jpeg)
    assert_captioned(out)
    assert "shapes.jpg (96×80)" in out[1]
    assert out[0].outputs["hard"].hard and studio.hard == {"soft": False, "hard": True}  # its cell is outlined
    cap = out[0].outputs["soft"].caption
    assert (cap.tokens[-1] == "<end>") != cap.truncated  # ended by the model, or cut at max length


def test_decoding_options_reach_the_search(studio, good_jpeg):
    short = run(studio, good_jpeg, max_len=2)[0]
    assert all(len(o.caption.words) <= 2 for o in short.outputs.values())
    greedy = run(studio, good_jpeg, mode="greedy")[0]
    one_beam = run(studio, good_jpeg, mode="beam", beam=1)[0]
    for name in ("soft", "hard"):  # beam 1 is greedy search
        assert greedy.outputs[name].caption.tokens == one_beam.outputs[name].caption.tokens
    sampled = run(studio, good_jpeg, mode="sample", temperature=1.5)
    assert_captioned(sampled)
    assert "Invalid setting" in run(studio, good_jpeg, beam=11)[1]
    assert "Invalid setting" in run(studio, good_jpeg, mode="nucleus")[1]


def test_no_upload_asks_for_one(studio):
    out = run(studio, None)
    assert out[0] is None and "Upload an image" in out[1]


# ----------------------------------------------------------------------------- bad input

def test_api_caption_returns_both_models_as_json(studio, good_jpeg):
    data = studio.api_caption(str(good_jpeg), "beam", 3, 1.0, 8)
    assert data["image"] == {"width": 96, "height": 80}
    for name in ("soft", "hard"):
        m = data[name]
        if m["truncated"]:  # cut at max length 8: no <end> token, no map for it
            assert m["words"] == m["tokens"] and len(m["words"]) == 8
        else:
            assert m["tokens"][-1] == "<end>" and m["words"] == m["tokens"][:-1]
        assert len(m["token_probs"]) == len(m["tokens"]) == len(m["attention"])
        assert all(0.0 < p <= 1.0 for p in m["token_probs"])
        assert np.asarray(m["attention"]).shape == (len(m["tokens"]), *m["grid"])
        assert np.allclose(np.asarray(m["attention"]).sum(axis=(1, 2)), 1.0, atol=1e-3)
        assert isinstance(m["score"], float)


def test_api_caption_errors_are_gradio_errors(studio, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(gr.Error, match="can't read notes.txt: not an image file"):
        studio.api_caption(str(bad), "beam", 3, 1.0, 8)
    with pytest.raises(gr.Error, match="beam size"):
        studio.api_caption(str(bad), "beam", 0, 1.0, 8)
    with pytest.raises(gr.Error, match="no image"):
        studio.api_caption(None, "beam", 3, 1.0, 8)


def test_a_missing_model_leaves_the_other_working(studio, good_jpeg, tmp_path):
    missing = load_slot("hard", tmp_path / "no_such_weights")
    assert not missing.ready and "does not exist" in missing.error
    result = caption_upload([studio.slots[0], missing], good_jpeg, DecodeOptions(max_len=8))
    assert set(result.outputs) == {"soft"} and "does not exist" in result.to_json()["hard"]["error"]
    half = Studio([studio.slots[0], missing])
    out = half.on_caption(str(good_jpeg), "beam", 3, 1.0, 8, 0.6, 0.5)
    assert out[0] is not None and "Hard attention: no weights loaded" in out[1]
    assert out[8] is None and out[7] == '<div class="sat-caption"></div>'
    assert isinstance(ModelSlot("x", "").title, str)


# ----------------------------------------------------------------------------- one broken column (issue 16)

def _broken_copy(src, dest, **config):
    shutil.copytree(src, dest)
    if "metrics" in config:
        (dest / "metrics.json").write_text(json.dumps(config.pop("metrics")))
    cfg = json.loads((dest / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**cfg, **config}))
    return dest


@pytest.mark.parametrize("broken, needle", [
    ({"grid": [7, 7]}, "grid [7, 7]"),
    ({"metrics": [1, 2]}, "expected a JSON object"),
    ({"decoder_dim": True}, "decoder_dim must be an integer"),
    ({"encoder_dim": 17}, "shape mismatches"),
    ({"image_size": 10**9}, "image_size must be in"),
])
def test_a_broken_column_shows_why_and_the_other_serves(studio, good_jpeg, tmp_path, broken, needle):
    from studio.inference import describe_slot
    good = studio.slots[0].captioner.source
    bad = load_slot("hard", _broken_copy(Path(good), tmp_path / "bad", **broken))
    assert not bad.ready and needle in bad.error
    assert needle in describe_slot(bad)
    data = Studio([studio.slots[0], bad]).api_caption(str(good_jpeg), "beam", 3, 1.0, 8)
    assert data["soft"]["words"] and needle in data["hard"]["error"]


def test_warmup_and_description_failures_stay_in_their_column(tmp_path, monkeypatch):
    import studio.inference as inference
    folder = make_tiny_weights(tmp_path / "w")
    def boom(*args, **kwargs):
        raise RuntimeError("warm-up exploded")
    monkeypatch.setattr(inference.Captioner, "caption", boom)
    slot = load_slot("soft", folder)
    assert not slot.ready and slot.error == "RuntimeError: warm-up exploded"
    monkeypatch.undo()
    monkeypatch.setattr(inference, "trained_on", lambda cap: 1 / 0)
    slot = load_slot("soft", folder)
    assert not slot.ready and "ZeroDivisionError" in slot.error


def test_a_nan_model_fails_only_its_own_column(studio, good_jpeg, tmp_path):
    import torch
    from sat.captioner import Captioner
    nan = Captioner.load(make_tiny_weights(tmp_path / "nan", seed=5, attention="hard"), device="cpu")
    with torch.no_grad():  # weights that passed the load check but overflow at run time
        nan.model.decoder.out.weight.fill_(float("nan"))
    slots = [studio.slots[0], ModelSlot("hard", "nan", captioner=nan)]
    data = Studio(slots).api_caption(str(good_jpeg), "beam", 3, 1.0, 8)
    assert data["soft"]["words"] and "SearchError" in data["hard"]["error"]
    out = Studio(slots).on_caption(str(good_jpeg), "greedy", 3, 1.0, 8, 0.6, 0.5)
    assert out[0] is not None and "Hard attention: captioning failed: SearchError" in out[1]


@pytest.mark.parametrize("field, kw, needle", [
    ("beam", {"beam": float("nan")}, "beam size must be a finite number"),
    ("beam", {"beam": "three"}, "beam size must be a number, got 'three'"),
    ("max_len", {"max_len": float("nan")}, "max length must be a finite number"),
    ("max_len", {"max_len": None}, "max length must be a number"),
    ("temperature", {"temperature": float("inf")}, "temperature must be a finite number"),
])
def test_api_non_numbers_get_a_clear_message(studio, good_jpeg, field, kw, needle):
    args = {"mode": "beam", "beam": 3, "temperature": 1.0, "max_len": 8, **kw}
    with pytest.raises(gr.Error, match=needle):
        studio.api_caption(str(good_jpeg), args["mode"], args["beam"], args["temperature"], args["max_len"])
    out = run(studio, good_jpeg, **kw)
    assert out[0] is None and needle in out[1]


def test_app_device_cuda_without_cuda_is_one_line_exit_2(monkeypatch, capsys):
    import torch
    import app
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert app.main(["--device", "cuda", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --device: CUDA was requested but torch.cuda.is_available() is False\n"


# ----------------------------------------------------------------------------- decoding options (issue 14 §2)

def test_length_penalty_and_ngram_options_reach_the_search(studio, good_jpeg, monkeypatch):
    from sat.captioner import Captioner
    seen = []
    real = Captioner.caption_features

    def spy(self, fmap, **kw):
        seen.append((kw["length_penalty"], kw["no_repeat_ngram_size"]))
        return real(self, fmap, **kw)
    monkeypatch.setattr(Captioner, "caption_features", spy)
    assert_captioned(run(studio, good_jpeg))  # the UI's defaults
    studio.api_caption(str(good_jpeg), "beam", 3, 1.0, 8)  # a 5-argument client: the same defaults
    assert_captioned(studio.on_caption(str(good_jpeg), "beam", 3, 1.0, 8, 0.6, 0.5, 1.2, 2.0))
    data = studio.api_caption(str(good_jpeg), "greedy", 3, 1.0, 8, 0.5, 4)
    default = (0.0, DecodeOptions().no_repeat_ngram_size)
    assert default[1] > 0 and seen == [default] * 4 + [(1.2, 2)] * 2 + [(0.5, 4)] * 2
    for name in ("soft", "hard"):
        m = data[name]
        assert not any(m["words"][i:i + 4] == m["words"][j:j + 4] for i in range(len(m["words"]) - 3)
                       for j in range(i + 1, len(m["words"]) - 3))


@pytest.mark.parametrize("alpha, ngram, needle", [
    (-0.5, 3, "length penalty must be in [0, 5], got -0.5"),
    (9, 3, "length penalty must be in [0, 5], got 9"),
    (float("nan"), 3, "length penalty must be a finite number, got nan"),
    (0.0, 2.5, "no-repeat n-gram size must be a whole number 0–10, got 2.5"),
    (0.0, -1, "no-repeat n-gram size must be a whole number 0–10, got -1"),
    (0.0, 11, "no-repeat n-gram size must be a whole number 0–10, got 11"),
    (0.0, "three", "no-repeat n-gram size must be a number, got 'three'"),
])
def test_bad_decoding_options_get_a_clear_message(studio, good_jpeg, alpha, ngram, needle):
    out = studio.on_caption(str(good_jpeg), "beam", 3, 1.0, 8, 0.6, 0.5, alpha, ngram)
    assert out[0] is None and out[1] == f"⚠️ **Invalid setting:** {needle}"
    with pytest.raises(gr.Error) as e:
        studio.api_caption(str(good_jpeg), "beam", 3, 1.0, 8, alpha, ngram)
    assert str(e.value.message) == needle


def test_a_cut_caption_is_shown_as_cut(studio, good_jpeg):
    from studio.ui import caption_chips
    out = studio.on_caption(str(good_jpeg), "greedy", 3, 1.0, 2, 0.6, 0.5, 0.0, 0)
    result = out[0]
    cut = {name: o.caption for name, o in result.outputs.items() if o.caption.truncated}
    assert cut, "the tiny models should run into max length 2"
    for name, cap in cut.items():
        assert cap.tokens == cap.words and len(cap.words) == 2 and cap.attention.shape[0] == 2
        chips = caption_chips(result, name, 0)
        assert '<span class="sat-cut">(cut at 2 words)</span><button class="sat-copy"' in chips
        assert chips.count('class="sat-chip') == 2  # the note is no word chip
    ended = studio.on_caption(str(good_jpeg), "greedy", 3, 1.0, 8, 0.6, 0.5, 0.0, 1)[0]
    for name, o in ended.outputs.items():
        assert ("cut at" in caption_chips(ended, name, 0)) == o.caption.truncated
