"""Registration by name, shared by every swappable part (likelihoods, priors, guides, networks, ...)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)


def _origin(cls: type) -> tuple[str, str]:
    """Where a class is defined: its module's file (or, without one, the module's name) and its name."""
    file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    return (os.path.realpath(file) if file else cls.__module__), cls.__qualname__


def registrar(table: dict[str, type]) -> Callable[[str], Callable[[T], T]]:
    """``register = registrar(TABLE)``; then ``@register(name)`` names a class and adds it to ``TABLE``.

    A name already taken by another class is a ``ValueError``: a part of your own under a built-in's
    name would otherwise change, silently, what every run saved with that name loads and scores. The
    same class registered again (its module reloaded, a notebook's cell run twice, a file imported under
    two module names) takes its place."""

    def register(name: str) -> Callable[[T], T]:
        def add(cls: T) -> T:
            taken = table.get(name)
            if taken is not None and _origin(taken) != _origin(cls):
                where = ":".join(_origin(taken))
                raise ValueError(
                    f"the name {name!r} is taken already (by {where}); register yours under another"
                )
            cls.name = name
            table[name] = cls
            return cls

        return add

    return register
