"""kek rotation one running

At most one KEK rotation runs: a partial unique index on `kek_rotations (status)` where the
status is `running`. `rotate-secrets` checks first and answers 409; the index parts requests
that ran that check at the same time, which all used to start a rotation, each writing the
KEK file with its own new key in front of the keys it had read (so a key another of them
had just written could be dropped from the file with the tokens made under it).

Should several rotations be running already (that race, before this revision), all but the
newest are marked failed: the rotation job fails any whose key is not first in the file
anyway, and a rotation marked failed here leaves every key in the file, so nothing becomes
unreadable; the next rotation sweeps whatever is left.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

RUNNING = "status = 'running'"


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE kek_rotations SET status = 'failed', "
            "error = 'started at the same time as another rotation' WHERE " + RUNNING + " "
            "AND id <> (SELECT max(id) FROM kek_rotations WHERE " + RUNNING + ")"
        )
    )
    op.create_index(
        "uq_kek_rotations_running",
        "kek_rotations",
        ["status"],
        unique=True,
        sqlite_where=sa.text(RUNNING),
        postgresql_where=sa.text(RUNNING),
    )


def downgrade() -> None:
    op.drop_index("uq_kek_rotations_running", table_name="kek_rotations")
