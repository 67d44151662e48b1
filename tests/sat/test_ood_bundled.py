"""The bundled weights' OOD check and the encoder's ImageNet top-3 on real images: the 4 example
scenes are not flagged, every real photo at hand is (matplotlib's and Gradio's sample photos), and the
labels are the pretrained Lite0 classifier's (the head on the trunk map == the full timm network)."""
from __future__ import annotations

import json
from pathlib import Path

import gradio
import matplotlib.cbook
import pytest
import torch

from sat.captioner import Captioner
from sat.encoder import _lite0_state_dict
from sat.ood import INFO_FILE, TARGET_FLAG_RATE
from sat.paths import EXAMPLES, WEIGHTS

GRACE_HOPPER = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
GRADIO_PHOTOS = [Path(gradio.__file__).parent / "media_assets" / "images" / n
                 for n in ("cheetah.jpg", "cheetah1.jpg", "lion.jpg", "tower.jpg", "groot.jpeg")]
EXAMPLE_SCENES = sorted(EXAMPLES.glob("scene_*.jpg"))


@pytest.fixture(scope="module", params=["soft", "hard"])
def bundled(request) -> Captioner:
    return Captioner.load(WEIGHTS / request.param, device="cpu")


def test_bundled_statistics_flag_at_most_one_percent_of_the_own_test_split(bundled):
    info = json.loads((Path(bundled.source) / INFO_FILE).read_text())
    assert bundled.ood is not None, bundled.ood_error
    assert info["dataset"] == "scenes" and info["n_test"] == 1000 and info["n_train"] == 8000
    assert 0 < info["test_flagged"] <= TARGET_FLAG_RATE
    assert (Path(bundled.source) / "ood.safetensors").stat().st_size < 100_000  # KB, not MB


def test_examples_pass_and_real_photos_are_flagged(bundled):
    assert len(EXAMPLE_SCENES) == 4
    scenes = bundled.caption_batch(EXAMPLE_SCENES, mode="greedy")
    assert [c.ood.flagged for c in scenes] == [False] * 4, [c.ood for c in scenes]
    photos = [p for p in [GRACE_HOPPER, *GRADIO_PHOTOS] if p.is_file()]
    assert len(photos) >= 4
    flagged = bundled.caption_batch(photos, mode="greedy")
    assert all(c.ood.flagged for c in flagged), {p.name: c.ood for p, c in zip(photos, flagged)}
    assert min(c.ood.distance for c in flagged) > max(c.ood.distance for c in scenes)


def test_encoder_top3_on_grace_hopper(bundled):
    top3 = bundled.caption(GRACE_HOPPER, mode="greedy").encoder_top3
    assert top3 is not None and len(top3) == 3
    labels = [label for label, _ in top3]
    assert labels[0] == "military uniform", top3
    assert {"suit", "bow tie", "Windsor tie", "mortarboard"} & set(labels[1:]), top3
    assert 1 > top3[0][1] >= top3[1][1] >= top3[2][1] > 0


def test_the_head_on_the_trunk_map_is_the_full_classifier(bundled):
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(_lite0_state_dict(list(net.state_dict())))
    x = bundled.pixels([GRACE_HOPPER])
    with torch.inference_mode():
        ours = bundled.head(bundled.encoder.encode_trunk(x))
        full = net.eval()(x)
    assert torch.allclose(ours, full, atol=1e-3), (ours - full).abs().max()


def test_two_models_share_one_head_and_run_it_once_per_image():
    soft, hard = (Captioner.load(WEIGHTS / n, device="cpu") for n in ("soft", "hard"))
    assert soft.head is hard.head is not None
    calls = []
    hook = soft.head.register_forward_hook(lambda *_: calls.append(1))
    try:
        soft.head._memo = None
        a = soft.caption(GRACE_HOPPER, mode="greedy").encoder_top3
        b = hard.caption(GRACE_HOPPER, mode="greedy").encoder_top3
        assert a == b and len(calls) == 1  # the hard column reused the soft column's labels
        c = hard.caption(EXAMPLE_SCENES[0], mode="greedy").encoder_top3
        assert c != a and len(calls) == 2  # a new image runs the head again
    finally:
        hook.remove()
