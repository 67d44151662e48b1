"""Encoder registry and the one preprocessing path, with the awkward images people upload."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from sat.encoder import IMAGENET_MEAN, IMAGENET_STD, ImageError, create_encoder, list_encoders, load_image, preprocess


def png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_registry_and_tiny_encoder_shapes():
    assert {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "test-tiny"} <= set(list_encoders())
    enc = create_encoder("test-tiny")
    out = enc(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 4, 16) and enc.grid(64) == (2, 2)
    with pytest.raises(ValueError, match="unknown encoder"):
        create_encoder("resnet-9000")


@pytest.mark.parametrize("feature_map,shape", [("last", (1, 49, 1280)), ("stride16", (1, 196, 112))])
def test_efficientnet_lite0_feature_maps(feature_map, shape):
    enc = create_encoder("efficientnet-lite0", feature_map=feature_map)
    with torch.inference_mode():
        out = enc(torch.randn(1, 3, 224, 224))
    assert out.shape == shape
    assert enc.dim == shape[2] and enc.grid(224)[0] ** 2 == shape[1]


def test_finetune_split_gives_the_same_features_and_trains_only_the_tail():
    x = torch.randn(1, 3, 224, 224)
    frozen = create_encoder("efficientnet-lite0")
    tuned = create_encoder("efficientnet-lite0", finetune_blocks=2)
    with torch.inference_mode():
        assert torch.allclose(frozen(x), tuned(x), atol=1e-4)
    assert not any(p.requires_grad for p in tuned.trunk.parameters())
    assert all(p.requires_grad for p in tuned.tail.parameters())
    assert sum(1 for _ in tuned.tail.parameters()) > 0 and sum(1 for _ in frozen.tail.parameters()) == 0
    with pytest.raises(ValueError):
        create_encoder("efficientnet-lite0", finetune_blocks=99)


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
