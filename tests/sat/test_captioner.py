"""The public API (`Captioner`) and `python -m sat` on a tiny weights folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sat.__main__ import main as sat_main
from sat.captioner import Captioner
from sat.encoder import ImageError


def photo(seed: int, size=(80, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_caption_returns_words_attention_and_score(tiny_weights):
    cap = Captioner.load(tiny_weights, device="cpu")
    out = cap.caption(photo(0), beam_size=3)
    assert out.tokens[: len(out.words)] == out.words
    assert out.attention.shape == (len(out.tokens), 2, 2)
    assert np.allclose(out.attention.sum(axis=(1, 2)), 1.0, atol=1e-4)
    assert len(out.token_probs) == len(out.tokens) and all(0 < p <= 1 for p in out.token_probs)
    assert out.logprob == pytest.approx(float(np.sum(np.log(out.token_probs))), abs=1e-4)
    assert json.loads(json.dumps(out.to_dict()))["words"] == out.words


def test_batch_equals_single_and_modes(tiny_weights):
    cap = Captioner.load(tiny_weights, device="cpu")
    imgs = [photo(i) for i in range(3)]
    batch = cap.caption_batch(imgs, beam_size=2)
    for img, b in zip(imgs, batch):
        one = cap.caption(img, beam_size=2)
        assert one.words == b.words and one.score == pytest.approx(b.score, abs=1e-5)
    greedy = cap.caption(imgs[0], mode="greedy")
    beam1 = cap.caption(imgs[0], mode="beam", beam_size=1)
    assert greedy.words == beam1.words
    s1 = cap.caption(imgs[0], mode="sample", seed=7, temperature=2.0)
    s2 = cap.caption(imgs[0], mode="sample", seed=7, temperature=2.0)
    assert s1.words == s2.words
    assert len(cap.caption(imgs[0], max_len=1).words) <= 1
    with pytest.raises(ValueError):
        cap.caption(imgs[0], max_len=0)
    assert cap.caption_batch([]) == []


def test_unreadable_image_raises_image_error(tiny_weights, tmp_path):
    cap = Captioner.load(tiny_weights, device="cpu")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageError, match="bad.png"):
        cap.caption(bad)
    assert cap.caption(photo(1)).tokens  # still serving after the error


def test_cli_captions_good_images_and_names_the_bad_one(tiny_weights, tmp_path, capsys):
    good = [tmp_path / "one.jpg", tmp_path / "two.png"]
    photo(0).save(good[0])
    photo(1).save(good[1])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"nope")
    code = sat_main([str(good[0]), str(bad), str(good[1]), "--weights", str(tiny_weights)])
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(good[0])) and lines[1].startswith(str(good[1]))
    assert err.strip().count("\n") == 0 and "broken.jpg" in err
    assert sat_main([str(good[0]), "--weights", str(tiny_weights), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["image"] == str(good[0]) and len(rec["attention"]) == len(rec["tokens"])


def test_cli_bad_weights_folder(tmp_path, capsys):
    img = tmp_path / "x.png"
    photo(0).save(img)
    assert sat_main([str(img), "--weights", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
