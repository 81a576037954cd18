"""credential generation

One counter that every change to who may do what moves: a user's role, state or
organization, an API key's state, permissions, expiry or owner, a group's permissions, a
group membership; and deletions of any of these. Server processes keep authenticated API
keys in memory and trust an entry only while this counter has not moved, so a revoked key
or a narrowed group stops working on the next request, in every process (docs/auth-cache.md).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# (table, the columns whose change matters, whether inserts matter)
WATCHED = [
    ("users", "role, active, org_id", False),
    ("api_keys", "enabled, permissions, expires_at, key_hash, user_id", False),
    ("user_groups", "permissions, org_id", False),
    ("user_group_members", "user_id, group_id", True),
]
BUMP = "UPDATE credential_generation SET n = n + 1 WHERE id = 1"


def _postgresql() -> list[str]:
    statements = [
        f"""CREATE FUNCTION credential_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN {BUMP}; RETURN NULL; END $$"""
    ]
    for table, columns, inserts in WATCHED:
        events = f"{'INSERT OR ' if inserts else ''}UPDATE OF {columns} OR DELETE"
        statements.append(
            f"""CREATE TRIGGER {table}_credential_generation AFTER {events} ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION credential_generation_bump()"""
        )
    return statements


def _sqlite() -> list[str]:
    statements = []
    for table, columns, inserts in WATCHED:
        events = [f"UPDATE OF {columns}", "DELETE"] + (["INSERT"] if inserts else [])
        for event in events:
            name = f"{table}_credential_generation_{event.split()[0].lower()}"
            statements.append(f"CREATE TRIGGER {name} AFTER {event} ON {table} BEGIN {BUMP}; END")
    return statements


def upgrade() -> None:
    op.create_table(
        "credential_generation",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.execute("INSERT INTO credential_generation (id, n) VALUES (1, 0)")
    postgresql = op.get_bind().dialect.name == "postgresql"
    for statement in _postgresql() if postgresql else _sqlite():
        op.execute(statement)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table, _, inserts in WATCHED:
        if postgresql:
            op.execute(f"DROP TRIGGER {table}_credential_generation ON {table}")
            continue
        for event in ["update", "delete"] + (["insert"] if inserts else []):
            op.execute(f"DROP TRIGGER {table}_credential_generation_{event}")
    if postgresql:
        op.execute("DROP FUNCTION credential_generation_bump()")
    op.drop_table("credential_generation")
