"""The decoder registry (timm style): `@register_decoder("name")` on a `Decoder` subclass.

Import-light on purpose (no torch, no decoder modules): `sat.config` validates a config against
it and the decoder modules register into it, so neither has to import the other.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import registrar

if TYPE_CHECKING:
    from .base import Decoder

_DECODERS: dict[str, type["Decoder"]] = {}


register_decoder = registrar(_DECODERS, "decoder")
"""Class decorator `@register_decoder(name)`: `create_decoder` builds `cls.from_config(config)` for
`config.decoder == name`."""


def decoder_class(name: str) -> type["Decoder"]:
    """The class registered under `name` (ValueError naming the known ones otherwise)."""
    _load_builtins()
    if name not in _DECODERS:
        raise ValueError(f"unknown decoder {name!r}; known: {', '.join(sorted(_DECODERS))}")
    return _DECODERS[name]


def list_decoders() -> list[str]:
    """Registered decoder names, sorted."""
    _load_builtins()
    return sorted(_DECODERS)


def _load_builtins() -> None:
    # NOTE: every module of this package is imported (so registered) on first use, not at import:
    # adding a decoder is adding a file
    import importlib
    import pkgutil
    from pathlib import Path
    for m in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{m.name}")
