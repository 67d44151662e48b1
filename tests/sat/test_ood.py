"""Out-of-distribution statistics (sat/ood.py): the fit and its threshold, the files and their
validation (tampered folders: the captioner still loads and says why the check is off)."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from sat.captioner import Captioner
from sat.ood import INFO_FILE, STATS_FILE, TARGET_FLAG_RATE, OODError, OODStats, load_stats, pool

from tests.conftest import make_tiny_weights  # noqa: E402  (importlib mode: tests is a namespace)


def gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.1, 3.0, d)
    return torch.randn(n, d, generator=g) * scales + 5.0


def test_threshold_flags_at_most_one_percent_of_the_test_split_and_far_points():
    stats = OODStats.fit(gaussian(4000, 16, 0), gaussian(1000, 16, 1))
    test_d = stats.distance(gaussian(1000, 16, 1))
    flagged = float((test_d > stats.threshold).double().mean())
    assert flagged <= TARGET_FLAG_RATE and flagged == pytest.approx(stats.info["test_flagged"])
    # the threshold is a real quantile, not a huge number that flags nothing
    assert float((test_d > 0.9 * stats.threshold).float().mean()) > TARGET_FLAG_RATE
    # a shift of 1 along the narrowest axis (std 0.1) is far; the same shift along the widest is not
    near, far = gaussian(1, 16, 2).repeat(2, 1), None
    far = near.clone()
    near[1, -1] += 1.0
    far[1, 0] += 1.0
    assert stats.distance(far)[1] - stats.distance(far)[0] > 5
    assert abs(stats.distance(near)[1] - stats.distance(near)[0]) < 1


def test_low_rank_keeps_the_residual():
    train = gaussian(2000, 32, 0)
    full = OODStats.fit(train, gaussian(500, 32, 1))
    low = OODStats.fit(train, gaussian(500, 32, 1), rank=8)
    assert low.components.shape == (8, 32) and low.residual_var > 0
    x = train.mean(0, keepdim=True).repeat(2, 1)
    x[1] += 20 * full.components[-1]  # a direction the 8 kept axes do not span
    assert low.distance(x)[1] > low.threshold and full.distance(x)[1] > full.threshold


def test_save_load_round_trip_and_captioner_check(tmp_path):
    folder = make_tiny_weights(tmp_path / "w")
    cap = Captioner.load(folder, device="cpu")
    assert cap.ood is None and "no ood.json" in cap.ood_error and "ood-stats" in cap.ood_error
    out = cap.caption(Image.new("RGB", (64, 64), (200, 30, 30)), mode="greedy")
    assert out.ood is None and out.to_dict()["ood"] is None

    # fit on pooled trunk maps of plain-colour images; a noise image is far from them
    colours = [Image.new("RGB", (64, 64), (r, g, b)) for r in (0, 90, 180, 250) for g in (0, 120, 240)
               for b in (10, 200)]
    with torch.inference_mode():
        feats = pool(cap.encoder.encode_trunk(cap.pixels(colours)))
    stats = OODStats.fit(feats, feats, info={"dataset": "plain colours"})
    stats.save(folder)
    back = load_stats(folder, dim=feats.shape[1])
    assert torch.equal(back.distance(feats), stats.distance(feats)) and back.threshold == stats.threshold

    cap = Captioner.load(folder, device="cpu")
    assert cap.ood is not None and cap.ood_error == ""
    plain = cap.caption(colours[3], mode="greedy")
    noise = cap.caption(Image.effect_noise((64, 64), 120).convert("RGB"), mode="greedy")
    assert plain.ood is not None and not plain.ood.flagged
    assert noise.ood.flagged and noise.ood.distance > noise.ood.threshold
    d = noise.to_dict()
    assert d["ood"] is True and d["ood_threshold"] == pytest.approx(stats.threshold, abs=1e-3)
    assert plain.to_dict()["ood"] is False and d["encoder_top3"] is None  # test-tiny: no classifier


def _stats_folder(tmp_path):
    folder = make_tiny_weights(tmp_path / "w")
    OODStats.fit(gaussian(200, 16, 0), gaussian(100, 16, 1), info={"dataset": "x"}).save(folder)
    return folder


def _tamper_tensors(folder, fn):
    t = load_file(str(folder / STATS_FILE))
    fn(t)
    save_file(t, str(folder / STATS_FILE))


def _tamper_json(folder, fn):
    info = json.loads((folder / INFO_FILE).read_text())
    fn(info)
    (folder / INFO_FILE).write_text(json.dumps(info))


TAMPERED = {
    "missing stats": (lambda f: (f / STATS_FILE).unlink(), "no ood.safetensors"),
    "missing info": (lambda f: (f / INFO_FILE).unlink(), "no ood.json"),
    "bad json": (lambda f: (f / INFO_FILE).write_text("{not json"), "not valid JSON"),
    "nan threshold": (lambda f: (f / INFO_FILE).write_text(
        (f / INFO_FILE).read_text().replace('"threshold": ', '"threshold": NaN, "x": ')), "threshold must be"),
    "string threshold": (lambda f: _tamper_json(f, lambda i: i.update(threshold="7")), "threshold must be"),
    "wrong dim": (lambda f: _tamper_json(f, lambda i: i.update(dim=17)), "fitted on 17-dim features"),
    "wrong shape": (lambda f: _tamper_tensors(f, lambda t: t.update(mean=torch.zeros(15))), "mean (15,)"),
    "huge shape": (lambda f: _tamper_tensors(f, lambda t: t.update(components=torch.zeros(16, 1))),
                   "components (16, 1)"),
    "extra tensor": (lambda f: _tamper_tensors(f, lambda t: t.update(extra=torch.zeros(1))), "expected tensors"),
    "float16": (lambda f: _tamper_tensors(f, lambda t: t.update(mean=t["mean"].half())), "not F32"),
    "nan mean": (lambda f: _tamper_tensors(f, lambda t: t["mean"].__setitem__(0, float("nan"))), "non-finite"),
    "zero variance": (lambda f: _tamper_tensors(f, lambda t: t["variances"].__setitem__(0, 0.0)), "> 0"),
    "pickle": (lambda f: (f / STATS_FILE).write_bytes(b"\x80\x04K\x01."), "not a valid safetensors"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_statistics_turn_the_check_off_with_one_line(tmp_path, case):
    folder = _stats_folder(tmp_path)
    load_stats(folder, dim=16)  # intact: loads
    tamper, message = TAMPERED[case]
    tamper(folder)
    with pytest.raises(OODError, match=None) as e:
        load_stats(folder, dim=16)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
    cap = Captioner.load(folder, device="cpu")  # the model still loads and captions …
    assert cap.ood is None and message in cap.ood_error  # … and says why the check is off
    assert cap.caption(Image.new("RGB", (64, 64)), mode="greedy").to_dict()["ood"] is None
