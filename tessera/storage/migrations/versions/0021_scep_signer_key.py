"""scep signer key

`scep_requests.signer_key_digest`: the SHA-256 of the SubjectPublicKeyInfo of the
certificate that signed the request. RFC 8894 section 3.3.3 has polling controlled by the
transactionID and who sends it, not by the messageData: a CertPoll finds a request by its
transactionID and this key. A plain ADD COLUMN (nullable, no default to write), on both
backends; requests stored before this revision have none and are still found by the
subject their poll names.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("scep_requests", sa.Column("signer_key_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("scep_requests", "signer_key_digest")
