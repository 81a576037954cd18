"""security: API-managed security settings and KEK rotation progress

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from tessera.storage.models import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "security_settings",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "kek_rotations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("new_fingerprint", sa.String(length=32), nullable=False),
        sa.Column("old_fingerprints", sa.JSON(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("rotated", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_kek_rotations_status", "kek_rotations", ["status"])


def downgrade() -> None:
    op.drop_index("ix_kek_rotations_status", table_name="kek_rotations")
    op.drop_table("kek_rotations")
    op.drop_table("security_settings")
