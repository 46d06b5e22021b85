"""Visual and text search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from firstlight.cli.app import command
from firstlight.cli.errors import USAGE, fail
from firstlight.cli.options import DEFAULT_DATA_DIR, DataDir, client
from firstlight.cli.output import print_hits


@command("search-image")
def search_image(
    app_id: str,
    image: Annotated[Path | None, typer.Option("--file", help="Query image file")] = None,
    input_id: Annotated[str, typer.Option(help="Query by an indexed input instead")] = "",
    top_k: int = 10,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Visual similarity search."""
    if (image is None) == (not input_id):
        fail("give exactly one of --file or --input-id", USAGE)
    with client(data_dir) as fl:
        resp = fl.search_by_image(app_id, image=image.read_bytes() if image else None, input_id=input_id, top_k=top_k)
    print_hits(resp, f"most similar to {image or input_id}")


@command("search-text")
def search_text(app_id: str, text: str, top_k: int = 10, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Text → image search (no CLIP needed: see README)."""
    with client(data_dir) as fl:
        resp = fl.search_by_text(app_id, text, top_k=top_k)
    read_as = ", ".join(f"{c.name} ({c.score:.2f})" for c in resp.interpreted_as)
    print_hits(resp, f"“{text}” (read as: {read_as})")
