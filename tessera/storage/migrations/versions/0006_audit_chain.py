"""audit_chain: the audit log's HMAC chain, retention checkpoints and audit settings

Existing audit rows are not chained here (the key is a file the migration cannot see); each
organization's head records the highest existing id, and the first append or start after the
migration chains those rows in id order (see docs/audit.md).

Revision ID: 0006
Revises: 0005
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import tessera.storage.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("actor_type", sa.String(16)),
    ("request_id", sa.String(64)),
    ("status_code", sa.Integer()),
    ("chain_seq", sa.Integer()),
    ("chain_prev_id", sa.Integer()),
    ("chain_prev_mac", sa.String(64)),
    ("chain_mac", sa.String(64)),
)


def upgrade() -> None:
    for name, kind in _COLUMNS:
        op.add_column("audit_logs", sa.Column(name, kind, nullable=True))
    op.create_index(
        "ux_audit_logs_org_chain_seq", "audit_logs", ["org_id", "chain_seq"], unique=True
    )
    heads = op.create_table(
        "audit_chain_heads",
        sa.Column("chain_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=True),
        sa.Column("last_mac", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=True),
        sa.Column("legacy_max_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", tessera.storage.models.UTCDateTime(), nullable=False),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("start_seq", sa.Integer(), nullable=False),
        sa.Column("prev_id", sa.Integer(), nullable=True),
        sa.Column("prev_mac", sa.String(64), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("created_at", tessera.storage.models.UTCDateTime(), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_checkpoints_chain_id", "audit_checkpoints", ["chain_id"])
    op.create_table(
        "audit_settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", tessera.storage.models.UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(150), nullable=True),
    )
    _mark_legacy_rows(heads)


def _mark_legacy_rows(heads: sa.Table) -> None:
    """One head per organization that already has audit rows, naming the highest id."""
    logs = sa.table("audit_logs", sa.column("org_id", sa.Integer), sa.column("id", sa.Integer))
    bind = op.get_bind()
    found = bind.execute(
        sa.select(logs.c.org_id, sa.func.max(logs.c.id))
        .where(logs.c.org_id.is_not(None))
        .group_by(logs.c.org_id)
    ).all()
    now = datetime.now(UTC)
    for org_id, max_id in found:
        bind.execute(
            heads.insert().values(
                chain_id=org_id, last_seq=0, last_mac="", legacy_max_id=max_id, updated_at=now
            )
        )


def downgrade() -> None:
    op.drop_table("audit_settings")
    op.drop_index("ix_audit_checkpoints_chain_id", "audit_checkpoints")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_chain_heads")
    op.drop_index("ux_audit_logs_org_chain_seq", "audit_logs")
    for name, _ in reversed(_COLUMNS):
        op.drop_column("audit_logs", name)
