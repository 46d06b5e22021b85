"""The Typer application and the one way commands join it (with the error presentation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import typer

from firstlight.cli.errors import presenting_errors

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(help="Firstlight: data-efficient computer vision, self-hosted.", no_args_is_help=True, add_completion=False)


def command(name: str | None = None, *, also: tuple[type[Exception], ...] = ()) -> Callable[[F], F]:
    """Register a command; a domain error (or one of ``also``) it raises is printed, not thrown."""

    def register(fn: F) -> F:
        app.command(name)(presenting_errors(fn, also))
        return fn

    return register
