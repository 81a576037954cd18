"""crl issuer numbers

`crl_issuer_numbers(org_id, name_sha256, spki_sha256, last_number)`: the highest CRL number
taken for an issuer (the name and key an issuer group shares, domains/issuer_groups.py), with
no reference to a CA row. `crl_state` rows go with their CA (ON DELETE CASCADE), so deleting
the last CA of a group and importing it again started its CRL numbers over at 1, and RFC 5280
5.2.3 has them increase for a given CRL issuer. Filled here with the highest `last_number`
of each group's state rows; numbers of groups whose CAs were deleted before this revision
are not known any more.

Revision ID: 0023
Revises: 0022
"""

import hashlib

import sqlalchemy as sa
from alembic import op
from cryptography import x509

from tessera.core.inspect import issuer_identity
from tessera.core.pkcs12_sandbox import UNREADABLE

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "crl_issuer_numbers",
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name_sha256", sa.String(length=64), nullable=False),
        sa.Column("spki_sha256", sa.String(length=64), nullable=False),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("org_id", "name_sha256", "spki_sha256"),
    )
    _fill(table)


def _fill(table: sa.Table) -> None:
    cas = sa.table(
        "certificate_authorities",
        sa.column("id"),
        sa.column("org_id"),
        sa.column("certificate_pem"),
    )
    states = sa.table("crl_state", sa.column("ca_id"), sa.column("last_number"))
    query = (
        sa.select(cas.c.org_id, cas.c.certificate_pem, states.c.last_number)
        .join(states, states.c.ca_id == cas.c.id)
        .where(states.c.last_number > 0)
    )
    highest: dict[tuple[int, str, str], int] = {}
    for org_id, pem, last_number in op.get_bind().execute(query):
        try:
            name_der, spki_sha256 = issuer_identity(x509.load_pem_x509_certificate(pem.encode()))
        except UNREADABLE:  # InvalidVersion, say, is no ValueError
            continue  # a CA this library cannot read signs no CRL either
        key = (org_id, hashlib.sha256(name_der).hexdigest(), spki_sha256)
        highest[key] = max(highest.get(key, 0), int(last_number))
    rows = [
        {"org_id": key[0], "name_sha256": key[1], "spki_sha256": key[2], "last_number": number}
        for key, number in highest.items()
    ]
    if rows:
        op.bulk_insert(table, rows)


def downgrade() -> None:
    op.drop_table("crl_issuer_numbers")
