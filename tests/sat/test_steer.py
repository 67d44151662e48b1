"""Steering the gaze (sat/steer.py): `Captioner.caption(image, force={t: (row, col)})`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sat.captioner import Captioner
from sat.steer import cell_at, force_map
from sat.paths import EXAMPLES, WEIGHTS
from tests.conftest import make_tiny_weights

EXAMPLE = EXAMPLES / "scene_008502.jpg"
# grid cells (row, col) of the example's three objects (boxes in data/scenes' truth; 16 px cells)
CELLS = {"circle": (3, 3), "heart": (10, 3), "star": (7, 9)}


def photo(seed: int, size=(80, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_force_map_hard_is_one_hot_soft_is_a_unit_gaussian():
    hard = force_map((4, 5), (1, 3), hard=True).reshape(4, 5)
    assert hard[1, 3] == 1.0 and hard.sum() == 1.0
    soft = force_map((14, 14), (7, 2), hard=False).reshape(14, 14)
    assert soft.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert np.unravel_index(int(soft.argmax()), (14, 14)) == (7, 2)
    # σ = 1 cell: a neighbour holds e^{-1/2} of the centre, two cells away e^{-2}
    assert (soft[7, 3] / soft[7, 2]).item() == pytest.approx(np.exp(-0.5), rel=1e-5)
    assert (soft[9, 2] / soft[7, 2]).item() == pytest.approx(np.exp(-2.0), rel=1e-5)


def test_cell_at_follows_the_centre_crop():
    kw = dict(grid=(14, 14), image_size=224, resize="crop")
    assert cell_at((224, 224), 0, 0, **kw) == (0, 0)
    assert cell_at((224, 224), 223, 100, **kw) == (100 // 16, 13)
    # a 448×224 photo: the model sees x 112–335 at half scale
    assert cell_at((448, 224), 112, 0, **kw) == (0, 0)
    assert cell_at((448, 224), 335, 223, **kw) == (13, 13)
    with pytest.raises(ValueError, match="outside the part of the image the model sees"):
        cell_at((448, 224), 50, 100, **kw)
    with pytest.raises(ValueError, match="outside the 448×224 image"):
        cell_at((448, 224), 500, 100, **kw)


@pytest.mark.parametrize("decoder,attention", [("lstm", "hard"), ("lstm", "soft"), ("gru", "soft"),
                                               ("transformer", "soft")])
@pytest.mark.parametrize("mode", ["greedy", "beam", "sample"])
def test_forcing_sets_alpha_and_keeps_the_prefix(tmp_path, decoder, attention, mode):
    cap = Captioner.load(make_tiny_weights(tmp_path / "w", decoder=decoder, attention=attention), device="cpu")
    opts = dict(mode=mode, beam_size=2, seed=3, max_len=6)
    orig = cap.caption(photo(0), **opts)
    t = min(3, len(orig.tokens))
    out = cap.caption(photo(0), force={t: (1, 0)}, **opts)
    want = force_map((2, 2), (1, 0), hard=attention == "hard").numpy().reshape(2, 2)
    np.testing.assert_allclose(out.attention[t - 1], want, atol=1e-6)
    assert out.tokens[:t - 1] == orig.tokens[:t - 1]
    np.testing.assert_allclose(out.attention[:t - 1], orig.attention[:t - 1], atol=1e-5)
    np.testing.assert_allclose(out.token_probs[:t - 1], orig.token_probs[:t - 1], rtol=1e-5)
    assert out.logprob == pytest.approx(float(np.sum(np.log(out.token_probs))), abs=1e-4)


def test_bad_force_is_a_one_line_value_error(tiny_weights):
    cap = Captioner.load(tiny_weights, device="cpu")
    n = len(cap.caption(photo(0), mode="greedy").tokens)
    for force, msg in [({0: (0, 0)}, "count from 1"), ({n + 1: (0, 0)}, f"has {n} tokens"),
                       ({1: (2, 0)}, "outside the 2×2 attention grid"), ({1: (0, -1)}, "outside the 2×2"),
                       ({1: "a"}, "must be \\(row, col\\)"), ({"1": (0, 0)}, "must be an int"),
                       ({}, "non-empty")]:
        with pytest.raises(ValueError, match=msg) as e:
            cap.caption(photo(0), mode="greedy", force=force)
        assert "\n" not in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_bundled_model_names_the_shape_it_is_made_to_look_at(kind):
    cap = Captioner.load(WEIGHTS / kind, device="cpu")
    orig = cap.caption(EXAMPLE, mode="greedy")
    # NOTE: the first shape word the model says (which one depends on the weights; the steering must not)
    t = next(i for i, w in enumerate(orig.words, 1) if w in CELLS)
    if kind == "hard":  # forcing the cell the model picks itself changes nothing
        own = np.unravel_index(int(orig.attention[t - 1].argmax()), orig.attention.shape[1:])
        same = cap.caption(EXAMPLE, mode="greedy", force={t: tuple(int(v) for v in own)})
        assert same.words == orig.words
        np.testing.assert_allclose(same.token_probs, orig.token_probs, rtol=1e-5)
    for shape, cell in CELLS.items():
        out = cap.caption(EXAMPLE, mode="greedy", force={t: cell})
        assert out.words[:t - 1] == orig.words[:t - 1]
        assert out.words[t - 1] == shape, (shape, out.text)


def test_step_without_force_is_unchanged():
    """`force=None` must be the plain step (search and training call it that way)."""
    from sat.attention import create_attention
    from sat.decoders.lstm import LSTMDecoder

    torch.manual_seed(0)
    dec = LSTMDecoder(vocab_size=7, encoder_dim=4, embed_dim=3, decoder_dim=5, dropout=0.0, gate=True,
                      attention=create_attention("hard", encoder_dim=4, decoder_dim=5, attention_dim=3)).eval()
    feats = torch.randn(2, 6, 4)
    mem = dec.prepare(feats)
    tok = torch.tensor([1, 1])
    a = dec.step(tok, dec.init_state(mem), mem)
    b = dec.step(tok, dec.init_state(mem), mem, force=None)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # the hard kind reads exactly the forced cell: forcing its own argmax gives the same logits
    own = torch.nn.functional.one_hot(a[1].argmax(-1), 6).float()
    c = dec.step(tok, dec.init_state(mem), mem, force=own)
    assert torch.allclose(a[0], c[0]) and torch.equal(c[1], own)


@pytest.mark.parametrize("mode", ["greedy", "beam"])
def test_words_before_t_are_teacher_forced_not_re_decoded(tiny_weights, mode):
    """The prefix comes from `original`, even where the model would pick other words."""
    from sat.search import Hypothesis
    from sat.steer import steer_hypothesis

    cap = Captioner.load(tiny_weights, device="cpu")
    feats = cap.model.annotations(cap.encoder.encode_trunk(cap.pixels([photo(0)])))  # (1, L, D)
    v = cap.vocab
    own = cap.caption(photo(0), mode=mode, beam_size=2).tokens
    prefix = [v.stoi[w] for w in ("the", "blue", "square", "of")]
    assert [v.itos[i] for i in prefix] != own[:4]
    orig = Hypothesis(prefix + [v.end_id], torch.zeros(5, 4), [-1.0] * 5, -5.0, -5.0)
    with torch.inference_mode():
        out = steer_hypothesis(cap.model.decoder, feats, orig, {5: (0, 1)}, grid=(2, 2), hard=False,
                               mode=mode, beam_size=2, max_len=6, pad_id=v.pad_id, start_id=v.start_id,
                               end_id=v.end_id, unk_id=v.unk_id)
    assert out.tokens[:4] == prefix
    assert out.token_logprobs[:4] == [-1.0] * 4  # the original's, not the probability 1 search saw
