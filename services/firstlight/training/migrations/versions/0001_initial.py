"""The training store as first released: datasets and their frozen rows, models, versions,
jobs, evaluations.

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
        "datasets",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dataset_rows",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("dataset_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("input_id", sa.String(128), primary_key=True),
        sa.Column("concepts", sa.JSON, nullable=False),
        sa.Column("split", sa.Integer, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("concepts", sa.JSON, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("serving_version", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("model_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("dataset_id", sa.String(128), nullable=False),
        sa.Column("dataset_version", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("validation_metrics", sa.JSON, nullable=False),
        sa.Column("train_report", sa.JSON, nullable=False),
        sa.Column("train_seconds", sa.Float, nullable=False),
        sa.Column("triton_model", sa.String(256), nullable=False),
        sa.Column("activation", sa.String(16), nullable=False),
        sa.Column("promotion_note", sa.String(1024), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("dataset_id", sa.String(128), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("state", sa.Integer, nullable=False),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("error", sa.String(4096), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "evaluations",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("model_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("split", sa.Integer, primary_key=True),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("markdown", sa.String, nullable=False),
        sa.Column("png", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("evaluations", "jobs", "versions", "models", "dataset_rows", "datasets"):
        op.drop_table(table)
