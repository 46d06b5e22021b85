"""The ingestion store's migrations (versions/), and the revision a database made before
versions existed is at."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Inspector

FOLDER = Path(__file__).parent


def legacy_revision(insp: Inspector) -> str | None:
    """The unversioned shapes the code left, oldest first (each added by an ALTER TABLE or
    create_all in make_engine before versions existed)."""
    tables = set(insp.get_table_names())
    if "apps" not in tables:
        return None
    if "embedding_model" not in {c["name"] for c in insp.get_columns("apps")}:
        return "0001"
    if "regions" not in {c["name"] for c in insp.get_columns("inputs")}:
        return "0002"
    if "index_watch" not in tables:
        return "0003"
    return "0004"
