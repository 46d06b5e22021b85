"""Curation's tables: per-app stream policies, the labeling queue and its counters, the
active-learning rounds.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "curation_policies",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("policy", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "curation_queue",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("input_id", sa.String(128), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("predicted", sa.String(256), nullable=False),
        sa.Column("state", sa.Integer, nullable=False),
        sa.Column("concepts", sa.JSON, nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("labeled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("published", sa.Boolean, nullable=False),
    )
    op.create_table(
        "curation_counters",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    op.create_table(
        "curation_rounds",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("record", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in ("curation_rounds", "curation_counters", "curation_queue", "curation_policies"):
        op.drop_table(table)
