"""compromised keys

`compromised_keys(org_id, spki_sha256, certificate_id, reported_at)`: the public keys a
certificate of the organization was revoked for as compromised (reason keyCompromise), by
the SHA-256 of the SubjectPublicKeyInfo. ACME renewal information tells every certificate
with such a key to renew at once, and ACME and renewals refuse to certify it again. Filled
here from the certificates already revoked that way.

Revision ID: 0014
Revises: 0013
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from tessera.core.inspect import public_key_sha256
from tessera.storage.models import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "compromised_keys",
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("spki_sha256", sa.String(length=64), nullable=False),
        sa.Column("certificate_id", sa.Integer(), nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("org_id", "spki_sha256"),
    )
    _fill(table)


def _fill(table: sa.Table) -> None:
    certificates = sa.table(
        "certificates",
        sa.column("id"),
        sa.column("org_id"),
        sa.column("certificate_pem"),
        sa.column("revoked_at", UTCDateTime()),
        sa.column("status"),
        sa.column("revocation_reason"),
    )
    revoked = op.get_bind().execute(
        sa.select(
            certificates.c.id,
            certificates.c.org_id,
            certificates.c.certificate_pem,
            certificates.c.revoked_at,
        )
        .where(
            certificates.c.status == "revoked",
            certificates.c.revocation_reason == "keyCompromise",
        )
        .order_by(certificates.c.id)
    )
    rows: dict[tuple[int, str], dict[str, object]] = {}
    for cert_id, org_id, pem, revoked_at in revoked:
        try:
            spki = public_key_sha256(x509.load_pem_x509_certificate(pem.encode()))
        except (ValueError, UnsupportedAlgorithm):
            continue  # an imported certificate this library cannot read: no key to list
        reported_at = revoked_at or datetime.now(UTC)
        rows.setdefault(
            (org_id, spki),
            {
                "org_id": org_id,
                "spki_sha256": spki,
                "certificate_id": cert_id,
                "reported_at": reported_at,
            },
        )
    if rows:
        op.bulk_insert(table, list(rows.values()))


def downgrade() -> None:
    op.drop_table("compromised_keys")
