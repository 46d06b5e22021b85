"""Options every command shares, and the client they connect with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from firstlight.cli.errors import USAGE, fail
from firstlight.sdk import Firstlight

DataDir = Annotated[Path, typer.Option("--data-dir", envvar="FIRSTLIGHT_DATA_DIR", help="Local stack state directory")]
DEFAULT_DATA_DIR = Path(".firstlight")


def client(data_dir: Path) -> Firstlight:
    """A client of the local stack in ``data_dir`` (exit 2 when there is none)."""
    try:
        return Firstlight.from_stack(data_dir)
    except FileNotFoundError as exc:
        fail(exc, USAGE)
