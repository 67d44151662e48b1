"""Caption decoders, one file each, registered by name (sat/decoders/registry.py).

    dec = create_decoder(config)        # the class registered as config.decoder, from_config(config)
    list_decoders()                     # ['gru', 'lstm', 'transformer']

Adding a decoder = one new file here with a `@register_decoder("name")` class: the registry imports
every module of the package on first use. The interface is `Decoder` (sat/decoders/base.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Decoder, Memory, RecurrentDecoder, State
from .registry import decoder_class, list_decoders, register_decoder

if TYPE_CHECKING:
    from ..config import ModelConfig

__all__ = ["Decoder", "RecurrentDecoder", "Memory", "State", "create_decoder", "decoder_class",
           "list_decoders", "register_decoder"]


def create_decoder(config: "ModelConfig") -> Decoder:
    """Build the decoder a config names."""
    if config.vocab_size < 5:
        raise ValueError(f"vocab_size must be ≥ 5 (4 special tokens + words), got {config.vocab_size}")
    return decoder_class(config.decoder).from_config(config)
