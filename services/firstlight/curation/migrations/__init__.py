"""The curation store's migrations (versions/), self-contained: they run the same whether the
tables share the training database (today) or sit in a database of their own."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Inspector

FOLDER = Path(__file__).parent


def legacy_revision(insp: Inspector) -> str | None:
    return "0001" if "curation_queue" in insp.get_table_names() else None
