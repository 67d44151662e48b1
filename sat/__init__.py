"""SAT Studio's model library: Show, Attend and Tell (Xu et al., 2015) captioning.

`from sat import Captioner` is lazy (PEP 562) so importing the package does no work.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Captioner", "Caption", "ModelConfig", "Vocab", "create_encoder"]
_LAZY = {"Captioner": "captioner", "Caption": "captioner", "ModelConfig": "config",
         "Vocab": "vocab", "create_encoder": "encoder"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sat' has no attribute {name!r}")
