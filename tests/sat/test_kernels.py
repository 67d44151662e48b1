"""The CPU kernels' switch (sat/kernels.py): both paths give the same loss and gradients, "auto" is
CPU-only, and torch.compile of the loss equals eager (with the plain ops)."""
from __future__ import annotations

import pytest
import torch

from sat.attention import SoftAttention
from sat.config import ModelConfig
from sat.kernels import cpu_kernels, use_cpu_kernels
from sat.model import CaptionModel
from sat.steplinear import StepLSTMCell

CAPS = torch.tensor([[1, 5, 6, 2, 0, 0], [1, 7, 8, 9, 10, 2], [1, 4, 2, 0, 0, 0]])  # (B, T+1), ragged


def make(**kw) -> CaptionModel:
    torch.manual_seed(0)
    base = dict(encoder="test-tiny", encoder_dim=8, grid=(2, 3), vocab_size=11, embed_dim=8,
                attention_dim=6, decoder_dim=12, dropout=0.0)
    return CaptionModel(ModelConfig(**{**base, **kw}))


def loss_and_grads(model: CaptionModel, forward=None, seed: int = 1):
    torch.manual_seed(seed)  # NOTE: hard attention samples locations: the same draws on both paths
    fmap = torch.randn(3, 8, 2, 3)
    model.zero_grad(set_to_none=True)
    loss, stats = (model if forward is None else forward)(fmap, CAPS, alpha_c=0.5)
    loss.backward()
    return loss.detach(), stats, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", [dict(), dict(attention="hard"), dict(decoder="gru"), dict(attention="dot")])
def test_kernel_and_plain_paths_give_the_same_loss_and_gradients(kind):
    model = make(**kind).train()
    if kind.get("attention") == "hard":
        # NOTE: the packed path samples locations for the captions still running, in length order;
        # the plain path for every row in batch order: other draws. The expected-context batch (half
        # of hard attention's batches) is deterministic and compares exactly.
        model.decoder.attention.begin_batch = lambda: setattr(model.decoder.attention, "expected", True)
    with cpu_kernels("on"):
        on = loss_and_grads(model)
    with cpu_kernels("off"):
        off = loss_and_grads(model)
    assert torch.allclose(on[0], off[0], rtol=1e-6, atol=1e-6)
    assert on[1].keys() == off[1].keys()
    assert on[2].keys() == off[2].keys() and len(on[2]) > 5
    for name, g in on[2].items():
        assert torch.allclose(g, off[2][name], rtol=1e-5, atol=1e-6), name


def test_the_switch_picks_the_path():
    dec = make().decoder
    with cpu_kernels("on"):
        assert isinstance(dec._forward_cell(), StepLSTMCell)
        with torch.no_grad():
            assert dec._forward_cell() is None  # inference: nn.LSTMCell itself
    with cpu_kernels("off"):
        assert dec._forward_cell() is None
    cpu, meta = torch.zeros(1), torch.zeros(1, device="meta")
    assert use_cpu_kernels(cpu) and not use_cpu_kernels(meta)  # "auto": CPU tensors only
    with cpu_kernels("on"):
        assert use_cpu_kernels(meta)
    with cpu_kernels("off"):
        assert not use_cpu_kernels(cpu)
    assert use_cpu_kernels(cpu)  # the block's setting ended with it
    with pytest.raises(ValueError, match="cpu_kernels must be one of"):
        with cpu_kernels("fast"):
            pass


@torch.no_grad()
def test_search_attention_in_chunks_or_plain_is_the_same():
    torch.manual_seed(0)
    att = SoftAttention(encoder_dim=5, decoder_dim=4, attention_dim=16)
    keys, query = att.prepare(torch.randn(300, 49, 5)), torch.randn(300, 4)
    att.CHUNK_ELEMENTS = 49 * 16 * 7  # several chunks
    with cpu_kernels("on"):
        chunked = att.weights(keys, query)
    with cpu_kernels("off"):
        plain = att.weights(keys, query)
    assert torch.allclose(chunked, plain, atol=1e-6)


@pytest.mark.slow
def test_compiled_loss_and_gradients_equal_eager():
    model = make().train()
    eager = loss_and_grads(model)
    compiled = loss_and_grads(model, torch.compile(model))
    assert torch.allclose(eager[0], compiled[0], rtol=1e-5, atol=1e-6)
    assert compiled[1]["tokens"] == eager[1]["tokens"] == 10
    for name, g in eager[2].items():
        assert torch.allclose(g, compiled[2][name], rtol=1e-4, atol=1e-6), name


def test_hard_attention_samples_on_both_paths():
    model = make(attention="hard").train()
    model.decoder.attention.begin_batch = lambda: setattr(model.decoder.attention, "expected", False)
    for mode in ("on", "off"):
        with cpu_kernels(mode):
            loss, stats, grads = loss_and_grads(model)
        assert torch.isfinite(loss) and stats["advantage"] > 0 and "reward" in stats, mode
        assert grads["decoder.attention.score.weight"].abs().sum() > 0, mode


def test_the_plain_path_makes_every_position_and_reads_nothing_on_the_host():
    model = make().train()
    fmap = torch.randn(3, 8, 2, 3)
    inputs, targets = CAPS[:, :-1], CAPS[:, 1:]
    mask = targets != 0
    with cpu_kernels("off"):
        logits, alphas, _ = model.decoder(model.annotations(fmap), inputs, mask)
    with cpu_kernels("on"):
        packed, alphas_p, _ = model.decoder(model.annotations(fmap), inputs, mask)
    assert logits.shape == (3, 5, 11) and packed.shape == (int(mask.sum()), 11)
    assert torch.allclose(logits[mask], packed, atol=1e-6) and torch.allclose(alphas, alphas_p, atol=1e-6)
    assert (alphas[~mask] == 0).all()


def test_sigmoid_tanh_matches_tanh_in_value_and_gradient():
    from sat.kernels import tanh_
    torch.manual_seed(0)
    x = torch.cat([torch.randn(4000) * 4, torch.tensor([0.0, 1e-8, -1e-5, 30.0, -30.0, 1e4])])
    for mode in ("on", "off"):
        leaf = x.clone().requires_grad_()
        with cpu_kernels(mode):
            y = tanh_(leaf * 1.0)  # a temporary, as in the attention
            assert not torch.isnan(y).any()
            assert torch.allclose(y, torch.tanh(x), rtol=0, atol=3e-7), mode
            (y * torch.linspace(-1, 1, len(x))).sum().backward()
        expected = torch.linspace(-1, 1, len(x)) * (1 - torch.tanh(x) ** 2)
        assert torch.allclose(leaf.grad, expected, rtol=1e-5, atol=1e-6), mode
        with torch.no_grad(), cpu_kernels(mode):
            t = x.clone()
            assert tanh_(t) is t and torch.allclose(t, torch.tanh(x), atol=3e-7)  # in place
    on = x.clone()
    with torch.no_grad(), cpu_kernels("on"):
        tanh_(on)
    assert not torch.equal(on, torch.tanh(x))  # the σ form really ran (it rounds differently)


def test_keep_freed_memory_sets_glibcs_thresholds(monkeypatch):
    import ctypes

    from sat import kernels

    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    assert kernels.keep_freed_memory() is True
    assert calls == [(kernels.M_MMAP_THRESHOLD, kernels.HEAP_KEEP_BYTES), (kernels.M_TRIM_THRESHOLD, kernels.HEAP_TRIM_BYTES)]
    calls.clear()
    assert kernels.keep_freed_memory(False) is True and calls == [(-3, 128 << 10), (-1, 128 << 10)]

    def no_libc(name):
        raise OSError("not glibc")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert kernels.keep_freed_memory() is False  # e.g. macOS: nothing set, nothing fails
    monkeypatch.undo()
