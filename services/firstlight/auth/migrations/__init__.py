"""The API key store's migrations (versions/); its table shares the ingestion database."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Inspector

FOLDER = Path(__file__).parent


def legacy_revision(insp: Inspector) -> str | None:
    return "0001" if "api_keys" in insp.get_table_names() else None
