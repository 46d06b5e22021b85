"""apps.embedding_model: the Triton model that embeds an app's images ("" = the base backbone,
everyone's value before the column existed).

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
    op.add_column("apps", sa.Column("embedding_model", sa.String(256), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("embedding_model")
