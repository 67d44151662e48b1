"""Per-token cross-entropy −log p(y_t | …) of eq. (14)'s first term, in cache-sized row chunks.

    nll_i = logsumexp_j(z_ij) − z_{i,y_i}          ∂nll_i/∂z_ij = softmax(z_i)_j − [j = y_i]

`F.cross_entropy(logits.float(), y, reduction="none")` computes the same numbers, but on an (N, V)
logit matrix it makes several full passes through memory: a float32 copy (under bf16 autocast),
the log-softmax output, a zero-filled one-hot gradient, the log-softmax backward and a copy back.
With V = 10k words and N ≈ 1k tokens each pass is ~40 MB. Here the forward keeps only the row's
log-sum-exp, and the backward rebuilds softmax − one-hot chunk by chunk straight into the gradient,
in float32 whatever the logits' dtype. Used only with the CPU kernels on (sat/kernels.py); on CUDA
and under torch.compile the loss takes `F.cross_entropy`.
"""
from __future__ import annotations

import torch
from torch.autograd import Function

CHUNK_ELEMENTS = 1 << 18
"""Logits (rows × V) handled at a time: ~1 MB of float32, so the temporaries stay in cache."""


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (N, V) any float dtype, targets (N,) long → −log softmax(logits)[target] (N,) float32."""
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, V) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}")
    return _TokenNLL.apply(logits, targets)


def _rows(v: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, v))


class _TokenNLL(Function):
    @staticmethod
    def forward(ctx, logits, targets):
        n, v = logits.shape
        rows = _rows(v)
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        picked = logits.gather(1, targets[:, None]).squeeze(1).float()  # (N,) z_{i, y_i}
        for i in range(0, n, rows):
            lse[i:i + rows] = torch.logsumexp(logits[i:i + rows].float(), dim=1)  # (c,)
        ctx.save_for_backward(logits, targets, lse)
        return lse - picked  # (N,)

    @staticmethod
    def backward(ctx, g):
        logits, targets, lse = ctx.saved_tensors
        n, v = logits.shape
        rows = _rows(v)
        grad = torch.empty_like(logits)
        in_place = logits.dtype == torch.float32
        for i in range(0, n, rows):
            j = slice(i, i + rows)
            # softmax of the chunk, written straight into the gradient when it is float32
            p = torch.sub(logits[j].float(), lse[j, None], out=grad[j] if in_place else None).exp_()  # (c, V)
            p.scatter_add_(1, targets[j, None], p.new_full((p.size(0), 1), -1.0))  # − one-hot
            p.mul_(g[j, None].float())
            if not in_place:
                grad[j] = p
        return grad, None
