"""inputs.quality: the image-quality metrics (blur, brightness, contrast, ...) ingestion measured on
the decode that validated the image, as {metric: value}; listing filters and curation read them.
NULL for inputs stored before (curation measures those from the blob).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inputs", sa.Column("quality", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inputs") as batch:
        batch.drop_column("quality")
