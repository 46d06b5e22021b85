"""inputs.thumbnail_uri: where ingestion stored the Portal's thumbnail of an input (cut from the
decode that validated it); NULL for inputs stored before, which the gateway thumbnails on demand.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inputs", sa.Column("thumbnail_uri", sa.String(length=1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inputs") as batch:
        batch.drop_column("thumbnail_uri")
