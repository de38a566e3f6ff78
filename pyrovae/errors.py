"""The errors a user can fix, and how a script shows them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """Bad input or a state the user can fix; its message is one line, shown without a traceback."""


def one_line(error: BaseException) -> str:
    """What click shows of an error a user can fix: its message on one line, whatever it quotes; for an
    ``OSError`` (a folder missing, full or read-only), the file it could not write."""
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"cannot write {where}{error.strerror or error}"
    return " ".join(str(error).split())


def one_line_errors(command: F) -> F:
    """For a script's click command (the examples'): a :class:`UserError`, a config's ``ValueError`` (an
    option out of its range) and an ``OSError`` (a folder missing or read-only) end it with click's
    one-line ``Error: ...`` and exit status 1, not a traceback. ``cli.py`` has its own, stricter one."""
    import click  # here, not at the top: configs are read without it

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (UserError, ValueError, OSError) as e:
            raise click.ClickException(one_line(e)) from None

    return wrapper  # type: ignore[return-value]
