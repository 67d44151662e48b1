"""Decoder and attention registries: names derived from them, a new decoder is one registered class,
and no import cycle among the model library's modules."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sat.config as C
from sat.attention import Attention, SoftAttention, list_attentions, register_attention
from sat.config import ModelConfig
from sat.decoders import create_decoder, decoder_class, list_decoders, register_decoder
from sat.decoders.lstm import LSTMDecoder
from sat.decoders.registry import _DECODERS

SAT = Path(__file__).resolve().parents[2] / "sat"


def cfg(**kw) -> ModelConfig:
    base = dict(encoder="test-tiny", encoder_dim=8, grid=(2, 3), vocab_size=11, embed_dim=8,
                attention_dim=6, decoder_dim=12, dropout=0.0)
    return ModelConfig(**{**base, **kw})


def test_names_come_from_the_registries():
    assert C.DECODERS == tuple(list_decoders()) == ("gru", "lstm", "transformer")
    assert C.ATTENTIONS == tuple(list_attentions()) == ("dot", "hard", "soft", "uniform")
    assert decoder_class("lstm") is LSTMDecoder
    with pytest.raises(ValueError, match="unknown decoder 'rnn'; known: gru, lstm, transformer"):
        decoder_class("rnn")
    with pytest.raises(ValueError, match="decoder must be one of"):
        cfg(decoder="rnn")
    with pytest.raises(ValueError, match="attention must be one of"):
        cfg(attention="telepathic")


def test_a_new_decoder_and_attention_are_one_registered_class_each():
    @register_attention("test-first")
    class FirstLocation(SoftAttention):
        def forward(self, feats, keys, query):
            alpha = torch.zeros(feats.shape[:2]).index_fill_(1, torch.tensor([0]), 1.0)  # (B, L)
            return feats[:, 0], alpha, None

    @register_decoder("test-lstm-nogate")
    class NoGate(LSTMDecoder):
        @classmethod
        def check_config(cls, config):
            if config.gate:
                raise ValueError("test-lstm-nogate takes gate=False")

        @classmethod
        def from_config(cls, config):
            return cls(vocab_size=config.vocab_size, encoder_dim=config.encoder_dim, embed_dim=config.embed_dim,
                       decoder_dim=config.decoder_dim, attention=cls.make_attention(config),
                       dropout=config.dropout, gate=False)
    try:
        assert "test-lstm-nogate" in C.DECODERS and "test-first" in C.ATTENTIONS
        with pytest.raises(ValueError, match="takes gate=False"):
            cfg(decoder="test-lstm-nogate")  # the kind's own rule runs in ModelConfig validation
        dec = create_decoder(cfg(decoder="test-lstm-nogate", gate=False, attention="test-first"))
        assert type(dec) is NoGate and type(dec.attention) is FirstLocation and dec.gate is None
        logits, alphas, _ = dec(torch.randn(2, 6, 8), torch.randint(1, 11, (2, 4)))
        assert logits.shape == (2, 4, 11) and torch.equal(alphas[..., 0], torch.ones(2, 4))
        with pytest.raises(ValueError, match="already registered"):
            register_decoder("lstm")(NoGate)
    finally:
        _DECODERS.pop("test-lstm-nogate", None)
        import sat.attention as A
        A._ATTENTIONS.pop("test-first", None)
    assert "test-lstm-nogate" not in C.DECODERS


def test_transformer_rules_live_with_the_transformer():
    with pytest.raises(ValueError, match="own .*cross-attention"):
        cfg(decoder="transformer", attention="hard")
    with pytest.raises(ValueError, match="divisible by heads"):
        cfg(decoder="transformer", heads=3)
    assert create_decoder(cfg(decoder="transformer", heads=2)).blocks[0].heads == 2


def test_hard_attention_takes_its_options_from_the_config():
    att = create_decoder(cfg(attention="hard", hard_entropy=0.2, hard_reinforce=0.5, hard_reward="sequence",
                             hard_test_rule="expectation")).attention
    assert (att.entropy_weight, att.reinforce_weight, att.reward, att.test_rule) == (0.2, 0.5, "sequence", "expectation")
    assert Attention.options(cfg()) == {}


def _module_imports(path: Path, package: str) -> set[str]:
    """The sat.* modules a file imports when it is imported (not inside functions or TYPE_CHECKING)."""
    out: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("sat"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.startswith("sat"):
                    out.add(base)
                    out.update(f"{base}.{a.name}" for a in node.names)  # `from . import x` imports sat.x
            elif isinstance(node, (ast.ClassDef, ast.If, ast.Try, ast.With)):
                for block in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                    visit(block)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return out


def test_no_import_cycle_in_the_model_library():
    modules: dict[str, Path] = {}
    for f in SAT.rglob("*.py"):
        rel = f.relative_to(SAT.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = f
    graph = {}
    for name, f in modules.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = {m for m in _module_imports(f, package) if m in modules and m != name}
    assert "sat.decoders.registry" in graph["sat.config"]  # the walk sees the imports it must see
    state: dict[str, int] = {}

    def walk(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, f"import cycle: {' -> '.join(path + [n])}"
            if n not in state:
                walk(n, path + [n])
        state[m] = 2
    for m in sorted(graph):
        if m not in state:
            walk(m, [m])


@pytest.mark.parametrize("module", ["sat.config", "sat.decoders.transformer", "sat.decoders.lstm", "sat.model",
                                    "sat.search", "sat.attention"])
def test_each_module_imports_on_its_own(module):
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                       cwd=SAT.parent, timeout=120)
    assert r.returncode == 0, r.stderr
