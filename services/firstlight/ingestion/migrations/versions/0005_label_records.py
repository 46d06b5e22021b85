"""input_concepts.labeled_by / labeled_at: who added a label (an API key's name and id, "admin
key", "service") and when; NULL for labels that came with the upload or predate the columns.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("input_concepts", sa.Column("labeled_by", sa.String(320), nullable=True))
    op.add_column("input_concepts", sa.Column("labeled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("input_concepts") as batch:
        batch.drop_column("labeled_at")
        batch.drop_column("labeled_by")
