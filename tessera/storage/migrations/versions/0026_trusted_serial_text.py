"""trusted serial text

`trusted_certificates.serial_number` becomes unbounded text: the trust store keeps
certificates from anywhere, and one with a serial beyond 32 octets (RFC 5280 allows 20 for
conforming CAs, but nothing stops others) was stored and shown cut to 64 hex digits, so its
serial named another certificate. SQLite never enforced the length; on PostgreSQL the
VARCHAR(64) did. The downgrade cuts longer serials back to 64 characters, as they were.

Revision ID: 0026
Revises: 0025
"""

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trusted_certificates") as batch:
        batch.alter_column(
            "serial_number", existing_type=sa.String(length=64), type_=sa.Text(), nullable=False
        )


def downgrade() -> None:
    table = sa.table("trusted_certificates", sa.column("serial_number", sa.Text()))
    op.execute(
        table.update()
        .where(sa.func.length(table.c.serial_number) > 64)
        .values(serial_number=sa.func.substr(table.c.serial_number, 1, 64))
    )
    with op.batch_alter_table("trusted_certificates") as batch:
        batch.alter_column(
            "serial_number", existing_type=sa.Text(), type_=sa.String(length=64), nullable=False
        )
