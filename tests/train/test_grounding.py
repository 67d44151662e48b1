"""train/grounding.py: pointing / mass on known masks, phrase parsing, a synthetic scene end to end."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from sat.vocab import tokenize
from train.data.scenes import render_scene
from train.grounding import (ObjectWord, boxes_to_mask, find_object_words, ground_span,
                             ground_word, grounding_scores, load_scene_truth, phrase_span,
                             uniform_chance)


def box_mask(H, W, x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


# ----------------------------------------------------------------------------- ground_word

def test_map_concentrated_on_the_box_points_and_has_all_the_mass():
    box = box_mask(64, 64, 10, 20, 30, 40)
    m = np.zeros((64, 64))
    m[25:35, 15:25] = 1.0
    assert ground_word(m, [box]) == (True, 1.0)
    m[0, 0] = 0.5  # a little mass outside, below the peak
    hit, mass = ground_word(m, [box])
    assert hit and mass == pytest.approx(100 / 100.5)


def test_uniform_map_mass_is_the_area_fraction_and_ties_go_to_the_first_pixel():
    flat = np.full((64, 64), 1 / 4096)
    away = box_mask(64, 64, 10, 20, 30, 40)
    hit, mass = ground_word(flat, [away])
    assert not hit and mass == pytest.approx(400 / 4096)
    corner = box_mask(64, 64, 0, 0, 8, 8)  # contains (0, 0), the first maximum in row-major order
    assert ground_word(flat, [corner]) == (True, pytest.approx(64 / 4096))
    # tie between two equal peaks: the upper one (earlier row) wins, even if further right
    m = np.zeros((64, 64))
    m[50, 5] = m[10, 60] = 1.0
    assert ground_word(m, [box_mask(64, 64, 55, 5, 64, 15)])[0]
    assert not ground_word(m, [box_mask(64, 64, 0, 45, 10, 55)])[0]


def test_union_of_masks_for_ambiguous_phrases():
    a, b = box_mask(32, 32, 0, 0, 8, 8), box_mask(32, 32, 20, 20, 28, 28)
    m = np.zeros((32, 32))
    m[4, 4], m[24, 24], m[15, 15] = 0.2, 0.5, 0.3
    hit, mass = ground_word(m, [a, b])
    assert hit and mass == pytest.approx(0.7)
    assert ground_word(np.zeros((32, 32)), [a])[1] == 0.0
    with pytest.raises(ValueError, match="shape"):
        ground_word(m, [np.zeros((8, 8), bool)])


# ----------------------------------------------------------------------------- phrases

def test_find_object_words():
    assert find_object_words("two green triangles".split()) == [ObjectWord(2, "triangle", "green", 2)]
    toks = "a large red circle to the left of a blue star".split()
    assert find_object_words(toks) == [ObjectWord(3, "circle", "red", 1), ObjectWord(10, "star", "blue", 1)]
    assert find_object_words("a picture of a large cross".split()) == [ObjectWord(5, "cross", None, 1)]
    assert find_object_words("there are three small orange hearts".split()) == [
        ObjectWord(5, "heart", "orange", 3)]
    assert find_object_words("red squares and a blue".split()) == [ObjectWord(1, "square", "red", None)]
    assert find_object_words("a red circle <end>".split())[0].index == 2
    assert find_object_words("a red thing".split()) == []


def test_phrase_span():
    toks = "there are two small red hearts next to a star".split()
    assert phrase_span(toks, 5) == (2, 6)
    assert phrase_span(toks, 9) == (8, 10)
    assert phrase_span("red circle".split(), 1) == (0, 2)
    # a determiner closes the phrase: "a" does not pull in the earlier "a blue"
    assert phrase_span("a blue a red circle".split(), 4) == (2, 5)


# ----------------------------------------------------------------------------- synthetic scene

def synthetic_scene():
    """64 px scene on a 4×4 grid (16 px cells); masks drawn here as cell-aligned blocks."""
    mask = np.zeros((64, 64), np.uint8)
    objects = []
    for value, (shape, colour, (i, j)) in enumerate(
            [("circle", "red", (1, 0)), ("triangle", "green", (3, 1)),
             ("triangle", "green", (3, 2)), ("star", "blue", (1, 3))], start=1):
        mask[i * 16:(i + 1) * 16, j * 16:(j + 1) * 16] = value
        box = [j * 16, i * 16, (j + 1) * 16, (i + 1) * 16]
        objects.append({"shape": shape, "colour": colour, "size": "small", "box": box,
                        "mask_value": value})
    return objects, mask


def attention_for(tokens, looks):
    """(T, 4, 4): one-hot at ``looks[t] = (i, j)`` for listed steps, uniform elsewhere."""
    att = np.full((len(tokens), 4, 4), 1 / 16, np.float32)
    for t, (i, j) in looks.items():
        att[t] = 0
        att[t, i, j] = 1
    return att


def test_synthetic_scene_end_to_end():
    objects, mask = synthetic_scene()
    good = "a red circle to the left of a blue star and two green triangles <end>".split()
    look_good = {2: (1, 0), 9: (1, 3), 13: (3, 2)}  # the plural looks at one triangle: counts
    wrong = "a green triangle next to a star and a purple heart <end>".split()
    look_wrong = {2: (0, 0), 1: (3, 1), 6: (1, 3)}  # noun misses, its colour word hits
    caps = [(good, attention_for(good, look_good)), (wrong, attention_for(wrong, look_wrong))]
    sharp = grounding_scores(caps, [objects, objects], [mask, mask], image_size=64, sigma=0)
    assert sharp["n_words"] == 5 and sharp["n_unmatched"] == 1  # the purple heart is hallucinated
    assert sharp["pointing"] == pytest.approx(4 / 5)
    assert sharp["mass"] == pytest.approx(4 / 5)
    assert sharp["pointing_best"] == 1.0 and sharp["mass_best"] == pytest.approx(1.0)
    soft = grounding_scores(caps, [objects, objects], [mask, mask], image_size=64)
    assert soft["pointing"] == pytest.approx(4 / 5)
    assert 0.4 < soft["mass"] < sharp["mass"]  # smoothing spills mass out of the masks

    chance = uniform_chance([good, wrong], [objects, objects], [mask, mask])
    # areas: circle, star 1/16; the two triangles together 2/16 (referred to twice)
    expected = (1 / 16 + 1 / 16 + 2 / 16 + 2 / 16 + 1 / 16) / 5
    assert chance == {"pointing": pytest.approx(expected), "mass": pytest.approx(expected),
                      "n_words": 5, "n_unmatched": 1}
    assert uniform_chance(caps, [objects] * 2, [mask] * 2)["mass"] == pytest.approx(expected)


def test_uniform_attention_scores_the_chance_mass():
    objects, mask = synthetic_scene()
    toks = "a red circle and a blue star <end>".split()
    att = np.full((len(toks), 4, 4), 1 / 16, np.float32)
    chance = uniform_chance([toks], [objects], [mask])["mass"]
    flat = grounding_scores([(toks, att)], [objects], [mask], image_size=64, border="reflect")
    assert flat["mass"] == pytest.approx(chance)
    assert flat["pointing"] == 0.0  # the flat map "points" at (0, 0): background
    cell = grounding_scores([(toks, att)], [objects], [mask], image_size=64)  # border="cell"
    assert cell["mass"] == pytest.approx(chance, abs=0.01)  # nearly flat


def test_no_scored_words_gives_nan_and_length_checks():
    objects, mask = synthetic_scene()
    toks = "a purple cross <end>".split()
    got = grounding_scores([(toks, np.full((4, 4, 4), 1 / 16))], [objects], [mask], image_size=64)
    assert math.isnan(got["pointing"]) and got["n_words"] == 0 and got["n_unmatched"] == 1
    with pytest.raises(ValueError, match="captions"):
        grounding_scores([(toks, np.zeros((4, 4, 4)))], [], [mask], image_size=64)


def test_generated_scene_and_load_scene_truth(tmp_path):
    _, mask, objects, captions = render_scene(np.random.default_rng([0, 7]), 64)
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask, mode="L").save(tmp_path / "masks" / "s.png")
    objs, loaded = load_scene_truth({"objects": objects, "mask": "masks/s.png", "imgid": 7}, tmp_path)
    assert objs == objects and np.array_equal(loaded, mask)
    with pytest.raises(ValueError, match="scenes"):
        load_scene_truth({"imgid": 7}, tmp_path)

    # attention proportional to the referred objects' coverage of each 8×8 cell of the mask
    toks = tokenize(captions[0]) + ["<end>"]
    words = find_object_words(toks)
    assert words, captions[0]
    att = np.full((len(toks), 8, 8), 1 / 64, np.float32)
    for w in words:
        ref = np.isin(loaded, [o["mask_value"] for o in objs if o["shape"] == w.shape
                               and o["colour"] == w.colour])
        cov = ref.reshape(8, 8, 8, 8).mean((1, 3))
        att[w.index] = cov / cov.sum()
    got = grounding_scores([(toks, att)], [objs], [loaded], image_size=64)
    chance = uniform_chance([toks], [objs], [loaded])
    assert got["n_words"] == len(words) and got["n_unmatched"] == 0
    assert got["pointing"] == 1.0 and got["mass"] > max(0.5, 3 * chance["mass"])


# ----------------------------------------------------------------------------- boxes (Flickr30k)

def test_boxes_to_mask_is_voc_inclusive_and_clipped():
    m = boxes_to_mask([(1, 1, 4, 2), (9, 9, 20, 20)], (10, 8))
    assert m.shape == (8, 10)
    assert m[:2, :4].all() and m.sum() == 8 + 0  # second box starts outside the 10×8 image
    assert boxes_to_mask([(5, 3, 10, 8)], (10, 8)).sum() == 6 * 6


def test_ground_span_against_boxes():
    toks = "a man in an orange hat <end>".split()
    att = np.full((len(toks), 7, 7), 1 / 49, np.float32)
    att[5] = 0
    att[5, 1, 5] = 1.0  # "hat": row 1, column 5 of the 7×7 grid
    # 448×448 photo, crop: cell (1, 5) spans x 320..383, y 64..127 (0-based)
    box = (321, 65, 384, 128)  # VOC, 1-based inclusive
    assert ground_span(att, (3, 6), [box], size=(448, 448), sigma=0) == (True, pytest.approx(1.0))
    hit, mass = ground_span(att, (3, 6), [box], size=(448, 448), sigma=0, use="mean")
    assert hit and mass == pytest.approx((1 + 2 / 49) / 3)
    assert not ground_span(att, (0, 2), [box], size=(448, 448))[0]  # "a man": flat map
    with pytest.raises(ValueError, match="span"):
        ground_span(att, (5, 9), [box], size=(448, 448))
