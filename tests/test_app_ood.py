"""The app's out-of-distribution notice and "the encoder sees" line (studio/notices.py) and their
fields in the /caption JSON: the bundled soft weights (with statistics) beside a tiny hard model
without them (the column says there is no check, and the JSON carries "ood": null and why)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.cbook
import pytest

from sat.paths import EXAMPLES, WEIGHTS
from studio.inference import load_slot
from studio.notices import training_data
from studio.ui import Studio, caption_chips
from tests.conftest import make_tiny_weights

GRACE_HOPPER = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
EXAMPLE = EXAMPLES / "scene_008504.jpg"
NOTICE = "This image is unlike the synthetic scenes this model was trained on: the caption is unreliable."


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> Studio:
    hard = make_tiny_weights(tmp_path_factory.mktemp("w") / "hard", seed=5, attention="hard")
    slots = [load_slot("soft", WEIGHTS / "soft"), load_slot("hard", hard)]
    assert all(s.ready for s in slots), [s.error for s in slots]
    return Studio(slots)


def test_caption_json_carries_ood_per_model(studio):
    photo = studio.api_caption(str(GRACE_HOPPER), "greedy", 1, 1.0, 8)
    scene = studio.api_caption(str(EXAMPLE), "greedy", 1, 1.0, 8)
    assert photo["soft"]["ood"] is True and scene["soft"]["ood"] is False
    assert photo["soft"]["ood_distance"] > photo["soft"]["ood_threshold"] > scene["soft"]["ood_distance"]
    # the tiny model has no statistics: null, and the reason
    assert photo["hard"]["ood"] is None and "no ood.json" in photo["hard"]["ood_error"]
    top3 = photo["soft"]["encoder_top3"]
    assert [t["label"] for t in top3][0] == "military uniform" and 0 < top3[0]["p"] < 1
    assert photo["hard"]["encoder_top3"] is None  # test-tiny has no ImageNet classifier


def test_columns_say_when_flagged(studio):
    state, *_ = studio.on_caption(str(GRACE_HOPPER), "greedy", 1, 1.0, 8, 0.6, 0.5)
    soft = caption_chips(state, "soft", 0)
    assert NOTICE in soft and 'role="alert"' in soft
    assert "The encoder sees: military uniform" in soft and "%" in soft
    hard = caption_chips(state, "hard", 0)
    assert "unlike" not in hard and "No check of whether this image is like the training images" in hard
    state, *_ = studio.on_caption(str(EXAMPLE), "greedy", 1, 1.0, 8, 0.6, 0.5)
    soft = caption_chips(state, "soft", 0)
    assert "unlike" not in soft and "The encoder sees:" in soft and 'class="sat-chip' in soft


def test_the_notice_names_the_training_data():
    assert training_data("scenes") == "the synthetic scenes"
    assert training_data("coco") == "the coco images" and training_data("") == "the images"
