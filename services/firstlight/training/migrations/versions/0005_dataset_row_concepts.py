"""dataset_row_concepts: one row per (dataset row, concept), filled from the rows' frozen
concepts, for ListDatasetRows' paged filters.

Revision ID: 0005
Revises: 0004
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

KEY = ("app_id", "dataset_id", "version", "input_id")


def upgrade() -> None:
    table = op.create_table(
        "dataset_row_concepts",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("dataset_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("concept", sa.String(256), primary_key=True),
        sa.Column("input_id", sa.String(128), primary_key=True),
    )
    rows = sa.table("dataset_rows", *(sa.column(k) for k in KEY), sa.column("concepts"))
    bind = op.get_bind()
    batch: list[dict] = []
    for *key, concepts in bind.execute(sa.select(*(rows.c[k] for k in KEY), rows.c.concepts)).all():
        if isinstance(concepts, str):  # some drivers hand JSON back as text
            concepts = json.loads(concepts)
        batch += [dict(zip(KEY, key), concept=c) for c in set(concepts or [])]
        if len(batch) >= 5000:
            bind.execute(sa.insert(table), batch)
            batch = []
    if batch:
        bind.execute(sa.insert(table), batch)


def downgrade() -> None:
    op.drop_table("dataset_row_concepts")
