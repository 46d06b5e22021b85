"""The curation store's migrations (versions/), self-contained: they run the same in curation's
own database and in a training database from before issue 15 that still holds the old tables
(``curation.store.adopt_from_training_db`` copies their rows out once)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Inspector

FOLDER = Path(__file__).parent


def legacy_revision(insp: Inspector) -> str | None:
    return "0001" if "curation_queue" in insp.get_table_names() else None
