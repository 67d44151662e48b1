"""CaptionModel: the trainable part (encoder tail + decoder) and its training objective.

The loss is the paper's eq. (14) for soft attention:

    L_d = −Σ_t log p(y_t | a, y_<t) + λ Σ_i (1 − Σ_t α_ti)²

The first term is averaged over real tokens only (padding carries no loss); the second, the
doubly stochastic regulariser (§4.2.1), pushes the model to look at every part of the image over
the course of the caption: Σ_t runs over real steps only, and the paper's Σ_i over the L locations
is an average here (1/L Σ_i), so it sits on the cross-entropy's per-token scale whatever the grid
(`sat.attention.doubly_stochastic`).

The training loop sees only `model(fmap, captions)` = `forward`, the loss with its stats as 0-dim
tensors (no host sync inside, so `torch.compile` and DistributedDataParallel see one graph-friendly
call), so it works with any decoder the registry builds; `loss(...)` is the same with the stats as
floats. The per-token cross-entropy is `sat.xent.token_nll` with the CPU kernels on
(sat/kernels.py), else `F.cross_entropy`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .decoders import create_decoder
from .kernels import use_cpu_kernels
from .xent import token_nll


class CaptionModel(nn.Module):
    """Encoder tail (fine-tuned blocks, often empty) + decoder.

    Input is the encoder *trunk* feature map (B, C, h, w) — what the feature cache stores — so
    training from the cache and captioning from pixels share one path.
    """

    def __init__(self, config: ModelConfig, *, tail: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.tail = tail if tail is not None else nn.Sequential()
        self.decoder = create_decoder(config)

    def annotations(self, fmap: torch.Tensor) -> torch.Tensor:
        """Trunk map (B, C, h, w) → annotation vectors (B, L, D); zeros for the blind baseline."""
        x = self.tail(fmap)  # (B, D, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B, L, D)
        if self.config.blind:
            x = torch.zeros_like(x)
        return x

    def forward(self, fmap: torch.Tensor, captions: torch.Tensor, *, pad_id: int = 0,
                alpha_c: float = 1.0, n_tokens: float | None = None,
                share: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """fmap (B, C, h, w), captions (B, T+1) = <start> w_1 … <end> <pad>… → scalar loss, stats.

        Stats ("loss", "xent", the attention kind's, "tokens") are detached 0-dim tensors.
        The attention kind adds its own terms (`Decoder.regularizer`): the doubly stochastic
        penalty for soft/dot, REINFORCE + entropy for hard, nothing for uniform.

        Data parallelism (train/loop.py): a rank holding part of a global batch passes the global
        batch's token count as `n_tokens` and its part's fraction of the pairs as `share`; the
        ranks' losses (and "loss"/"xent" stats) then add up to the loss of the whole batch.
        """
        inputs, targets = captions[:, :-1], captions[:, 1:]  # (B, T) each
        self.decoder.begin_batch()
        mask = targets != pad_id  # (B, T)
        logits, alphas, sample_logp = self.decoder(self.annotations(fmap), inputs, mask)  # (N|B·T, V), (B, T, L)
        nll = nll_grid(logits, targets, mask)  # (B, T), 0 at pads
        mask = mask.float()
        denom = mask.sum().clamp_min(1.0) if n_tokens is None else max(float(n_tokens), 1.0)
        xent = nll.sum() / denom
        extra, stats = self.decoder.regularizer(alphas, sample_logp, -nll, mask, alpha_c=alpha_c)  # -nll: (B, T)
        loss = xent + share * extra
        return loss, {"loss": loss.detach(), "xent": xent.detach(), **stats, "tokens": mask.sum()}

    def loss(self, fmap: torch.Tensor, captions: torch.Tensor, **kwargs) -> tuple[torch.Tensor, dict[str, float]]:
        """`forward` with the stats as floats (one host sync; keyword arguments as `forward`'s)."""
        loss, stats = self(fmap, captions, **kwargs)
        return loss, stats_to_floats(stats)


def nll_grid(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """−log p(y_t) as a (B, T) float32 grid, 0 at pads, from either decoder output layout:
    logits (N, V) over `mask`'s real tokens (the packed CPU path; the chunked kernel of sat/xent.py
    with the CPU kernels on) or (B, T, V) over every position (the plain path: `F.cross_entropy`,
    static shapes, no host sync).

    NOTE: float32 whatever the logits' dtype: under bf16 autocast a bf16 token count is inexact above
    256, and the loss is summed in float32."""
    if logits.dim() == 3:
        nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")  # (B·T,)
        return torch.where(mask, nll.view(targets.shape), 0.0)  # (B, T)
    real = targets[mask]  # (N,)
    nll = token_nll(logits, real) if use_cpu_kernels(logits) else F.cross_entropy(logits.float(), real, reduction="none")
    return logits.new_zeros(mask.shape, dtype=torch.float32).masked_scatter(mask, nll)


def stats_to_floats(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """0-dim tensor stats → floats in one device-to-host copy."""
    if not stats:
        return {}
    values = torch.stack([v.detach().float().reshape(()) for v in stats.values()]).tolist()
    return dict(zip(stats, values))
