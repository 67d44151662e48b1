"""token_nll: the same values and gradients as F.cross_entropy, in float32 and from bf16 logits."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sat.xent as X
from sat.xent import token_nll


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_cross_entropy_values_and_gradients_across_chunks(monkeypatch, dtype):
    monkeypatch.setattr(X, "CHUNK_ELEMENTS", 7 * 11)  # 7 rows per chunk: 23 rows → 4 chunks, the last short
    torch.manual_seed(0)
    z0 = (torch.randn(23, 11) * 4).to(dtype)
    y = torch.randint(0, 11, (23,))
    g = torch.rand(23)
    outs = []
    for fn in (lambda z: F.cross_entropy(z.float(), y, reduction="none"), lambda z: token_nll(z, y)):
        z = z0.clone().requires_grad_()
        out = fn(z)
        (out * g).sum().backward()
        outs.append((out.detach(), z.grad))
    (ref, gref), (got, ggot) = outs
    assert got.dtype == torch.float32 and ggot.dtype == dtype
    assert torch.allclose(got, ref, atol=1e-5)
    assert torch.allclose(ggot.float(), gref.float(), atol=1e-5 if dtype == torch.float32 else 1e-2)


def test_gradient_leaves_the_logits_untouched_and_checks_shapes():
    z = torch.randn(5, 4, requires_grad=True)
    before = z.detach().clone()
    token_nll(z, torch.tensor([0, 1, 2, 3, 0])).sum().backward()
    assert torch.equal(z.detach(), before)  # the float32 backward writes into the gradient, not the logits
    assert torch.allclose(z.grad.sum(1), torch.zeros(5), atol=1e-6)  # softmax − one-hot sums to 0
    with pytest.raises(ValueError, match="expected logits"):
        token_nll(torch.randn(2, 3, 4), torch.zeros(2, dtype=torch.long))
