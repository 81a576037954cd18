"""ca revocation

A subordinate CA's certificate can be revoked by its issuer (`POST /api/v2/cas/{id}/revoke`):
when and why are kept on the CA's row, which the issuer's CRL and OCSP answers read. Plain
ADD COLUMNs (nullable, no default to write), on both backends.

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("certificate_authorities", sa.Column("revoked_at", sa.DateTime(), nullable=True))
    op.add_column(
        "certificate_authorities", sa.Column("revocation_reason", sa.String(32), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("certificate_authorities", "revocation_reason")
    op.drop_column("certificate_authorities", "revoked_at")
