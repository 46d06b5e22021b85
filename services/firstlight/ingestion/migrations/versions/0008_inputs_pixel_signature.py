"""inputs.pixel_signature: the duplicate checks' pixel signatures (the 6×6 tiny-image descriptor
and the 32×32 gray canvas, firstlight.media.pixel_signature.pack, 1,169 bytes) cut from the decode
that validated the image, so curation's health check reads them instead of decoding every blob.
NULL for inputs stored before (curation decodes those, as it did).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inputs", sa.Column("pixel_signature", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inputs") as batch:
        batch.drop_column("pixel_signature")
