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


@pytest.mark.slow
def test_caption_returns_words_attention_and_score(tiny_weights):
    cap = Captioner.load(tiny_weights, device="cpu")
    out = cap.caption(photo(0), beam_size=3)
    assert out.tokens[: len(out.words)] == out.words
    assert out.attention.shape == (len(out.tokens), 2, 2)
    assert np.allclose(out.attention.sum(axis=(1, 2)), 1.0, atol=1e-4)
    assert len(out.token_probs) == len(out.tokens) and all(0 < p <= 1 for p in out.token_probs)
    assert out.logprob == pytest.approx(float(np.sum(np.log(out.token_probs))), abs=1e-4)
    assert json.loads(json.dumps(out.to_dict()))["words"] == out.words


@pytest.mark.slow
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


@pytest.mark.parametrize("args, needle", [
    (["--beam-size", "0"], "--beam-size: must be in [1, 20], got 0"),
    (["--beam-size", "10000"], "--beam-size: must be in [1, 20], got 10000"),
    (["--beam-size", "three"], "--beam-size: expected an integer"),
    (["--max-len", "0"], "--max-len: must be in [1, 100], got 0"),
    (["--max-len", "101"], "--max-len: must be in [1, 100], got 101"),
    (["--temperature", "0"], "--temperature: must be a finite number > 0"),
    (["--temperature", "-1"], "--temperature: must be a finite number > 0"),
    (["--temperature", "nan"], "--temperature: must be a finite number > 0"),
    (["--temperature", "inf"], "--temperature: must be a finite number > 0"),
    (["--length-penalty", "-1"], "--length-penalty: must be a number in [0, 5], got -1"),
    (["--length-penalty", "nan"], "--length-penalty: must be a number in [0, 5], got nan"),
    (["--length-penalty", "6"], "--length-penalty: must be a number in [0, 5], got 6"),
    (["--length-penalty", "long"], "--length-penalty: expected a number in [0, 5], got 'long'"),
    (["--no-repeat-ngram-size", "-1"], "--no-repeat-ngram-size: must be in [0, 100], got -1"),
    (["--no-repeat-ngram-size", "2.5"], "--no-repeat-ngram-size: expected an integer in [0, 100], got '2.5'"),
    (["--no-repeat-ngram-size", "101"], "--no-repeat-ngram-size: must be in [0, 100], got 101"),
    (["--device", "cuda"], "CUDA was requested but torch.cuda.is_available() is False"),
    (["--device", "tpu9"], "unknown device 'tpu9'"),
    (["--attention-png", "{tmp}"], "is a folder; give a file name"),
])
def test_cli_bad_options_exit_2_with_one_error_line(tiny_weights, tmp_path, capsys, monkeypatch, args, needle):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    img = tmp_path / "x.png"
    photo(0).save(img)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) as e:
        sat_main([str(img), "--weights", str(tiny_weights), "--mode", "sample", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and needle in err[-1] and "Traceback" not in "\n".join(err)


def test_cli_a_folder_as_image_is_named_as_such(tiny_weights, tmp_path, capsys):
    img = tmp_path / "x.png"
    photo(0).save(img)
    (tmp_path / "photos").mkdir()
    assert sat_main([str(tmp_path / "photos"), str(img), "--weights", str(tiny_weights)]) == 1
    out, err = capsys.readouterr()
    assert err.strip() == f"error: {tmp_path / 'photos'}: is a folder, not an image file"
    assert out.startswith(str(img))


def test_cli_bad_config_is_one_line_exit_2(tiny_weights, tmp_path, capsys):
    img = tmp_path / "x.png"
    photo(0).save(img)
    cfg = json.loads((tiny_weights / "config.json").read_text())
    (tiny_weights / "config.json").write_text(json.dumps({**cfg, "grid": [7, 7]}))
    assert sat_main([str(img), "--weights", str(tiny_weights)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "grid [7, 7]" in err and "gives [2, 2]" in err


def test_beam_size_is_capped(tiny_weights):
    cap = Captioner.load(tiny_weights, device="cpu")
    assert cap.caption(photo(0), beam_size=20).tokens
    with pytest.raises(ValueError, match="beam_size must be in"):
        cap.caption(photo(0), beam_size=21)


def end_bias_weights(tiny_weights, folder, bias):
    """The tiny weights with <end>'s output bias set: -30, every caption runs into max_len; +30,
    every caption ends at once."""
    import torch
    from sat.weights import save_weights
    cap = Captioner.load(tiny_weights, device="cpu")
    with torch.no_grad():
        cap.model.decoder.out.bias[cap.vocab.end_id] = bias
    save_weights(folder, state_dict=cap.model.state_dict(), config=cap.config, vocab=cap.vocab)
    return folder


@pytest.mark.slow
def test_a_caption_cut_at_max_len_says_so(tiny_weights, tmp_path, capsys):
    folder = end_bias_weights(tiny_weights, tmp_path / "endless", -30.0)
    ending = end_bias_weights(tiny_weights, tmp_path / "ending", 30.0)
    cap = Captioner.load(folder, device="cpu")
    for mode in ("beam", "greedy", "sample"):
        out = cap.caption(photo(0), mode=mode, max_len=3, seed=0)
        assert out.truncated and len(out.words) == 3 and out.tokens == out.words  # no <end> token
        assert out.attention.shape == (3, 2, 2) and len(out.token_probs) == 3  # no map for a forced <end>
        assert out.logprob == pytest.approx(float(np.sum(np.log(out.token_probs))), abs=1e-4)
        assert out.to_dict()["truncated"] is True
    out = Captioner.load(ending, device="cpu").caption(photo(0), max_len=3)
    assert not out.truncated and out.tokens == ["<end>"]
    img = tmp_path / "x.png"
    photo(0).save(img)
    assert sat_main([str(img), "--weights", str(folder), "--max-len", "3"]) == 0
    assert capsys.readouterr().out.rstrip("\n").endswith(" (cut at 3 words)")
    assert sat_main([str(img), "--weights", str(folder), "--max-len", "3", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["truncated"] is True and "<end>" not in rec["tokens"] and len(rec["attention"]) == 3
    assert sat_main([str(img), "--weights", str(ending), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["truncated"] is False and rec["tokens"] == ["<end>"]
    assert sat_main([str(img), "--weights", str(ending)]) == 0
    assert "cut at" not in capsys.readouterr().out


def test_cli_decoding_options_reach_the_search(tiny_weights, tmp_path, capsys, monkeypatch):
    seen = {}
    real = Captioner.caption_features

    def spy(self, fmap, **kw):
        seen.update(kw)
        return real(self, fmap, **kw)
    monkeypatch.setattr(Captioner, "caption_features", spy)
    img = tmp_path / "x.png"
    photo(0).save(img)
    assert sat_main([str(img), "--weights", str(tiny_weights), "--length-penalty", "0.7",
                     "--no-repeat-ngram-size", "2"]) == 0
    assert seen["length_penalty"] == 0.7 and seen["no_repeat_ngram_size"] == 2


def test_captioner_rejects_bad_decoding_options(tiny_weights):
    cap = Captioner.load(tiny_weights, device="cpu")
    with pytest.raises(ValueError, match=r"length_penalty must be a number in \[0, 5\]"):
        cap.caption(photo(0), length_penalty=-1.0)
    with pytest.raises(ValueError, match=r"no_repeat_ngram_size must be an integer in \[0, 100\]"):
        cap.caption(photo(0), no_repeat_ngram_size=-2)
