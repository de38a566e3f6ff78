"""Registration by name, shared by the likelihoods and the priors."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)


def registrar(table: dict[str, type]) -> Callable[[str], Callable[[T], T]]:
    """``register = registrar(TABLE)``; then ``@register(name)`` names a class and adds it to ``TABLE``."""

    def register(name: str) -> Callable[[T], T]:
        def add(cls: T) -> T:
            cls.name = name
            table[name] = cls
            return cls

        return add

    return register
