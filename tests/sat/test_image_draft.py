"""JPEGs decode at the DCT scale the model's input needs (`sat.image.model_input`, PIL's JPEG draft).

Measured (lite0 stride16, 224 px, crop_pct 1.0; drafted vs full decode of the same file): on
`bench.inference.make_photos` 1280×960 photos (decoded at 320×240) the normalised input differs by a
mean 0.011 (crop) / 0.006 (pad) and the trunk maps have cosine similarity 0.996 / 0.998; re-encoding
the same photo at JPEG quality 85 moves them about as much (0.010 / 0.999). The bounds below leave
about twice that room.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.inference import make_photos
from sat.image import ImageError, _drafted_size, load_image, model_input, preprocess

LITE0 = dict(image_size=224, crop_pct=1.0, interpolation="bicubic")  # the bundled model's settings


def jpeg(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, format="JPEG", quality=92, **kw)
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A 1280×960 photo-like JPEG (gradients, shapes, noise), as a phone's VGA-to-12 MP photos."""
    return make_photos(tmp_path_factory.mktemp("photos"), 1, sizes=[(1280, 960)])[0]


@pytest.mark.parametrize("size,request_", [((640, 480), (299, 224)), ((641, 479), (299, 224)),
                                           ((1280, 960), (224, 299)), ((100, 60), (50, 30)),
                                           ((100, 60), (51, 30)), ((33, 17), (299, 224)), ((900, 900), (100, 1))])
def test_drafted_size_is_what_pils_draft_decodes(size, request_):
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 140, 30)).save(buf, format="JPEG")
    img = Image.open(buf)
    img.draft("RGB", request_)
    assert _drafted_size(size, request_) == img.size
    img.load()
    assert img.size == _drafted_size(size, request_)


@pytest.mark.slow
@pytest.mark.parametrize("resize,mad_bound", [("crop", 0.02), ("pad", 0.012)])
def test_a_big_jpeg_decoded_for_the_model_gives_nearly_the_full_decodes_input(photo, resize, mad_bound):
    from sat.encoder import create_encoder

    pp = {**LITE0, "resize": resize}
    assert load_image(photo, decode_for=pp).size == (320, 240)  # 1/4: both sides still ≥ (299, 224) / (224, 168)
    full, drafted = preprocess(load_image(photo), **pp), model_input(photo, **pp)
    assert full.shape == drafted.shape == (3, 224, 224)
    mad = float((full - drafted).abs().mean())
    assert 0 < mad < mad_bound, mad  # not the same pixels (the draft ran), nearly the same input
    enc = create_encoder("efficientnet-lite0", feature_map="stride16").eval()
    with torch.inference_mode():
        a, b = (enc.encode_trunk(x[None]).flatten(1) for x in (full, drafted))  # (1, C·h·w)
    assert float(torch.nn.functional.cosine_similarity(a, b)) >= 0.99


def test_other_formats_and_small_jpegs_decode_bit_for_bit_as_before(photo, tmp_path):
    pp = {**LITE0, "resize": "crop"}
    pixels = load_image(photo)
    cases = {"png": tmp_path / "photo.png", "webp": tmp_path / "photo.webp"}
    pixels.resize((800, 600)).save(cases["png"])  # as a JPEG, this size would decode at 1/2
    pixels.resize((800, 600)).save(cases["webp"], lossless=True, method=0)
    # crop at 224: a W×H landscape is resized to 299×224, so 1/2 needs W ≥ 598 and H ≥ 448
    for size in ((400, 300), (597, 447), (640, 447), (224, 224)):
        cases[f"jpeg {size}"] = jpeg(pixels.resize(size), tmp_path / f"small_{size[0]}x{size[1]}.jpg")
    for name, path in cases.items():
        assert load_image(path, decode_for=pp).size == Image.open(path).size, name
        assert torch.equal(model_input(path, **pp), preprocess(load_image(path), **pp)), name
    at_twice = jpeg(pixels.resize((598, 448)), tmp_path / "twice.jpg")  # the first size the draft halves
    assert load_image(at_twice, decode_for=pp).size == (299, 224)
    assert not torch.equal(model_input(at_twice, **pp), preprocess(load_image(at_twice), **pp))


@pytest.mark.parametrize("orientation,turn", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
@pytest.mark.parametrize("resize", ["crop", "pad"])
def test_an_exif_rotated_jpeg_is_drafted_for_its_upright_size(photo, tmp_path, orientation, turn, resize):
    """A phone's portrait photo: pixels stored 960×1280, EXIF says turn them to 1280×960 to view. The
    draft request is for the stored pixels: asking the upright (299, 224) of the stored 960×1280 would
    keep 640×480 (1/2), not 320×240 (1/4)."""
    pp = {**LITE0, "resize": resize}
    upright = load_image(photo)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = jpeg(upright.transpose(turn), tmp_path / f"rot{orientation}.jpg", exif=exif.tobytes())
    assert Image.open(stored).size == (960, 1280)
    out = load_image(stored, decode_for=pp)
    assert out.size == load_image(photo, decode_for=pp).size == (320, 240)
    assert np.abs(np.asarray(out, dtype=int) - np.asarray(load_image(photo, decode_for=pp), dtype=int)).mean() < 4
    mad = float((model_input(stored, **pp) - model_input(photo, **pp)).abs().mean())
    assert mad < 0.03, mad  # the same photo, upright (two JPEG encodings of it)


def test_the_pixel_limit_refuses_the_same_files_with_or_without_the_draft(tmp_path):
    """A JPEG header of 8000×6000 (48 MP; the 4096-side draft keeps it whole) is refused from its header
    either way: the model's smaller draft (1/8: 1000×750) must not let it through where the app's
    display decode refuses it."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 10)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (6000).to_bytes(2, "big") + (8000).to_bytes(2, "big")  # height, width
    path = tmp_path / "giant.jpg"
    path.write_bytes(bytes(data))
    assert Image.open(path).size == (8000, 6000)
    for kw in ({}, {"decode_for": {**LITE0, "resize": "crop"}}):
        with pytest.raises(ImageError, match=r"giant\.jpg: too many pixels .*8000×6000 = 48 MP"):
            load_image(path, **kw)
    with pytest.raises(ImageError, match="too many pixels"):
        model_input(bytes(data), **LITE0)


def test_bad_settings_are_their_own_error_not_a_broken_image(photo):
    with pytest.raises(ValueError, match="resize must be 'crop' or 'pad'") as e:
        load_image(photo, decode_for={"resize": "squash"})
    assert not isinstance(e.value, ImageError)
    with pytest.raises(ValueError, match="crop_pct must be in"):
        model_input(photo, crop_pct=0.0)


@pytest.mark.slow
def test_the_app_and_feature_extraction_give_the_same_input_for_a_file(photo):
    """No train/serve skew: the Captioner (the app's path: it is handed the upload's path or bytes)
    and extraction's DataLoader dataset decode the same file to the same tensor, drafted."""
    from sat.captioner import Captioner
    from sat.paths import WEIGHTS
    from train.features import ImageFiles

    cap = Captioner.load(WEIGHTS / "soft", device="cpu")
    pp = cap.config.preprocessing
    served = cap.pixels([photo, photo.read_bytes()])  # (2, 3, S, S)
    extracted = ImageFiles([photo], pp)[0]
    assert torch.equal(served[0], extracted) and torch.equal(served[1], extracted)
    assert not torch.equal(extracted, preprocess(load_image(photo), **pp))  # both drafted, not full decodes


def test_preprocess_normalises_bit_for_bit_as_the_formula():
    """The in-place normalisation (cheaper in the decode workers) is exactly (x / 255 − mean) / std."""
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float()  # (3, S, S)
    expected = (x / 255.0 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    out = preprocess(img, mean=mean, std=std)
    assert out.is_contiguous() and torch.equal(out, expected)
