"""Queue leases (one labeler per waiting item at a time) and stored pool scores (a model
version's prediction per input, for the gallery's filters and sorting by uncertainty).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "curation_leases",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("input_id", sa.String(128), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "curation_pool_scores",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("model_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(16), primary_key=True),
        sa.Column("input_id", sa.String(128), primary_key=True),
        sa.Column("predicted", sa.String(256), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("uncertainty", sa.Float, nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_pool_scores_filter", "curation_pool_scores", ["app_id", "model_id", "version", "predicted", "score"])


def downgrade() -> None:
    op.drop_index("ix_pool_scores_filter", table_name="curation_pool_scores")
    op.drop_table("curation_pool_scores")
    op.drop_table("curation_leases")
