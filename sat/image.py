"""The one image path shared by training, evaluation and inference: `model_input` decodes
(`load_image`), then resizes, crops or pads and normalises (`preprocess`) as the encoder's pretrained
configuration says. A big JPEG is decoded straight at the smallest DCT scale that still covers the
size `preprocess` resizes it to (PIL's JPEG draft): a 640×480 photo for a 224 input decodes at
320×240, about twice as fast, and the app and feature extraction decode it the same way.

`square_frame` owns the geometry (where the photo lands in the encoder's square input); `preprocess`
and the attention overlays of `sat/viz.py` both use it, so an attention map is drawn exactly over the
pixels the model saw, whatever the crop fraction or the resize mode.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESS_VERSION = 3  # bump when preprocessing changes: it is part of the feature-cache key
# NOTE: 3: JPEGs decode at the DCT scale the model's input size needs (`load_image(decode_for=...)`)
MAX_DECODE_SIDE = 4096  # NOTE: huge photos are downscaled while decoding (JPEG draft) before resizing
MAX_DECODE_PIXELS = 40_000_000
"""Images with more pixels than this (after the JPEG draft) are refused from their header, before
decoding: a small file (a 41 KB 1-bit PNG of 12000×12000) would otherwise cost gigabytes and
seconds. NOTE: PIL's own limit (Image.MAX_IMAGE_PIXELS, ≈ 89 MP warns, ≈ 179 MP raises) is too
high for a shared server; 40 MP (a 7700×5200 photo) keeps one decode within a few hundred MB."""
RESIZE_MODES = ("crop", "pad")
INTERPOLATIONS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
                  "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}
"""timm's interpolation names (pretrained_cfg['interpolation']) → PIL resampling filters."""


class ImageError(ValueError):
    """An input that is not a usable image; the message says why, for the person who sent it."""


def load_image(source: str | Path | bytes | Image.Image, *,
               decode_for: Mapping[str, Any] | None = None) -> Image.Image:
    """Open any image PIL reads and return it as 8-bit RGB, upright (EXIF orientation applied).

    Handles 16-bit and float greyscale, CMYK, palette and alpha (composited on white), animated
    images (first frame). Raises `ImageError` with a readable message for anything else.

    `decode_for` (a model's preprocessing settings, `ModelConfig.preprocessing`): a JPEG is decoded
    at the smallest DCT scale (1, 1/2, 1/4 or 1/8) that still leaves the upright photo at least as
    large as `preprocess` will resize it to (`model_input`; the app decodes once this way and captions the
    decoded image several times, the same input bit for bit). Other formats, and
    JPEGs under twice that size on either side, decode bit for bit as without it.
    """
    name = "image"
    frame = _frame_settings(decode_for)  # NOTE: bad settings are their own ValueError, not "broken data"
    try:
        if isinstance(source, Image.Image):
            img = source
        else:
            if isinstance(source, (bytes, bytearray)):
                if len(source) == 0:
                    raise ImageError("the file is empty")
                fp: io.BytesIO | str = io.BytesIO(source)
            else:
                name = os.path.basename(str(source))
                if not os.path.isfile(source):
                    raise ImageError(f"{name}: no such file")
                if os.path.getsize(source) == 0:
                    raise ImageError(f"{name}: the file is empty")
                fp = str(source)
            img = Image.open(fp)
            jpeg = getattr(img, "format", None) == "JPEG"
            request = _cap_request(img.size) if jpeg else img.size
            # NOTE: the limit is checked at the size the MAX_DECODE_SIDE draft alone decodes to, so a
            # file is refused or accepted the same with or without `decode_for` (app and training alike)
            w, h = _drafted_size(img.size, request)
            if w * h > MAX_DECODE_PIXELS:  # the header's size: nothing decoded yet
                raise ImageError(f"{name}: too many pixels to decode safely ({w}×{h} = "
                                 f"{w * h / 1e6:.0f} MP; the limit is "
                                 f"{MAX_DECODE_PIXELS / 1e6:.0f} MP): scale it down first")
            if jpeg:  # cheap 1/2..1/8 downscale in the DCT while decoding
                if frame is not None:
                    need = _model_size(img.size, frame)
                    request = (min(request[0], need[0]), min(request[1], need[1]))
                img.draft("RGB", request)  # NOTE: PIL's draft keeps both sides ≥ the request; once per file
            img.seek(0)  # animated GIF/WebP/PNG: the first frame
            img.load()
            img = _reduce(img)
        return _to_rgb(ImageOps.exif_transpose(img))
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: too many pixels to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated / corrupt data
        raise ImageError(f"{name}: the image data is broken ({e})") from None


def model_input(source: str | Path | bytes | Image.Image, **preprocessing: Any) -> torch.Tensor:
    """The one path from an image to the encoder's input (3, S, S): `load_image` decoding for these
    settings, then `preprocess` with them. The app (`Captioner.pixels`), feature extraction and the
    benches all call it, so a file gives the same features when training and when serving.

    NOTE: an already decoded PIL image cannot use the JPEG draft: it is preprocessed from its
    full-size pixels (close to, not bit-equal with, the drafted decode of its file for big JPEGs).
    """
    return preprocess(load_image(source, decode_for=preprocessing), **preprocessing)


def _frame_settings(decode_for: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The `square_frame` keywords of a preprocessing dict (preprocess's defaults filled in), checked."""
    if decode_for is None:
        return None
    frame = {"image_size": decode_for.get("image_size", 224), "resize": decode_for.get("resize", "crop"),
             "crop_pct": decode_for.get("crop_pct", 1.0)}
    square_frame((1, 1), **frame)  # raises a one-line ValueError for a bad resize / crop_pct
    return frame


def _cap_request(size: tuple[int, int]) -> tuple[int, int]:
    """The draft request that brings the long side down towards MAX_DECODE_SIDE (the full size below it)."""
    k = min(1.0, MAX_DECODE_SIDE / max(size))
    return max(1, math.ceil(size[0] * k)), max(1, math.ceil(size[1] * k))


def _drafted_size(size: tuple[int, int], request: tuple[int, int]) -> tuple[int, int]:
    """The size `JpegImageFile.draft(mode, request)` decodes a `size` JPEG to: the largest scale 1/s,
    s in (8, 4, 2, 1), with s ≤ min(W // w, H // h), i.e. both sides stay ≥ the request; (W, H)
    rounded up. NOTE: mirrors PIL 12's JpegImagePlugin (tests/sat/test_image_draft.py checks it)."""
    (w, h), (rw, rh) = size, request
    q = min(w // max(1, rw), h // max(1, rh))
    s = next(s for s in (8, 4, 2, 1) if q >= s or s == 1)
    return -(-w // s), -(-h // s)


def _model_size(size: tuple[int, int], frame: dict[str, Any]) -> tuple[int, int]:
    """The size `preprocess` resizes a `size` photo to (nw, nh).

    NOTE: computed on the stored size, before the EXIF turn: the square frame turns with the photo
    (`square_frame((h, w))` is `square_frame((w, h))` with the sides swapped), so a phone's portrait
    photo stored transposed (EXIF orientations 5-8) gets the request for its stored pixels as it is."""
    nw, nh, _, _ = square_frame(size, **frame)
    return nw, nh


def _reduce(img: Image.Image) -> Image.Image:
    """Box-downscale a decoded image whose long side exceeds MAX_DECODE_SIDE, as the JPEG draft does
    while decoding. NOTE: before `_to_rgb`, whose conversions copy the image several times (16-bit
    and alpha images: up to ≈ 25 bytes per pixel); preprocess would box-reduce it anyway."""
    factor = math.ceil(max(img.size) / MAX_DECODE_SIDE)
    if factor < 2:
        return img
    if img.mode in ("P", "PA"):  # palette indices cannot be averaged
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    elif img.mode == "1" or img.mode.startswith("I;16"):  # modes reduce() does not take
        img = img.convert("L" if img.mode == "1" else "I")
    return img.reduce(factor)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.width < 1 or img.height < 1:
        raise ImageError("the image has no pixels")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # NOTE: PIL's convert('RGB') clips 16-bit values at 255 (a white image); rescale instead.
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        top = 65535.0 if img.mode != "F" and hi > 255 else max(hi, 1.0)
        if img.mode == "F":
            top, a = max(hi - lo, 1e-12), a - lo
        a = np.clip(a / top * 255.0, 0, 255).astype(np.uint8)
        img = Image.fromarray(a)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def square_frame(size: tuple[int, int], *, image_size: int, resize: str = "crop",
                 crop_pct: float = 1.0) -> tuple[int, int, int, int]:
    """Where a (W, H) photo lands in the encoder's S×S input: (nw, nh, ox, oy).

    The photo is resized to nw×nh and its top-left corner placed at (ox, oy) of the square
    (negative when it is cropped). ``resize="crop"`` scales the short side to ⌊S / crop_pct⌋ (timm's
    eval transform: crop_pct 0.875 at S=224 resizes to 256) and takes the centre S×S;
    ``resize="pad"`` scales the long side to S and centres the photo (crop_pct does not apply).
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be 'crop' or 'pad', got {resize!r}")
    if not 0.0 < crop_pct <= 2.0:
        raise ValueError(f"crop_pct must be in (0, 2], got {crop_pct}")
    w, h = size
    if w < 1 or h < 1:
        raise ValueError(f"size must be a positive (W, H), got {size!r}")
    if resize == "crop":
        scale = math.floor(image_size / crop_pct) / min(w, h)
    else:
        scale = image_size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if resize == "crop":
        return nw, nh, -((nw - image_size) // 2), -((nh - image_size) // 2)
    return nw, nh, (image_size - nw) // 2, (image_size - nh) // 2


def preprocess(img: Image.Image, *, image_size: int = 224, resize: str = "crop",
               mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
               interpolation: str = "bicubic", crop_pct: float = 1.0) -> torch.Tensor:
    """RGB PIL image → normalised float tensor (3, S, S), placed as `square_frame` says.

    The defaults are the embedded efficientnet-lite0's (ImageNet statistics, bicubic, no margin);
    `ModelConfig.preprocessing` gives the values a model was trained with. Whatever of the square
    the photo does not cover (padding) is the mean colour, i.e. 0 after normalisation.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
    nw, nh, ox, oy = square_frame(img.size, image_size=image_size, resize=resize, crop_pct=crop_pct)
    if (nw, nh) != img.size:
        # NOTE: reducing_gap makes a big downscale a fast box-reduce followed by the filter proper.
        img = img.resize((nw, nh), INTERPOLATIONS[interpolation], reducing_gap=3.0)
    if (nw, nh, ox, oy) != (image_size, image_size, 0, 0):
        # NOTE: pasting at (ox, oy) on a mean-coloured square is the centre crop (negative offsets)
        # and the padding alike, in one code path that copies pixels exactly.
        canvas = Image.new("RGB", (image_size, image_size), tuple(round(255 * m) for m in mean))
        canvas.paste(img, (ox, oy))
        img = canvas
    # NOTE: one contiguous float copy normalised in place: the same arithmetic, bit for bit, as
    # (x / 255 - mean) / std, at about half the cost (it runs per image in the decode workers)
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous().float()  # (3, S, S)
    return x.div_(255.0).sub_(torch.tensor(mean).view(3, 1, 1)).div_(torch.tensor(std).view(3, 1, 1))
