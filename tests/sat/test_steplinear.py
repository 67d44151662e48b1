"""StepLinear / StepLSTMCell: the same values and gradients as nn.Linear / nn.LSTMCell over a
recurrence, with the weight gradient taken in one matmul after the last step."""
from __future__ import annotations

import torch
from torch import nn

from sat.steplinear import StepLinear, StepLSTMCell


def _unroll(cell_fn, xs, h, c):
    outs = []
    for t, x in enumerate(xs):
        b = x.size(0)  # a shrinking batch, as the decoder's packed recurrence
        h, c = cell_fn(x, (h[:b], c[:b]))
        outs.append(h)
    return torch.cat(outs)


def _cell_then_step_cell(*, bf16: bool):
    """nn.LSTMCell, then StepLSTMCell on the same weights over a shrinking batch (under bf16 autocast
    or not) → the cell, and for each: (parameter gradients, input gradients, outputs as float32)."""
    torch.manual_seed(0)
    cell = nn.LSTMCell(6, 5)
    xs = [torch.randn(b, 6) for b in (4, 4, 3, 1)]
    h0, c0 = torch.randn(4, 5), torch.randn(4, 5)
    results = []
    for make in (lambda: cell, lambda: StepLSTMCell(cell)):  # NOTE: made inside autocast, as the decoder does
        cell.zero_grad()
        x_req = [x.clone().requires_grad_() for x in xs]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = _unroll(make(), x_req, h0, c0)
        (out.float() * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        results.append(({k: p.grad.clone() for k, p in cell.named_parameters()}, [x.grad for x in x_req], out.float()))
    return cell, results


def test_step_lstm_cell_matches_lstm_cell_values_and_gradients():
    _, ((g_ref, gx_ref, out_ref), (g, gx, out)) = _cell_then_step_cell(bf16=False)
    assert torch.allclose(out, out_ref, atol=1e-6)
    for k in g_ref:
        assert torch.allclose(g[k], g_ref[k], atol=1e-5), k
    for a, b in zip(gx, gx_ref):
        assert torch.allclose(a, b, atol=1e-6)


def test_weight_gradient_arrives_once_after_the_last_step():
    lin = nn.Linear(3, 2)
    calls = []
    lin.weight.register_hook(lambda g: calls.append(g.clone()))
    step = StepLinear(lin.weight, lin.bias)
    y = sum(step(torch.ones(2, 3) * t).sum() for t in range(1, 4))
    y.backward()
    assert len(calls) == 1  # one weight gradient for the three steps, not three
    assert torch.allclose(lin.weight.grad, torch.full((2, 3), 2.0 * (1 + 2 + 3)))
    assert torch.allclose(lin.bias.grad, torch.full((2,), 6.0))


def test_falls_back_to_a_plain_linear_without_grad():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        assert StepLinear(lin.weight, lin.bias).token is None


def test_under_bf16_autocast_matches_nn_lstm_cell_and_casts_the_weights_once():
    cell, ((g_ref, _, out_ref), (g, _, out)) = _cell_then_step_cell(bf16=True)
    assert torch.allclose(out, out_ref, atol=3e-2)  # bf16 matmuls both ways
    for k in g_ref:
        assert g[k].dtype == torch.float32
        assert torch.allclose(g[k], g_ref[k], atol=5e-2, rtol=5e-2), k
    assert (g["weight_ih"] - g_ref["weight_ih"]).abs().max() < 0.1 * g_ref["weight_ih"].abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        step = StepLinear(cell.weight_ih, cell.bias_ih)
        assert step.token is not None and step.w.dtype == torch.bfloat16
        assert step(torch.ones(1, 6)).dtype == torch.bfloat16
