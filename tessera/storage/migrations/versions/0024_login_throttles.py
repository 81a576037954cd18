"""login throttles

`login_throttles(subject, failures, lockouts, last_failure_at, locked_until)`: failed password
logins per username (the SHA-256 of the name, known account or not), so that after a few
failures further attempts for that name are refused for a growing while, from any address
and in every server process (docs/accounts.md).

Revision ID: 0024
Revises: 0023
"""

import sqlalchemy as sa
from alembic import op

from tessera.storage.models import UTCDateTime

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_throttles",
        sa.Column("subject", sa.String(length=64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("lockouts", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", UTCDateTime(), nullable=True),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("login_throttles")
