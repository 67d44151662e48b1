"""Decoder interface, soft attention, the loss (masking, doubly stochastic term), config validation."""
from __future__ import annotations

import pytest
import torch

from sat.attention import SoftAttention, create_attention
from sat.config import ModelConfig
from sat.decoders import Decoder, create_decoder
from sat.model import CaptionModel


def cfg(**kw) -> ModelConfig:
    base = dict(encoder="test-tiny", encoder_dim=8, grid=(2, 3), vocab_size=11, embed_dim=8,
                attention_dim=6, decoder_dim=12, dropout=0.0)
    return ModelConfig(**{**base, **kw})


def test_soft_attention_is_a_distribution_and_weights_the_context():
    torch.manual_seed(0)
    att = SoftAttention(encoder_dim=5, decoder_dim=4, attention_dim=3)
    feats = torch.randn(2, 7, 5)
    ctx, alpha, logp = att(feats, att.prepare(feats), torch.randn(2, 4))
    assert logp is None
    assert alpha.shape == (2, 7) and ctx.shape == (2, 5)
    assert torch.allclose(alpha.sum(-1), torch.ones(2))
    assert torch.allclose(ctx, (alpha.unsqueeze(-1) * feats).sum(1), atol=1e-6)
    with pytest.raises(ValueError, match="unknown attention"):
        create_attention("telepathic", encoder_dim=5, decoder_dim=4, attention_dim=3)


def test_teacher_forcing_equals_step_by_step():
    torch.manual_seed(0)
    dec = create_decoder(cfg()).eval()
    feats = torch.randn(3, 6, 8)
    inputs = torch.randint(1, 11, (3, 5))
    fast_logits, fast_alpha, _ = dec(feats, inputs)
    slow_logits, slow_alpha, _ = Decoder.forward(dec, feats, inputs)  # the generic step loop
    assert fast_logits.shape == (3, 5, 11) and fast_alpha.shape == (3, 5, 6)
    assert torch.allclose(fast_logits, slow_logits, atol=1e-5)
    assert torch.allclose(fast_alpha, slow_alpha, atol=1e-6)


def test_gate_is_optional_and_changes_the_output():
    torch.manual_seed(0)
    a = create_decoder(cfg(gate=True))
    torch.manual_seed(0)
    b = create_decoder(cfg(gate=False))
    assert a.gate is not None and b.gate is None
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters()) + 12 + 1


def test_loss_ignores_padding():
    torch.manual_seed(0)
    model = CaptionModel(cfg()).eval()
    fmap = torch.randn(2, 8, 2, 3)
    caps = torch.tensor([[1, 5, 6, 2, 0, 0], [1, 7, 8, 9, 10, 2]])
    loss1, _ = model.loss(fmap, caps, alpha_c=0.0)
    # the padded row scored alone equals the row with its padding trimmed
    l_a, st_a = model.loss(fmap[:1], caps[:1, :4], alpha_c=0.0)
    l_b, st_b = model.loss(fmap[:1], caps[:1], alpha_c=0.0)
    assert l_a.item() == pytest.approx(l_b.item(), abs=1e-6)
    assert st_b["tokens"] == 3
    assert loss1.item() > 0


def test_doubly_stochastic_term_matches_its_formula():
    torch.manual_seed(0)
    model = CaptionModel(cfg()).eval()
    fmap = torch.randn(2, 8, 2, 3)
    caps = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 8, 9, 2]])
    l0, st0 = model.loss(fmap, caps, alpha_c=0.0)
    l1, st1 = model.loss(fmap, caps, alpha_c=1.0)
    _, alphas, _ = model.decoder(model.annotations(fmap), caps[:, :-1])  # (B, T, L)
    mask = (caps[:, 1:] != 0).float().unsqueeze(-1)
    # averaged over the B·L locations (the paper sums over L; see sat.attention.doubly_stochastic)
    expected = ((1 - (alphas * mask).sum(1)) ** 2).sum(1).mean() / alphas.shape[-1]
    assert st1["att_reg"] == pytest.approx(expected.item(), rel=1e-5)
    assert (l1 - l0).item() == pytest.approx(expected.item(), rel=1e-4)


def test_blind_model_ignores_the_image():
    torch.manual_seed(0)
    model = CaptionModel(cfg(blind=True)).eval()
    caps = torch.tensor([[1, 5, 6, 2]])
    a, _ = model.loss(torch.randn(1, 8, 2, 3), caps)
    b, _ = model.loss(torch.randn(1, 8, 2, 3), caps)
    assert a.item() == pytest.approx(b.item())


def test_config_validation_and_round_trip(tmp_path):
    c = cfg()
    c.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == c
    with pytest.raises(ValueError, match="attention"):
        cfg(attention="psychic")
    with pytest.raises(ValueError, match="dropout"):
        cfg(dropout=1.5)
    with pytest.raises(ValueError, match="unknown keys"):
        ModelConfig.from_dict({**c.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="vocab_size"):
        create_decoder(cfg(vocab_size=0))
