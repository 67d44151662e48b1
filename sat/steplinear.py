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
Under autocast (bf16) the weight is cast once per forward pass instead of once per step, the steps'
matmuls run in the autocast dtype, and ∂L/∂W is one autocast-dtype matmul returned in the weight's
dtype (float32), as autocast's own linear does. `StepLinear` falls back to plain `F.linear` when no
gradient is needed. The LSTM uses it only with the CPU kernels on (sat/kernels.py: CPU by default;
Dynamo cannot trace `_Collect`, so never under torch.compile).
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
        device = weight.device.type
        self.dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
        # NOTE: the steps' copies of W and b, cast once here (autocast would cast them at every step)
        self.w = weight.detach().to(self.dtype)
        self.b = None if bias is None else bias.detach().to(self.dtype)
        deferred = torch.is_grad_enabled() and weight.requires_grad
        self.token = _Collect.apply(weight, bias, self) if deferred else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.token is None:
            return F.linear(x, self.weight, self.bias)
        with torch.autocast(self.weight.device.type, enabled=False):  # NOTE: dtypes handled in _Step
            return _Step.apply(x, self.token, self)


class _Collect(Function):
    @staticmethod
    def forward(ctx, weight, bias, owner: StepLinear):
        ctx.owner, ctx.has_bias = owner, bias is not None
        return weight.new_zeros(())  # the token

    @staticmethod
    def backward(ctx, _token_grad):
        o = ctx.owner
        gy, x = torch.cat(o.gys), torch.cat(o.xs)  # (N, out), (N, in), in the steps' dtype
        o.gys.clear()
        o.xs.clear()
        gw = (gy.t() @ x).to(o.weight.dtype)  # (out, in)
        return gw, (gy.sum(0, dtype=o.weight.dtype) if ctx.has_bias else None), None  # (out,)


class _Step(Function):
    @staticmethod
    def forward(ctx, x, token, owner: StepLinear):
        ctx.owner, ctx.x_dtype = owner, x.dtype
        x = x.to(owner.dtype)
        ctx.save_for_backward(x)
        return F.linear(x, owner.w, owner.b)

    @staticmethod
    def backward(ctx, gy):
        (x,) = ctx.saved_tensors
        o = ctx.owner
        gy = gy.to(o.dtype)
        o.xs.append(x)
        o.gys.append(gy)
        dx = (gy @ o.w).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        return dx, gy.new_zeros(()), None


class StepLSTMCell:
    """`nn.LSTMCell`'s step (gates i, f, g, o) on its own parameters, through `StepLinear`."""

    def __init__(self, cell: nn.LSTMCell):
        self.ih = StepLinear(cell.weight_ih, cell.bias_ih)
        self.hh = StepLinear(cell.weight_hh, cell.bias_hh)

    def __call__(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        # NOTE: .float(): under bf16 autocast the matmuls run in bf16, the gates and the cell state in float32
        i, f, g, o = (self.ih(x).float() + self.hh(h).float()).chunk(4, dim=1)  # (B, n) each
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
