"""The errors a user can fix, and how a script shows them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """Bad input or a state the user can fix; its message is one line, shown without a traceback."""


def one_line_errors(command: F) -> F:
    """For a script's click command (the examples'): a :class:`UserError`, a config's ``ValueError`` (an
    option out of its range) and an ``OSError`` (a folder missing or read-only) end it with click's
    one-line ``Error: ...`` and exit status 1, not a traceback. ``cli.py`` has its own, stricter one."""
    import click  # here, not at the top: configs are read without it

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (UserError, ValueError) as e:
            raise click.ClickException(" ".join(str(e).split())) from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"cannot write {where}{e.strerror or e}") from None

    return wrapper  # type: ignore[return-value]
