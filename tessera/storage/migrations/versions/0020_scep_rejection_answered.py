"""scep rejection answered

`scep_requests.rejection_answered_at`: when a client was first given a rejected request's
FAILURE. Until then the same PKCSReq sent again is how scepclient polls, and gets the
rejection; once it was told, that PKCSReq sent again with a valid challenge is a new request
(docs/scep.md, "Transactions belong to their requester"). A plain ADD COLUMN (nullable, no
default to write), on both backends: a request rejected before this revision tells its
rejection once more before it can be made again.

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("scep_requests", sa.Column("rejection_answered_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("scep_requests", "rejection_answered_at")
