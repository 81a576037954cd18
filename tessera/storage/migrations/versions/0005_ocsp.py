"""ocsp: delegated signer certificates of each CA, shared request counters

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from tessera.storage.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The counters of tessera.storage.models_ocsp.COUNTERS at the time of this revision.
_COUNTERS = (
    "requests",
    "get",
    "post",
    "nonce",
    "good",
    "revoked",
    "unknown",
    "malformed",
    "unauthorized",
    "internal_error",
    "too_large",
    "cache_hits",
    "signed",
)


def upgrade() -> None:
    op.create_table(
        "ocsp_signers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "ca_id",
            sa.Integer(),
            sa.ForeignKey("certificate_authorities.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "certificate_id",
            sa.Integer(),
            sa.ForeignKey("certificates.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("not_after", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("ca_id", "generation"),
    )
    op.create_index("ix_ocsp_signers_ca_id", "ocsp_signers", ["ca_id"])
    op.create_index("ix_ocsp_signers_certificate_id", "ocsp_signers", ["certificate_id"])
    counters = op.create_table(
        "ocsp_counters",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    # Created up front so that processes only ever UPDATE (no insert race between them).
    op.bulk_insert(counters, [{"name": name, "value": 0} for name in _COUNTERS])


def downgrade() -> None:
    op.drop_table("ocsp_counters")
    op.drop_index("ix_ocsp_signers_certificate_id", "ocsp_signers")
    op.drop_index("ix_ocsp_signers_ca_id", "ocsp_signers")
    op.drop_table("ocsp_signers")
