"""Causal grounding (train/steering.py): trials, object centres, and steer_success on a real scene."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sat.captioner import Captioner
from sat.paths import EXAMPLES, WEIGHTS
from train.evaluate import generate, write_metrics
from train.steering import STEER_CHANCE, object_centre, steer_success, steer_trials

# the example scene_008502: a yellow circle, an orange heart, a red star ([x0, y0, x1, y1] boxes)
BOXES = {"circle": (7, 14, 90, 97), "heart": (12, 129, 94, 211), "star": (120, 76, 196, 152)}
COLOURS = {"circle": "yellow", "heart": "orange", "star": "red"}


def scene_truth() -> tuple[list[dict], np.ndarray]:
    """The example's objects and a (224, 224) mask of their boxes (values 1, 2, 3)."""
    mask = np.zeros((224, 224), np.uint8)
    objects = []
    for k, (shape, (x0, y0, x1, y1)) in enumerate(BOXES.items(), start=1):
        mask[y0:y1, x0:x1] = k
        objects.append({"shape": shape, "colour": COLOURS[shape], "mask_value": k, "box": [x0, y0, x1, y1]})
    return objects, mask


def test_object_centre_lies_on_the_object():
    ring = np.zeros((40, 40), np.uint8)
    ring[5:35, 5:35] = 3
    ring[10:30, 10:30] = 0  # a hollow square: its centroid (19.5, 19.5) is not on it
    x, y = object_centre(ring, 3)
    assert ring[int(y), int(x)] == 3 and abs(x - 19.5) + abs(y - 19.5) < 12
    assert object_centre(ring, 7) is None


def test_steer_trials_pair_each_named_shape_with_every_other_shape():
    objects, mask = scene_truth()
    tokens = "a yellow circle above two red stars and a blue square <end>".split()
    trials = steer_trials(tokens, objects, mask, grid=(14, 14), image_size=224)
    # circle (word 3) → heart, star; stars (word 7) → circle, heart; "square" is not in the image
    assert [(t, s) for t, s, _ in trials] == [(3, "heart"), (3, "star"), (7, "circle"), (7, "heart")]
    cells = {s: c for _, s, c in trials}
    assert cells["heart"] == (170 // 16, 53 // 16) and cells["circle"] == (55 // 16, 48 // 16)


@pytest.mark.slow
def test_steer_success_of_the_bundled_soft_model_on_a_scene(capsys):
    cap = Captioner.load(WEIGHTS / "soft", device="cpu")
    fmap = cap.encoder.encode_trunk(cap.pixels([EXAMPLES / "scene_008502.jpg"])).detach()  # (1, C, h, w)
    hyps = generate(cap.model, fmap, vocab=cap.vocab, mode="greedy")
    objects, mask = scene_truth()
    got = steer_success(cap.model, cap.vocab, fmap, hyps, [objects], [mask], mode="greedy")
    assert got["steer_trials"] == 6  # three shapes named, each moved to the two others
    assert got["steer_success"] >= 5 / 6 and got["steer_chance"] == pytest.approx(STEER_CHANCE, abs=1e-4)
    none = steer_success(cap.model, cap.vocab, fmap, hyps, [objects[:1]], [mask], mode="greedy")
    assert none["steer_trials"] == 0 and math.isnan(none["steer_success"])
    with pytest.raises(ValueError, match="1 maps, 1 captions, 2 object lists"):
        steer_success(cap.model, cap.vocab, fmap, hyps, [objects, objects], [mask], mode="greedy")
    write_metrics({"bleu4": 0.5, "grounding": {"pointing": 0.9, "chance_pointing": 0.1, "mass": 0.5,
                                               "chance_mass": 0.1, "n_words": 3, **got}}, None)
    assert f"steering: steer_success {got['steer_success']:.3f} (chance 0.167) | 6 trials" in capsys.readouterr().out

