"""trusted serial text

`trusted_certificates.serial_number` becomes unbounded text: the trust store keeps
certificates from anywhere, and one with a serial beyond 32 octets (RFC 5280 allows 20 for
conforming CAs, but nothing stops others) was stored and shown cut to 64 hex digits, so its
serial named another certificate. SQLite never enforced the length; on PostgreSQL the
VARCHAR(64) did. The downgrade cuts longer serials back to 64 characters, as they were.

Revision ID: 0026
Revises: 0025
"""

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

# SQLite rebuilds the table for the change: with the AUTOINCREMENT key of migration 0015.
_KEPT = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with (
        _sequence_kept(),
        op.batch_alter_table("trusted_certificates", table_kwargs=_KEPT) as batch,
    ):
        batch.alter_column(
            "serial_number",
            existing_type=sa.String(length=64),
            type_=sa.Text(),
            nullable=False,
        )


def downgrade() -> None:
    table = sa.table("trusted_certificates", sa.column("serial_number", sa.Text()))
    op.execute(
        table.update()
        .where(sa.func.length(table.c.serial_number) > 64)
        .values(serial_number=sa.func.substr(table.c.serial_number, 1, 64))
    )
    with (
        _sequence_kept(),
        op.batch_alter_table("trusted_certificates", table_kwargs=_KEPT) as batch,
    ):
        batch.alter_column(
            "serial_number",
            existing_type=sa.Text(),
            type_=sa.String(length=64),
            nullable=False,
        )


@contextlib.contextmanager
def _sequence_kept() -> Iterator[None]:
    """The copy seeds the rebuilt table's `sqlite_sequence` with its largest id, not with the
    largest ever given: ids of the last entries deleted would be given again (what 0015
    stopped). The old value is put back."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    read = sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'trusted_certificates'")
    before = bind.execute(read).scalar()
    yield
    if before is not None:
        bind.execute(
            sa.text(
                "UPDATE sqlite_sequence SET seq = max(seq, :seq) "
                "WHERE name = 'trusted_certificates'"
            ),
            {"seq": before},
        )
