"""Linear maps applied at every step of a recurrence, with one weight-gradient matmul for all steps.

An LSTM applies the same W_ih, W_hh at each of T steps. Plain autograd computes ∂L/∂W once per
step — a (out, b) @ (b, in) matmul with a short inner dimension b (the batch rows still running)
— and then adds the T full-size results into one buffer: for W_ih at 512 units and D = 1280 that is
T writes *and* T read-modify-writes of a 15 MB matrix per training step. Here each step's backward
only computes ∂L/∂x and keeps (x_t, ∂L/∂y_t); once every step is done, one matmul over all N
rows gives the same sum:

    ∂L/∂W = Σ_t (∂L/∂y_t)ᵀ x_t = [∂L/∂y_1; …; ∂L/∂y_T]ᵀ [x_1; …; x_T],   ∂L/∂b = Σ_t Σ_rows ∂L/∂y_t

How autograd is made to call it last: the weights enter the graph through `_Collect`, whose output
is a 0-dim *token* that every step takes as an input. The engine runs a node's backward only once
all its consumers are done, so `_Collect.backward` runs after the last step's, and returns ∂L/∂W.
`StepLinear` falls back to plain `F.linear` when no gradient is needed or under autocast.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function


class StepLinear:
    """y = x Wᵀ + b at many steps of one forward pass (create one per forward pass)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight, self.bias = weight, bias
        self.xs: list[torch.Tensor] = []
        self.gys: list[torch.Tensor] = []
        deferred = (torch.is_grad_enabled() and weight.requires_grad
                    and not torch.is_autocast_enabled(weight.device.type))
        self.token = _Collect.apply(weight, bias, self) if deferred else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.token is None:
            return F.linear(x, self.weight, self.bias)
        return _Step.apply(x, self.token, self)


class _Collect(Function):
    @staticmethod
    def forward(ctx, weight, bias, owner: StepLinear):
        ctx.owner, ctx.has_bias = owner, bias is not None
        return weight.new_zeros(())  # the token

    @staticmethod
    def backward(ctx, _token_grad):
        o = ctx.owner
        gy, x = torch.cat(o.gys), torch.cat(o.xs)  # (N, out), (N, in)
        o.gys.clear()
        o.xs.clear()
        return gy.t() @ x, (gy.sum(0) if ctx.has_bias else None), None  # (out, in), (out,)


class _Step(Function):
    @staticmethod
    def forward(ctx, x, token, owner: StepLinear):
        ctx.owner = owner
        ctx.save_for_backward(x)
        b = None if owner.bias is None else owner.bias.detach()
        return F.linear(x, owner.weight.detach(), b)

    @staticmethod
    def backward(ctx, gy):
        (x,) = ctx.saved_tensors
        o = ctx.owner
        o.xs.append(x)
        o.gys.append(gy)
        dx = gy @ o.weight.detach() if ctx.needs_input_grad[0] else None
        return dx, gy.new_zeros(()), None


class StepLSTMCell:
    """`nn.LSTMCell`'s step (gates i, f, g, o) on its own parameters, through `StepLinear`."""

    def __init__(self, cell: nn.LSTMCell):
        self.ih = StepLinear(cell.weight_ih, cell.bias_ih)
        self.hh = StepLinear(cell.weight_hh, cell.bias_hh)

    def __call__(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        i, f, g, o = (self.ih(x) + self.hh(h)).chunk(4, dim=1)  # (B, n) each
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
