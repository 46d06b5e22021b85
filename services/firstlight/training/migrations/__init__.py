"""The training store's migrations (versions/), and the revision a database made before
versions existed is at."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Inspector

FOLDER = Path(__file__).parent


def legacy_revision(insp: Inspector) -> str | None:
    """The unversioned shapes the code left, oldest first (columns added by ALTER TABLE in
    TrainingStore() before versions existed)."""
    if "jobs" not in insp.get_table_names():
        return None
    if "regions" not in {c["name"] for c in insp.get_columns("dataset_rows")}:
        return "0001"
    if "cancel_requested" not in {c["name"] for c in insp.get_columns("jobs")}:
        return "0002"
    return "0003"
