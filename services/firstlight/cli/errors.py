"""The CLI's one error presentation: a failure prints one red line and exits with its code.

A failed call raises a :mod:`firstlight.errors` type; the SDK gives it the text
``"<CODE>: <message>"`` (e.g. ``NOT_FOUND: app 'pets' not found``), which is what the user sees.
Exit codes: 1 for a failed call (any :class:`~firstlight.errors.FirstlightError`, or the extra
types a command names), 2 for a usage error (bad flags, no local stack, an unusable folder)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar, cast

import typer
from rich.markup import escape

from firstlight import errors
from firstlight.cli.output import console

F = TypeVar("F", bound=Callable[..., Any])

#: A call the services refused or could not serve.
CALL_FAILED = 1
#: The command line itself cannot be run as given.
USAGE = 2


def fail(message: object, code: int = CALL_FAILED) -> NoReturn:
    """Print ``message`` in red (as text: brackets in it are not markup) and exit with ``code``."""
    console.print(f"[red]{escape(str(message))}[/red]")
    raise typer.Exit(code)


def presenting_errors(command: F, also: tuple[type[Exception], ...] = ()) -> F:
    """``command`` with every domain error (and the ``also`` types) presented by :func:`fail`."""

    presented: tuple[type[Exception], ...] = (errors.FirstlightError, *also)

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except presented as exc:
            fail(exc, CALL_FAILED)

    return cast(F, run)
