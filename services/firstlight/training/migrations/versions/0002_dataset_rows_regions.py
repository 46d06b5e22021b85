"""dataset_rows.regions: box labels frozen with a dataset version (NULL: frozen before boxes
were snapshotted; detector jobs then read today's boxes).

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
    op.add_column("dataset_rows", sa.Column("regions", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dataset_rows") as batch:
        batch.drop_column("regions")
