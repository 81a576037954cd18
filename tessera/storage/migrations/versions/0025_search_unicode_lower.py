"""search copy lower-cased beyond ASCII (SQLite)

SQLite's built-in lower() folds A-Z only, so `certificate_search.text` (migration 0013) kept
every other capital ("Ärztekammer" stayed "Ärztekammer", "É", "Ö", Cyrillic, Greek ...),
while a search lower-cases its term with Python: such a certificate was found by no
spelling of its name. Every SQLite connection now replaces lower() with Python's
(`storage/db.py`); here the rows written before are lower-cased again from their
certificates (the FTS copy follows by its trigger). PostgreSQL's lower() folds every letter
already: nothing to do there.

Revision ID: 0025
Revises: 0024
"""

from alembic import op

from tessera.storage.db import unicode_lower

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

RELOWERED = """UPDATE certificate_search SET text = (
    SELECT lower(c.common_name) || char(10) || lower(coalesce(c.san_text, ''))
    FROM certificates c WHERE c.id = certificate_search.id
) WHERE text <> lower(text)"""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    # Whoever made the connection, lower() is the one the application's connections use.
    raw = bind.connection.dbapi_connection
    assert raw is not None
    raw.create_function("lower", 1, unicode_lower, deterministic=True)
    op.execute(RELOWERED)


def downgrade() -> None:
    pass  # nothing to undo: texts lower-cased whole are what every search looks for
