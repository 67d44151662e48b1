"""The one registration helper behind timm-style `@register_x("name")` decorators (decoders, attention kinds).

Import-light on purpose (no torch): the registries' modules import it without pulling in the models.
"""
from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T", bound=type)


def registrar(table: dict[str, type], kind: str) -> Callable[[str], Callable[[T], T]]:
    """A `register(name)` class decorator that adds the class to `table` (a name taken by another class
    is a ValueError naming both)."""
    def register(name: str) -> Callable[[T], T]:
        def add(cls: T) -> T:
            if name in table and table[name] is not cls:
                raise ValueError(f"{kind} {name!r} is already registered (by {table[name].__qualname__})")
            table[name] = cls
            return cls
        return add
    return register
