"""The inputs' labels and split as ingestion has them (the gallery's label filters with the
prediction filters in one query; the pool's labeling source leases unlabeled inputs), and
pool-scoring jobs (resumed after a restart). Both start empty: ScorePool fills the labels.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "curation_input_labels",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("input_id", sa.String(128), primary_key=True),
        sa.Column("split", sa.Integer, nullable=False),
        sa.Column("labeled", sa.Boolean, nullable=False),
        sa.Column("label_revision", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "curation_input_concepts",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("concept", sa.String(256), primary_key=True),
        sa.Column("input_id", sa.String(128), primary_key=True),
    )
    op.create_table(
        "curation_scoring_jobs",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(16), nullable=False),
        sa.Column("unlabeled_only", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("scored", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("error", sa.String(1024), nullable=False),
        sa.Column("resumed", sa.Boolean, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("curation_scoring_jobs")
    op.drop_table("curation_input_concepts")
    op.drop_table("curation_input_labels")
